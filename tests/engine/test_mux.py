"""The mux protocol without I/O: two ``MuxProtocol`` ends talking, and hostile peers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys

import pytest

from kubectl_relay.engine import mux
from kubectl_relay.engine.mux import (
    CREDIT_SHARE,
    INITIAL_WINDOW,
    MAX_DATA,
    Credited,
    Data,
    Ended,
    Kind,
    MuxError,
    MuxProtocol,
    Opened,
    Pong,
    Reset,
)
from kubectl_relay.engine.muxing import MuxConnection, StreamsCarrier
from kubectl_relay.engine.transports.mux import SocketCarrier
from kubectl_relay.engine.transports.sockets import SocketStream
from tests.conftest import scaled

HELLO = b"\x00\x0a\x00\x00\x00\x00\x00RMUX\x01"


def message(kind: Kind, stream: int, body: bytes = b"") -> bytes:
    """One message on the wire, written out by hand (not with the module's encoder)."""
    payload = bytes((kind,)) + stream.to_bytes(4, "big") + body
    return len(payload).to_bytes(2, "big") + payload


def pair() -> tuple[MuxProtocol, MuxProtocol]:
    """A listening end (the relay pod) and a connecting end (the plugin), HELLOs exchanged."""
    pod, plugin = MuxProtocol(listener=True), MuxProtocol(listener=False)
    assert plugin.receive_data(pod.data_to_send()) == []
    assert pod.receive_data(plugin.data_to_send()) == []
    return pod, plugin


def test_hello_is_the_first_message_both_ways() -> None:
    assert MuxProtocol(listener=True).data_to_send() == HELLO
    assert MuxProtocol(listener=False).data_to_send() == HELLO


def test_a_stream_opens_carries_data_half_closes_each_way_and_is_forgotten() -> None:
    pod, plugin = pair()
    stream = pod.open_stream("10.0.0.7:4242")
    assert stream == 1
    assert pod.send_data(stream, b"request") == 7
    pod.send_end(stream)
    assert plugin.receive_data(pod.data_to_send()) == [
        Opened(1, "10.0.0.7:4242"),
        Data(1, b"request"),
        Ended(1),
    ]
    # The other direction still flows after the END.
    assert plugin.send_data(1, b"reply") == 5
    plugin.send_end(1)
    assert pod.receive_data(plugin.data_to_send()) == [Data(1, b"reply"), Ended(1)]
    assert list(pod.streams()) == []
    assert list(plugin.streams()) == []


def test_stream_ids_are_odd_from_the_listener_and_even_from_the_other_end() -> None:
    pod, plugin = pair()
    assert [pod.open_stream() for _ in range(3)] == [1, 3, 5]
    assert [plugin.open_stream() for _ in range(2)] == [2, 4]
    events = plugin.receive_data(pod.data_to_send())
    assert [event.stream for event in events if isinstance(event, Opened)] == [1, 3, 5]


def test_bytes_split_anywhere_give_the_same_events() -> None:
    pod, plugin = pair()
    stream = pod.open_stream("x")
    pod.send_data(stream, bytes(range(256)) * 10)
    wire = pod.data_to_send()
    events = []
    for at in range(0, len(wire), 3):
        events += plugin.receive_data(wire[at : at + 3])
    assert events == [Opened(1, "x"), Data(1, bytes(range(256)) * 10)]


def test_data_larger_than_a_frame_is_cut_into_frames() -> None:
    pod, plugin = pair()
    stream = pod.open_stream()
    assert pod.send_data(stream, b"a" * (MAX_DATA + 10)) == MAX_DATA + 10
    events = plugin.receive_data(pod.data_to_send())
    assert [len(e.data) for e in events if isinstance(e, Data)] == [MAX_DATA, 10]


def test_the_window_bounds_what_is_sent_until_credit_comes() -> None:
    pod, plugin = pair()
    stream = pod.open_stream()
    assert pod.send_data(stream, b"a" * (INITIAL_WINDOW + 1000)) == INITIAL_WINDOW
    assert pod.send_window(stream) == 0
    events = plugin.receive_data(pod.data_to_send())
    received = sum(len(e.data) for e in events if isinstance(e, Data))
    assert received == INITIAL_WINDOW


def test_a_grant_widens_the_window_at_once_and_is_still_enforced() -> None:
    pod, plugin = pair()
    stream = pod.open_stream()
    plugin.receive_data(pod.data_to_send())
    plugin.grant(stream, 3 * INITIAL_WINDOW)  # a tunnel's wider window, right after the OPEN
    assert pod.receive_data(plugin.data_to_send()) == [Credited(stream)]
    assert pod.send_window(stream) == 4 * INITIAL_WINDOW
    assert pod.send_data(stream, b"a" * (5 * INITIAL_WINDOW)) == 4 * INITIAL_WINDOW
    events = plugin.receive_data(pod.data_to_send())
    assert sum(len(e.data) for e in events if isinstance(e, Data)) == 4 * INITIAL_WINDOW
    wire = message(Kind.DATA, stream, b"over")  # one byte past the widened window
    with pytest.raises(MuxError, match="the peer ignores flow control"):
        plugin.receive_data(wire)


def test_a_grant_for_a_peers_stream_rides_with_the_first_reply() -> None:
    """A tunnel's short connection: OPEN and DATA in, then one message back, not two."""
    pod, plugin = pair()
    stream = plugin.open_stream()
    plugin.send_data(stream, b"GET /")
    pod.receive_data(plugin.data_to_send())
    pod.grant_with_next(stream, 3 * INITIAL_WINDOW)
    pod.consumed(stream, 5)
    assert pod.data_to_send() == b""  # nothing goes out for the grant alone
    pod.send_data(stream, b"200 OK")
    assert pod.data_to_send() == (
        message(Kind.CREDIT, stream, (3 * INITIAL_WINDOW).to_bytes(4, "big"))
        + message(Kind.DATA, stream, b"200 OK")
    )


def test_an_untold_grant_goes_with_the_first_credit_and_the_sender_never_stalls() -> None:
    """A bulk upload with no reply: the first CREDIT is due as for ``INITIAL_WINDOW``."""
    pod, plugin = pair()
    stream = plugin.open_stream()
    pod.receive_data(plugin.data_to_send())
    pod.grant_with_next(stream, 3 * INITIAL_WINDOW)
    share = INITIAL_WINDOW // CREDIT_SHARE
    assert plugin.send_data(stream, b"a" * share) == share
    pod.receive_data(plugin.data_to_send())
    pod.consumed(stream, share)
    assert plugin.receive_data(pod.data_to_send()) == [Credited(stream)]
    # What it had left, the share given back and the grant: never at zero on the way.
    assert plugin.send_window(stream) == 4 * INITIAL_WINDOW
    assert plugin.send_data(stream, b"a" * (4 * INITIAL_WINDOW)) == 4 * INITIAL_WINDOW
    events = pod.receive_data(plugin.data_to_send())  # within the window: no MuxError
    assert sum(len(e.data) for e in events if isinstance(e, Data)) == 4 * INITIAL_WINDOW


def test_an_untold_grant_goes_before_the_end() -> None:
    pod, plugin = pair()
    stream = plugin.open_stream()
    pod.receive_data(plugin.data_to_send())
    pod.grant_with_next(stream, INITIAL_WINDOW)
    pod.send_end(stream)
    assert plugin.receive_data(pod.data_to_send()) == [Credited(stream), Ended(stream)]
    assert plugin.send_window(stream) == 2 * INITIAL_WINDOW


@pytest.mark.parametrize("widened", [0, 3 * INITIAL_WINDOW])
def test_credit_goes_back_in_batches_of_a_share_of_the_window(widened: int) -> None:
    pod, plugin = pair()
    stream = pod.open_stream()
    plugin.receive_data(pod.data_to_send())
    plugin.grant(stream, widened)
    pod.receive_data(plugin.data_to_send())
    window = INITIAL_WINDOW + widened
    pod.send_data(stream, b"a" * window)
    plugin.receive_data(pod.data_to_send())
    batch = window // CREDIT_SHARE  # fewer, larger CREDITs for a wider window
    plugin.consumed(stream, batch - 1)
    assert plugin.data_to_send() == b""
    plugin.consumed(stream, 1)
    assert pod.receive_data(plugin.data_to_send()) == [Credited(stream)]
    assert pod.send_window(stream) == batch


def test_a_window_grows_while_its_consumer_keeps_up_and_not_when_it_lags() -> None:
    pod, plugin = pair()
    plugin.max_window = 4 * INITIAL_WINDOW
    fast, slow = pod.open_stream(), pod.open_stream()
    plugin.receive_data(pod.data_to_send())
    share = INITIAL_WINDOW // CREDIT_SHARE
    for stream in (fast, slow):
        pod.send_data(stream, b"a" * INITIAL_WINDOW)  # each sender used its whole window
    plugin.receive_data(pod.data_to_send())
    # The fast consumer took all but one share: its CREDIT doubles the window.
    plugin.consumed(fast, INITIAL_WINDOW - share)
    # The slow one took one share and leaves three waiting: a CREDIT of what it took.
    plugin.consumed(slow, share)
    assert pod.receive_data(plugin.data_to_send()) == [Credited(fast), Credited(slow)]
    assert pod.send_window(fast) == INITIAL_WINDOW - share + INITIAL_WINDOW
    assert pod.send_window(slow) == share
    # Growth stops at max_window, and the receiver enforces the grown window.
    sent = pod.send_data(fast, b"a" * (8 * INITIAL_WINDOW))
    plugin.receive_data(pod.data_to_send())
    plugin.consumed(fast, share + sent)
    pod.receive_data(plugin.data_to_send())
    assert pod.send_window(fast) == 4 * INITIAL_WINDOW
    assert pod.send_data(fast, b"a" * (8 * INITIAL_WINDOW)) == 4 * INITIAL_WINDOW
    plugin.receive_data(pod.data_to_send())
    with pytest.raises(MuxError, match="the peer ignores flow control"):
        plugin.receive_data(message(Kind.DATA, fast, b"over"))


def test_one_stream_without_credit_leaves_the_others_their_window() -> None:
    pod, _ = pair()
    slow, fast = pod.open_stream(), pod.open_stream()
    pod.send_data(slow, b"s" * INITIAL_WINDOW)
    assert pod.send_window(slow) == 0
    assert pod.send_window(fast) == INITIAL_WINDOW
    assert pod.send_data(fast, b"f") == 1


def test_reset_ends_the_stream_both_ways_and_late_messages_are_dropped() -> None:
    pod, plugin = pair()
    stream = pod.open_stream()
    plugin.receive_data(pod.data_to_send())
    plugin.send_reset(stream, "connection refused")
    pod.send_data(stream, b"in flight")  # crosses the RESET on the wire
    assert pod.receive_data(plugin.data_to_send()) == [Reset(stream, "connection refused")]
    assert plugin.receive_data(pod.data_to_send()) == []  # the late DATA is dropped
    assert pod.send_window(stream) == 0


def test_ping_is_answered_with_the_same_payload() -> None:
    pod, plugin = pair()
    pod.send_ping(b"12345678")
    assert plugin.receive_data(pod.data_to_send()) == []
    assert pod.receive_data(plugin.data_to_send()) == [Pong(b"12345678")]


HOSTILE = [
    # (bytes after the HELLO, or instead of it; the error's reason)
    (b"GET / HTTP/1.1\r\n", "the peer does not speak the relay's mux protocol (no HELLO)"),
    (b"\x00\x0a\x00\x00\x00\x00\x00RMUX\x09", "unsupported version 09 (accepted: 01)"),
    (b"\x00\x0a\x07\x00\x00\x00\x00RMUX\x01", "the peer does not speak the relay's mux protocol"),
    (HELLO + b"\x00\x03abc", "a message of 3 bytes, shorter than its 5-byte header"),
    (HELLO + message(9, 1), "unknown message type 9 (accepted: 0 to 7)"),  # type: ignore[arg-type]
    (HELLO + HELLO, "a second HELLO"),
    (HELLO + message(Kind.DATA, 2, b"x"), "DATA for stream 2, which was never opened"),
    (HELLO + message(Kind.OPEN, 1), "OPEN of stream 1: this peer opens even ids only"),
    (HELLO + message(Kind.OPEN, 0), "OPEN of stream 0: this peer opens even ids only"),
    (HELLO + message(Kind.OPEN, 4) + message(Kind.OPEN, 2),
     "OPEN of stream 2, not above the last one opened (4)"),
    (HELLO + message(Kind.OPEN, 2) + message(Kind.DATA, 2),
     "an empty DATA on stream 2"),
    (HELLO + message(Kind.OPEN, 2) + message(Kind.END, 2) + message(Kind.DATA, 2, b"x"),
     "DATA on stream 2 after its END"),
    (HELLO + message(Kind.OPEN, 2) + message(Kind.END, 2) + message(Kind.END, 2),
     "a second END on stream 2"),
    (HELLO + message(Kind.OPEN, 2) + message(Kind.CREDIT, 2, b"\x01"),
     "CREDIT on stream 2 with 1 bytes (needs 4)"),
    (HELLO + message(Kind.OPEN, 2) + message(Kind.CREDIT, 2, b"\xff\xff\xff\xff"),
     "CREDIT on stream 2 grows its window past 4 GiB"),
    (HELLO + message(Kind.PING, 3), "PING on stream 3 (it belongs to stream 0)"),
    (HELLO + message(Kind.PING, 0, b"p" * 65), "PING of 65 bytes (at most 64)"),
]


@pytest.mark.parametrize(("wire", "reason"), HOSTILE)
def test_a_hostile_peer_gets_a_clear_error(wire: bytes, reason: str) -> None:
    pod = MuxProtocol(listener=True)
    with pytest.raises(MuxError) as caught:
        pod.receive_data(wire)
    assert caught.value.reason.startswith(reason)
    assert str(caught.value) == f"mux protocol error: {caught.value.reason}"
    # Broken for good: later bytes raise the same error.
    with pytest.raises(MuxError):
        pod.receive_data(HELLO)


def test_data_beyond_the_window_is_a_protocol_error() -> None:
    pod = MuxProtocol(listener=True)
    wire = HELLO + message(Kind.OPEN, 2)
    wire += message(Kind.DATA, 2, b"d" * MAX_DATA) * (INITIAL_WINDOW // MAX_DATA)
    wire += message(Kind.DATA, 2, b"d" * MAX_DATA)
    with pytest.raises(MuxError, match="the peer ignores flow control"):
        pod.receive_data(wire)


def test_random_garbage_raises_only_mux_errors() -> None:
    """Whatever the bytes, a peer gets MuxError or events: never another exception."""
    import random  # noqa: PLC0415

    generator = random.Random(14)
    for _ in range(300):
        pod = MuxProtocol(listener=True)
        wire = HELLO + bytes(generator.randrange(256) for _ in range(generator.randrange(1, 80)))
        with contextlib.suppress(MuxError):
            pod.receive_data(wire)


def test_the_protocol_imports_nothing_posix_only() -> None:
    """The plugin imports ``mux`` and ``muxing`` on every OS: no termios, resource, fcntl..."""
    code = (
        "import sys\n"
        "for name in ('termios', 'resource', 'pty', 'fcntl', 'grp', 'pwd'):\n"
        "    sys.modules[name] = None\n"
        "import kubectl_relay.engine.mux, kubectl_relay.engine.muxing\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert mux.VERSION == 1


# -- the asyncio connection (muxing) ------------------------------------------------------------


async def _pair_of_sockets() -> tuple[
    tuple[asyncio.StreamReader, asyncio.StreamWriter], socket.socket
]:
    ours, theirs = socket.socketpair()
    return await asyncio.open_connection(sock=ours), theirs


async def test_a_peer_that_stops_answering_pings_is_dropped_and_its_streams_reset() -> None:
    (reader, writer), silent = await _pair_of_sockets()
    with silent:
        silent.sendall(HELLO)  # a mux peer that then never answers
        connection = MuxConnection(
            StreamsCarrier(reader, writer), listener=True, ping_interval=0.05, ping_timeout=0.3
        )
        running = asyncio.ensure_future(connection.run())
        channel = await connection.open("10.0.0.1:80")
        async with asyncio.timeout(scaled(10)):
            reason = await running
        assert reason.startswith("the mux peer did not answer for")
        with pytest.raises(ConnectionResetError, match="mux stream 1 reset: the mux peer did not"):
            await channel.read()


async def test_a_garbled_peer_ends_the_connection_with_its_reason() -> None:
    (reader, writer), garbled = await _pair_of_sockets()
    with garbled:
        garbled.sendall(HELLO + message(Kind.DATA, 7, b"x"))
        connection = MuxConnection(StreamsCarrier(reader, writer), listener=True)
        async with asyncio.timeout(scaled(10)):
            reason = await connection.run()
    assert reason == "mux protocol error: DATA for stream 7, which was never opened"


async def test_a_peer_that_pings_without_reading_the_answers_is_held_back() -> None:
    """The relay pod reads its mux peer in the loop's callback (``DirectCarrier``), not in a
    loop that awaits each answer's flush; it still stops reading while an answer waits for a
    full socket, so a peer that keeps sending PINGs and reads no PONG is held back by TCP
    (its sends stop going through) instead of piling answers up in the relay."""
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):  # full after a few hundred messages each way
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with theirs:
        theirs.sendall(HELLO)
        theirs.setblocking(False)
        connection = MuxConnection(SocketCarrier(SocketStream(ours)), listener=True)
        running = asyncio.ensure_future(connection.run())
        ping = message(Kind.PING, 0, b"12345678")  # 15 bytes: a send takes it whole or not
        sent = refused_in_a_row = 0
        while refused_in_a_row < 200 and sent < 100_000:
            try:
                theirs.send(ping)
                sent, refused_in_a_row = sent + 1, 0
            except BlockingIOError:
                refused_in_a_row += 1
            await asyncio.sleep(0)  # the connection reads what came, in its own callback
        assert refused_in_a_row == 200, sent  # the relay stopped reading: TCP holds us
        assert not running.done() and len(connection._flushes) <= 2
        # Once the peer reads, every answer goes and the relay reads the rest.
        theirs.setblocking(True)
        theirs.settimeout(scaled(10))
        expected = HELLO + message(Kind.PONG, 0, b"12345678") * sent
        answers = b""
        while len(answers) < len(expected):
            answers += await asyncio.to_thread(theirs.recv, 1 << 20)
        assert answers == expected
        connection.close("done")
        async with asyncio.timeout(scaled(10)):
            assert await running == "done"
