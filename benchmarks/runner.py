"""The common runner: every workload, every candidate, run after run, alternately.

Round ``i`` visits the candidates in ``ORDER`` rotated by ``i`` (socat,
relay, haproxy, ...; then relay, haproxy, ..., socat; ...), so that no
candidate always runs first, or always right after the same other, while
the machine warms up or something else on it gets busy; ratios are taken
within each round (see ``results``). A candidate whose run fails is not run again
in that workload; the others go on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO

from .candidates import ORDER, Candidate, CandidateName
from .errors import BenchmarkError
from .results import Samples, WorkloadResult
from .workloads import Context, Workload


def rotation(run: int, names: tuple[CandidateName, ...]) -> tuple[CandidateName, ...]:
    """The candidates in the order of run number ``run`` (0-based)."""
    shift = run % len(names)
    return names[shift:] + names[:shift]


def run_workload(
    workload: Workload,
    ctx: Context,
    candidates: Mapping[CandidateName, Candidate],
    runs: int,
    progress: TextIO = sys.stderr,
) -> WorkloadResult:
    """Run ``workload`` ``runs`` times for each candidate (and directly, if it applies)."""
    names = tuple(
        n for n in ORDER
        if (n in candidates and n in workload.candidates)
        or (n == "direct" and workload.with_direct)
    )
    metrics = workload.metrics(ctx)
    result = WorkloadResult(
        name=workload.name,
        title=workload.title,
        description=workload.description,
        runs=runs,
        metrics=metrics,
        candidates={name: Samples() for name in names},
    )
    try:
        workload.prepare(ctx)
    except BenchmarkError as exc:
        for samples in result.candidates.values():
            samples.failure = f"setup failed: {exc}"
        return result
    for run in range(runs):
        for name in rotation(run, names):
            samples = result.candidates[name]
            if samples.failure:
                continue
            started = time.monotonic()
            if ctx.processes.profiler is not None:
                ctx.processes.profiler.label = f"{workload.name}-{run + 1}"
            try:
                measured = workload.measure(ctx, candidates.get(name))
            except BenchmarkError as exc:
                samples.failure = str(exc)
                print(f"  {workload.name} run {run + 1}/{runs} {name}: FAILED: {exc}",
                      file=progress, flush=True)
                continue
            for key, value in measured.values.items():
                samples.values.setdefault(key, []).append(value)
            samples.details.append(measured.details)
            shown = ", ".join(
                f"{m.key}={measured.values[m.key]:.4g} {m.unit}"
                for m in metrics if m.key in measured.values
            )
            print(f"  {workload.name} run {run + 1}/{runs} {name}: {shown} "
                  f"({time.monotonic() - started:.1f} s)", file=progress, flush=True)
    result.notes.extend(workload.notes(result))
    return result
