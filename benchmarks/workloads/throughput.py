"""Bulk TCP throughput through ``TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:Q``."""

from __future__ import annotations

from ..candidates import PEERS, Candidate
from ..results import Metric, WorkloadResult, versus
from ..settings import format_size
from .base import Context, Measured, Workload
from .bulk import busy_note, transfer


class Throughput(Workload):
    """One connection carrying ``bulk_bytes``; direct is the physical limit of loopback."""

    name = "throughput"
    title = "bulk TCP throughput"
    bulk = True
    with_direct = True
    candidates = frozenset({"relay", "relay-general", *PEERS})

    def __init__(self) -> None:
        self.description = (
            "one connection, source -> relay -> sink, each in its own process; "
            "source: sendall from a 1 MiB buffer, sink: splice to /dev/null; "
            "MB/s = bytes / (sink EOF - source start); direct = no relay"
        )

    def metrics(self, ctx: Context) -> tuple[Metric, ...]:
        label = f"{format_size(ctx.settings.bulk_bytes)}, 1 connection"
        targets = (
            versus("direct", relation=">=", factor=0.8, goal="bulk at least 0.8x direct"),
            versus("socat-b1M", relation=">=", factor=1,
                   goal="bulk ahead of socat with -b 1M"),
            versus("relay-general", relation=">=", factor=1,
                   goal="bulk: the fast path at least as fast as the general path"),
        )
        return (Metric("mbps", label, "MB/s", higher_is_better=True, targets=targets),)

    def measure(self, ctx: Context, candidate: Candidate | None) -> Measured:
        return transfer(ctx, candidate, ctx.settings.bulk_bytes)

    def notes(self, result: WorkloadResult) -> list[str]:
        """Whether source or sink were saturated."""
        return [note] if (note := busy_note(result)) else []
