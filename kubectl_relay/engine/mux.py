"""``mux``: many byte streams over one connection, without I/O (a relay extension, not in socat).

Why it exists: ``kubectl relay expose`` carries every connection that reaches
a Service in the cluster back to the laptop over one port-forward stream (the
API server's port-forward gives one byte stream and no way to open one from
the pod's side). This module is the protocol both ends speak; like
``frames`` it imports nothing of the engine's POSIX-only runtime, so the
plugin speaks it on any OS. ``muxing`` runs it over an asyncio byte stream.

Wire format. The connection is a sequence of ``frame=len16`` frames (a
2-byte big-endian length, then that many bytes, see ``framing``); each frame
is one message::

    type (1 byte) | stream id (4 bytes, big-endian) | body (length - 5 bytes)

The first message in each direction is ``HELLO`` (stream 0, body ``RMUX``
and the version byte ``1``); a peer that starts with anything else is not a
mux peer and the connection ends with ``MuxError``. The messages:

========  ====  ===================================================================
HELLO     0x00  stream 0; body ``b"RMUX\\x01"``.
OPEN      0x01  a new stream; body: a label for logs (UTF-8, may be empty).
DATA      0x02  bytes of the stream (1 to ``MAX_DATA`` of them).
END       0x03  half-close: the sender sends no more DATA on the stream; the
                other direction keeps flowing. A stream whose two directions
                have ended is closed, and forgotten by both ends.
RESET     0x04  abort the stream at once, both directions; body: the reason (UTF-8).
CREDIT    0x05  body: 4-byte unsigned increment of the window the sender grants.
PING      0x06  stream 0; body: up to 64 opaque bytes, echoed in a PONG.
PONG      0x07  stream 0; the body of the PING it answers.
========  ====  ===================================================================

Stream ids: the side that listens for the mux connection (the relay pod)
opens streams with odd ids, the side that connects (the plugin) with even
ids, each in increasing order, so that both can open streams and a late
message for a stream already closed or reset (an id below the highest seen)
is recognised and dropped, while a message for an id never opened is a
protocol error.

Flow control, per stream and per direction: the receiver grants a window of
``INITIAL_WINDOW`` bytes when the stream opens and CREDIT as its consumer
takes data out; the sender never has more DATA unacknowledged than the
window. One slow consumer therefore holds back only its own stream, and
what a receiver buffers is bounded by the window per stream. DATA beyond
the window is a protocol error.

Errors: ``MuxError`` for anything a peer sends that this grammar does not
allow (unknown type, a frame too short, DATA beyond the window, an OPEN with
a wrong or reused id...); its message says what was wrong. After it, the
connection is unusable: every stream is reset.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from .frames import HEADER_SIZE, MAX_PAYLOAD, FrameDecoder

#: The body of HELLO: the protocol's name and version.
MAGIC = b"RMUX"
VERSION = 1
#: Bytes before a message's body: type and stream id.
MESSAGE_HEADER = 5
#: The largest DATA body (one frame).
MAX_DATA = MAX_PAYLOAD - MESSAGE_HEADER
#: What a receiver grants each stream when it opens.
INITIAL_WINDOW = 256 * 1024
#: What the two ends of a ``kubectl relay tcp`` tunnel grant each stream (a CREDIT with
#: the OPEN; the accepting end's with its first message on the stream): their credit
#: crosses the API server and the kubelet, a round trip of milliseconds, and a stream
#: moves at most one window per round trip.
TUNNEL_WINDOW = 1024 * 1024
#: What a tunnel's stream window grows to while its consumer keeps up (``MuxProtocol``'s
#: ``max_window``): a bulk flow is then bound by its path, not by the credit round trip
#: (measured through a stand-in with a 10 ms round trip: 1 MiB gave 77 MB/s, 4 MiB 219).
#: A slow consumer's stream stays at ``TUNNEL_WINDOW`` (what it buffers is its window).
TUNNEL_MAX_WINDOW = 4 * 1024 * 1024
#: A receiver sends CREDIT once its consumer has taken this share of the stream's window
#: (a quarter: 64 KiB of ``INITIAL_WINDOW``, 256 KiB of ``TUNNEL_WINDOW``). A tunnel's
#: CREDIT crosses the API server and the kubelet and is handled in Python at both ends, so
#: fewer, larger ones; the sender still has three quarters of its window left when one is due.
CREDIT_SHARE = 4
#: The largest PING body, and the largest label or reason kept.
MAX_PING = 64
MAX_TEXT = 512
#: The length of the HELLO frame.
_HELLO_SIZE = MESSAGE_HEADER + len(MAGIC) + 1
#: Highest stream id (4 bytes).
MAX_STREAM_ID = 0xFFFFFFFF


class Kind(enum.IntEnum):
    """The message types (see the module docstring)."""

    HELLO = 0
    OPEN = 1
    DATA = 2
    END = 3
    RESET = 4
    CREDIT = 5
    PING = 6
    PONG = 7


#: Kind by code: ``Kind(code)`` goes through the enum's ``__call__`` for every message.
_KINDS = tuple(Kind)


class MuxError(Exception):
    """The peer broke the protocol; ``reason`` says how. The connection is over."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"mux protocol error: {self.reason}"


