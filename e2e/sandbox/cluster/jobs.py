"""Jobs: pods until ``completions`` succeed, retried up to ``backoffLimit``, bounded in time.

- Up to ``parallelism`` pods run at once, never more than the completions
  still missing. Pods get the ``job-name`` and ``controller-uid`` labels (plain
  and ``batch.kubernetes.io/``-prefixed) and an ownerReference to the Job.
- With ``restartPolicy: Never`` a failed pod is replaced after a backoff that
  doubles per failure; with ``OnFailure`` the kubelet restarts the container in
  place, and those restarts count against ``backoffLimit``.
- The Job fails (``FailureTarget`` then ``Failed``, reason BackoffLimitExceeded)
  once more pods failed than ``backoffLimit`` allows, or (reason
  DeadlineExceeded) when it ran longer than ``activeDeadlineSeconds``; its
  running pods are deleted and counted as failed.
- It completes (``SuccessCriteriaMet`` then ``Complete``) when enough pods
  succeeded; ``completionTime`` is set. Finished pods stay, so their logs do.
- ``ttlSecondsAfterFinished`` deletes the finished Job (and its pods, by
  garbage collection).
"""

from __future__ import annotations

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
    now,
    parse_time,
    pod_is_ready,
    set_condition,
)
from .replicasets import pod_from_template

COMPONENT = "job-controller"


def _finished_at(pod: Body) -> float:
    """When a finished pod's last container ended (epoch seconds)."""
    stamps = [
        parse_time((s.get("state") or {}).get("terminated", {}).get("finishedAt")) or 0.0
        for s in (pod.get("status") or {}).get("containerStatuses") or []
    ]
    return max(stamps, default=0.0)


def _job_labels(job: Body) -> dict[str, str]:
    """The labels a Job's pods carry."""
    name, uid = meta(job)["name"], str(meta(job)["uid"])
    return {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    }


def job_finished(job: Body) -> str | None:
    """``Complete`` or ``Failed`` once the Job ended, else None."""
    for kind in ("Complete", "Failed"):
        condition = find_condition(job, kind)
        if condition and condition.get("status") == "True":
            return kind
    return None


