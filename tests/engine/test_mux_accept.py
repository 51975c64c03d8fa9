"""``MUX-ACCEPT``: a real relay process, a real mux peer (``muxing``) opening streams, real servers.

The relay runs ``MUX-ACCEPT:M,fork TCP:127.0.0.1:S``, the relay pod of a
``kubectl relay tcp`` tunnel; the test is the plugin's side: one mux
connection to M, a stream per connection, each relayed to the server S.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.conftest import scaled
from tests.support import (
    RelayProcess,
    ThreadedServer,
    echo,
    free_port,
    late_reply,
    log_lines,
    mux_client,
    mux_exchange,
    read_stream,
    wait_for_output,
)


def accept_relay(target: int, *options: str, address_options: str = "") -> tuple[list[str], int]:
    mux_port = free_port()
    args = ["-d", "-d", "--trace-session-ids", *options,
            f"MUX-ACCEPT:{mux_port},fork,reuseaddr,bind=127.0.0.1{address_options}",
            f"TCP:127.0.0.1:{target}"]
    return args, mux_port


async def wait_log(relay: RelayProcess, text: str, count: int = 1) -> None:
    """Until ``text`` is ``count`` times in the relay's log (in a thread: the helper sleeps)."""
    await asyncio.to_thread(wait_for_output, relay, lambda _out, err: err.count(text) >= count)


async def test_every_stream_is_a_session_with_its_half_close() -> None:
    with ThreadedServer(echo) as server:
        # -t: after a stream's END, the reply of 30 at once may take longer than socat's 0.5 s.
        args, mux_port = accept_relay(server.port, "-t", "10")
        with RelayProcess(args) as relay:
            await wait_log(relay, "listening on")
            async with mux_client(mux_port) as connection:
                payloads = [bytes([i]) * (1000 + 7919 * i) for i in range(30)]
                replies = await asyncio.gather(*(
                    mux_exchange(connection, payload, f"127.0.0.1:{5000 + i}")
                    for i, payload in enumerate(payloads)
                ))
                assert replies == payloads
            relay.stop()
    notices = log_lines(relay.stderr_text, "N")
    accepted = [line for line in notices if "accepting connection from 127.0.0.1:50" in line]
    assert len(accepted) == 30, notices
    assert "Traceback" not in relay.stderr_text


async def test_the_reply_after_the_clients_half_close_comes_back() -> None:
    with ThreadedServer(late_reply) as server:
        args, mux_port = accept_relay(server.port, "-t", "10")
        with RelayProcess(args) as relay:
            await wait_log(relay, "listening on")
            async with mux_client(mux_port) as connection:
                # More than a stream's window (256 KiB): credit flows while the server reads.
                assert await mux_exchange(connection, b"x" * 1_000_000) == b"got 1000000"
            relay.stop()


async def test_a_refused_target_resets_the_stream_and_the_next_one_works() -> None:
    closed = free_port()
    with ThreadedServer(echo) as server:
        args, mux_port = accept_relay(server.port)
        refused_args, refused_port = accept_relay(closed)
        with RelayProcess(refused_args) as relay:
            await wait_log(relay, "listening on")
            async with mux_client(refused_port) as connection:
                for _ in range(2):  # the mux connection outlives a failed session
                    with pytest.raises(ConnectionResetError):
                        await mux_exchange(connection, b"nobody home", "127.0.0.1:1")
            relay.stop()
        assert any("Connection refused" in line for line in log_lines(relay.stderr_text, "E"))
        with RelayProcess(args) as relay:
            await wait_log(relay, "listening on")
            async with mux_client(mux_port) as connection:
                assert await mux_exchange(connection, b"still here") == b"still here"
            relay.stop()


async def test_a_new_mux_peer_replaces_the_old_one_whose_streams_are_reset() -> None:
    """The plugin reconnecting after its port-forward broke takes over; old streams end."""
    with ThreadedServer(echo) as server:
        args, mux_port = accept_relay(server.port)
        with RelayProcess(args) as relay:
            await wait_log(relay, "listening on")
            async with mux_client(mux_port) as old:
                pending = await old.open("127.0.0.1:1111")
                await pending.write(b"half a request")
                await wait_log(relay, "accepting connection from 127.0.0.1:1111")
                async with mux_client(mux_port) as new:
                    with pytest.raises(ConnectionResetError):
                        await read_stream(pending)
                    await pending.aclose()
                    assert await mux_exchange(new, b"on the new peer") == b"on the new peer"
            relay.stop()
    warnings = log_lines(relay.stderr_text, "W")
    assert any("replaced by a new mux peer" in line for line in warnings), warnings


async def test_accept_timeout_counts_between_streams_and_ends_the_relay() -> None:
    with ThreadedServer(echo) as server:
        args, mux_port = accept_relay(server.port, address_options=",accept-timeout=1")
        with RelayProcess(args) as relay:
            await wait_log(relay, "listening on")
            async with mux_client(mux_port) as connection:
                assert await mux_exchange(connection, b"one") == b"one"
                # No stream for a second: the relay stops accepting and exits as socat does.
                assert await asyncio.to_thread(relay.wait, scaled(20)) == 0
    assert "accept: Connection timed out" in "\n".join(log_lines(relay.stderr_text, "W"))
    assert "Traceback" not in relay.stderr_text


async def test_quiet_accepts_say_listening_once_and_no_stream_accepted() -> None:
    """A quiet ``kubectl relay`` tunnel's relay pod: one line at start, none per stream."""
    with ThreadedServer(echo) as server:
        args, mux_port = accept_relay(server.port, "--quiet-accepts", "--quiet-sessions")
        with RelayProcess(args) as relay:
            await wait_log(relay, "listening on")
            async with mux_client(mux_port) as connection:
                for n in range(3):
                    assert await mux_exchange(connection, b"ping %d" % n, "127.0.0.1:5000") == (
                        b"ping %d" % n
                    )
            relay.stop()
    notices = [line for line in log_lines(relay.stderr_text, "N")
               if not line.startswith(("exiting", "socat_signal"))]
    # One notice for the mux peer (a port-forward), none for its streams.
    assert len(notices) == 2, relay.stderr_text
    assert notices[0] == f"listening on AF=2 127.0.0.1:{mux_port}", relay.stderr_text
    assert re.fullmatch(r"mux peer AF=2 127\.0\.0\.1:\d+ connected", notices[1]), notices
