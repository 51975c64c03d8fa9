"""The relay's stderr (its ``-v``/``-x`` trace and log lines) parsed into events, without I/O.

The relay pod's log, followed through ``pods/log``, is what the engine writes
to stderr (see ``kubectl_relay.engine.trace`` and ``kubectl_relay.engine.log``):

- a data block: a header line, then the data::

      > 2026/11/24 10:00:00.123456  length=6 from=0 to=5
      hello

  ``>`` is data from address 1 (the tunnel, so the user's client) to address
  2 (the target), ``<`` the reverse; ``from``/``to`` are offsets in that
  direction's stream, starting at 0 for every connection. With ``-v`` the
  data is text with socat's escapes, and nothing ends it: a block without a
  final newline runs into the next line. With ``-x`` it is one line of hex
  bytes; with ``-v -x`` rows of hex and ASCII, then ``--``. With the
  engine's ``--trace-session-ids`` the header ends in `` session=N``, the
  relay's number for the connection, and that session's log lines start
  with ``session N:``;
- a log line: ``2026/11/24 10:00:00.123456 relay[1] N accepting connection from ...``;
- anything else the command printed.

A ``-v`` body is consumed by counting the bytes it stands for (``length``), so
data that looks like a header or a log line is never mistaken for one.
``TraceParser.feed`` takes bytes as they arrive and returns the events they
complete; ``close`` returns what is left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

#: How the blocks' data is written: ``-v`` (text), ``-x`` (hex), ``-v -x`` (rows).
TraceMode = Literal["text", "hex", "rows"]
Direction = Literal[">", "<"]

_HEADER = re.compile(
    rb"([<>]) (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+)  length=(\d+) from=(\d+) to=(-?\d+)"
    rb"(?: session=(\d+))?\n"
)
# A --trace-session-ids log line's message starts with its session.
_SESSION = re.compile(r"session (\d+): (.*)")
_LOG = re.compile(
    r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?:\S+ )?([\w.-]+)\[(\d+)\] ([DINWEF]) (.*)"
)
_ACCEPTED = re.compile(r"accepting connection from (.*) on (.*)")
# -v escapes (engine/trace.py ``_ESCAPES``), the escaped letter -> the byte.
_UNESCAPE = {
    ord("\\"): 0x5C,
    ord("a"): 0x07,
    ord("b"): 0x08,
    ord("v"): 0x0B,
    ord("f"): 0x0C,
    ord("r"): 0x0D,
}
# A -v -x row: a space, 16 hex cells of 3 characters, a space, the ASCII column.
_ROW_HEX = slice(1, 49)
_ROWS_END = b"--\n"


@dataclass(frozen=True)
class Block:
    """One traced data block.

    ``payload`` is the data as socat printed it (text with escapes, a hex
    line, or rows); ``data`` the bytes as far as the trace shows them (exact
    with ``-x``; with ``-v`` alone, unprintable bytes come back as ``.``).
    """

    direction: Direction
    time: str
    length: int
    start: int
    end: int
    payload: str
    data: bytes
    #: The relay's session (``--trace-session-ids``), if numbered.
    session: int | None = None

    @property
    def to_target(self) -> bool:
        """Whether the data went from the user's side to the target."""
        return self.direction == ">"

    @property
    def opens_stream(self) -> bool:
        """Whether this is the first block of its direction of a connection."""
        return self.start == 0


@dataclass(frozen=True)
class LogLine:
    """One engine log line; ``level`` is socat's letter (D I N W E F)."""

    time: str
    program: str
    pid: int
    level: str
    message: str
    #: The relay's session it is about (``--trace-session-ids``), if numbered.
    session: int | None = None

    @property
    def is_problem(self) -> bool:
        """Errors and warnings (and fatal messages)."""
        return self.level in "WEF"


@dataclass(frozen=True)
class Accepted:
    """The relay accepted a connection (a ``-d -d`` notice): a connection through the tunnel."""

    time: str
    peer: str
    local: str


@dataclass(frozen=True)
class Output:
    """Any other line the relay's command printed."""

    text: str


TraceEvent = Block | LogLine | Accepted | Output


@dataclass(frozen=True)
class _Header:
    """A block's header line, waiting for its body."""

    line: str
    direction: Direction
    time: str
    length: int
    start: int
    end: int
    session: int | None


