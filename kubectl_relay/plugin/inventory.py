"""``kubectl relay ls`` and ``gc``: the user's relay pods, and which of them are orphans.

Relay pods carry ``app.kubernetes.io/managed-by=kubectl-relay`` and the user's
label; their annotations say which client started them (host and pid), when,
and until when they may live. A relay is an orphan when

- it has finished (``Succeeded``: it went idle; ``Failed``: it failed or ran
  past its deadline), and a cluster without the TTL-after-finished controller
  keeps it;
- its deadline has passed;
- its client ran on this machine and that process is gone.

``gc`` deletes orphans with their Jobs (and temporary Secrets of sessions that
have no relay left); ``--all`` deletes every relay of the user.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from . import relaypod
from .errors import AccessDenied, PluginError
from .kube import Cluster, Pod, job_path, pod_path


@dataclass(frozen=True)
class RelayInfo:
    """One relay pod as ``ls`` shows it."""

    namespace: str
    pod: str
    job: str | None
    user: str
    session: str
    target: str
    client: str
    phase: str
    started: datetime | None
    deadline: datetime | None
    #: Why it is an orphan; empty while its client still uses it.
    orphan: str = ""

    def as_dict(self) -> dict[str, str | None]:
        """Every field, times in RFC 3339 as the API writes them (``ls -o json|yaml``)."""
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "job": self.job,
            "user": self.user,
            "session": self.session,
            "target": self.target,
            "client": self.client,
            "phase": self.phase,
            "started": format_time(self.started),
            "deadline": format_time(self.deadline),
            "orphan": self.orphan or None,
        }


@dataclass(frozen=True)
class Inventory:
    """What ``ls`` found: the relays, and where it looked."""

    relays: list[RelayInfo]
    #: The namespace looked at, or None for all namespaces.
    namespace: str | None
    #: Set when listing across namespaces was refused and one namespace was listed instead.
    note: str = ""


def selector(user: str | None) -> str:
    """The label selector of relay pods (of one user)."""
    parts = [f"{relaypod.LABEL_MANAGED_BY}={relaypod.MANAGER}"]
    if user is not None:
        parts.append(f"{relaypod.LABEL_USER}={relaypod.label_value(user)}")
    return ",".join(parts)


async def list_relays(
    cluster: Cluster,
    *,
    all_namespaces: bool,
    user: str | None,
    now: datetime | None = None,
) -> Inventory:
    """The relay pods of ``user`` (every user's when None), in one or all namespaces."""
    now = now or datetime.now(UTC)
    labels = selector(user)
    note = ""
    namespace: str | None = None if all_namespaces else cluster.namespace
    try:
        items = await cluster.list_items(_pods_path(namespace), labels=labels)
    except AccessDenied:
        if namespace is not None:
            raise
        namespace = cluster.namespace
        note = (
            f"you may not list pods in all namespaces; showing namespace {namespace} "
            "(use -n for another)"
        )
        items = await cluster.list_items(_pods_path(namespace), labels=labels)
    relays = [describe(cast(Pod, item), now) for item in items]
    relays.sort(key=lambda r: (r.namespace, r.started or now, r.pod))
    return Inventory(relays, namespace, note)


def describe(pod: Pod, now: datetime) -> RelayInfo:
    """A relay pod as ``ls`` shows it, with its orphan reason."""
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    owner = next(
        (ref.get("name") for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "Job"),
        None,
    )
    phase = (pod.get("status") or {}).get("phase", "Pending")
    client = annotations.get(relaypod.ANNOTATION_CLIENT, "")
    deadline = _parse_time(annotations.get(relaypod.ANNOTATION_DEADLINE))
    info = RelayInfo(
        namespace=meta.get("namespace", ""),
        pod=meta.get("name", ""),
        job=owner,
        user=labels.get(relaypod.LABEL_USER, ""),
        session=labels.get(relaypod.LABEL_SESSION, ""),
        target=annotations.get(relaypod.ANNOTATION_TARGET, ""),
        client=client,
        phase=phase,
        started=_parse_time(annotations.get(relaypod.ANNOTATION_STARTED)),
        deadline=deadline,
    )
    return RelayInfo(**{**info.__dict__, "orphan": orphan_reason(info, now)})


def orphan_reason(relay: RelayInfo, now: datetime) -> str:
    """Why ``relay`` is an orphan ("" if it is not)."""
    if relay.phase in ("Succeeded", "Failed"):
        return f"finished ({relay.phase})"
    if relay.deadline is not None and relay.deadline <= now:
        return "past its deadline"
    host, _, pid_text = relay.client.rpartition(":")
    if host == socket.gethostname() and pid_text.isdigit() and not _alive(int(pid_text)):
        return f"its client (pid {pid_text}) is gone"
    return ""


async def delete_relay(cluster: Cluster, relay: RelayInfo) -> None:
    """Delete a relay's Job (if any) and pod."""
    if relay.job:
        await cluster.delete(job_path(relay.namespace, relay.job), propagation="Background")
    await cluster.delete(pod_path(relay.namespace, relay.pod))


async def collect_garbage(
    cluster: Cluster, inventory: Inventory, *, everything: bool = False, dry_run: bool = False
) -> list[RelayInfo]:
    """Delete the orphans (or, with ``everything``, all listed relays); what was deleted."""
    chosen = [r for r in inventory.relays if everything or r.orphan]
    if dry_run:
        return chosen
    for relay in chosen:
        await delete_relay(cluster, relay)
    live_sessions = {(r.namespace, r.session) for r in inventory.relays if r not in chosen}
    for namespace in {r.namespace for r in chosen}:
        await _delete_stale_secrets(cluster, namespace, live_sessions)
    return chosen


async def delete_finished(cluster: Cluster, namespace: str, user: str) -> int:
    """Delete ``user``'s finished relays in ``namespace`` (a session does this as it starts)."""
    items = await cluster.list_items(_pods_path(namespace), labels=selector(user))
    now = datetime.now(UTC)
    count = 0
    for item in items:
        relay = describe(cast(Pod, item), now)
        if relay.phase in ("Succeeded", "Failed"):
            with contextlib.suppress(PluginError):
                await delete_relay(cluster, relay)
                count += 1
    return count


async def _delete_stale_secrets(
    cluster: Cluster, namespace: str, live_sessions: set[tuple[str, str]]
) -> None:
    path = f"/api/v1/namespaces/{namespace}/secrets"
    with contextlib.suppress(PluginError):
        for item in await cluster.list_items(path, labels=selector(None)):
            meta = item.get("metadata") or {}
            session = (meta.get("labels") or {}).get(relaypod.LABEL_SESSION, "")
            if (namespace, session) not in live_sessions:
                await cluster.delete(f"{path}/{meta.get('name')}")


def _pods_path(namespace: str | None) -> str:
    return "/api/v1/pods" if namespace is None else f"/api/v1/namespaces/{namespace}/pods"


def _alive(pid: int) -> bool:
    if os.name == "nt":
        # Windows has no signal 0: os.kill would send CTRL_C_EVENT (0) or end the
        # process. Its relays count as alive; deadlines and idle timeouts end them.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: How the annotations (and the API) write times.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(when: datetime | None) -> str | None:
    """``when`` as the annotations write it (UTC, RFC 3339), or None."""
    return None if when is None else when.astimezone(UTC).strftime(TIME_FORMAT)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
