"""The operator's own Prometheus metrics, and the small endpoint that serves them.

Served by the engine's endpoint (``kubectl_relay/engine/metrics.py``): a
few counters bumped by the handlers, rendered in the text exposition format
(0.0.4) only when scraped. No dependency, no locks (one event loop).

=========================================== ========= =======================================
``relay_operator_reconciliations_total``    counter   by ``result``: applied (something was
                                                      created, changed or deleted), unchanged,
                                                      invalid, waiting (for a Secret), retried
``relay_operator_api_errors_total``         counter   transient API failures (each is retried)
``relay_operator_events_total``             counter   events posted, by ``type``
``relay_operator_tunnels_expired_total``    counter   tunnels deleted at the end of their ttl
``relay_operator_tunnels``                  gauge     tunnels served, by ``phase``
=========================================== ========= =======================================
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from kubectl_relay.engine.metrics import start_metrics_server

Result = Literal["applied", "unchanged", "invalid", "waiting", "retried"]
RESULTS: tuple[Result, ...] = ("applied", "unchanged", "invalid", "waiting", "retried")
PHASES = ("Pending", "Ready", "Degraded", "Paused", "Invalid")


@dataclass
class OperatorMetrics:
    """The counters of one operator process."""

    reconciliations: Counter[str] = field(default_factory=Counter)
    api_errors: int = 0
    events: Counter[str] = field(default_factory=Counter)
    expired: int = 0
    #: The last phase of each tunnel, by ``namespace/name``.
    phases: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        """The metrics in the Prometheus text format."""
        lines = [
            "# HELP relay_operator_reconciliations_total Reconciliations of tunnels, by result.",
            "# TYPE relay_operator_reconciliations_total counter",
        ]
        lines += [
            f'relay_operator_reconciliations_total{{result="{result}"}} '
            f"{self.reconciliations[result]}"
            for result in RESULTS
        ]
        lines += [
            "# HELP relay_operator_api_errors_total Transient API failures (each is retried).",
            "# TYPE relay_operator_api_errors_total counter",
            f"relay_operator_api_errors_total {self.api_errors}",
            "# HELP relay_operator_events_total Kubernetes events posted, by type.",
            "# TYPE relay_operator_events_total counter",
        ]
        lines += [
            f'relay_operator_events_total{{type="{kind}"}} {self.events[kind]}'
            for kind in ("Normal", "Warning")
        ]
        lines += [
            "# HELP relay_operator_tunnels_expired_total Tunnels deleted when their ttl ran out.",
            "# TYPE relay_operator_tunnels_expired_total counter",
            f"relay_operator_tunnels_expired_total {self.expired}",
            "# HELP relay_operator_tunnels Tunnels served by this operator, by phase.",
            "# TYPE relay_operator_tunnels gauge",
        ]
        by_phase = Counter(self.phases.values())
        lines += [f'relay_operator_tunnels{{phase="{p}"}} {by_phase[p]}' for p in PHASES]
        return "\n".join(lines) + "\n"


async def serve_metrics(metrics: OperatorMetrics, host: str, port: int) -> asyncio.Server:
    """Answer ``GET /metrics`` on ``host:port`` (0: any free port; see ``sockets``)."""
    return await start_metrics_server(metrics.render, host, port, health=False)
