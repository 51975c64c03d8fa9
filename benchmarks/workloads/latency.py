"""Round-trip latency of 1-byte messages through the relay to an echo server."""

from __future__ import annotations

from ..candidates import FLOORS, PEERS, Candidate
from ..processes import on_one_cpu
from ..results import Metric, number, versus
from .base import Context, Measured, Workload
from .relayed import echo_server, forwarding


class Latency(Workload):
    """Median and 99th percentile of 1-byte round trips on one connection."""

    name = "latency"
    title = "1-byte round-trip latency"
    with_direct = True
    candidates = frozenset({"relay", *PEERS, *FLOORS})

    def __init__(self) -> None:
        self.description = (
            "one connection; blocking client with TCP_NODELAY sends 1 byte and waits for "
            "the echo (upstream: uvloop echo server), after 200 untimed round trips; "
            "median and p99 of each run, then the median over runs; measured twice: with "
            "the client, the candidate and the echo server on one CPU (each candidate's "
            "own work per round trip, the goal's figure), then free on every core (where "
            "the scheduler places the three moves each median by a fifth between runs)"
        )

    def metrics(self, ctx: Context) -> tuple[Metric, ...]:
        pings = ctx.settings.pings
        target = (versus(*PEERS, relation="<=", factor=1.05,
                         goal="latency no worse than 1.05x the best peer"),)
        return (
            Metric("median_us", f"median of {pings}, on one CPU", "us", higher_is_better=False,
                   targets=target),
            Metric("p99_us", f"p99 of {pings}, on one CPU", "us", higher_is_better=False),
            Metric("median_free_us", f"median of {pings}, every core", "us",
                   higher_is_better=False),
            Metric("p99_free_us", f"p99 of {pings}, every core", "us", higher_is_better=False),
        )

    def measure(self, ctx: Context, candidate: Candidate | None) -> Measured:
        with on_one_cpu():
            pinned = self._round_trips(ctx, candidate)
        free = self._round_trips(ctx, candidate)
        values = {
            "median_us": number(pinned, "median_us"),
            "p99_us": number(pinned, "p99_us"),
            "median_free_us": number(free, "median_us"),
            "p99_free_us": number(free, "p99_us"),
        }
        details = {f"{key}{suffix}": result[key] for key in ("min_us", "p90_us", "mean_us")
                   for suffix, result in (("", pinned), ("_free", free))}
        return Measured(values, details)

    @staticmethod
    def _round_trips(ctx: Context, candidate: Candidate | None) -> dict[str, object]:
        pings = ctx.settings.pings
        with echo_server(ctx) as upstream, forwarding(ctx, candidate, upstream) as (_, port):
            client = ctx.processes.peer("pingpong", port, pings)
            try:
                result = client.read_message(30 + pings / 1000, "its round trips")
                client.finish(10)
            finally:
                ctx.processes.stop(client)
        return result