class TraceParser:
    """Incremental parser of a relay's stderr (see the module docstring)."""

    def __init__(self, mode: TraceMode = "text") -> None:
        self.mode: TraceMode = mode
        self._buffer = bytearray()
        self._header: _Header | None = None

    def feed(self, data: bytes) -> list[TraceEvent]:
        """Add bytes from the log; return the events they complete, in order."""
        self._buffer += data
        events: list[TraceEvent] = []
        while True:
            event = self._next()
            if event is None:
                return events
            events.append(event)

    def close(self) -> list[TraceEvent]:
        """The end of the log: an unfinished line or block becomes output."""
        events: list[TraceEvent] = []
        if self._header is not None:
            # The block was cut off: show what came of it as it is.
            events.append(Output(self._header.line))
            self._header = None
        if self._buffer:
            events.extend(
                Output(line) for line in self._buffer.decode(errors="replace").splitlines()
            )
            self._buffer.clear()
        return events

    def _next(self) -> TraceEvent | None:
        if self._header is not None:
            return self._body(self._header)
        newline = self._buffer.find(b"\n")
        if newline < 0:
            return None
        match = _HEADER.fullmatch(bytes(self._buffer[: newline + 1]))
        if match is not None:
            direction: Direction = ">" if match.group(1) == b">" else "<"
            header = _Header(
                line=match.group(0).decode().rstrip("\n"),
                direction=direction,
                time=match.group(2).decode(),
                length=int(match.group(3)),
                start=int(match.group(4)),
                end=int(match.group(5)),
                session=int(match.group(6)) if match.group(6) else None,
            )
            self._header = header
            del self._buffer[: newline + 1]
            return self._body(header)
        line = self._buffer[:newline].decode(errors="replace")
        del self._buffer[: newline + 1]
        return _line_event(line)

    def _body(self, header: _Header) -> Block | None:
        length = header.length
        if self.mode == "text":
            found = _text_body(self._buffer, length)
        elif self.mode == "hex":
            found = _hex_body(self._buffer, length)
        else:
            found = _rows_body(self._buffer)
        if found is None:
            return None
        size, data = found
        payload = self._buffer[:size].decode("ascii", errors="replace")
        del self._buffer[:size]
        self._header = None
        return Block(
            direction=header.direction,
            time=header.time,
            length=length,
            start=header.start,
            end=header.end,
            payload=payload,
            data=data,
            session=header.session,
        )


def _line_event(line: str) -> TraceEvent:
    match = _LOG.fullmatch(line)
    if match is None:
        return Output(line)
    time, program, pid, level, message = match.groups()
    accepted = _ACCEPTED.fullmatch(message) if level == "N" else None
    if accepted is not None:
        return Accepted(time, accepted.group(1), accepted.group(2))
    numbered = _SESSION.fullmatch(message)
    if numbered is not None:
        return LogLine(time, program, int(pid), level, numbered.group(2), int(numbered.group(1)))
    return LogLine(time, program, int(pid), level, message)


def _text_body(buffer: bytearray, length: int) -> tuple[int, bytes] | None:
    """A ``-v`` body of ``length`` bytes at the start of ``buffer``: (characters, bytes)."""
    data = bytearray()
    at = 0
    while len(data) < length:
        if at >= len(buffer):
            return None
        char = buffer[at]
        if char == 0x5C:  # a backslash always starts a two-character escape
            if at + 1 >= len(buffer):
                return None
            data.append(_UNESCAPE.get(buffer[at + 1], buffer[at + 1]))
            at += 2
        else:
            data.append(char)
            at += 1
    return at, bytes(data)


def _hex_body(buffer: bytearray, length: int) -> tuple[int, bytes] | None:
    """A ``-x`` body: `` xx xx`` and a newline."""
    size = 3 * length + 1 if length else 2
    if len(buffer) < size:
        return None
    return size, bytes.fromhex(buffer[:size].decode("ascii", errors="replace"))


def _rows_body(buffer: bytearray) -> tuple[int, bytes] | None:
    """A ``-v -x`` body: rows, then ``--``."""
    data = bytearray()
    at = 0
    while True:
        newline = buffer.find(b"\n", at)
        if newline < 0:
            return None
        row = buffer[at : newline + 1]
        at = newline + 1
        if row == _ROWS_END:
            return at, bytes(data)
        data += bytes.fromhex(row[_ROW_HEX].decode("ascii", errors="replace"))
