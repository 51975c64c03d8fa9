"""The relay's stderr parsed into events: the engine's own trace output, fed in pieces."""

from __future__ import annotations

import os

import pytest

from kubectl_relay.engine.log import SESSION_ID
from kubectl_relay.engine.trace import TraceOutput, TraceSettings
from kubectl_relay.plugin.tracing import Accepted, Block, LogLine, Output, TraceMode, TraceParser

# 2026/11/24 10:00:00.123456 in UTC, rendered in local time by the engine.
CLOCK = 1_795_514_400_123_456_789
SETTINGS: dict[TraceMode, TraceSettings] = {
    "text": TraceSettings(verbose=True),
    "hex": TraceSettings(hex=True),
    "rows": TraceSettings(verbose=True, hex=True),
}
REQUEST = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"
# Data that looks like a header and a log line must stay data.
TRICKY = b"> 2026/11/24 10:00:00.123456  length=6 from=0 to=5\n2026/11/24 10:00:00 relay[1] E x\n"
BINARY = bytes(range(256))


def engine_trace(mode: TraceMode, blocks: list[tuple[str, bytes]]) -> bytes:
    """What the engine writes for ``blocks``, through its real TraceOutput."""
    read, write = os.pipe()
    try:
        output = TraceOutput(SETTINGS[mode], fd=write, clock=lambda: CLOCK)
        tracer = output.session()
        for direction, data in blocks:
            tracer.record(direction, data)  # type: ignore[arg-type]
        output.close()
    finally:
        os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    return b"".join(chunks)


def parse(mode: TraceMode, data: bytes, piece: int) -> list[object]:
    parser = TraceParser(mode)
    events: list[object] = []
    for start in range(0, len(data), piece):
        events.extend(parser.feed(data[start : start + piece]))
    return events + parser.close()


@pytest.mark.parametrize("mode", ["text", "hex", "rows"])
@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_blocks_round_trip_through_the_engines_trace(mode: TraceMode, piece: int) -> None:
    blocks = [(">", REQUEST), ("<", TRICKY), ("<", BINARY), (">", b"no newline")]
    events = parse(mode, engine_trace(mode, blocks), piece)
    assert [type(e) for e in events] == [Block] * 4
    offsets = {">": 0, "<": 0}
    for event, (direction, data) in zip(events, blocks, strict=True):
        assert isinstance(event, Block)
        assert (event.direction, event.length) == (direction, len(data))
        assert (event.start, event.end) == (offsets[direction], offsets[direction] + len(data) - 1)
        offsets[direction] += len(data)
        if mode == "text":  # -v shows unprintable bytes as "."
            shown = bytes(b if 0x20 <= b < 0x7F or b in b"\t\n\a\b\v\f\r" else 0x2E for b in data)
            assert event.data == shown
        else:
            assert event.data == data
    first = events[0]
    assert isinstance(first, Block)
    assert first.payload == "GET / HTTP/1.1\\r\nHost: web\\r\n\\r\n" if mode == "text" else True
    assert first.to_target and first.opens_stream


def test_log_lines_connections_and_other_output() -> None:
    stream = (
        b"2026/11/24 10:00:00.000001 relay[7] N listening on AF=10 [::]:8000\n"
        b"2026/11/24 10:00:01.000002 relay[7] N accepting connection from AF=2 10.0.0.9:4000 on "
        b"AF=2 10.0.0.5:8000\n"
        b"> 2026/11/24 10:00:01.000100  length=3 from=0 to=2\nabc"
        b"2026/11/24 10:00:02 relay[7] E connect(5, AF=2 10.0.0.1:80, 16): Connection refused\n"
        b"some program output\n"
        b"unfinished"
    )
    assert parse("text", stream, 5) == [
        LogLine("2026/11/24 10:00:00.000001", "relay", 7, "N", "listening on AF=10 [::]:8000"),
        Accepted("2026/11/24 10:00:01.000002", "AF=2 10.0.0.9:4000", "AF=2 10.0.0.5:8000"),
        Block(">", "2026/11/24 10:00:01.000100", 3, 0, 2, "abc", b"abc"),
        LogLine(
            "2026/11/24 10:00:02",
            "relay",
            7,
            "E",
            "connect(5, AF=2 10.0.0.1:80, 16): Connection refused",
        ),
        Output("some program output"),
        Output("unfinished"),
    ]


def test_a_block_cut_off_by_the_end_of_the_log_is_output() -> None:
    events = parse("text", b"< 2026/11/24 10:00:00.000001  length=9 from=0 to=8\nabc", 100)
    assert events == [Output("< 2026/11/24 10:00:00.000001  length=9 from=0 to=8"), Output("abc")]


def numbered_trace(settings: TraceSettings, blocks: list[tuple[int, str, bytes]]) -> bytes:
    """What the engine writes with ``--trace-session-ids`` for (session, direction, data)."""
    read, write = os.pipe()
    try:
        numbered = TraceSettings(verbose=settings.verbose, hex=settings.hex, session_ids=True)
        output = TraceOutput(numbered, fd=write, clock=lambda: CLOCK)
        tracers = {}
        for session, direction, data in blocks:
            if session not in tracers:
                token = SESSION_ID.set(session)
                tracers[session] = output.session()
                SESSION_ID.reset(token)
            tracers[session].record(direction, data)  # type: ignore[arg-type]
        output.close()
    finally:
        os.close(write)
    trace = b""
    while chunk := os.read(read, 65536):
        trace += chunk
    os.close(read)
    return trace


@pytest.mark.parametrize("mode", ["text", "hex", "rows"])
def test_numbered_sessions_are_parsed(mode: TraceMode) -> None:
    trace = numbered_trace(SETTINGS[mode], [(3, ">", REQUEST), (4, ">", TRICKY)])
    trace += b"2026/11/24 10:00:01.000000 relay[1] E session 4: connect(5, AF=2 10.0.0.9:80): x\n"
    parser = TraceParser(mode)
    events = [event for byte in range(len(trace)) for event in parser.feed(trace[byte:byte + 1])]
    blocks = [event for event in events if isinstance(event, Block)]
    assert [(block.session, block.length) for block in blocks] == [
        (3, len(REQUEST)),
        (4, len(TRICKY)),
    ]
    (error,) = [event for event in events if isinstance(event, LogLine)]
    assert (error.session, error.level, error.message) == (4, "E", "connect(5, AF=2 10.0.0.9:80): x")
