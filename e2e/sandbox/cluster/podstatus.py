"""A pod's status from its containers' states: phase and conditions, as the kubelet computes them.

Phases (``status.phase``):

- ``Pending``: accepted, but some container has not been started yet (image
  pull, volume setup, init containers);
- ``Running``: every container was started, at least one is running or
  restarting;
- ``Succeeded``: every container ended with exit code 0 and none restarts;
- ``Failed``: every container ended, none restarts, and one failed (or an
  init container failed with ``restartPolicy: Never``).

Conditions: ``PodReadyToStartContainers`` (the sandbox exists: the pod has its
IP), ``Initialized`` (init containers done), ``ContainersReady`` and ``Ready``
(every container ready), ``PodScheduled``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .containers import ContainerStatus
from .objects import set_condition


@dataclass
class ContainerView:
    """What the phase needs to know about one container."""

    status: ContainerStatus
    #: The container will not run again (ended for good, or stopped).
    final: bool


def phase(containers: Sequence[ContainerView], *, initialized: bool, init_failed: bool) -> str:
    """The pod phase for these containers."""
    if init_failed:
        return "Failed"
    if not initialized or not containers:
        return "Pending"
    ever_started = [
        c.status.restart_count > 0 or "running" in c.status.state or "terminated" in c.status.state
        for c in containers
    ]
    if not all(ever_started):
        return "Pending"
    if all(c.final and c.status.terminated is not None for c in containers):
        codes = [int((c.status.terminated or {}).get("exitCode", 1)) for c in containers]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"
    return "Running"


def conditions(
    previous: list[dict[str, Any]],
    containers: Sequence[ContainerView],
    *,
    has_ip: bool,
    initialized: bool,
    pod_phase: str,
) -> list[dict[str, Any]]:
    """The pod's conditions, keeping transition times of those that did not change."""
    result = set_condition(previous, "PodScheduled", "True", "")
    result = set_condition(result, "PodReadyToStartContainers", "True" if has_ip else "False", "")
    result = set_condition(
        result,
        "Initialized",
        "True" if initialized else "False",
        "" if initialized else "ContainersNotInitialized",
    )
    unready = [c.status.name for c in containers if not c.status.ready]
    if pod_phase in ("Succeeded", "Failed"):
        status, reason, message = "False", "PodCompleted", ""
    elif unready:
        status, reason = "False", "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(unready)}]"
    else:
        status, reason, message = "True", "", ""
    result = set_condition(result, "ContainersReady", status, reason, message)
    result = set_condition(result, "Ready", status, reason, message)
    order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    for condition in result:
        if not condition["reason"]:
            del condition["reason"]
    return sorted(result, key=lambda c: order.index(c["type"]))
