"""TCP connect and listen on real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import socket
import subprocess
import time

import pytest

from kubectl_relay.engine.addresses import Address
from kubectl_relay.engine.errors import OpenError
from kubectl_relay.engine.log import NOTICE
from kubectl_relay.engine.options import OptionValue
from kubectl_relay.engine.transports import tcp
from kubectl_relay.engine.transports.base import Listener, OpenContext, Stream
from kubectl_relay.engine.transports.sockets import SocketStream, unsent_bytes
from tests.conftest import SOCAT, requires_socat, scaled
from tests.engine.transports.streams import address, read_all, send_all, socat_echoes_through

LOGGER = "kubectl_relay.engine"


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on (bound a moment ago, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def port_of(listener: Listener) -> int:
    assert isinstance(listener, tcp.SocketListener)
    assert isinstance(listener.sockname, tuple)
    return int(listener.sockname[1])


def socket_of(listener: Listener) -> socket.socket:
    assert isinstance(listener, tcp.SocketListener)
    return listener.sock


async def listen_and_connect(
    listen: Address, connect_host: str, **connect_options: OptionValue
) -> tuple[Listener, Stream, Stream]:
    listener = await tcp.listen(listen, OpenContext())
    port = port_of(listener)
    accepting = asyncio.ensure_future(listener.accept())
    try:
        client = await tcp.connect(
            address("TCP", connect_host, str(port), **connect_options), OpenContext()
        )
        server = await accepting
    except BaseException:
        accepting.cancel()
        await listener.aclose()
        raise
    return listener, client, server


async def test_both_directions_byte_for_byte_with_half_close() -> None:
    async with asyncio.timeout(scaled(5)):
        listener, client, server = await listen_and_connect(
            address("TCP4-LISTEN", "0", bind="127.0.0.1"), "127.0.0.1"
        )
        try:
            upstream = os.urandom(300_000)
            downstream = os.urandom(200_000)
            # The client half-closes first; the server still answers after
            # seeing that EOF, and the client receives the whole answer.
            received_by_server = await asyncio.gather(send_all(client, upstream), read_all(server))
            assert received_by_server[1] == upstream
            received_by_client = await asyncio.gather(
                send_all(server, downstream), read_all(client)
            )
            assert received_by_client[1] == downstream
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()


async def test_accepted_stream_carries_socat_environment() -> None:
    async with asyncio.timeout(scaled(5)):
        listener, client, server = await listen_and_connect(
            address("TCP-LISTEN", "0", bind="127.0.0.1"), "127.0.0.1"
        )
        try:
            assert isinstance(client, SocketStream)
            client_port = client.sock.getsockname()[1]
            port = port_of(listener)
            assert server.env == {
                "SOCAT_PEERADDR": "127.0.0.1",
                "SOCAT_PEERPORT": str(client_port),
                "SOCAT_SOCKADDR": "127.0.0.1",
                "SOCAT_SOCKPORT": str(port),
            }
            # socat sets these for listening addresses only.
            assert client.env == {}
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()


async def test_log_lines_have_socat_wording(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(NOTICE, logger=LOGGER)
    async with asyncio.timeout(scaled(5)):
        listener, client, server = await listen_and_connect(
            address("TCP4-LISTEN", "0", bind="127.0.0.1"), "127.0.0.1"
        )
        await client.aclose()
        await server.aclose()
        await listener.aclose()
    assert isinstance(client, SocketStream)
    port = port_of(listener)
    notices = [r.getMessage() for r in caplog.records if r.levelno == NOTICE]
    listening = f"listening on AF=2 127.0.0.1:{port}"
    opening = f"opening connection to AF=2 127.0.0.1:{port}"
    assert listening in notices
    assert opening in notices
    connected = [m for m in notices if m.startswith("successfully connected from local address")]
    assert re.fullmatch(
        r"successfully connected from local address AF=2 127\.0\.0\.1:\d+", connected[0]
    )
    client_port = connected[0].rsplit(":", 1)[1]
    assert (
        f"accepting connection from AF=2 127.0.0.1:{client_port} on AF=2 127.0.0.1:{port}"
        in notices
    )


@needs_ipv6
async def test_ipv6_loopback() -> None:
    async with asyncio.timeout(scaled(5)):
        listener, client, server = await listen_and_connect(
            address("TCP6-LISTEN", "0", bind="[::1]"), "[::1]"
        )
        try:
            assert server.env["SOCAT_PEERADDR"] == "[0000:0000:0000:0000:0000:0000:0000:0001]"
            assert server.env["SOCAT_SOCKADDR"] == "[0000:0000:0000:0000:0000:0000:0000:0001]"
            data = os.urandom(50_000)
            _, got = await asyncio.gather(send_all(client, data), read_all(server))
            assert got == data
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()


async def test_plain_tcp_listen_is_ipv4_by_default() -> None:
    """socat: "The IP version is 4 or the one specified with ... pf, -4, -6 or
    SOCAT_DEFAULT_LISTEN_IP"."""
    async with asyncio.timeout(scaled(5)):
        listener = await tcp.listen(address("TCP-LISTEN", "0"), OpenContext())
        try:
            assert socket_of(listener).family == socket.AF_INET
            assert listener.label == f"AF=2 0.0.0.0:{port_of(listener)}"
        finally:
            await listener.aclose()


