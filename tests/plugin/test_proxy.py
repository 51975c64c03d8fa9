"""``kubectl relay proxy``: its settings, the relay pod's command (run here for real), the CLI."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_relay.engine.addresses import parse_address
from kubectl_relay.engine.cli import parse_command_line
from kubectl_relay.engine.destinations import ConnectPolicy
from kubectl_relay.engine.frames import FrameDecoder, encode
from kubectl_relay.plugin import events, relaypod
from kubectl_relay.plugin.connections import Connections
from kubectl_relay.plugin.proxying import (
    DESCRIPTION,
    PatternError,
    ProxySettings,
    proxied,
    relay_command,
)
from kubectl_relay.plugin.session import TunnelSpec
from kubectl_relay.plugin.targets import ListenAddress
from kubectl_relay.plugin.tracing import Block, LogLine
from tests.conftest import scaled
from tests.plugin.test_cli import kubeconfig, render, run
from tests.support import (
    RelayProcess,
    ThreadedServer,
    echo,
    free_port,
    mux_client,
    relay_listening,
    wait_for_output,
)

__all__ = ["kubeconfig"]  # the fixture, used by name


@pytest.mark.parametrize(
    "pattern",
    ["10.0.0.0/8", "fd00::/8", "10.1.2.3", "web.shop", "*.kube-system.svc.cluster.local",
     "Metadata.Google.Internal", "web-?.shop"],
)
def test_good_patterns(pattern: str) -> None:
    assert ProxySettings(allow=(pattern,), deny=(pattern,)).allow == (pattern,)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("10.0.0.0/8,web", '"10.0.0.0/8,web": give one CIDR or name per --deny, without commas'),
        ("10.0.0.300", '"10.0.0.300" is neither a CIDR (10.0.0.0/8, fd00::/8, 10.1.2.3) nor a '
         "host name pattern (web.shop, *.kube-system.svc.cluster.local)"),
        ("web:80", '"web:80" is neither a CIDR (10.0.0.0/8, fd00::/8, 10.1.2.3) nor a '
         "host name pattern (web.shop, *.kube-system.svc.cluster.local)"),
        ("", '"" is neither a CIDR (10.0.0.0/8, fd00::/8, 10.1.2.3) nor a '
         "host name pattern (web.shop, *.kube-system.svc.cluster.local)"),
    ],
)
def test_bad_patterns(pattern: str, message: str) -> None:
    with pytest.raises(PatternError) as caught:
        ProxySettings(deny=(pattern,))
    assert str(caught.value) == message


def test_the_relay_command_maps_allow_and_deny_onto_the_engine() -> None:
    settings = ProxySettings(deny=("169.254.0.0/16", "*.kube-system.*"), allow=("10.0.0.0/8",))
    command = relay_command("text", 600, settings)
    assert command[0] == "relay"
    line = parse_command_line(command[1:])
    assert line.connect_policy == ConnectPolicy(
        denied=(ipaddress.ip_network("169.254.0.0/16"),),
        allowed=(ipaddress.ip_network("10.0.0.0/8"),),
        denied_names=("*.kube-system.*",),
    )
    first, second = (parse_address(text) for text in line.addresses)
    assert str(first) == relaypod.listen_address(600, mux=True)
    assert str(second) == "PROXY-SERVER"
    # KUBECTL_RELAY_MUX=0: the framed listener of a port-forward per connection.
    framed = parse_command_line(relay_command("text", 600, settings, mux=False)[1:])
    assert framed.addresses[0] == relaypod.listen_address(600)
    assert "--deny-connect" not in relay_command("text", 600, ProxySettings())
    # Where each request went is a session's notice: the proxy's sessions log theirs.
    assert not line.quiet_sessions


def test_the_tunnel_describes_itself_as_a_proxy() -> None:
    settings = ProxySettings(listen=ListenAddress(port=1081))
    spec = TunnelSpec("proxy", listen=settings.listen, proxy=settings)
    assert spec.shown_target() == DESCRIPTION


def pod_command(port: int, *, mux: bool) -> list[str]:
    """The relay pod's own command, to run here on ``port``: its listener and PROXY-SERVER."""
    command = relay_command("text", 60, ProxySettings(deny=("*.forbidden.test",)), mux=mux)
    return [arg.replace(str(relaypod.POD_PORT), str(port)) for arg in command[1:]]


#: A SOCKS5 greeting: version 5, one method, no authentication.
SOCKS5_HELLO = b"\x05\x01\x00"


def socks5_connect(host: str, target: int) -> bytes:
    """A SOCKS5 CONNECT request to ``host:target`` (after the greeting)."""
    return b"\x05\x01\x00\x03" + bytes((len(host),)) + host.encode() + struct.pack("!H", target)


async def test_the_pod_command_proxies_each_stream_and_refuses() -> None:
    """Each local connection a stream of the tunnel's one port-forward (``MUX-ACCEPT``)."""
    port = free_port()
    with ThreadedServer(echo) as server, RelayProcess(pod_command(port, mux=True)) as relay:
        await asyncio.to_thread(wait_for_output, relay, lambda _out, err: "listening on" in err)
        async with mux_client(port) as connection:

            async def proxied(host: str, target: int, data: bytes) -> tuple[bytes, bool]:
                """What came back on a new stream, and whether the relay reset it then."""
                channel = await connection.open("127.0.0.1:5000")
                received = b""
                try:
                    await channel.write(SOCKS5_HELLO + socks5_connect(host, target) + data)
                    await channel.end()
                    async with asyncio.timeout(scaled(20)):
                        while chunk := await channel.read():
                            received += chunk
                except ConnectionResetError:
                    return received, True
                finally:
                    await channel.aclose()
                return received, False

            allowed, refused = await asyncio.gather(
                proxied("localhost", server.port, b"ping"),
                proxied("db.forbidden.test", 5432, b"never sent"),
            )
    # The method reply, the CONNECT reply (succeeded), the echo, and the echo's end.
    assert allowed[0][:4] == b"\x05\x00\x05\x00" and allowed[0].endswith(b"ping"), allowed
    assert not allowed[1]
    # Refused by the rules (reply 2), then the relay's end of the session: as over a
    # port-forward of its own, the client has its reply before the stream goes.
    assert refused[0][:4] == b"\x05\x00\x05\x02", refused
    assert b"never sent" not in refused[0]


