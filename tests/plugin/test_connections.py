"""Relay sessions matched to local connections, each connection's lines in order; ``--summary``.

The trace is the engine's own (``TraceOutput`` with ``--trace-session-ids``),
parsed by the plugin's ``TraceParser``; the output is the CLI's renderer on a
fixed-width console, compared as a whole (golden).
"""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from kubectl_relay.engine.trace import TraceSettings
from kubectl_relay.plugin import events
from kubectl_relay.plugin.cli import Renderer
from kubectl_relay.plugin.connections import Connections
from kubectl_relay.plugin.summary import ConnectionSummary, Exchange
from kubectl_relay.plugin.tracing import TraceEvent, TraceParser
from tests.plugin.test_tracing import numbered_trace

POD = "kubectl-relay-ab12-0-1-x"
ONE = b"GET /one HTTP/1.1\r\nHost: web\r\n\r\n"
TWO = b"GET /two HTTP/1.1\r\nHost: web\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"


def relay_trace(blocks: list[tuple[int, str, bytes]]) -> list[TraceEvent]:
    """What the plugin parses from the engine's ``-v --trace-session-ids`` output."""
    return TraceParser("text").feed(numbered_trace(TraceSettings(verbose=True), blocks))


def renderer() -> tuple[Renderer, io.StringIO]:
    file = io.StringIO()
    console = Console(file=file, width=100, color_system=None, soft_wrap=True, highlight=False)
    return Renderer(console), file


def test_sessions_are_matched_by_their_bytes_and_lines_kept_in_order() -> None:
    """Two concurrent connections; the relay accepted them in the other order."""

    async def scenario() -> str:
        show, file = renderer()
        connections = Connections(0, show, match_wait=0.01, close_hold=5)
        first = connections.opened(1, "127.0.0.1:50001")
        second = connections.opened(2, "127.0.0.1:50002")
        connections.routed(first, POD)
        connections.routed(second, POD)
        connections.data(first, ">", ONE)
        connections.data(second, ">", TWO)
        # The second connection is the relay's session 1, the first its session 2.
        trace = relay_trace([(1, ">", TWO), (2, ">", ONE), (1, "<", OK), (2, "<", OK)])
        connections.traced(POD, trace[0])
        connections.data(second, "<", OK)
        connections.closed(second, "")  # its response's trace has not come yet: held
        connections.data(first, "<", OK)
        connections.closed(first, "")
        for event in trace[1:]:
            connections.traced(POD, event)
        connections.flush()
        return file.getvalue()

    assert asyncio.run(scenario()) == (
        "connection 1 from 127.0.0.1:50001\n"
        "connection 2 from 127.0.0.1:50002\n"
        "#2 > 2026/11/24 10:00:00.123456  → to target  length=32 from=0 to=31\n"
        "#2   GET /two HTTP/1.1\\r\n"
        "#2   Host: web\\r\n"
        "#2   \\r\n"
        "#1 > 2026/11/24 10:00:00.123456  → to target  length=32 from=0 to=31\n"
        "#1   GET /one HTTP/1.1\\r\n"
        "#1   Host: web\\r\n"
        "#1   \\r\n"
        "#2 < 2026/11/24 10:00:00.123456  ← from target  length=41 from=0 to=40\n"
        "#2   HTTP/1.1 200 OK\\r\n"
        "#2   Content-Length: 3\\r\n"
        "#2   \\r\n"
        "#2   yes\n"
        "connection 2 closed: 32 bytes sent, 41 received\n"
        "#1 < 2026/11/24 10:00:00.123456  ← from target  length=41 from=0 to=40\n"
        "#1   HTTP/1.1 200 OK\\r\n"
        "#1   Content-Length: 3\\r\n"
        "#1   \\r\n"
        "#1   yes\n"
        "connection 1 closed: 32 bytes sent, 41 received\n"
    )


def test_an_upstream_error_counts_what_reached_the_target() -> None:
    """The relay could not connect: nothing reached the target, whatever the client wrote."""

    async def scenario() -> str:
        show, file = renderer()
        connections = Connections(0, show, match_wait=0.01, close_hold=5)
        flow = connections.opened(1, "127.0.0.1:50001")
        connections.routed(flow, POD)
        connections.data(flow, ">", b"x" * 79)
        connections.closed(flow, "")
        error = TraceParser("text").feed(
            b"2026/11/24 10:00:00.200000 relay[1] E session 1: connect(5, AF=2 10.0.0.7:80, 16):"
            b" Connection refused\n"
        )
        connections.traced(POD, error[0])
        await asyncio.sleep(0.1)  # the session traced no data: it is matched after match_wait
        connections.flush()
        return file.getvalue()

    assert asyncio.run(scenario()) == (
        "connection 1 from 127.0.0.1:50001\n"
        "#1 2026/11/24 10:00:00.200000 relay error: connect(5, AF=2 10.0.0.7:80, 16): "
        "Connection refused\n"
        "connection 1 closed: 0 bytes sent, 0 received (the relay reported an error)\n"
    )


