"""UDP transports on real loopback sockets, with the real socat as a peer."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from kubectl_relay.engine.errors import OpenError
from kubectl_relay.engine.transports import udp
from kubectl_relay.engine.transports.base import Listener, OpenContext, Stream
from tests.conftest import SOCAT, requires_socat, scaled
from tests.engine.transports import read_some, spawn, wait_for_line
from tests.engine.transports.streams import address

CTX = OpenContext()


@contextlib.contextmanager
def udp_socket(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(scaled(5))
        yield sock


def port_of(thing: socket.socket | Listener) -> int:
    if isinstance(thing, socket.socket):
        return int(thing.getsockname()[1])
    return int(thing.label.rsplit(":", 1)[1])


async def recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    """One datagram from a blocking test socket, without blocking the event loop."""
    data, peer = await asyncio.to_thread(sock.recvfrom, 65535)
    return data, peer


async def accept(listener: Listener) -> Stream:
    async with asyncio.timeout(scaled(5)):
        return await listener.accept()


async def nothing_accepted(listener: Listener, wait: float = 0.3) -> bool:
    try:
        async with asyncio.timeout(wait):
            stream = await listener.accept()
    except TimeoutError:
        return True
    await stream.aclose()
    return False


@contextlib.asynccontextmanager
async def opened(stream_or_listener: Stream | Listener) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await stream_or_listener.aclose()


# --- UDP:<host>:<port> ------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_connect_keeps_datagram_boundaries(host: str) -> None:
    with udp_socket(host) as server:
        stream = await udp.connect(address("UDP", host, str(port_of(server))), CTX)
        async with opened(stream):
            assert stream.datagram
            for payload in (b"one", b"two-two", b"x" * 1400):
                await stream.write(memoryview(payload))
            got = [(await recv(server))[0] for _ in range(3)]
            assert got == [b"one", b"two-two", b"x" * 1400]
            _, client = await recv_after_send(server, stream)
            server.sendto(b"reply-a", client)
            server.sendto(b"reply-bb", client)
            assert await read_some(stream) == b"reply-a"
            assert await read_some(stream) == b"reply-bb"


async def recv_after_send(server: socket.socket, stream: Stream) -> tuple[bytes, tuple[str, int]]:
    await stream.write(memoryview(b"hello"))
    return await recv(server)


async def test_connect_udp4_options_bind_and_sourceport() -> None:
    with udp_socket() as server, udp_socket() as taken:
        source = port_of(taken)
        taken.close()  # a port that was free a moment ago
        stream = await udp.connect(
            address(
                "UDP4",
                "127.0.0.1",
                str(port_of(server)),
                bind="127.0.0.1",
                sourceport=source,
                rcvbuf=65536,
                sndbuf=65536,
            ),
            CTX,
        )
        async with opened(stream):
            _, client = await recv_after_send(server, stream)
            assert client == ("127.0.0.1", source)


async def test_connect_shutdown_sends_empty_datagram_unless_shut_none() -> None:
    with udp_socket() as server:
        stream = await udp.connect(address("UDP4", "127.0.0.1", str(port_of(server))), CTX)
        async with opened(stream):
            await stream.shutdown_write()
            assert (await recv(server))[0] == b""
        quiet = await udp.connect(
            address("UDP4", "127.0.0.1", str(port_of(server)), shut_none=True), CTX
        )
        async with opened(quiet):
            await quiet.shutdown_write()
            await quiet.write(memoryview(b"after"))
            assert (await recv(server))[0] == b"after"


async def test_connect_empty_datagram_is_eof() -> None:
    with udp_socket() as server:
        stream = await udp.connect(address("UDP4", "127.0.0.1", str(port_of(server))), CTX)
        async with opened(stream):
            _, client = await recv_after_send(server, stream)
            server.sendto(b"", client)
            assert await read_some(stream) == b""


async def test_connect_unknown_host_is_open_error() -> None:
    with pytest.raises(OpenError, match=r'getaddrinfo\("no-such-host.invalid"'):
        await udp.connect(address("UDP", "no-such-host.invalid", "53"), CTX)


async def test_connect_refused_peer_is_open_error_not_oserror() -> None:
    with udp_socket() as gone:
        port = port_of(gone)
    stream = await udp.connect(address("UDP4", "127.0.0.1", str(port)), CTX)
    async with opened(stream):
        await stream.write(memoryview(b"anyone?"))
        with pytest.raises(OpenError, match="Connection refused"):
            await read_some(stream)


# --- UDP-LISTEN -------------------------------------------------------------------


async def test_listen_fork_demultiplexes_peers() -> None:
    listener = await udp.listen(address("UDP4-LISTEN", "0", bind="127.0.0.1", fork=True), CTX)
    async with opened(listener):
        port = port_of(listener)
        with udp_socket() as a, udp_socket() as b, udp_socket() as c:
            clients = [a, b, c]
            for n, client in enumerate(clients):
                client.sendto(b"hello %d" % n, ("127.0.0.1", port))
            streams = [await accept(listener) for _ in clients]
            by_port = {int(s.env["SOCAT_PEERPORT"]): s for s in streams}
            assert sorted(by_port) == sorted(port_of(client) for client in clients)
            # Later datagrams go to the live session of their sender.
            for n, client in enumerate(clients):
                client.sendto(b"again %d" % n, ("127.0.0.1", port))
            for n, client in enumerate(clients):
                session = by_port[port_of(client)]
                assert session.datagram
                assert await read_some(session) == b"hello %d" % n
                assert await read_some(session) == b"again %d" % n
                await session.write(memoryview(b"only for %d" % n))
            for n, client in enumerate(clients):
                data, source = await recv(client)
                assert data == b"only for %d" % n
                assert source == ("127.0.0.1", port)  # replies come from the listening port
            assert await nothing_accepted(listener)
            # A closed session: the sender's next datagram starts a new one.
            await by_port[port_of(a)].aclose()
            a.sendto(b"back again", ("127.0.0.1", port))
            renewed = await accept(listener)
            assert await read_some(renewed) == b"back again"
            for stream in (*streams, renewed):
                await stream.aclose()


async def test_listen_session_env() -> None:
    listener = await udp.listen(address("UDP4-LISTEN", "0", fork=True), CTX)
    async with opened(listener):
        with udp_socket() as client:
            client.sendto(b"hi", ("127.0.0.1", port_of(listener)))
            stream = await accept(listener)
            async with opened(stream):
                assert stream.env == {
                    "SOCAT_PEERADDR": "127.0.0.1",
                    "SOCAT_PEERPORT": str(port_of(client)),
                    "SOCAT_SOCKADDR": "127.0.0.1",
                    "SOCAT_SOCKPORT": str(port_of(listener)),
                }
                assert stream.label == f"AF=2 127.0.0.1:{port_of(client)}"


async def test_listen_without_version_is_ipv4() -> None:
    """socat: "The IP version is 4 or the one specified with ... SOCAT_DEFAULT_LISTEN_IP"."""
    listener = await udp.listen(address("UDP-LISTEN", "0"), CTX)
    async with opened(listener):
        assert listener.label == f"AF=2 0.0.0.0:{port_of(listener)}"


async def test_default_listen_ip_0_takes_ipv4_and_ipv6_peers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SOCAT_DEFAULT_LISTEN_IP=0: one dual-stack IPv6 socket takes IPv4 peers too."""
    monkeypatch.setenv("SOCAT_DEFAULT_LISTEN_IP", "0")
    listener = await udp.listen(address("UDP-LISTEN", "0", fork=True), CTX)
    async with opened(listener):
        assert listener.label.startswith("AF=10 ")
        with udp_socket("127.0.0.1") as v4, udp_socket("::1") as v6:
            v4.sendto(b"four", ("127.0.0.1", port_of(listener)))
            first = await accept(listener)
            v6.sendto(b"six", ("::1", port_of(listener)))
            second = await accept(listener)
            for stream, client, word in ((first, v4, b"four"), (second, v6, b"six")):
                assert await read_some(stream) == word
                await stream.write(memoryview(word.upper()))
                assert (await recv(client))[0] == word.upper()
                await stream.aclose()
            assert first.env["SOCAT_PEERADDR"] == "[0000:0000:0000:0000:0000:ffff:7f00:0001]"