@pytest.fixture
def pod_relay() -> Iterator[int]:
    """The relay pod's command with ``KUBECTL_RELAY_MUX=0``: the framed listener per connection."""
    port = free_port()
    with relay_listening(pod_command(port, mux=False), port):
        yield port


def framed_socks5(port: int, host: str, target: int) -> tuple[socket.socket, bytes]:
    """A SOCKS5 CONNECT in frames, as the plugin's port-forward carries it; the reply."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    decoder = FrameDecoder()
    conn.sendall(encode(SOCKS5_HELLO))
    conn.sendall(encode(socks5_connect(host, target)))
    frames: list[bytes] = []
    while len(frames) < 2:
        chunk = conn.recv(65536)
        if not chunk:
            break
        frames += decoder.feed(chunk)
    assert frames[0] == b"\x05\x00"
    return conn, frames[1] if len(frames) > 1 else b""


def test_the_framed_pod_command_proxies_and_refuses(pod_relay: int) -> None:
    with ThreadedServer(echo) as server:
        conn, reply = framed_socks5(pod_relay, "localhost", server.port)
        with conn:
            assert reply[:2] == b"\x05\x00"
            conn.sendall(encode(b"ping") + b"\0\0")  # data, then the end frame
            decoder, frames = FrameDecoder(), []
            while b"" not in frames and (chunk := conn.recv(65536)):
                frames += decoder.feed(chunk)
            assert frames == [b"ping", b""]  # echoed, then the echo server's half-close
    conn, reply = framed_socks5(pod_relay, "db.forbidden.test", 5432)
    with conn:
        assert reply[:2] == b"\x05\x02"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("proxy: SOCKS5 request from AF=2 127.0.0.1:4000 to web.shop:80", ("SOCKS5", "web.shop:80")),
        ("proxy: HTTP CONNECT request from AF=2 127.0.0.1:1 to [fd00::1]:443",
         ("HTTP CONNECT", "[fd00::1]:443")),
        ("proxy: connected to web.shop:80 for AF=2 127.0.0.1:4000", None),
        ("listening on AF=2 0.0.0.0:8000", None),
    ],
)
def test_proxy_notices(message: str, expected: tuple[str, str] | None) -> None:
    assert proxied(message) == expected


def test_each_proxied_connection_shows_its_destination_under_its_session_number() -> None:
    """The relay's log as the tunnel passes it on (``by_session``), then as the terminal shows it."""
    time = "2026/12/06 10:00:00.000100"
    seen: list[events.SessionEvent] = []
    connections = Connections(0, seen.append, matching=False, by_session=True)
    for session, level, message in [
        (3, "N", "proxy: SOCKS5 request from AF=2 127.0.0.1:1 to web:80"),
        (3, "N", "proxy: connected to web:80 for AF=2 127.0.0.1:1"),
        (4, "E", "connecting to x.forbidden.test: denied by --deny-connect *.forbidden.test"),
    ]:
        connections.traced("p", LogLine(time, "relay", 1, level, message, session))
    connections.traced("p", Block("<", time, 2, 0, 1, "ok", b"ok", 3))
    assert render(*seen) == (
        f"#3 {time} proxy: SOCKS5 to web:80\n"
        f"#4 {time} relay error: connecting to x.forbidden.test: denied by --deny-connect "
        "*.forbidden.test\n"
        f"#3 < {time}  ← from target  length=2 from=0 to=1\n"
        "#3   ok\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["proxy", "--deny", "10.0.0.0/8,web"],
         "error: Invalid value for '--deny': \"10.0.0.0/8,web\": give one CIDR or name per "
         "--deny, without commas; see 'kubectl relay proxy --help'"),
        (["proxy", "--allow", "web:80"],
         "error: Invalid value for '--allow': \"web:80\" is neither a CIDR (10.0.0.0/8, "
         "fd00::/8, 10.1.2.3) nor a host name pattern (web.shop, *.kube-system.svc.cluster.local)"
         "; see 'kubectl relay proxy --help'"),
        (["proxy", "svc/web:80"],
         "error: Got unexpected extra argument (svc/web:80); see 'kubectl relay proxy --help'"),
        (["proxy", "--summary", "-x"],
         "error: --summary replaces the data trace: drop -v, -x and -q; "
         "see 'kubectl relay proxy --help'"),
    ],
)
def test_bad_command_lines(argv: list[str], message: str, kubeconfig: Path) -> None:
    status, out, err = run(*argv)
    assert (status, out, err) == (2, "", message + "\n")


def test_a_local_port_in_use_fails_before_the_cluster_is_asked(kubeconfig: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status, _, err = run("proxy", "--listen", str(port))
    assert status == 4
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port} (tcp): ")


def test_an_unreachable_api_server_is_a_cluster_error(kubeconfig: Path) -> None:
    status, out, err = run("proxy", "--listen", "0", "--request-timeout", "2s")
    assert status == 3
    assert out.startswith("Listening on 127.0.0.1:")
    assert err.startswith("error: cannot reach the API server at http://127.0.0.1:9: ")