def test_quiet_shows_each_connection_and_the_relays_errors_not_its_accepts() -> None:
    """``-q``: no trace, so not the relay's accept notice either (the connection has its line)."""
    log = TraceParser("text").feed(
        b"2026/11/24 10:00:01.000002 relay[7] N accepting connection from AF=2 10.0.0.9:4000 on "
        b"AF=2 10.0.0.5:8000\n"
        b"2026/11/24 10:00:01.000003 relay[7] W read(6, 8192): unexpected EOF\n"
    )

    async def scenario(quiet: bool) -> str:
        show, file = renderer()
        connections = Connections(0, show, matching=False, quiet=quiet, close_hold=0.01)
        flow = connections.opened(1, "127.0.0.1:50001")
        connections.routed(flow, POD)
        for event in log:
            connections.traced(POD, event)
        connections.data(flow, ">", b"x")
        connections.closed(flow, "")
        connections.flush()
        return file.getvalue()

    opened, closed = "connection 1 from 127.0.0.1:50001\n", "connection 1 closed: 1 bytes sent"
    warning = "2026/11/24 10:00:01.000003 relay warning: read(6, 8192): unexpected EOF\n"
    accepted = "2026/11/24 10:00:01.000002 relay accepted a connection\n"
    quiet = asyncio.run(scenario(quiet=True))
    assert quiet.startswith(opened + warning + closed), quiet
    traced = asyncio.run(scenario(quiet=False))
    assert traced.startswith(opened + accepted + warning + closed), traced


def test_a_closed_line_is_not_held_forever() -> None:
    async def scenario() -> str:
        show, file = renderer()
        connections = Connections(0, show, match_wait=0.01, close_hold=0.01)
        flow = connections.opened(1, "127.0.0.1:50001")
        connections.routed(flow, POD)
        connections.data(flow, ">", ONE)
        connections.closed(flow, "")  # no trace ever comes (the log stream broke)
        await asyncio.sleep(0.1)
        return file.getvalue()

    assert asyncio.run(scenario()) == (
        "connection 1 from 127.0.0.1:50001\n"
        "connection 1 closed: 32 bytes sent, 0 received\n"
    )


# -- --summary ----------------------------------------------------------------------------------


def test_http_exchanges_are_summarized_one_line_each() -> None:
    summary = ConnectionSummary(1, "127.0.0.1:50001", opened=0.0)
    lines: list[Exchange] = []
    post = b"POST /items HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    head = b"HEAD /items HTTP/1.1\r\n\r\n"
    get = b"GET /big HTTP/1.1\r\n\r\n"
    lines += summary.sent_data(post + head, 1.0)
    created = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"  # no body: HEAD
    for piece in (created[:10], created[10:] + head_answer):
        lines += summary.received_data(piece, 1.5)
    lines += summary.sent_data(get, 2.0)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
    lines += summary.received_data(chunked, 2.25)
    lines += summary.closed(3.0)
    show, file = renderer()
    for line in lines:
        show(events.Summarized(0, line))
    assert file.getvalue() == (
        "#1 POST /items → 201 Created  (48 B sent, 45 B received, 500.0 ms)\n"
        "#1 HEAD /items → 200 OK  (24 B sent, 41 B received, 500.0 ms)\n"
        "#1 GET /big → 200 OK  (21 B sent, 61 B received, 250.0 ms)\n"
    )


def test_a_response_ended_by_close_and_an_unanswered_request() -> None:
    summary = ConnectionSummary(2, "127.0.0.1:50002", opened=0.0)
    lines = summary.sent_data(ONE, 0.5)
    lines += summary.received_data(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 0.75)
    lines += summary.sent_data(TWO, 1.0)  # pipelined, never answered
    lines += summary.closed(4.0)
    assert [(e.method, e.target, e.status, e.reason, e.received) for e in lines] == [
        ("GET", "/one", 200, "OK", 32),
        ("GET", "/two", 0, "no response", 0),
    ]


def test_other_protocols_get_one_line_per_connection() -> None:
    summary = ConnectionSummary(3, "127.0.0.1:50003", opened=10.0)
    summary.sent_data(b"\x16\x03\x01\x02\x00 a TLS hello", 10.5)
    summary.received_data(b"\x16\x03\x03 answer", 10.6)
    (line,) = summary.closed(12.5)
    show, file = renderer()
    show(events.Summarized(0, line))
    assert file.getvalue() == (
        "#3 connection from 127.0.0.1:50003: 17 B sent, 10 B received, 2.50 s\n"
    )