async def test_listen_ipv6_env_is_written_like_socat() -> None:
    listener = await udp.listen(address("UDP6-LISTEN", "0", bind="[::1]"), CTX)
    async with opened(listener):
        with udp_socket("::1") as client:
            client.sendto(b"hi", ("::1", port_of(listener)))
            stream = await accept(listener)
            async with opened(stream):
                assert stream.env["SOCAT_PEERADDR"] == "[0000:0000:0000:0000:0000:0000:0000:0001]"
                await stream.write(memoryview(b"v6 reply"))
                assert (await recv(client))[0] == b"v6 reply"


async def test_listen_queues_datagrams_of_new_peers_until_accepted() -> None:
    listener = await udp.listen(address("UDP4-LISTEN", "0", bind="127.0.0.1", fork=True), CTX)
    async with opened(listener):
        with udp_socket() as a, udp_socket() as b:
            for n in range(5):
                a.sendto(b"a%d" % n, ("127.0.0.1", port_of(listener)))
                b.sendto(b"b%d" % n, ("127.0.0.1", port_of(listener)))
            await asyncio.sleep(0.1)  # nobody calls accept() meanwhile (max-children)
            first, second = await accept(listener), await accept(listener)
            for stream in (first, second):
                name = b"a" if stream.env["SOCAT_PEERPORT"] == str(port_of(a)) else b"b"
                assert [await read_some(stream) for _ in range(5)] == [
                    name + b"%d" % n for n in range(5)
                ]
                await stream.aclose()


