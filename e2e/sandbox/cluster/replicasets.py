"""ReplicaSets: keep ``spec.replicas`` pods of the template running, and report how many are ready.

Pods are created from the template with ``generateName: <rs>-`` and an
ownerReference to the ReplicaSet (``controller: true``). Scaling down removes
the least useful pods first: unscheduled or pending, then not ready, then the
newest. Finished pods (Succeeded or Failed) are replaced and removed.

A pod counts as available once it has been ready for ``minReadySeconds``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from .controller import ClusterContext, Controller
from .informer import Informer, Key
from .objects import (
    Body,
    controller_uid,
    find_condition,
    is_terminating,
    meta,
    namespace_of,
    owner_reference,
    parse_time,
    pod_is_ready,
    pod_is_terminal,
)

COMPONENT = "replicaset-controller"


def pod_from_template(
    template: Body, owner: Body, *, prefix: str, extra_labels: dict[str, str]
) -> Body:
    """A new pod for a workload's template, owned by ``owner``."""
    template_meta = template.get("metadata") or {}
    metadata: dict[str, Any] = {
        "generateName": prefix,
        "namespace": namespace_of(owner),
        "labels": {**(template_meta.get("labels") or {}), **extra_labels},
        "ownerReferences": [owner_reference(owner)],
    }
    if template_meta.get("annotations"):
        metadata["annotations"] = dict(template_meta["annotations"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def ready_since(pod: Body) -> float | None:
    """When the pod became ready (epoch seconds), or None if it is not ready."""
    if not pod_is_ready(pod):
        return None
    condition = find_condition(pod, "Ready") or {}
    return parse_time(condition.get("lastTransitionTime")) or time.time()


def _deletion_rank(pod: Body) -> tuple[int, int]:
    """Sort key of scale-down: pending pods first, then unready ones, then the rest."""
    status = pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1}.get(str(status.get("phase")), 2)
    return (phase_rank, 1 if pod_is_ready(pod) else 0)


class ReplicaSetController(Controller):
    """Pods for every ReplicaSet, and ReplicaSet status."""

    name = "replicaset-controller"

    def __init__(self, ctx: ClusterContext) -> None:
        super().__init__(ctx)
        self.replicasets = ctx.informers.get("apps/v1", "replicasets")
        self.pods: Informer = ctx.informers.get("v1", "pods")
        self.replicasets.add_handler(self.enqueue)
        self.pods.add_handler(self.enqueue_owner("ReplicaSet"))

    def owned_pods(self, rs: Body) -> list[Body]:
        """The pods this ReplicaSet controls."""
        uid = meta(rs).get("uid")
        namespace = namespace_of(rs)
        return [p for p in self.pods.items(namespace) if controller_uid(p) == uid]

    async def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        rs = self.replicasets.get(namespace, name)
        if rs is None or is_terminating(rs):
            return None
        spec = rs.get("spec") or {}
        pods = self.owned_pods(rs)
        for pod in pods:
            if pod_is_terminal(pod) and not is_terminating(pod):
                await self._delete(namespace, pod)
        active = [p for p in pods if not pod_is_terminal(p) and not is_terminating(p)]
        desired = int(spec.get("replicas", 1))
        if len(active) < desired:
            template = spec.get("template") or {}
            for _ in range(desired - len(active)):
                body = pod_from_template(template, rs, prefix=f"{name}-", extra_labels={})
                created = await self.store.create("v1", "pods", namespace, body)
                # Seen by the next reconcile before the watch reports it: no double creation.
                self.pods.cache[(namespace, meta(created)["name"])] = created
                self.ctx.events.post(
                    rs,
                    "Normal",
                    "SuccessfulCreate",
                    f"Created pod: {meta(created)['name']}",
                    COMPONENT,
                )
                active.append(created)
        elif len(active) > desired:
            ranked = sorted(
                active, key=lambda p: str(meta(p).get("creationTimestamp", "")), reverse=True
            )
            ranked.sort(key=_deletion_rank)  # stable: the newest first within a rank
            for pod in ranked[: len(active) - desired]:
                await self._delete(namespace, pod)
                self.ctx.events.post(
                    rs, "Normal", "SuccessfulDelete", f"Deleted pod: {meta(pod)['name']}", COMPONENT
                )
                active.remove(pod)
        return await self._write_status(rs, active)

    async def _delete(self, namespace: str, pod: Body) -> None:
        await self.store.delete("v1", "pods", namespace, meta(pod)["name"])
        self.pods.cache.pop((namespace, meta(pod)["name"]), None)

    async def _write_status(self, rs: Body, active: list[Body]) -> float | None:
        min_ready = float((rs.get("spec") or {}).get("minReadySeconds", 0))
        now = time.time()
        ready = available = 0
        wait: float | None = None
        for pod in active:
            since = ready_since(pod)
            if since is None:
                continue
            ready += 1
            if now - since >= min_ready:
                available += 1
            else:
                remaining = min_ready - (now - since)
                wait = remaining if wait is None else min(wait, remaining)
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": len(active),
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": meta(rs).get("generation", 1),
        }
        old = rs.get("status") or {}
        if any(old.get(k, 0) != v for k, v in status.items()):
            updated = await self.store.patch(
                "apps/v1",
                "replicasets",
                meta(rs).get("namespace"),
                meta(rs)["name"],
                {"status": status},
                patch_type="merge",
                subresource="status",
            )
            self.replicasets.cache[(namespace_of(rs), meta(rs)["name"])] = (
                updated
            )
        return wait
