"""The sandbox cluster's settings: where time runs faster than in a real cluster, and by how much.

A real kubelet probes every 10 seconds and backs off restarts from 10 seconds
to 5 minutes; tests cannot wait that long. The defaults below keep the order
of events of a real cluster while compressing the waits.
"""

from __future__ import annotations

from dataclasses import dataclass

from .images import RELAY_IMAGE_PATTERNS


@dataclass(frozen=True)
class ClusterSettings:
    """Knobs of the sandbox cluster (all times in seconds)."""

    #: Image names (fnmatch patterns) that run the relay engine.
    relay_image_patterns: tuple[str, ...] = RELAY_IMAGE_PATTERNS

    #: The address block (1-254, see ``ipam``); None picks one no other sandbox holds.
    address_block: int | None = None

    #: The node every pod is scheduled on (``spec.nodeName``, the Node object).
    node_name: str = "sandbox-node"

    #: Probes run at ``min(periodSeconds, probe_period_cap)``.
    probe_period_cap: float = 0.2

    #: ``initialDelaySeconds`` of probes is capped at this.
    probe_delay_cap: float = 0.5

    #: First container restart delay (a real kubelet: 10 s), doubled per restart.
    restart_backoff: float = 0.2

    #: Longest container restart delay (a real kubelet: 300 s).
    restart_backoff_cap: float = 3.0

    #: A container that ran this long without exiting restarts its backoff from the start.
    backoff_reset_after: float = 10.0

    #: How often a pod waiting for an unknown image looks again (ImagePullBackOff).
    image_pull_retry: float = 0.5

    #: ``terminationGracePeriodSeconds`` is capped at this (SIGKILL after it).
    max_grace_seconds: float = 5.0

    #: First delay before a Job replaces a failed pod, doubled per failure (real: 10 s).
    job_backoff: float = 0.1

    #: Longest delay before a Job replaces a failed pod (real: 6 min).
    job_backoff_cap: float = 2.0

    #: How long a Deployment may make no progress before ProgressDeadlineExceeded
    #: is reported is ``progressDeadlineSeconds`` times this.
    progress_deadline_scale: float = 1.0