@dataclass(frozen=True)
class Opened:
    """The peer opened stream ``stream``."""

    stream: int
    label: str


@dataclass(frozen=True)
class Data:
    """Bytes for stream ``stream``; hand them on, then call ``consumed``.

    A view into the received message (no copy of up to 64 KiB per message).
    """

    stream: int
    data: bytes | memoryview


@dataclass(frozen=True)
class Ended:
    """The peer half-closed stream ``stream``: end of its input."""

    stream: int


@dataclass(frozen=True)
class Reset:
    """The peer aborted stream ``stream``."""

    stream: int
    reason: str


@dataclass(frozen=True)
class Credited:
    """The peer granted more window on ``stream``: blocked writers may go on."""

    stream: int


@dataclass(frozen=True)
class Pong:
    """The peer answered a PING."""

    payload: bytes


Event = Opened | Data | Ended | Reset | Credited | Pong


@dataclass
class _StreamState:
    #: Bytes we may still send (the peer's window for us).
    send_window: int = INITIAL_WINDOW
    #: Bytes the peer may still send before our next CREDIT.
    receive_window: int = INITIAL_WINDOW
    #: Bytes our consumer took since our last CREDIT.
    unacknowledged: int = 0
    #: The window we grant the stream (``INITIAL_WINDOW`` and every ``grant``).
    granted: int = INITIAL_WINDOW
    #: Granted but not yet told (``grant_with_next``): goes out with our next message.
    untold: int = 0
    sent_end: bool = False
    received_end: bool = False


