"""A tunnel's status, and the events that tell its story, from what was observed.

Pure functions: the caller reads the tunnel and its children, this module
says what ``status`` should be and which events to post. Nothing here calls
the API, so every rule below is checked by tables in
``tests/operator/test_status.py``.

Two conditions, as Kubernetes conventions have them (``type``, ``status``,
``reason`` in CamelCase, a ``message`` for humans, ``lastTransitionTime``
changed only when ``status`` changes, ``observedGeneration``):

- ``Valid``: the spec can be run. ``False`` carries the parser's or the
  Secret check's reason and message, which say what to change.
- ``Ready``: every relay pod the spec asks for is ready and runs the
  current spec. ``kubectl wait --for=condition=Ready`` waits for it.

``phase`` sums both up in one word of the CRD's enum:

=========  ==================================================================
Invalid    ``Valid=False`` (a Deployment from the last valid spec may still run)
Paused     ``spec.replicas`` is 0
Ready      ``Ready=True``
Degraded   some relay pods are ready, fewer than asked
Pending    none ready yet, or a rollout of a new spec is under way
=========  ==================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kubectl_relay.jsontypes import JSONObject, JSONValue

from .builders import TUNNEL_LABEL
from .errors import TunnelError
from .spec import TunnelSpec

ConditionStatus = Literal["True", "False", "Unknown"]
Phase = Literal["Pending", "Ready", "Degraded", "Paused", "Invalid"]
EventType = Literal["Normal", "Warning"]

VALID = "Valid"
READY = "Ready"


@dataclass(frozen=True)
class Condition:
    """One entry of ``status.conditions``, without its transition time."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    observed_generation: int

    def to_body(self, last_transition: str) -> JSONObject:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": last_transition,
            "observedGeneration": self.observed_generation,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, object]) -> Condition:
        status = body.get("status")
        generation = body.get("observedGeneration")
        return cls(
            type=str(body.get("type", "")),
            status=status if status in ("True", "False") else "Unknown",
            reason=str(body.get("reason", "")),
            message=str(body.get("message", "")),
            observed_generation=generation if isinstance(generation, int) else 0,
        )


@dataclass(frozen=True)
class Event:
    """A Kubernetes event about the tunnel (``kubectl describe`` shows them)."""

    type: EventType
    reason: str
    message: str


# --- What the children say ------------------------------------------------------


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class Rollout:
    """The relay Deployment's state, as ``kubectl rollout status`` reads it."""

    desired: int = 0
    replicas: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    #: The Deployment controller has seen the Deployment's latest spec.
    observed: bool = False

    @property
    def complete(self) -> bool:
        """Every pod runs the current template and no old pod is left."""
        return (
            self.observed
            and self.updated >= self.desired
            and self.replicas <= self.updated
            and self.available >= self.updated
        )

    @classmethod
    def of(cls, deployment: Mapping[str, object] | None) -> Rollout | None:
        """The rollout of a Deployment body; None when there is no Deployment."""
        if deployment is None:
            return None
        meta = deployment.get("metadata")
        spec = deployment.get("spec")
        status = deployment.get("status")
        meta = meta if isinstance(meta, Mapping) else {}
        spec = spec if isinstance(spec, Mapping) else {}
        status = status if isinstance(status, Mapping) else {}
        desired = spec.get("replicas")
        return cls(
            desired=1 if desired is None else _int(desired),
            replicas=_int(status.get("replicas")),
            updated=_int(status.get("updatedReplicas")),
            ready=_int(status.get("readyReplicas")),
            available=_int(status.get("availableReplicas")),
            observed=_int(status.get("observedGeneration")) >= _int(meta.get("generation")),
        )


def service_address(name: str, namespace: str, service: Mapping[str, object] | None) -> str | None:
    """Where clients connect: a load balancer's address once it has one, else the DNS name."""
    if service is None:
        return None
    spec = service.get("spec")
    status = service.get("status")
    spec = spec if isinstance(spec, Mapping) else {}
    ports = spec.get("ports")
    port = ports[0].get("port") if isinstance(ports, list) and ports else None
    suffix = f":{port}" if isinstance(port, int) else ""
    if spec.get("type") == "LoadBalancer" and isinstance(status, Mapping):
        balancer = status.get("loadBalancer")
        ingress = balancer.get("ingress") if isinstance(balancer, Mapping) else None
        if isinstance(ingress, list) and ingress and isinstance(ingress[0], Mapping):
            host = ingress[0].get("ip") or ingress[0].get("hostname")
            if isinstance(host, str) and host:
                return f"{host}{suffix}"
    return f"{name}.{namespace}.svc{suffix}"


# --- Conditions ---------------------------------------------------------------------


def valid(generation: int) -> Condition:
    return Condition(VALID, "True", "SpecValid", "the spec is valid", generation)


def invalid(error: TunnelError, generation: int) -> Condition:
    """``Valid=False`` with the error's reason and its message, which says how to fix it."""
    return Condition(VALID, "False", error.condition_reason, str(error), generation)


def _pods_hint(name: str, namespace: str) -> str:
    return f"see kubectl describe pods -n {namespace} -l {TUNNEL_LABEL}={name}"


