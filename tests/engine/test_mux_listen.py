"""``MUX-LISTEN``: a real relay process, a real mux peer (``muxing``) and real loopback servers.

The relay runs ``TCP-LISTEN:A,fork MUX-LISTEN:M``; the test's mux peer
connects to M and splices every stream the relay opens to a local server,
which is what ``kubectl relay expose`` does through its port-forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
from collections.abc import AsyncIterator, Callable

from kubectl_relay.engine.mux import INITIAL_WINDOW
from kubectl_relay.engine.muxing import Channel, MuxConnection, splice
from tests.conftest import scaled
from tests.support import (
    RelayProcess,
    ThreadedServer,
    echo,
    exchange,
    free_port,
    late_reply,
    log_lines,
    mux_client,
    relay_listening,
    wait_for_output,
)


@contextlib.asynccontextmanager
async def mux_peer(port: int, local_port: int | list[int]) -> AsyncIterator[MuxConnection]:
    """A mux peer on the relay's ``port`` splicing each stream to ``127.0.0.1:local_port``.

    A list of ports: each new stream goes to the last port in it at that moment.
    """
    tasks: set[asyncio.Task[str]] = set()
    ports = local_port if isinstance(local_port, list) else [local_port]

    async def serve(channel: Channel) -> str:
        try:
            local = await asyncio.open_connection("127.0.0.1", ports[-1])
        except OSError as exc:
            channel.reset(f"connect to the local port: {exc.strerror}")
            await channel.aclose()
            return str(exc)
        return await splice(channel, *local)

    def on_open(channel: Channel) -> None:
        task = asyncio.ensure_future(serve(channel))
        tasks.add(task)

    try:
        async with mux_client(port, on_open) as connection:
            yield connection
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)


def mux_relay(*options: str) -> tuple[list[str], int, int]:
    front, mux_port = free_port(), free_port()
    args = ["-d", "-d", "--trace-session-ids", *options,
            f"TCP-LISTEN:{front},fork,reuseaddr,bind=127.0.0.1", f"MUX-LISTEN:{mux_port},bind=127.0.0.1"]
    return args, front, mux_port


async def wait_connected(relay: RelayProcess) -> None:
    """Until the relay logged its mux peer (in a thread: the helper sleeps)."""
    await asyncio.to_thread(wait_for_output, relay, lambda _out, err: "mux peer" in err)


async def test_many_concurrent_streams_with_half_close_each_way() -> None:
    # -t 10: each client half-closes at once, and 30 echoes through the test's own
    # mux peer may pause longer than the default 0.5 s on a loaded machine (a
    # session ended that way before its reply came: b"" instead of the echo).
    args, front, mux_port = mux_relay("-t", "10")
    with ThreadedServer(echo) as server, relay_listening(args, front) as relay:
        async with mux_peer(mux_port, server.port):
            await wait_connected(relay)
            payloads = [bytes([i]) * (1000 + 7919 * i) for i in range(30)]
            replies = await asyncio.gather(
                *(asyncio.to_thread(exchange, front, payload) for payload in payloads)
            )
            assert replies == payloads
        relay.stop()
    notices = log_lines(relay.stderr_text, "N")
    opened = [line for line in notices if "mux stream" in line and "opened" in line]
    assert len(opened) == 30
    assert any("session 30:" in line for line in opened), opened


_RECEIVED_AFTER_EOF: list[bytes] = []


def _half_close_first(conn: socket.socket) -> None:
    """Send, shut the write side, then keep reading: the other half-close."""
    conn.sendall(b"hello")
    conn.shutdown(socket.SHUT_WR)
    received = b""
    while data := conn.recv(65536):
        received += data
    _RECEIVED_AFTER_EOF.append(received)


async def test_half_close_from_the_client_keeps_the_reply() -> None:
    args, front, mux_port = mux_relay()
    with ThreadedServer(late_reply) as server, relay_listening(args, front) as relay:
        async with mux_peer(mux_port, server.port):
            await wait_connected(relay)
            reply = await asyncio.to_thread(exchange, front, b"x" * 300_000)
    assert reply == b"got 300000"


async def test_half_close_from_the_local_server_keeps_the_request_flowing() -> None:
    # -t: socat's wait for the other direction after the first EOF (0.5 s by default).
    args, front, mux_port = mux_relay("-t", "10")
    with ThreadedServer(_half_close_first) as server, relay_listening(args, front) as relay:
        async with mux_peer(mux_port, server.port):
            await wait_connected(relay)

            def client() -> bytes:
                with socket.create_connection(("127.0.0.1", front), timeout=scaled(20)) as conn:
                    assert conn.recv(5) == b"hello"
                    assert conn.recv(1) == b""  # the server's EOF reached us
                    conn.sendall(b"after your EOF")
                    conn.shutdown(socket.SHUT_WR)
                    return conn.recv(1)

            _RECEIVED_AFTER_EOF.clear()
            assert await asyncio.to_thread(client) == b""
            for _ in range(int(scaled(10) / 0.05)):  # the server's thread records what it read
                if _RECEIVED_AFTER_EOF:
                    break
                await asyncio.sleep(0.05)
            assert _RECEIVED_AFTER_EOF == [b"after your EOF"], relay.stderr_text


def _blackhole_after(gate: threading.Event) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        gate.wait(scaled(30))  # reads nothing until the test is done
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass

    return handler


async def test_a_slow_stream_does_not_block_a_fast_one() -> None:
    """One client floods a server that does not read; another stream still gets through."""
    args, front, mux_port = mux_relay()
    gate = threading.Event()
    with (
        ThreadedServer(echo) as fast,
        ThreadedServer(_blackhole_after(gate)) as slow,
        relay_listening(args, front) as relay,
    ):
        ports = [slow.port]
        async with mux_peer(mux_port, ports):
            await wait_connected(relay)
            flooded = threading.Event()
            sent = [0]

            def flood() -> None:
                with socket.create_connection(("127.0.0.1", front), timeout=scaled(20)) as conn:
                    conn.setblocking(False)
                    block = b"z" * 65536
                    # Bounded: until the stream's window and every buffer on the way are
                    # full (no room for a second), or 64 MiB.
                    while sent[0] < 64 * 1024 * 1024:
                        try:
                            sent[0] += conn.send(block)
                        except BlockingIOError:
                            if not select.select([], [conn], [], 1.0)[1]:
                                break
                    flooded.set()
                    gate.wait(scaled(30))

            flooder = asyncio.ensure_future(asyncio.to_thread(flood))
            await asyncio.to_thread(flooded.wait, scaled(20))
            assert flooded.is_set()
            assert sent[0] > INITIAL_WINDOW  # the slow stream used its whole window
            ports.append(fast.port)  # the next stream goes to the echo server
            assert await asyncio.to_thread(exchange, front, b"fast") == b"fast"
            gate.set()
            await flooder
        relay.stop()


async def test_streams_are_reset_and_logged_when_the_mux_peer_disappears() -> None:
    args, front, mux_port = mux_relay()
    gate = threading.Event()
    with ThreadedServer(_blackhole_after(gate)) as server, relay_listening(args, front) as relay:
        conns = []
        try:
            async with mux_peer(mux_port, server.port):
                await wait_connected(relay)
                for _ in range(3):
                    conn = socket.create_connection(("127.0.0.1", front), timeout=scaled(20))
                    conn.sendall(b"pending")
                    conns.append(conn)
                await asyncio.to_thread(
                    wait_for_output, relay, lambda _o, err: err.count("opened for") == 3
                )
            # The peer is gone: every client sees its connection end without a reply.
            for conn in conns:
                assert await asyncio.to_thread(_read_until_closed_all, conn) == b""
        finally:
            gate.set()
            for conn in conns:
                conn.close()
        relay.stop()
    warnings = log_lines(relay.stderr_text, "W")
    assert any("mux peer" in line and "gone" in line and "3 stream(s) reset" in line
               for line in warnings), warnings
    assert sum("reset" in line and "mux stream" in line for line in warnings) == 3, warnings


async def test_a_connection_without_a_mux_peer_is_refused_after_the_wait() -> None:
    args, front, _ = mux_relay()
    with relay_listening(args, front) as relay:
        with socket.create_connection(("127.0.0.1", front), timeout=scaled(20)) as conn:
            conn.sendall(b"nobody home")
            # Held for the wait, then closed (a reset, as the data was never read).
            assert await asyncio.to_thread(_read_until_closed_all, conn) == b""
        relay.stop()
    assert any("no mux peer on" in line for line in log_lines(relay.stderr_text, "E"))


async def test_a_garbled_mux_peer_is_dropped_with_a_clear_line() -> None:
    args, front, mux_port = mux_relay()
    with relay_listening(args, front) as relay:
        with socket.create_connection(("127.0.0.1", mux_port), timeout=scaled(10)) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_until_closed_all(conn).startswith(b"\x00\x0a\x00")  # our HELLO, then EOF
        await asyncio.to_thread(
            wait_for_output, relay, lambda _o, err: "does not speak" in err
        )
        relay.stop()
    assert "Traceback" not in relay.stderr_text
    assert any("mux protocol error: the peer does not speak the relay's mux protocol" in line
               for line in log_lines(relay.stderr_text, "W"))


def _read_until_closed_all(conn: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            data += chunk
    return data


async def test_a_new_mux_peer_replaces_the_old_one() -> None:
    """A client that reconnects (its port-forward broke) takes over; the old streams are reset."""
    args, front, mux_port = mux_relay()
    gate = threading.Event()
    with (
        ThreadedServer(echo) as server,
        ThreadedServer(_blackhole_after(gate)) as stuck,
        relay_listening(args, front) as relay,
    ):
        try:
            async with mux_peer(mux_port, stuck.port):
                await wait_connected(relay)
                with socket.create_connection(("127.0.0.1", front), timeout=scaled(20)) as old:
                    old.sendall(b"to the old peer")
                    await asyncio.to_thread(
                        wait_for_output, relay, lambda _o, err: "opened for" in err
                    )
                    async with mux_peer(mux_port, server.port):
                        assert await asyncio.to_thread(_read_until_closed_all, old) == b""
                        assert await asyncio.to_thread(exchange, front, b"new") == b"new"
        finally:
            gate.set()
        relay.stop()
    assert any("replaced by a new mux peer" in line for line in log_lines(relay.stderr_text, "W"))