async def test_listen_without_fork_talks_only_to_first_peer_and_outlives_listener() -> None:
    listener = await udp.listen(address("UDP4-LISTEN", "0", bind="127.0.0.1"), CTX)
    port = port_of(listener)
    with udp_socket() as first, udp_socket() as other:
        first.sendto(b"first", ("127.0.0.1", port))
        stream = await accept(listener)
        await listener.aclose()  # as the session does without fork
        async with opened(stream):
            other.sendto(b"intruder", ("127.0.0.1", port))
            first.sendto(b"second", ("127.0.0.1", port))
            assert await read_some(stream) == b"first"
            assert await read_some(stream) == b"second"
            await stream.write(memoryview(b"answer"))
            assert (await recv(first))[0] == b"answer"
            await stream.shutdown_write()  # socat 1.8: an empty datagram as EOF
            assert (await recv(first))[0] == b""
            first.sendto(b"", ("127.0.0.1", port))
            assert await read_some(stream) == b""  # the peer's empty datagram is its EOF
    # The socket is gone once both the listener and its session are closed.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))


async def test_listen_read_can_be_cancelled_and_resumed() -> None:
    listener = await udp.listen(address("UDP4-LISTEN", "0", bind="127.0.0.1", fork=True), CTX)
    async with opened(listener):
        with udp_socket() as client:
            client.sendto(b"one", ("127.0.0.1", port_of(listener)))
            stream = await accept(listener)
            async with opened(stream):
                assert await read_some(stream) == b"one"
                reader = asyncio.ensure_future(read_some(stream))
                await asyncio.sleep(0.05)
                reader.cancel()  # what the transfer loop's -T does
                with pytest.raises(asyncio.CancelledError):
                    await reader
                client.sendto(b"two", ("127.0.0.1", port_of(listener)))
                assert await read_some(stream) == b"two"
                pending = asyncio.ensure_future(read_some(stream))
                await asyncio.sleep(0.05)
                await stream.aclose()  # closing wakes a waiting reader with EOF
                assert await pending == b""


