"""Prometheus metrics of a relay process (a relay extension; socat has none).

``relay --metrics [HOST:]PORT ...`` serves ``GET /metrics`` in the Prometheus
text exposition format (version 0.0.4) with the counters below, so relay pods
can be scraped. The counters are cells bumped by the session and the
transfer loop: no locks (one event loop, and with ``--workers`` one writer
per row of shared memory) and no formatting until scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable

from .errors import UsageError, shorten
from .log import logger

#: Connections the metrics endpoint serves at once; Prometheus scrapes with one.
MAX_CONNECTIONS = 8
#: Seconds a client has to send its request head before it is closed.
REQUEST_SECONDS = 2.0
#: The longest request head read (a scrape's is a few hundred bytes).
MAX_REQUEST_BYTES = 8192

#: Directions as metric label values: address 1 to 2 is ``left-to-right``.
DIRECTIONS = ("left-to-right", "right-to-left")


#: The cells of a shared row of counters (``Metrics.share``), in order; more may follow:
#: the session counters, then the bytes and blocks of each direction.
ROW_CELLS = 7
_SESSION_CELLS = 3


class _Cell:
    """A counter kept in cell ``index`` of its ``Metrics``' row."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, metrics: Metrics, owner: object = None) -> int:
        return metrics.row[self.index]

    def __set__(self, metrics: Metrics, value: int) -> None:
        metrics.row[self.index] = value


class Metrics:
    """Process-wide counters (Prometheus names in the comments).

    They live in Python lists, which ``share`` can move into a row of signed
    64-bit cells in memory shared with a supervising process (``relay
    --workers``, see ``sharing``): the counters are then read there as they
    are written.
    """

    sessions_total = _Cell(0)  # relay_sessions_total: sessions started
    sessions_active = _Cell(1)  # relay_sessions_active: sessions running now
    session_errors_total = _Cell(2)  # relay_session_errors_total: sessions that failed

    def __init__(
        self, sessions_total: int = 0, sessions_active: int = 0, session_errors_total: int = 0
    ) -> None:
        # Plain lists until ``share``: a memoryview's item converts the number both ways
        # on every ``+=``, and with two counters a block that was 16% of the relay's
        # instructions per 1-byte round trip (callgrind).
        self.row: list[int] | memoryview = [sessions_total, sessions_active, session_errors_total]
        #: relay_bytes_total{direction=...} in ``[0]``, and in ``[1]`` the blocks
        #: written (``--statistics`` reports both, as socat); two cells per
        #: direction, which pumps keep a reference to.
        self.bytes_total: dict[str, list[int] | memoryview] = {
            name: [0, 0] for name in DIRECTIONS
        }

    def cells(self) -> list[int]:
        """The counters in the order of a shared row (``ROW_CELLS`` of them)."""
        directions = (value for cell in self.bytes_total.values() for value in cell)
        return [*self.row[:_SESSION_CELLS], *directions]

    def add(self, row: memoryview) -> None:
        """Add the counters of a shared row (another worker's) to ours."""
        for index in range(_SESSION_CELLS):
            self.row[index] += row[index]
        for name, cells in _direction_cells(row).items():
            self.bytes_total[name][0] += cells[0]
            self.bytes_total[name][1] += cells[1]

    def share(self, row: memoryview) -> None:
        """Keep the counters in ``row`` (``ROW_CELLS`` or more ``q`` cells) from now on.

        Called before any session: pumps hold ``bytes_total``'s cells.
        """
        for index, value in enumerate(self.cells()):
            row[index] = value
        self.row = row
        self.bytes_total = _direction_cells(row)

    def render(self) -> str:
        """The counters in the Prometheus text format."""
        lines = [
            "# HELP relay_sessions_total Sessions started (one per accepted peer with fork).",
            "# TYPE relay_sessions_total counter",
            f"relay_sessions_total {self.sessions_total}",
            "# HELP relay_sessions_active Sessions running now.",
            "# TYPE relay_sessions_active gauge",
            f"relay_sessions_active {self.sessions_active}",
            "# HELP relay_session_errors_total Sessions that ended with an error.",
            "# TYPE relay_session_errors_total counter",
            f"relay_session_errors_total {self.session_errors_total}",
            "# HELP relay_bytes_total Bytes relayed, by direction.",
            "# TYPE relay_bytes_total counter",
        ]
        for direction, cell in self.bytes_total.items():
            lines.append(f'relay_bytes_total{{direction="{direction}"}} {cell[0]}')
        return "\n".join(lines) + "\n"


def _direction_cells(row: memoryview) -> dict[str, list[int] | memoryview]:
    """Each direction's two cells (bytes, blocks) in a shared row, after the session counters."""
    first = _SESSION_CELLS
    return {name: row[first + 2 * index : first + 2 * index + 2]
            for index, name in enumerate(DIRECTIONS)}  # fmt: skip


#: The counters of this process.
METRICS = Metrics()


def parse_metrics_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` for ``--metrics``; the host defaults to all interfaces."""
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    # ASCII digits only (str.isdigit() takes "²"), and few enough for int().
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
        raise UsageError(
            f'option "--metrics": invalid address "{shorten(text)}", '
            "expected [HOST:]PORT such as 9090"
        )
    return host, int(port_text)


async def start_metrics_server(
    render: Callable[[], str], host: str, port: int, *, health: bool = True
) -> asyncio.Server:
    """Answer ``GET /metrics`` with ``render()`` (and ``GET /healthz``) on ``host:port``.

    Shared by the relay and the operator. Raises ``OSError`` when it cannot listen.
    The endpoint must never starve what it observes of descriptors: at most
    ``MAX_CONNECTIONS`` are served at once (others are closed as soon as they
    are accepted) and each gets ``REQUEST_SECONDS`` to send its request.
    """
    active = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= MAX_CONNECTIONS:
            # A scraper retries; a flood of idle connections gets nothing to hold.
            writer.transport.abort()
            return
        active += 1
        try:
            await _answer(reader, writer, render, health)
        finally:
            active -= 1

    return await asyncio.start_server(
        answer, host, port, reuse_address=True, limit=MAX_REQUEST_BYTES
    )


async def _answer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    render: Callable[[], str],
    health: bool,
) -> None:
    """One request: read its head, answer, close."""
    try:
        request = await asyncio.wait_for(
            reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_SECONDS
        )
        parts = request.split(b" ", 2)
        path = parts[1] if len(parts) == 3 else b""
        if path == b"/metrics":
            status, body = "200 OK", render().encode()
        elif health and path == b"/healthz":
            status, body = "200 OK", b"ok\n"
        else:
            status, body = "404 Not Found", b"not found: try /metrics\n"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        pass  # a scraper that went away or spoke something else
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def serve_metrics(host: str, port: int, metrics: Metrics = METRICS) -> asyncio.Server:
    """The relay's ``--metrics`` endpoint; a failure to listen is a usage error."""
    try:
        server = await start_metrics_server(metrics.render, host, port)
    except OSError as exc:
        raise UsageError(
            f'option "--metrics": cannot listen on {host}:{port}: {exc.strerror or exc}'
        ) from exc
    logger.info("serving metrics on %s:%d", host, port)
    return server