def ready(
    name: str,
    namespace: str,
    validity: Condition,
    rollout: Rollout | None,
    address: str | None,
) -> Condition:
    """``Ready`` from the validity of the spec and the relay Deployment's rollout.

    An invalid change does not touch a running Deployment, so the pods of the
    last valid spec may well be ready: ``Ready`` says so, and ``Valid``
    says that the spec in front of the reader is not what runs.
    """
    generation = validity.observed_generation
    if rollout is None:
        if validity.status == "False":
            return Condition(
                READY,
                "False",
                validity.reason,
                "no relay pods run until the spec is fixed (see the Valid condition)",
                generation,
            )
        return Condition(READY, "False", "Creating", "creating the relay pods", generation)
    if rollout.desired == 0:
        return Condition(
            READY, "False", "Paused", "spec.replicas is 0: no relay pods run", generation
        )
    counts = f"{rollout.ready}/{rollout.desired} relay pods ready"
    if rollout.complete and rollout.ready >= rollout.desired:
        where = f"; clients connect to {address}" if address else ""
        return Condition(READY, "True", "RelaysReady", counts + where, generation)
    if rollout.ready >= rollout.desired:
        return Condition(
            READY,
            "False",
            "RollingOut",
            f"rolling out the new spec: {rollout.updated}/{rollout.desired} relay pods updated, "
            f"{counts}",
            generation,
        )
    return Condition(
        READY, "False", "RelaysNotReady", f"{counts}; {_pods_hint(name, namespace)}", generation
    )


def phase(validity: Condition, readiness: Condition, rollout: Rollout | None) -> Phase:
    """The one-word summary (see the module's table)."""
    if validity.status == "False":
        return "Invalid"
    if readiness.reason == "Paused":
        return "Paused"
    if readiness.status == "True":
        return "Ready"
    if rollout is not None and 0 < rollout.ready < rollout.desired:
        return "Degraded"
    return "Pending"


def merge_conditions(
    previous: Sequence[Mapping[str, object]], conditions: Sequence[Condition], now: str
) -> list[JSONValue]:
    """The new ``status.conditions``: ``lastTransitionTime`` moves only when ``status`` does."""
    before = {str(c.get("type")): c for c in previous if isinstance(c, Mapping)}
    merged: list[JSONValue] = []
    for condition in conditions:
        old = before.get(condition.type)
        since = now
        if old is not None and old.get("status") == condition.status:
            stamp = old.get("lastTransitionTime")
            since = stamp if isinstance(stamp, str) and stamp else now
        merged.append(condition.to_body(since))
    return merged


def transition_events(
    previous: Sequence[Mapping[str, object]], conditions: Sequence[Condition]
) -> list[Event]:
    """Events for what changed: a new problem, a fixed one, readiness won or lost.

    Only changes post events, so a tunnel that waits for its Secret (and is
    checked again and again) does not flood ``kubectl describe``.
    """
    before = {
        str(c.get("type")): Condition.from_body(c) for c in previous if isinstance(c, Mapping)
    }
    events: list[Event] = []
    for condition in conditions:
        old = before.get(condition.type)
        same = old is not None and (old.status, old.reason, old.message) == (
            condition.status,
            condition.reason,
            condition.message,
        )
        if same:
            continue
        was_true = old is not None and old.status == "True"
        if condition.type == VALID:
            if condition.status == "False":
                events.append(Event("Warning", condition.reason, condition.message))
            elif old is not None and old.status == "False":
                events.append(Event("Normal", "SpecValid", "the spec is valid again"))
        elif condition.type == READY:
            if condition.status == "True" and not was_true:
                events.append(Event("Normal", "Ready", condition.message))
            elif condition.status != "True" and was_true:
                kind: EventType = (
                    "Normal" if condition.reason in ("Paused", "RollingOut") else "Warning"
                )
                events.append(Event(kind, "NotReady", condition.message))
    return events


# --- The whole status -----------------------------------------------------------------


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Report:
    """The status patch to write and the events to post."""

    status: JSONObject
    events: tuple[Event, ...]
    phase: Phase


def report(
    *,
    name: str,
    namespace: str,
    previous: Mapping[str, object],
    validity: Condition,
    spec: TunnelSpec | None,
    deployment: Mapping[str, object] | None,
    service: Mapping[str, object] | None,
    expires: datetime | None,
    now: datetime,
) -> Report:
    """The status of a tunnel (a merge patch of ``status``) and the events its change deserves.

    ``previous`` is the current ``status``; ``spec`` is None when the spec is
    invalid, and then the fields that describe what runs (``listen``,
    ``connect``, ``expiresAt``) keep their last values.
    """
    rollout = Rollout.of(deployment)
    address = service_address(name, namespace, service)
    readiness = ready(name, namespace, validity, rollout, address)
    summary = phase(validity, readiness, rollout)
    raw_conditions = previous.get("conditions")
    old_conditions = [
        c
        for c in (raw_conditions if isinstance(raw_conditions, list) else [])
        if isinstance(c, Mapping)
    ]
    conditions = (validity, readiness)
    status: JSONObject = {
        "observedGeneration": validity.observed_generation,
        "phase": summary,
        "replicas": rollout.replicas if rollout else 0,
        "readyReplicas": rollout.ready if rollout else 0,
        "serviceAddress": address,
        "conditions": merge_conditions(old_conditions, conditions, _timestamp(now)),
    }
    if spec is not None:
        status["listen"] = spec.listen
        status["connect"] = spec.connect
        status["expiresAt"] = _timestamp(expires) if expires else None
    events = transition_events(old_conditions, conditions)
    return Report(status=status, events=tuple(events), phase=summary)