@dataclass
class MuxProtocol:
    """One end of a mux connection: bytes in, events out; calls in, bytes to send out.

    ``listener``: True on the side that accepted the mux connection (it opens
    odd stream ids), False on the side that connected. ``max_window``: how far
    ``consumed`` may grow a stream's window (0: never beyond what ``grant``
    gave). Outgoing bytes
    collect until ``data_to_send`` takes them. Nothing here blocks or does
    I/O; the caller waits for credit (``send_window``) before ``send_data``.
    """

    listener: bool
    max_window: int = 0
    _decoder: FrameDecoder = field(default_factory=FrameDecoder)
    _outgoing: bytearray = field(default_factory=bytearray)
    _streams: dict[int, _StreamState] = field(default_factory=dict)
    _next_id: int = 0
    _highest_peer_id: int = 0
    _hello_received: bool = False
    _prefix: bytes = b""
    _broken: MuxError | None = None

    def __post_init__(self) -> None:
        self._next_id = 1 if self.listener else 2
        self._message(Kind.HELLO, 0, MAGIC + bytes((VERSION,)))

    # -- sending --------------------------------------------------------------------------------

    def has_data_to_send(self) -> bool:
        """Whether ``data_to_send`` would return something."""
        return bool(self._outgoing)

    def data_to_send(self) -> bytearray:
        """The bytes to write to the connection since the last call.

        The buffer itself, not a copy (a tunnel's bulk is 256 KiB a call): the
        protocol starts a new one and never touches this one again.
        """
        data, self._outgoing = self._outgoing, bytearray()
        return data

    def open_stream(self, label: str = "") -> int:
        """Open a stream of our own; its id."""
        stream = self._next_id
        if stream > MAX_STREAM_ID:
            raise MuxError("stream ids exhausted on this connection")
        self._next_id += 2
        self._streams[stream] = _StreamState()
        self._message(Kind.OPEN, stream, label.encode()[:MAX_TEXT])
        return stream

    def send_window(self, stream: int) -> int:
        """How many bytes ``send_data`` may send on ``stream`` now (0: wait for ``Credited``)."""
        state = self._streams.get(stream)
        if state is None or state.sent_end:
            return 0
        return state.send_window

    def send_data(self, stream: int, data: bytes | memoryview) -> int:
        """Send as much of ``data`` as the window allows; how much was taken."""
        state = self._live(stream)
        if state.sent_end:
            raise ValueError(f"stream {stream}: data after END")
        view = memoryview(data)[: state.send_window]
        self._tell_grant(stream, state)
        for start in range(0, len(view), MAX_DATA):
            self._message(Kind.DATA, stream, view[start : start + MAX_DATA])
        state.send_window -= len(view)
        return len(view)

    def send_end(self, stream: int) -> None:
        """Half-close ``stream``: no more data from us (``Ended`` on the other side)."""
        state = self._streams.get(stream)
        if state is None or state.sent_end:
            return
        state.sent_end = True
        self._tell_grant(stream, state)
        self._message(Kind.END, stream, b"")
        self._forget_if_closed(stream, state)

    def send_reset(self, stream: int, reason: str = "") -> None:
        """Abort ``stream`` both ways (a no-op for a stream already gone)."""
        if self._streams.pop(stream, None) is not None:
            self._message(Kind.RESET, stream, reason.encode()[:MAX_TEXT])

    def consumed(self, stream: int, count: int) -> None:
        """Our consumer took ``count`` bytes of ``stream``: grant them again (in batches).

        A batch is ``1 / CREDIT_SHARE`` of the window granted to the stream.
        When at most another such share still waits for the consumer (it keeps
        up: the window, not the consumer, bounds the stream), the window
        doubles, up to ``max_window``.
        """
        state = self._streams.get(stream)
        if state is None or state.received_end:
            return
        state.unacknowledged += count
        share = state.granted // CREDIT_SHARE
        if state.unacknowledged >= share:
            waiting = state.granted - state.unacknowledged - state.receive_window
            growth = 0
            if waiting <= share and state.granted < self.max_window:
                growth = min(state.granted, self.max_window - state.granted)
            increment = state.unacknowledged + growth + state.untold
            self._message(Kind.CREDIT, stream, increment.to_bytes(4, "big"))
            state.receive_window += increment
            state.granted += growth + state.untold
            state.unacknowledged = state.untold = 0

    def grant(self, stream: int, count: int) -> None:
        """Widen the window of ``stream`` by ``count`` bytes now (beyond ``INITIAL_WINDOW``)."""
        state = self._streams.get(stream)
        if state is not None and not state.received_end and count > 0:
            self._widen(stream, state, count)

    def grant_with_next(self, stream: int, count: int) -> None:
        """Widen the window of ``stream`` by ``count``, told with our next message on it.

        For a stream the peer opened: its OPEN most often comes with data, and
        our first DATA back (or our END, or our first CREDIT) then carries the
        grant, one message fewer than a CREDIT of its own. Until then the peer
        has ``INITIAL_WINDOW``, and our first CREDIT is due as for that window.
        """
        state = self._streams.get(stream)
        if state is not None and not state.received_end and count > 0:
            state.untold += count

    def _tell_grant(self, stream: int, state: _StreamState) -> None:
        if state.untold and not state.received_end:  # (after the peer's END: no use)
            self._widen(stream, state, state.untold)
            state.untold = 0

    def _widen(self, stream: int, state: _StreamState, count: int) -> None:
        """Tell the peer ``stream``'s window is ``count`` bytes wider, and hold it to that."""
        self._message(Kind.CREDIT, stream, count.to_bytes(4, "big"))
        state.receive_window += count
        state.granted += count

    def send_ping(self, payload: bytes = b"") -> None:
        """A PING; the peer answers with a ``Pong`` of the same payload."""
        self._message(Kind.PING, 0, payload[:MAX_PING])

    def streams(self) -> Iterator[int]:
        """The ids of the streams open now."""
        return iter(list(self._streams))

    def _live(self, stream: int) -> _StreamState:
        state = self._streams.get(stream)
        if state is None:
            raise KeyError(f"stream {stream} is not open")
        return state

    def _message(self, kind: Kind, stream: int, body: bytes | memoryview) -> None:
        length = MESSAGE_HEADER + len(body)
        self._outgoing += length.to_bytes(HEADER_SIZE, "big")
        self._outgoing.append(kind)
        self._outgoing += stream.to_bytes(4, "big")
        self._outgoing += body

    def _forget_if_closed(self, stream: int, state: _StreamState) -> None:
        if state.sent_end and state.received_end:
            del self._streams[stream]

    # -- receiving ------------------------------------------------------------------------------

    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        """Feed bytes from the connection; the events they complete, in order.

        Raises ``MuxError`` when the peer broke the protocol (then and on
        every later call).
        """
        if self._broken is not None:
            raise self._broken
        events: list[Event] = []
        try:
            if not self._hello_received:
                self._check_hello_length(data)
            for frame in self._decoder.feed(data):
                self._receive_message(frame, events)
        except MuxError as exc:
            self._broken = exc
            raise
        return events

    def _check_hello_length(self, data: bytes | memoryview) -> None:
        """Fail at once on a peer whose first frame is not a HELLO by its length.

        Without this, the first two bytes of another protocol (``GE`` of an
        HTTP request) would announce a long frame and the connection would
        wait for it.
        """
        self._prefix += bytes(data[: HEADER_SIZE - len(self._prefix)])
        if len(self._prefix) == HEADER_SIZE and int.from_bytes(self._prefix, "big") != _HELLO_SIZE:
            raise MuxError("the peer does not speak the relay's mux protocol (no HELLO)")

    def _receive_message(self, frame: bytes, events: list[Event]) -> None:
        if len(frame) < MESSAGE_HEADER:
            raise MuxError(f"a message of {len(frame)} bytes, shorter than its 5-byte header")
        code, stream, body = frame[0], int.from_bytes(frame[1:5], "big"), frame[5:]
        if code >= len(_KINDS):
            raise MuxError(f"unknown message type {code} (accepted: 0 to 7)")
        kind = _KINDS[code]
        if not self._hello_received:
            if kind is not Kind.HELLO or body[: len(MAGIC)] != MAGIC:
                raise MuxError("the peer does not speak the relay's mux protocol (no HELLO)")
            if body[len(MAGIC) :] != bytes((VERSION,)):
                raise MuxError(f"unsupported version {body[len(MAGIC):].hex()} (accepted: 01)")
            self._hello_received = True
            return
        if kind in (Kind.HELLO, Kind.PING, Kind.PONG):
            if stream != 0:
                raise MuxError(f"{kind.name} on stream {stream} (it belongs to stream 0)")
            if kind is Kind.HELLO:
                raise MuxError("a second HELLO")
            if len(body) > MAX_PING:
                raise MuxError(f"{kind.name} of {len(body)} bytes (at most {MAX_PING})")
            if kind is Kind.PING:
                self._message(Kind.PONG, 0, body)
            else:
                events.append(Pong(body))
            return
        if kind is Kind.OPEN:
            self._receive_open(stream, body, events)
            return
        state = self._streams.get(stream)
        if state is None:
            if stream == 0 or not self._known(stream):
                raise MuxError(f"{kind.name} for stream {stream}, which was never opened")
            return  # a late message for a stream already closed or reset: dropped
        if kind is Kind.DATA:
            self._receive_stream_data(stream, state, memoryview(frame)[MESSAGE_HEADER:], events)
        elif kind is Kind.END:
            if state.received_end:
                raise MuxError(f"a second END on stream {stream}")
            state.received_end = True
            events.append(Ended(stream))
            self._forget_if_closed(stream, state)
        elif kind is Kind.RESET:
            del self._streams[stream]
            events.append(Reset(stream, body.decode(errors="replace")))
        else:  # CREDIT
            if len(body) != 4:
                raise MuxError(f"CREDIT on stream {stream} with {len(body)} bytes (needs 4)")
            state.send_window += int.from_bytes(body, "big")
            if state.send_window > MAX_STREAM_ID:
                raise MuxError(f"CREDIT on stream {stream} grows its window past 4 GiB")
            events.append(Credited(stream))

    def _receive_open(self, stream: int, body: bytes, events: list[Event]) -> None:
        peer_parity = 0 if self.listener else 1
        if stream == 0 or stream % 2 != peer_parity:
            side = "odd" if peer_parity else "even"
            raise MuxError(f"OPEN of stream {stream}: this peer opens {side} ids only")
        if stream <= self._highest_peer_id:
            raise MuxError(
                f"OPEN of stream {stream}, not above the last one opened "
                f"({self._highest_peer_id})"
            )
        self._highest_peer_id = stream
        self._streams[stream] = _StreamState()
        events.append(Opened(stream, body.decode(errors="replace")))

    def _receive_stream_data(
        self, stream: int, state: _StreamState, body: memoryview, events: list[Event]
    ) -> None:
        if state.received_end:
            raise MuxError(f"DATA on stream {stream} after its END")
        if not body:
            raise MuxError(f"an empty DATA on stream {stream}")
        if len(body) > state.receive_window:
            raise MuxError(
                f"stream {stream}: {len(body)} bytes of DATA with a window of "
                f"{state.receive_window} left (the peer ignores flow control)"
            )
        state.receive_window -= len(body)
        events.append(Data(stream, body))

    def _known(self, stream: int) -> bool:
        """Whether ``stream`` was opened once (by us or the peer): a late message is harmless."""
        ours = stream % 2 == (1 if self.listener else 0)
        if ours:
            return stream < self._next_id
        return stream <= self._highest_peer_id