async def test_listen_range_refuses_other_senders(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kubectl_relay.engine")
    networks = (ipaddress.ip_network("127.0.0.2/32"),)
    listener = await udp.listen(address("UDP4-LISTEN", "0", fork=True, range=networks), CTX)
    async with opened(listener):
        with udp_socket("127.0.0.1") as outsider, udp_socket("127.0.0.2") as insider:
            outsider.sendto(b"let me in", ("127.0.0.1", port_of(listener)))
            assert await nothing_accepted(listener)
            assert (
                f"refusing connection from AF=2 127.0.0.1:{port_of(outsider)} due to range option"
                in caplog.messages
            )
            assert f"forbidding UDP connection from AF=2 127.0.0.1:{port_of(outsider)}" in (
                caplog.messages
            )
            insider.sendto(b"friend", ("127.0.0.1", port_of(listener)))
            stream = await accept(listener)
            async with opened(stream):
                assert await read_some(stream) == b"friend"


async def test_listen_sourceport_refuses_other_ports(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kubectl_relay.engine")
    with udp_socket() as allowed, udp_socket() as other:
        listener = await udp.listen(
            address("UDP4-LISTEN", "0", bind="127.0.0.1", fork=True, sourceport=port_of(allowed)),
            CTX,
        )
        async with opened(listener):
            other.sendto(b"x", ("127.0.0.1", port_of(listener)))
            assert await nothing_accepted(listener)
            assert any("due to wrong sourceport" in m for m in caplog.messages)
            allowed.sendto(b"y", ("127.0.0.1", port_of(listener)))
            stream = await accept(listener)
            async with opened(stream):
                assert await read_some(stream) == b"y"


async def test_listen_port_in_use_is_open_error() -> None:
    with udp_socket() as taken, pytest.raises(OpenError, match="Address already in use"):
        await udp.listen(address("UDP4-LISTEN", str(port_of(taken)), bind="127.0.0.1"), CTX)


# --- UDP-RECVFROM and UDP-SENDTO ---------------------------------------------------


async def test_recvfrom_one_packet_per_session() -> None:
    listener = await udp.recvfrom(address("UDP4-RECVFROM", "0", bind="127.0.0.1", fork=True), CTX)
    async with opened(listener):
        with udp_socket() as client:
            client.sendto(b"", ("127.0.0.1", port_of(listener)))  # ignored: empty
            client.sendto(b"first", ("127.0.0.1", port_of(listener)))
            client.sendto(b"second", ("127.0.0.1", port_of(listener)))
            one, two = await accept(listener), await accept(listener)
            assert [await read_some(one), await read_some(one)] == [b"first", b""]
            assert [await read_some(two), await read_some(two)] == [b"second", b""]
            assert one.env["SOCAT_PEERPORT"] == str(port_of(client))
            await one.write(memoryview(b"answer 1a"))
            await one.write(memoryview(b"answer 1b"))
            await two.write(memoryview(b"answer 2"))
            got = [await recv(client) for _ in range(3)]
            assert [data for data, _ in got] == [b"answer 1a", b"answer 1b", b"answer 2"]
            assert {source for _, source in got} == {("127.0.0.1", port_of(listener))}
            await one.aclose()
            await two.aclose()


async def test_sendto_hears_only_its_peer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kubectl_relay.engine")
    with udp_socket() as server, udp_socket() as stranger:
        stream = await udp.sendto(address("UDP4-SENDTO", "127.0.0.1", str(port_of(server))), CTX)
        async with opened(stream):
            _, client = await recv_after_send(server, stream)
            stranger.sendto(b"spoof", client)
            server.sendto(b"", client)  # empty: ignored without null-eof
            server.sendto(b"genuine", client)
            assert await read_some(stream) == b"genuine"
            assert "recvfrom(): wrong peer address, ignoring packet" in caplog.messages
            await stream.shutdown_write()  # no implicit empty packet for SENDTO
            await stream.write(memoryview(b"still open"))
            assert (await recv(server))[0] == b"still open"


# --- against the real socat --------------------------------------------------------


@contextlib.asynccontextmanager
async def socat(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    assert SOCAT is not None
    async with spawn(SOCAT, *args) as proc:
        yield proc


@requires_socat
@pytest.mark.socat
async def test_connect_through_real_socat_udp_listen() -> None:
    """Our UDP client -> socat UDP-LISTEN,fork -> a UDP echo: boundaries survive both ways."""
    with udp_socket() as echo, udp_socket() as probe:
        port = port_of(probe)
        probe.close()
        spec = f"UDP4-LISTEN:{port},bind=127.0.0.1,fork"
        async with socat("-d", "-d", spec, f"UDP4:127.0.0.1:{port_of(echo)}") as proc:
            await wait_for_line(proc.stderr, "listening on")
            stream = await udp.connect(address("UDP4", "127.0.0.1", str(port)), CTX)
            async with opened(stream):
                # One datagram first: socat's parent forks its per-peer child on
                # it, and packets racing that fork may reach another child.
                for batch in ((b"a",), (b"bb", b"c" * 3000)):
                    for payload in batch:
                        await stream.write(memoryview(payload))
                    for payload in batch:
                        data, relay = await recv(echo)
                        assert data == payload
                        echo.sendto(data.upper(), relay)
                    for payload in batch:
                        assert await read_some(stream) == payload.upper()


@requires_socat
@pytest.mark.socat
async def test_listen_serves_several_real_socat_clients() -> None:
    listener = await udp.listen(address("UDP4-LISTEN", "0", bind="127.0.0.1", fork=True), CTX)
    async with opened(listener):
        target = f"UDP4:127.0.0.1:{port_of(listener)}"
        async with socat("-", target) as one, socat("-", target) as two:
            for proc, name in ((one, b"one"), (two, b"two")):
                assert proc.stdin is not None
                proc.stdin.write(b"hello from " + name + b"\n")
                await proc.stdin.drain()
            sessions = [await accept(listener), await accept(listener)]
            for session in sessions:
                greeting = await read_some(session)
                await session.write(memoryview(b"you said: " + greeting))
            for proc, name in ((one, b"one"), (two, b"two")):
                assert proc.stdout is not None
                async with asyncio.timeout(scaled(5)):
                    line = await proc.stdout.readline()
                assert line == b"you said: hello from " + name + b"\n"
            for session in sessions:
                await session.aclose()


@requires_socat
@pytest.mark.socat
async def test_recvfrom_answers_real_socat_sendto() -> None:
    listener = await udp.recvfrom(address("UDP4-RECVFROM", "0", bind="127.0.0.1"), CTX)
    target = f"UDP4-SENDTO:127.0.0.1:{port_of(listener)}"
    async with opened(listener), socat("-", target) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"ping\n")
        await proc.stdin.drain()
        stream = await accept(listener)
        async with opened(stream):
            assert await read_some(stream) == b"ping\n"
            await stream.write(memoryview(b"pong\n"))
            async with asyncio.timeout(scaled(5)):
                assert await proc.stdout.readline() == b"pong\n"
