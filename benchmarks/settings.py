"""Sizes, counts and run numbers of a benchmark run, for each mode.

The full mode is what the targets are judged on; ``--quick`` shrinks it to
about a minute; ``--smoke`` only proves that every workload still produces
numbers (the smoke test runs it) and its figures mean nothing.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

Mode = Literal["full", "quick", "smoke"]

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Settings:
    """What one benchmark run does."""

    mode: Mode
    #: Runs per candidate of the fast workloads (connection rate, latency).
    runs_fast: int
    #: Runs per candidate of the slow ones (bulk transfers, TLS, trace, memory).
    runs_bulk: int
    #: Bytes sent through the relay in the bulk TCP throughput workload.
    bulk_bytes: int
    #: Bytes sent through TLS termination.
    tls_bytes: int
    #: Bytes sent with ``-v`` tracing on (socat's ``-v`` does a few MB/s only).
    trace_bytes: int
    #: Seconds of each connection-rate window.
    rate_seconds: float
    #: Concurrent clients of the concurrent connection-rate measurement.
    rate_clients: int
    #: Timed 1-byte round trips per latency run (after untimed warm-up ones).
    pings: int
    #: Idle relayed connections held in the memory workload.
    idle_connections: int
    #: Starts of each command in one run of the start-up workload.
    starts: int

    def with_runs(self, runs: int | None) -> Settings:
        """The same settings with every workload doing ``runs`` runs."""
        if runs is None:
            return self
        return dataclasses.replace(self, runs_fast=runs, runs_bulk=runs)


PROFILES: dict[Mode, Settings] = {
    "full": Settings(
        mode="full", runs_fast=5, runs_bulk=3,
        bulk_bytes=2 * GiB, tls_bytes=1 * GiB, trace_bytes=32 * MiB,
        rate_seconds=2.0, rate_clients=50, pings=5000, idle_connections=1000, starts=30,
    ),
    "quick": Settings(
        mode="quick", runs_fast=3, runs_bulk=2,
        bulk_bytes=512 * MiB, tls_bytes=256 * MiB, trace_bytes=4 * MiB,
        rate_seconds=1.0, rate_clients=50, pings=2000, idle_connections=300, starts=15,
    ),
    "smoke": Settings(
        mode="smoke", runs_fast=1, runs_bulk=1,
        bulk_bytes=8 * MiB, tls_bytes=4 * MiB, trace_bytes=256 * 1024,
        rate_seconds=0.3, rate_clients=5, pings=100, idle_connections=20, starts=3,
    ),
}

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": MiB, "G": GiB}


def parse_size(text: str) -> int:
    """Bytes from ``2G``, ``512M``, ``64MiB``, ``4096`` (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 2G, 512M, 64MiB, 4096)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def format_size(size: int) -> str:
    """``2 GiB``, ``512 MiB``, ``256 KiB`` or bytes."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"
