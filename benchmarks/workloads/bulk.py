"""One bulk transfer through a candidate: source -> candidate -> sink, in three processes.

Shared by the throughput, TLS and trace workloads. The rate is the bytes
sent divided by the time from the source's first send (after connecting, and
after the TLS handshake) to the sink's EOF, both on ``CLOCK_MONOTONIC``, in
decimal MB/s. Starting the processes is not timed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from ..candidates import Candidate, Forward
from ..errors import ProcessFailed
from ..peers.common import HOST
from ..processes import Proc, tree_cpu_seconds
from ..results import WorkloadResult, number
from .base import Context, Measured


def transfer(
    ctx: Context,
    candidate: Candidate | None,
    size: int,
    *,
    options: Sequence[str] = (),
    tls_cert: Path | None = None,
    stderr_path: Path | None = None,
    slowest_rate: float = 20e6,
) -> Measured:
    """Send ``size`` bytes through ``candidate`` (or directly) and return MB/s.

    ``tls_cert`` makes the source speak TLS (to the candidate, which
    terminates it with that certificate, or to a TLS sink when there is no
    candidate). ``slowest_rate``
    (bytes/s) sets the time limit: a candidate slower than that fails.
    """
    timeout = 60 + size / slowest_rate
    procs = ctx.processes
    started: list[Proc] = []
    try:
        tls = tls_cert is not None
        sink_args = ["--tls", str(tls_cert)] if candidate is None and tls_cert else []
        sink, sink_port = procs.server("sink", *sink_args)
        started.append(sink)
        port = sink_port
        relay: Proc | None = None
        if candidate is not None:
            def argv(listen_port: int) -> list[str]:
                forward = Forward(listen_port, sink_port, tls_cert, tuple(options), HOST)
                return candidate.forward_argv(forward, ctx.workdir)

            relay, port = procs.listener(candidate.name, argv, stderr_path=stderr_path)
            started.append(relay)
        cpu_before = tree_cpu_seconds(relay.pid) if relay else 0.0
        source_args: list[object] = [port, size, "--timeout", timeout]
        source = procs.peer("source", *source_args, *(["--tls"] if tls else []))
        started.append(source)
        sent = source.read_message(timeout, "the end of its transfer")
        received = sink.read_message(timeout, "the end of the data")
        cpu = tree_cpu_seconds(relay.pid) - cpu_before if relay else None
        source.finish(timeout)
    finally:
        for proc in reversed(started):
            procs.stop(proc)
    if received.get("bytes") != size:
        raise ProcessFailed("sink", f"received {received.get('bytes')} of {size} bytes")
    seconds = number(received, "end") - number(sent, "start")
    details: dict[str, object] = {
        "seconds": round(seconds, 4),
        "source_busy": round(number(sent, "busy"), 3),
        "sink_busy": round(number(received, "busy"), 3),
    }
    if cpu is not None:
        details["cpu_seconds_per_gib"] = round(cpu * (1 << 30) / size, 3)
    if tls:
        details.update(tls=sent.get("tls"), cipher=sent.get("cipher"))
    return Measured({"mbps": size / seconds / 1e6}, details)


def busy_note(result: WorkloadResult) -> str:
    """How busy source and sink were, per candidate (median over runs).

    Near 100% means that process, not what is measured, set the pace.
    """
    parts = []
    for name, samples in result.candidates.items():
        sources = [number(d, "source_busy") for d in samples.details if "source_busy" in d]
        sinks = [number(d, "sink_busy") for d in samples.details if "sink_busy" in d]
        if sources and sinks:
            parts.append(f"{name} {statistics.median(sources):.0%}/{statistics.median(sinks):.0%}")
    cpu = []
    for name, samples in result.candidates.items():
        per_gib = [number(d, "cpu_seconds_per_gib") for d in samples.details
                   if "cpu_seconds_per_gib" in d]
        if per_gib:
            cpu.append(f"{name} {statistics.median(per_gib):.2f}")
    text = "CPU use of source/sink while transferring: " + ", ".join(parts) if parts else ""
    if cpu:
        text += "; CPU seconds per GiB in the candidate (all its processes): " + ", ".join(cpu)
    return text
