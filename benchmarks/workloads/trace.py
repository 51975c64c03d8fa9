"""Throughput with ``-v`` tracing of the data to a file (stderr redirected to it)."""

from __future__ import annotations

from ..candidates import Candidate
from ..errors import ProcessFailed
from ..results import Metric, WorkloadResult, versus
from ..settings import format_size
from .base import Context, Measured, Workload
from .bulk import transfer


class Trace(Workload):
    """The throughput workload with ``-v``: every byte is also written, as text, to a file."""

    name = "trace"
    title = "throughput with -v trace to a file"
    bulk = True
    #: socat's ``-v``: only the socat-style candidates have it.
    candidates = frozenset({"relay", "socat"})

    def __init__(self) -> None:
        self.size = 1
        self.description = (
            "as throughput, with -v and stderr redirected to a file (text lines of "
            "payload); the trace file is checked to hold at least the data sent"
        )

    def metrics(self, ctx: Context) -> tuple[Metric, ...]:
        label = f"{format_size(ctx.settings.trace_bytes)}, -v 2>file"
        return (Metric("mbps", label, "MB/s", higher_is_better=True,
                       targets=(versus("socat", relation=">=", factor=50),)),)

    def measure(self, ctx: Context, candidate: Candidate | None) -> Measured:
        assert candidate is not None, "tracing needs a relay"
        trace = ctx.workdir / f"trace-{candidate.name}.txt"
        size = self.size = ctx.settings.trace_bytes
        try:
            # socat -v does a few MB/s: allow down to 1 MB/s before calling it failed.
            measured = transfer(
                ctx, candidate, size, options=["-v"], stderr_path=trace, slowest_rate=1e6
            )
            traced = trace.stat().st_size
        finally:
            trace.unlink(missing_ok=True)
        # A trace that lost data would be fast for the wrong reason.
        if traced < size:
            raise ProcessFailed(candidate.name, f"traced {traced} bytes for {size} relayed")
        return Measured(measured.values, {**measured.details, "trace_bytes": traced})

    def notes(self, result: WorkloadResult) -> list[str]:
        """How much trace each candidate wrote per byte relayed (formats differ a little)."""
        parts = []
        for name, samples in result.candidates.items():
            if samples.details:
                traced = samples.details[0]["trace_bytes"]
                assert isinstance(traced, int)
                parts.append(f"{name} {traced / self.size:.3f}")
        return [f"trace file bytes per relayed byte: {', '.join(parts)}"] if parts else []
