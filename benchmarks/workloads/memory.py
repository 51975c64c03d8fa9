"""Memory per idle relayed connection: the candidate's process tree, before and after."""

from __future__ import annotations

import dataclasses
import time

from ..candidates import Candidate
from ..errors import ProcessFailed
from ..processes import tree_memory
from ..results import Metric, WorkloadResult, number, versus
from .base import Context, Measured, Workload
from .relayed import echo_server, forwarding

#: Seconds to let the candidate settle before each measurement (forks, allocations).
SETTLE = 0.5


class IdleMemory(Workload):
    """RSS and PSS of the candidate and all its children, per idle connection."""

    name = "memory"
    title = "memory per idle relayed connection"
    bulk = True

    def __init__(self) -> None:
        self.description = (
            "sum over the candidate's process and all its children of RSS and of PSS "
            "(/proc/PID/smaps_rollup), with N connections open and idle minus before "
            "any, divided by N; each connection confirmed by a 1-byte echo before the next "
            "(paces socat's backlog of 5). RSS counts shared pages once per process, "
            "PSS shares them out: PSS is the fair comparison of one process with many"
        )

    def metrics(self, ctx: Context) -> tuple[Metric, ...]:
        count = ctx.settings.idle_connections
        below = (versus("nginx", relation="<", factor=1,
                        goal="memory per idle connection below nginx's"),)
        return (
            Metric("pss_kib", f"PSS, {count} connections", "KiB/conn", higher_is_better=False,
                   targets=below),
            Metric("rss_kib", f"RSS, {count} connections", "KiB/conn", higher_is_better=False),
        )

    def measure(self, ctx: Context, candidate: Candidate | None) -> Measured:
        assert candidate is not None, "memory of no relay is nothing"
        count = ctx.settings.idle_connections
        with echo_server(ctx) as upstream, forwarding(ctx, candidate, upstream) as (proc, port):
            assert proc is not None
            time.sleep(SETTLE)
            before = tree_memory(proc.pid)
            holder = ctx.processes.peer("holder", port, count)
            try:
                opened = holder.read_message(30 + count * 0.05, f"{count} open connections")
                time.sleep(SETTLE)
                after = tree_memory(proc.pid)
                if not proc.running():
                    raise ProcessFailed(candidate.name, "exited while holding connections",
                                        proc.log_tail())
            finally:
                ctx.processes.stop(holder)
        values = {"rss_kib": (after.rss_kib - before.rss_kib) / count}
        if after.pss_kib is not None and before.pss_kib is not None:
            values["pss_kib"] = (after.pss_kib - before.pss_kib) / count
        details = {
            "before": dataclasses.asdict(before), "after": dataclasses.asdict(after),
            "retries": opened.get("retries"), "open_seconds": opened.get("seconds"),
        }
        return Measured(values, details)

    def notes(self, result: WorkloadResult) -> list[str]:
        """Processes in each candidate's tree with the connections open, and connect retries."""
        parts = []
        for name, samples in result.candidates.items():
            if samples.details:
                last = samples.details[-1]
                after = last["after"]
                assert isinstance(after, dict)
                parts.append(f"{name}: {after['processes']} processes, "
                             f"{last['retries']} connect retries, "
                             f"opened in {number(last, 'open_seconds'):.1f} s")
        return ["last run: " + "; ".join(parts)] if parts else []
