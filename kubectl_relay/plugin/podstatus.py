"""What a relay pod's status says, in words for the user (pure functions over API objects)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import relaypod
from .errors import ImagePullError, RelayPodError
from .kube import Pod

if TYPE_CHECKING:
    from .session import RelayPod


def container_state(pod: Pod) -> dict[str, object]:
    """The relay container's ``state`` (``waiting``, ``running`` or ``terminated``), or ``{}``."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == relaypod.CONTAINER:
            return dict(status.get("state") or {})
    return {}


def waiting_reason(pod: Pod) -> tuple[str, str]:
    """Why the pod is not running yet: (reason, message)."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition.get("reason") or "Unschedulable", condition.get("message") or ""
    waiting = container_state(pod).get("waiting")
    if isinstance(waiting, dict):
        return str(waiting.get("reason") or "Waiting"), str(waiting.get("message") or "")
    return status.get("phase", "Pending"), ""


def termination(pod: Pod) -> str:
    """How the relay container (or the pod) ended, in words: ``exit code 1, Error``."""
    terminated = container_state(pod).get("terminated")
    if isinstance(terminated, dict):
        code = terminated.get("exitCode")
        reason = terminated.get("reason") or ""
        return f"exit code {code}{', ' + str(reason) if reason else ''}"
    status = pod.get("status") or {}
    return str(status.get("reason") or status.get("message") or status.get("phase") or "unknown")


def start_error(
    error: type[RelayPodError], relay: RelayPod, reason: str, message: str, image: str
) -> RelayPodError:
    """The error for a relay container that cannot start (``reason`` from its waiting state)."""
    if error is ImagePullError:
        return ImagePullError(
            relay.pod,
            f'relay pod {relay.pod} cannot pull image "{image}" ({reason}'
            f"{': ' + message if message else ''})",
            f"check --image (default {relaypod.RELAY_IMAGE}) and the cluster's access to "
            "its registry",
        )
    return error(
        relay.pod,
        f"relay pod {relay.pod} cannot start its container ({reason}: {message})",
        f"check kubectl describe pod {relay.pod} -n {relay.namespace}",
    )