@needs_ipv6
async def test_default_listen_ip_0_takes_ipv4_and_ipv6_peers(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SOCAT_DEFAULT_LISTEN_IP=0: one IPv6 [::] socket, dual-stack."""
    monkeypatch.setenv("SOCAT_DEFAULT_LISTEN_IP", "0")
    caplog.set_level(NOTICE, logger=LOGGER)
    async with asyncio.timeout(scaled(5)):
        listener = await tcp.listen(address("TCP-LISTEN", "0"), OpenContext())
        try:
            port = port_of(listener)
            for host, peer in (
                ("127.0.0.1", "[0000:0000:0000:0000:0000:ffff:7f00:0001]"),
                ("::1", "[0000:0000:0000:0000:0000:0000:0000:0001]"),
            ):
                accepting = asyncio.ensure_future(listener.accept())
                client = await tcp.connect(address("TCP", host, str(port)), OpenContext())
                server = await accepting
                assert server.env["SOCAT_PEERADDR"] == peer
                await client.aclose()
                await server.aclose()
        finally:
            await listener.aclose()
    assert f"listening on AF=10 [0000:0000:0000:0000:0000:0000:0000:0000]:{port}" in caplog.messages


async def test_minus_4_makes_plain_tcp_listen_ipv4() -> None:
    async with asyncio.timeout(scaled(5)):
        listener = await tcp.listen(address("TCP-LISTEN", "0"), OpenContext(family=socket.AF_INET))
        try:
            assert socket_of(listener).family == socket.AF_INET
        finally:
            await listener.aclose()


async def test_range_refuses_outsiders_and_keeps_listening(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    allowed = (ipaddress.ip_network("127.0.0.2/32"),)
    async with asyncio.timeout(scaled(5)):
        listener = await tcp.listen(
            address("TCP4-LISTEN", "0", bind="127.0.0.1", range=allowed), OpenContext()
        )
        port = port_of(listener)
        accepting = asyncio.ensure_future(listener.accept())
        try:
            outsider = await tcp.connect(address("TCP", "127.0.0.1", str(port)), OpenContext())
            # The refused peer is closed; the listener goes on waiting.
            assert await read_all(outsider) == b""
            assert not accepting.done()
            insider = await tcp.connect(
                address("TCP", "127.0.0.1", str(port), bind="127.0.0.2"), OpenContext()
            )
            server = await accepting
            assert server.env["SOCAT_PEERADDR"] == "127.0.0.2"
            await asyncio.gather(send_all(insider, b"ok"), read_all(server))
            for stream in (outsider, insider, server):
                await stream.aclose()
        finally:
            accepting.cancel()
            await listener.aclose()
    refusals = [r for r in caplog.records if "refusing connection from" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.WARNING
    assert re.fullmatch(
        r"refusing connection from AF=2 127\.0\.0\.1:\d+ due to range option",
        refusals[0].getMessage(),
    )
    assert any(
        "permitting connection from AF=2 127.0.0.2:" in m and m.endswith("due to range option")
        for m in caplog.messages
    )


async def test_sourceport_admits_only_that_port(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    wanted = closed_port()
    async with asyncio.timeout(scaled(5)):
        listener = await tcp.listen(
            address("TCP4-LISTEN", "0", bind="127.0.0.1", sourceport=wanted), OpenContext()
        )
        port = port_of(listener)
        accepting = asyncio.ensure_future(listener.accept())
        try:
            stranger = await tcp.connect(address("TCP", "127.0.0.1", str(port)), OpenContext())
            assert await read_all(stranger) == b""
            friend = await tcp.connect(
                address("TCP", "127.0.0.1", str(port), sourceport=wanted), OpenContext()
            )
            server = await accepting
            assert server.env["SOCAT_PEERPORT"] == str(wanted)
            for stream in (stranger, friend, server):
                await stream.aclose()
        finally:
            accepting.cancel()
            await listener.aclose()
    assert any(
        m.endswith("due to wrong sourceport") and m.startswith("refusing connection from AF=2")
        for m in caplog.messages
    )


async def test_bind_failure_is_open_error_in_socat_words() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OpenError) as caught:
            await tcp.listen(address("TCP4-LISTEN", str(port), bind="127.0.0.1"), OpenContext())
    assert re.fullmatch(
        rf"bind\(\d+, \{{AF=2 127\.0\.0\.1:{port}\}}, 16\): Address already in use",
        caught.value.reason,
    )


async def test_connection_refused_in_socat_words() -> None:
    port = closed_port()
    with pytest.raises(OpenError) as caught:
        await tcp.connect(address("TCP", "127.0.0.1", str(port)), OpenContext())
    assert re.fullmatch(
        rf"connect\(\d+, AF=2 127\.0\.0\.1:{port}, 16\): Connection refused", caught.value.reason
    )


async def test_connect_timeout_bounds_the_connect() -> None:
    # A listener whose accept queue is full drops further SYNs, so a connect
    # to it stays pending: a local stand-in for an unreachable host.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)):
            async with asyncio.timeout(scaled(5)):
                with pytest.raises(OpenError) as caught:
                    await tcp.connect(
                        address("TCP", "127.0.0.1", str(port), connect_timeout=0.2),
                        OpenContext(),
                    )
    assert caught.value.reason == f"connecting to AF=2 127.0.0.1:{port}: Connection timed out"


async def test_client_tries_every_resolved_address(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    dead = closed_port()
    with socket.socket() as alive:
        alive.bind(("127.0.0.1", 0))
        alive.listen()
        port = alive.getsockname()[1]

        async def two_addresses(*args: object) -> list[tuple[int, tuple[object, ...]]]:
            return [(socket.AF_INET, ("127.0.0.1", dead)), (socket.AF_INET, ("127.0.0.1", port))]

        monkeypatch.setattr(tcp, "resolve", two_addresses)
        async with asyncio.timeout(scaled(5)):
            stream = await tcp.connect(address("TCP", "somewhere", "80"), OpenContext())
        await stream.aclose()
    assert f"opening connection to AF=2 127.0.0.1:{dead}" in caplog.messages
    assert f"opening connection to AF=2 127.0.0.1:{port}" in caplog.messages
    assert any(
        r.levelno == logging.INFO and r.getMessage().endswith("Connection refused")
        for r in caplog.records
    )


async def test_resolver_failures_in_socat_words() -> None:
    with pytest.raises(OpenError) as caught:
        await tcp.connect(address("TCP", "127.0.0.1", "no-such-service"), OpenContext())
    assert caught.value.reason.startswith('getaddrinfo("127.0.0.1", "no-such-service", {0,0,1,6}')
    with pytest.raises(OpenError) as caught:
        await tcp.connect(address("TCP6", "127.0.0.1", "80"), OpenContext())
    assert caught.value.reason.startswith('getaddrinfo("127.0.0.1", "80", {0,10,1,6}, {}): ')


async def test_socket_options_reach_both_ends() -> None:
    async with asyncio.timeout(scaled(5)):
        listener, client, server = await listen_and_connect(
            address("TCP4-LISTEN", "0", bind="127.0.0.1", nodelay=True, keepalive=True),
            "127.0.0.1",
            nodelay=True,
            keepalive=True,
            keepidle=30,
            keepintvl=7,
            keepcnt=4,
            sndbuf=65536,
        )
        try:
            assert isinstance(client, SocketStream)
            assert isinstance(server, SocketStream)
            for stream in (client, server):
                assert stream.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                assert stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
            assert client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
            # Linux doubles the requested size for its bookkeeping.
            assert client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 65536
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()


async def test_reuseaddr_is_on_for_listeners_unless_turned_off() -> None:
    on = await tcp.listen(address("TCP4-LISTEN", "0", bind="127.0.0.1"), OpenContext())
    off = await tcp.listen(
        address("TCP4-LISTEN", "0", bind="127.0.0.1", reuseaddr=False), OpenContext()
    )
    try:
        assert socket_of(on).getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert socket_of(off).getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
    finally:
        await on.aclose()
        await off.aclose()
    assert 5 < tcp.DEFAULT_BACKLOG <= socket.SOMAXCONN


async def test_accept_timeout_ends_the_wait() -> None:
    listener = await tcp.listen(
        address("TCP4-LISTEN", "0", bind="127.0.0.1", accept_timeout=0.1), OpenContext()
    )
    try:
        async with asyncio.timeout(scaled(5)):
            with pytest.raises(tcp.AcceptTimeout) as caught:
                await listener.accept()
        assert caught.value.reason == "accept: Connection timed out"
    finally:
        await listener.aclose()


@requires_socat
async def test_real_socat_as_client_and_server() -> None:
    assert SOCAT is not None
    data = os.urandom(100_000)
    async with asyncio.timeout(scaled(10)):
        listener = await tcp.listen(address("TCP4-LISTEN", "0", bind="127.0.0.1"), OpenContext())
        port = port_of(listener)
        # socat sends our data back to us (EXEC:cat echoes it).
        await socat_echoes_through(listener, SOCAT, f"TCP:127.0.0.1:{port}", data)

        port = closed_port()
        serving = await asyncio.create_subprocess_exec(
            SOCAT,
            f"TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr",
            "EXEC:cat",
            stdin=subprocess.DEVNULL,
        )
        try:
            stream = await _connect_when_listening(port)
            _, echoed = await asyncio.gather(send_all(stream, data), read_all(stream))
            assert echoed == data
            await stream.aclose()
            assert await serving.wait() == 0
        finally:
            if serving.returncode is None:
                serving.kill()
                await serving.wait()


async def _connect_when_listening(port: int) -> Stream:
    while True:
        try:
            return await tcp.connect(address("TCP", "127.0.0.1", str(port)), OpenContext())
        except OpenError:
            await asyncio.sleep(0.02)


async def test_lowport_listener_refuses_high_ports(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with asyncio.timeout(scaled(5)):
        listener = await tcp.listen(
            address("TCP4-LISTEN", "0", bind="127.0.0.1", lowport=True), OpenContext()
        )
        port = port_of(listener)
        accepting = asyncio.ensure_future(listener.accept())
        try:
            high = await tcp.connect(address("TCP", "127.0.0.1", str(port)), OpenContext())
            assert await read_all(high) == b""
            await high.aclose()
            if os.geteuid() == 0:  # binding below 1024 needs root
                low = await tcp.connect(
                    address("TCP", "127.0.0.1", str(port), lowport=True), OpenContext()
                )
                server = await accepting
                assert 640 <= int(server.env["SOCAT_PEERPORT"]) < 1024
                await low.aclose()
                await server.aclose()
        finally:
            accepting.cancel()
            await listener.aclose()
    assert any(m.endswith("due to lowport option") for m in caplog.messages)


async def test_tos_and_ttl() -> None:
    async with asyncio.timeout(scaled(5)):
        listener, client, server = await listen_and_connect(
            address("TCP4-LISTEN", "0", bind="127.0.0.1"), "127.0.0.1", tos=0x10, ttl=7
        )
        try:
            assert isinstance(client, SocketStream)
            assert client.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0x10
            assert client.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 7
        finally:
            await client.aclose()
            await server.aclose()
            await listener.aclose()


def test_unsent_bytes_counts_data_not_a_fin_waiting_for_its_ack() -> None:
    # Linux delays the ACK of a FIN (the receiver enters its delayed-ACK mode): right after a
    # shutdown, SIOCOUTQ is 1 for the FIN's sequence number, with no byte of data unsent.
    fin_waiting = 0
    for _ in range(20):
        with (
            socket.create_server(("127.0.0.1", 0)) as listener,
            socket.create_connection(listener.getsockname()) as client,
            listener.accept()[0] as server,
        ):
            client.sendall(b"acknowledged")
            assert server.recv(64) == b"acknowledged"
            client.shutdown(socket.SHUT_WR)
            state = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            unsent = unsent_bytes(client)
            if state == 4:  # FIN_WAIT1: our FIN not acknowledged yet
                fin_waiting += 1
                assert unsent == 0
    assert fin_waiting, "every FIN was acknowledged before the look: nothing was tested"


def test_unsent_bytes_counts_what_a_full_peer_has_not_taken() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as client,
        listener.accept()[0] as server,
    ):
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            for _ in range(1024):  # the server reads nothing: its window closes, our buffer fills
                client.send(b"x" * 65536)
        assert unsent_bytes(client) > 0
        server.setblocking(False)
        deadline = time.monotonic() + scaled(5)
        while unsent_bytes(client) and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                server.recv(1 << 20)  # everything, until the client's kernel holds nothing
        assert unsent_bytes(client) == 0
