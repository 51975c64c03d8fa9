"""Deployments: one ReplicaSet per pod template, rolled with the RollingUpdate or Recreate strategy.

The new ReplicaSet is named ``<deployment>-<pod-template-hash>``; its
selector, template and pods carry the ``pod-template-hash`` label. A change of
the template makes a new ReplicaSet and rolls the pods over to it:

- RollingUpdate: the new ReplicaSet grows while the total stays within
  ``replicas + maxSurge``; old ReplicaSets shrink while at least
  ``replicas - maxUnavailable`` pods stay available (so with the defaults and
  a few replicas, old pods go only once new ones are ready);
- Recreate: old ReplicaSets go to zero, and the new one grows once their pods
  are gone.

Status follows the deployment controller: ``replicas``, ``updatedReplicas``,
``readyReplicas``, ``availableReplicas``, ``unavailableReplicas``,
``observedGeneration`` and the ``Available`` and ``Progressing`` conditions
(reasons NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated,
NewReplicaSetAvailable, ProgressDeadlineExceeded), which is what
``kubectl rollout status`` reads.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

from .controller import ClusterContext, Controller
from .informer import Key
from .objects import (
    Body,
    controller_uid,
    find_condition,
    is_terminating,
    meta,
    namespace_of,
    owner_reference,
    parse_time,
    set_condition,
    sort_by_creation,
    template_hash,
)

COMPONENT = "deployment-controller"
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """An IntOrString such as ``25%`` or ``1`` against ``total``."""
    if isinstance(value, str) and value.endswith("%"):
        exact = total * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value or 0)


def surge_and_unavailable(deployment: Body) -> tuple[int, int]:
    """``maxSurge`` and ``maxUnavailable`` as numbers (never both zero)."""
    spec = deployment.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, desired)


def _template_without_hash(rs: Body) -> Body:
    template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
    (template.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    return template


def _revision(rs: Body) -> int:
    try:
        return int((meta(rs).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _replicas(rs: Body) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0))


def _status(rs: Body, field: str) -> int:
    return int((rs.get("status") or {}).get(field, 0))


def _available(rs: Body) -> int:
    """Available pods, never more than the ReplicaSet is asked to keep.

    Right after a scale-down the status still counts the pods being removed;
    capping by ``spec.replicas`` keeps the next step from removing them twice.
    """
    return min(_status(rs, "availableReplicas"), _replicas(rs))


class DeploymentController(Controller):
    """ReplicaSets for every Deployment, and Deployment status."""

    name = "deployment-controller"

    def __init__(self, ctx: ClusterContext) -> None:
        super().__init__(ctx)
        self.deployments = ctx.informers.get("apps/v1", "deployments")
        self.replicasets = ctx.informers.get("apps/v1", "replicasets")
        self.deployments.add_handler(self.enqueue)
        self.replicasets.add_handler(self.enqueue_owner("Deployment"))

    async def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        deployment = self.deployments.get(namespace, name)
        if deployment is None or is_terminating(deployment):
            return None
        uid = meta(deployment).get("uid")
        owned = sort_by_creation(
            rs for rs in self.replicasets.items(namespace) if controller_uid(rs) == uid
        )
        spec = deployment.get("spec") or {}
        template = spec.get("template") or {}
        new_rs = next((rs for rs in owned if _template_without_hash(rs) == template), None)
        old = [rs for rs in owned if rs is not new_rs]
        progress_reason = None
        if new_rs is None and not spec.get("paused"):
            new_rs = await self._create_replicaset(deployment, owned)
            progress_reason = (
                "NewReplicaSetCreated",
                f'Created new replica set "{meta(new_rs)["name"]}"',
            )
        elif new_rs is not None and _revision(new_rs) <= max(
            (_revision(r) for r in old), default=0
        ):
            # A rollback to an older template: that ReplicaSet becomes the newest revision.
            new_rs = await self._set_revision(new_rs, max(_revision(r) for r in old) + 1)
        if not spec.get("paused") and new_rs is not None:
            if (spec.get("strategy") or {}).get("type") == "Recreate":
                scaled = await self._recreate(deployment, new_rs, old)
            else:
                scaled = await self._rolling(deployment, new_rs, old)
            if scaled and progress_reason is None:
                progress_reason = (
                    "ReplicaSetUpdated",
                    f'ReplicaSet "{meta(new_rs)["name"]}" is progressing.',
                )
            await self._cleanup(deployment, old)
        return await self._write_status(deployment, new_rs, old, progress_reason)

    async def _create_replicaset(self, deployment: Body, owned: list[Body]) -> Body:
        namespace = namespace_of(deployment)
        spec = deployment.get("spec") or {}
        template = copy.deepcopy(spec.get("template") or {})
        collisions = int((deployment.get("status") or {}).get("collisionCount", 0))
        pod_hash = template_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        revision = max((_revision(rs) for rs in owned), default=0) + 1
        surge, _ = surge_and_unavailable(deployment)
        desired = int(spec.get("replicas", 1))
        first = not any(_replicas(rs) for rs in owned)
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta(deployment)['name']}-{pod_hash}",
                "namespace": namespace,
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    REVISION: str(revision),
                    "deployment.kubernetes.io/desired-replicas": str(desired),
                    "deployment.kubernetes.io/max-replicas": str(desired + surge),
                },
                "ownerReferences": [owner_reference(deployment)],
            },
            "spec": {
                # The first ReplicaSet starts at full size; a rollout's new one grows step by step.
                "replicas": desired if first else 0,
                "minReadySeconds": spec.get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        created = await self.store.create("apps/v1", "replicasets", namespace, body)
        self.replicasets.cache[(namespace, meta(created)["name"])] = created
        self.ctx.events.post(
            deployment,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled up replica set {meta(created)['name']} from 0 to {_replicas(created)}",
            COMPONENT,
        )
        await self.store.patch(
            "apps/v1",
            "deployments",
            namespace,
            meta(deployment)["name"],
            {"metadata": {"annotations": {REVISION: str(revision)}}},
            patch_type="merge",
        )
        return created

    async def _set_revision(self, rs: Body, revision: int) -> Body:
        namespace = namespace_of(rs)
        updated = await self.store.patch(
            "apps/v1",
            "replicasets",
            namespace,
            meta(rs)["name"],
            {"metadata": {"annotations": {REVISION: str(revision)}}},
            patch_type="merge",
        )
        self.replicasets.cache[(namespace, meta(updated)["name"])] = updated
        return updated

    async def _scale(self, deployment: Body, rs: Body, replicas: int) -> Body:
        current = _replicas(rs)
        if current == replicas:
            return rs
        namespace = namespace_of(rs)
        updated = await self.store.patch(
            "apps/v1",
            "replicasets",
            namespace,
            meta(rs)["name"],
            {"spec": {"replicas": replicas}},
            patch_type="merge",
        )
        self.replicasets.cache[(namespace, meta(updated)["name"])] = updated
        direction = "up" if replicas > current else "down"
        self.ctx.events.post(
            deployment,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {meta(rs)['name']} from {current} to {replicas}",
            COMPONENT,
        )
        return updated

    async def _rolling(self, deployment: Body, new_rs: Body, old: list[Body]) -> bool:
        """One step of a rolling update; whether anything was scaled."""
        desired = int((deployment.get("spec") or {}).get("replicas", 1))
        surge, unavailable = surge_and_unavailable(deployment)
        scaled = False
        # Scale up the new ReplicaSet within replicas + maxSurge.
        total = _replicas(new_rs) + sum(_replicas(rs) for rs in old)
        if not any(_replicas(rs) for rs in old):
            target = desired  # nothing to roll over: plain scaling
        else:
            room = desired + surge - total
            target = min(desired, _replicas(new_rs) + max(room, 0))
        if target != _replicas(new_rs):
            new_rs = await self._scale(deployment, new_rs, target)
            scaled = True
        # Old pods that are not available cost no availability: remove them first, within
        # what maxUnavailable allows while the new pods are not available yet either.
        min_available = desired - unavailable
        all_pods = _replicas(new_rs) + sum(_replicas(rs) for rs in old)
        new_unavailable = _replicas(new_rs) - _available(new_rs)
        cleanup = all_pods - min_available - new_unavailable
        for index, rs in enumerate(old):
            unhealthy = min(_replicas(rs) - _available(rs), cleanup)
            if unhealthy > 0:
                old[index] = await self._scale(deployment, rs, _replicas(rs) - unhealthy)
                cleanup -= unhealthy
                scaled = True
        # Then scale old ReplicaSets down, oldest first, keeping minAvailable pods available.
        available = _available(new_rs) + sum(_available(rs) for rs in old)
        removable = available - min_available
        for index, rs in enumerate(old):
            step = min(removable, _replicas(rs))
            if step > 0:
                old[index] = await self._scale(deployment, rs, _replicas(rs) - step)
                removable -= step
                scaled = True
        return scaled

    async def _recreate(self, deployment: Body, new_rs: Body, old: list[Body]) -> bool:
        """Old ReplicaSets to zero; the new one up once no old pod is left."""
        scaled = False
        for rs in old:
            if _replicas(rs):
                await self._scale(deployment, rs, 0)
                scaled = True
        if any(_status(rs, "replicas") for rs in old) or scaled:
            return scaled
        desired = int((deployment.get("spec") or {}).get("replicas", 1))
        if _replicas(new_rs) != desired:
            await self._scale(deployment, new_rs, desired)
            return True
        return False

    async def _cleanup(self, deployment: Body, old: list[Body]) -> None:
        """Delete old, empty ReplicaSets beyond ``revisionHistoryLimit``."""
        limit = int((deployment.get("spec") or {}).get("revisionHistoryLimit", 10))
        empty = [rs for rs in old if not _replicas(rs) and not _status(rs, "replicas")]
        for rs in sorted(empty, key=_revision)[: max(len(empty) - limit, 0)]:
            await self.store.delete(
                "apps/v1", "replicasets", meta(rs).get("namespace"), meta(rs)["name"]
            )

    async def _write_status(
        self,
        deployment: Body,
        new_rs: Body | None,
        old: list[Body],
        progress: tuple[str, str] | None,
    ) -> float | None:
        spec = deployment.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        everything = [*old, *([new_rs] if new_rs is not None else [])]
        replicas = sum(_status(rs, "replicas") for rs in everything)
        available = sum(_status(rs, "availableReplicas") for rs in everything)
        updated = _status(new_rs, "replicas") if new_rs is not None else 0
        total_spec = sum(_replicas(rs) for rs in everything)
        _, max_unavailable = surge_and_unavailable(deployment)
        previous = (deployment.get("status") or {}).get("conditions") or []
        conditions = [c for c in previous if c.get("type") in ("Available", "Progressing")]
        if available >= desired - max_unavailable:
            conditions = set_condition(
                conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                with_update_time=True,
            )
        else:
            conditions = set_condition(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                with_update_time=True,
            )
        wait = None
        rs_name = meta(new_rs)["name"] if new_rs is not None else ""
        complete = (
            new_rs is not None
            and updated == desired
            and replicas == desired
            and available == desired
            and _replicas(new_rs) == desired
        )
        current = find_condition(deployment, "Progressing")
        if spec.get("paused"):
            conditions = set_condition(
                conditions,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                with_update_time=True,
            )
        elif complete:
            conditions = set_condition(
                conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
                with_update_time=True,
            )
        elif progress is not None or current is None or self._progressed(deployment, everything):
            reason, message = progress or (
                ("FoundNewReplicaSet", f'Found new replica set "{rs_name}"')
                if current is None
                else ("ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
            )
            conditions = [c for c in conditions if c["type"] != "Progressing"]
            conditions = set_condition(
                conditions, "Progressing", "True", reason, message, with_update_time=True
            )
        if not complete and not spec.get("paused"):
            deadline = (
                float(spec.get("progressDeadlineSeconds", 600))
                * self.settings.progress_deadline_scale
            )
            progressing = next((c for c in conditions if c["type"] == "Progressing"), None)
            last = parse_time((progressing or {}).get("lastUpdateTime")) or time.time()
            if (
                progressing
                and progressing.get("status") == "True"
                and time.time() - last > deadline
            ):
                conditions = set_condition(
                    conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                    with_update_time=True,
                )
            else:
                wait = max(deadline - (time.time() - last), 0.1)
        order = ["Available", "Progressing"]
        conditions.sort(key=lambda c: order.index(c["type"]))
        status: dict[str, Any] = {
            "observedGeneration": meta(deployment).get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": sum(_status(rs, "readyReplicas") for rs in everything),
            "availableReplicas": available,
            "unavailableReplicas": max(total_spec - available, 0),
            "conditions": conditions,
        }
        if status != {k: (deployment.get("status") or {}).get(k) for k in status}:
            await self.store.patch(
                "apps/v1",
                "deployments",
                meta(deployment).get("namespace"),
                meta(deployment)["name"],
                {"status": status},
                patch_type="merge",
                subresource="status",
            )
        return wait

    @staticmethod
    def _progressed(deployment: Body, everything: list[Body]) -> bool:
        """Whether pods became ready or available since the last status (counts as progress)."""
        old = deployment.get("status") or {}
        return sum(_status(rs, "readyReplicas") for rs in everything) > int(
            old.get("readyReplicas", 0)
        ) or sum(_status(rs, "availableReplicas") for rs in everything) > int(
            old.get("availableReplicas", 0)
        )
