"""Short connections per second through ``TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:Q``."""

from __future__ import annotations

from ..candidates import FLOORS, PEERS, Candidate
from ..processes import sockets_in_time_wait
from ..results import Metric, Target, WorkloadResult, number, versus
from .base import Context, Measured, Workload
from .relayed import echo_server, forwarding


class ConnectionRate(Workload):
    """Transactions per second, one client at a time and many at once."""

    name = "connrate"
    title = "short connections per second (fork)"
    with_direct = True
    #: relay-workers: ``--workers`` (2 by default), beside the one-process relay.
    candidates = frozenset({"relay", "relay-workers", *PEERS, *FLOORS})

    def __init__(self) -> None:
        self.description = (
            "transaction = connect, send 1 byte, receive its 1-byte echo from the upstream "
            "echo server (uvloop), close; counted when finished inside a fixed window; "
            "a fresh relay process for each of the two measurements"
        )

    def metrics(self, ctx: Context) -> tuple[Metric, ...]:
        clients = ctx.settings.rate_clients

        def targets(who: str) -> tuple[Target, ...]:
            """The goal for the one-process relay and for relay-workers alike."""
            return tuple(
                versus("haproxy", "nginx", relation=">=", factor=1.1, relay=relay,
                       goal=f"short connections, {who}: 1.1x the best of HAProxy and nginx")
                for relay in ("relay", "relay-workers")
            )

        return (
            Metric("serial", "1 client at a time", "conn/s", higher_is_better=True,
                   targets=targets("1 client")),
            Metric("concurrent", f"{clients} concurrent clients", "conn/s",
                   higher_is_better=True, targets=targets(f"{clients} clients")),
        )

    def measure(self, ctx: Context, candidate: Candidate | None) -> Measured:
        settings = ctx.settings
        values: dict[str, float] = {}
        details: dict[str, object] = {"time_wait_before": sockets_in_time_wait()}
        with echo_server(ctx) as upstream:
            for key, clients in (("serial", 1), ("concurrent", settings.rate_clients)):
                with forwarding(ctx, candidate, upstream) as (_, port):
                    client = ctx.processes.peer(
                        "connector", port, "--concurrency", clients,
                        "--duration", settings.rate_seconds,
                    )
                    try:
                        tally = client.read_message(settings.rate_seconds + 30, "its tally")
                        client.finish(10)
                    finally:
                        ctx.processes.stop(client)
                values[key] = number(tally, "rate")
                details[key] = {k: tally[k] for k in ("completed", "errors", "slow")}
        return Measured(values, details)

    def notes(self, result: WorkloadResult) -> list[str]:
        """Failed and slow transactions, summed over the runs: a full backlog shows here."""
        parts = []
        for name, samples in result.candidates.items():
            for key in ("serial", "concurrent"):
                counts = [c for d in samples.details if isinstance(c := d.get(key), dict)]
                errors = sum(number(c, "errors") for c in counts)
                slow = sum(number(c, "slow") for c in counts)
                if errors or slow:
                    parts.append(f"{name} {key}: {errors:.0f} failed, {slow:.0f} over 0.5 s")
        notes = [] if not parts else [
            "transactions failed or slow (a dropped SYN waits 1 s): " + "; ".join(parts)]
        return notes + self._stalls(result)

    @staticmethod
    def _stalls(result: WorkloadResult) -> list[str]:
        """Runs where nothing or next to nothing completed, with the machine's TIME_WAIT count.

        When even direct stalls, the machine is out of ephemeral ports (or
        otherwise stuck), not the candidate: such rounds say nothing about it.
        """
        stalls = []
        for name, samples in result.candidates.items():
            for index, detail in enumerate(samples.details):
                counts = [c for key in ("serial", "concurrent")
                          if isinstance(c := detail.get(key), dict)]
                if any(number(c, "completed") < 50 for c in counts):
                    stalls.append(f"{name} round {index + 1} "
                                  f"({detail.get('time_wait_before')} in TIME_WAIT)")
        if not stalls:
            return []
        return ["STALLED (under 50 transactions in a window; if direct stalls too, the "
                "machine ran out of ephemeral ports or froze, and those rounds mean "
                "nothing): " + ", ".join(stalls)]