class JobController(Controller):
    """Pods for every Job, and Job status."""

    name = "job-controller"

    def __init__(self, ctx: ClusterContext) -> None:
        super().__init__(ctx)
        self.jobs = ctx.informers.get("batch/v1", "jobs")
        self.pods = ctx.informers.get("v1", "pods")
        self.jobs.add_handler(self.enqueue)
        self.pods.add_handler(self.enqueue_owner("Job"))

    async def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        job = self.jobs.get(namespace, name)
        if job is None or is_terminating(job):
            return None
        spec = job.get("spec") or {}
        status = dict(job.get("status") or {})
        uid = meta(job).get("uid")
        pods = [p for p in self.pods.items(namespace) if controller_uid(p) == uid]
        finished = job_finished(job)
        if finished:
            return await self._after_finish(job, status)
        if spec.get("suspend"):
            return None
        if not spec.get("selector") and not spec.get("manualSelector"):
            await self._default_selector(job)
        status.setdefault("startTime", now())
        phases = [str((p.get("status") or {}).get("phase")) for p in pods]
        active = [
            p
            for p, ph in zip(pods, phases, strict=True)
            if ph not in ("Succeeded", "Failed") and not is_terminating(p)
        ]
        succeeded = phases.count("Succeeded")
        failed = phases.count("Failed")
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        backoff_limit = int(spec.get("backoffLimit", 6))
        restarts = sum(
            int(c.get("restartCount", 0))
            for p in active
            for c in (p.get("status") or {}).get("containerStatuses") or []
        )
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        failure: tuple[str, str] | None = None
        deadline = spec.get("activeDeadlineSeconds")
        started = parse_time(status["startTime"]) or time.time()
        if (
            failed > backoff_limit
            or (restarts and restarts >= backoff_limit > 0)
            or (backoff_limit == 0 and (failed or restarts))
        ):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and time.time() - started >= float(deadline):
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        done = (
            succeeded >= int(completions)
            if completions is not None
            else (succeeded > 0 and not active)
        )
        wait: float | None = None
        if failure is not None:
            for pod in active:
                await self._delete_pod(namespace, pod)
            failed += len(active)
            active = []
            conditions = set_condition(conditions, "FailureTarget", "True", *failure)
            conditions = set_condition(conditions, "Failed", "True", *failure)
            self.ctx.events.post(job, "Warning", failure[0], failure[1], COMPONENT)
        elif done:
            for pod in active:
                await self._delete_pod(namespace, pod)
            active = []
            message = "Reached expected number of succeeded pods"
            conditions = set_condition(
                conditions, "SuccessCriteriaMet", "True", "CompletionsReached", message
            )
            conditions = set_condition(
                conditions, "Complete", "True", "CompletionsReached", message
            )
            status["completionTime"] = now()
            self.ctx.events.post(job, "Normal", "Completed", "Job completed", COMPONENT)
        else:
            missing = (int(completions) - succeeded) if completions is not None else parallelism
            wanted = min(parallelism, missing)
            if len(active) < wanted:
                wait = self._backoff_left(pods, failed)
                if wait is None:
                    for _ in range(wanted - len(active)):
                        active.append(await self._create_pod(job))
            if deadline is not None:
                left = float(deadline) - (time.time() - started)
                wait = left if wait is None else min(wait, left)
        status.update(
            {
                "active": len(active),
                "succeeded": succeeded,
                "failed": failed,
                "ready": sum(1 for p in active if pod_is_ready(p)),
                "terminating": 0,
                "uncountedTerminatedPods": {},
            }
        )
        if conditions:
            status["conditions"] = conditions
        for zero in ("active", "succeeded", "failed"):
            if not status[zero]:
                del status[zero]
        if status != (job.get("status") or {}):
            # A PUT of the status, not a merge patch: counters that drop to zero disappear.
            await self.store.replace_status(
                "batch/v1", "jobs", namespace, name, {**job, "status": status}
            )
        return wait

    def _backoff_left(self, pods: list[Body], failed: int) -> float | None:
        """Seconds until a replacement may start after failures, or None if it may start now."""
        if not failed:
            return None
        delay = min(self.settings.job_backoff * 2 ** (failed - 1), self.settings.job_backoff_cap)
        last = max(
            (_finished_at(p) for p in pods if (p.get("status") or {}).get("phase") == "Failed"),
            default=0.0,
        )
        left = last + delay - time.time()
        return left if left > 0 else None

    async def _default_selector(self, job: Body) -> None:
        """The selector and template labels the real API server gives a Job at creation.

        ``kubectl logs job/NAME`` and ``kubectl describe job`` find the pods
        through them.
        """
        labels = _job_labels(job)
        uid_label = "batch.kubernetes.io/controller-uid"
        patch = {
            "spec": {
                "selector": {"matchLabels": {uid_label: labels[uid_label]}},
                "template": {"metadata": {"labels": labels}},
            }
        }
        namespace = namespace_of(job)
        updated = await self.store.patch(
            "batch/v1", "jobs", namespace, meta(job)["name"], patch, patch_type="merge"
        )
        self.jobs.cache[(namespace, meta(job)["name"])] = updated

    async def _create_pod(self, job: Body) -> Body:
        namespace = namespace_of(job)
        name = meta(job)["name"]
        labels = _job_labels(job)
        body = pod_from_template(
            (job.get("spec") or {}).get("template") or {},
            job,
            prefix=f"{name}-",
            extra_labels=labels,
        )
        created = await self.store.create("v1", "pods", namespace, body)
        self.pods.cache[(namespace, meta(created)["name"])] = created
        self.ctx.events.post(
            job, "Normal", "SuccessfulCreate", f"Created pod: {meta(created)['name']}", COMPONENT
        )
        return created

    async def _delete_pod(self, namespace: str, pod: Body) -> None:
        await self.store.delete("v1", "pods", namespace, meta(pod)["name"])
        self.pods.cache.pop((namespace, meta(pod)["name"]), None)

    async def _after_finish(self, job: Body, status: dict[str, Any]) -> float | None:
        """Apply ``ttlSecondsAfterFinished``."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        condition = find_condition(job, "Complete") or find_condition(job, "Failed") or {}
        finished = parse_time(condition.get("lastTransitionTime")) or time.time()
        left = finished + float(ttl) - time.time()
        if left > 0:
            return left
        await self.store.delete("batch/v1", "jobs", meta(job).get("namespace"), meta(job)["name"])
        return None
