"""How a session tells the user about the cluster's health and about what it leaves behind.

``ApiWatch`` turns the failures and successes of the periodic requests a
running tunnel makes (pod checks, lease renewals) into two lines per outage;
``cleanup_error`` builds the error for objects a session could not delete,
naming the missing right.
"""

from __future__ import annotations

from . import relaypod
from .errors import AccessDenied, CleanupError, ClusterError, PluginError
from .events import EventSink, Notice
from .kube import RIGHTS_NEEDED


class ApiWatch:
    """Says once that the API server cannot be reached, and once that it answers again.

    The checks that run every second while a tunnel is up would otherwise
    print a line per second for as long as the API server is away.
    """

    def __init__(self, emit: EventSink) -> None:
        self.emit = emit
        self.down = False

    def failed(self, exc: PluginError) -> None:
        """A periodic request failed."""
        if self.down:
            return
        self.down = True
        cause = exc.cause if isinstance(exc, ClusterError) else str(exc)
        self.emit(
            Notice(
                f"cannot reach the API server ({cause}); the tunnel keeps serving, and "
                "the relay pods are checked again when it answers",
                warning=True,
            )
        )

    def answered(self) -> None:
        """A periodic request succeeded."""
        if self.down:
            self.down = False
            self.emit(Notice("the API server answers again"))


def cleanup_error(
    failures: list[tuple[str, str, BaseException]], namespace: str, user: str,
    lease: float = relaypod.LEASE_SECONDS,
) -> CleanupError:
    """The error for objects a session could not delete, naming the missing rights (the
    relay pods end by themselves ``lease`` seconds later)."""
    denied = sorted({resource for _, resource, exc in failures if isinstance(exc, AccessDenied)})
    left = tuple(name for name, _, _ in failures)
    if denied:
        rights = " and ".join(f"delete {resource}" for resource in denied)
        cause = (
            f'could not delete {", ".join(left)} in namespace "{namespace}": user "{user}" '
            f"has no right to {rights}"
        )
        fix = (
            f"{RIGHTS_NEEDED} (missing: {rights}), then run kubectl relay gc; the relay pods "
            f"end by themselves within {lease:g}s"
        )
    else:
        reasons = "; ".join(f"{name}: {exc}" for name, _, exc in failures)
        cause = f'could not delete {", ".join(left)} in namespace "{namespace}" ({reasons})'
        fix = (
            "run kubectl relay gc once the cluster answers; the relay pods end by themselves "
            f"within {lease:g}s"
        )
    return CleanupError(cause, fix, left)
