"""Reconciling one tunnel: read it, check it, build its children, apply them, report.

``Reconciler`` holds what every reconciliation needs (the API client, the
settings, the metrics, a lock per tunnel) and does the I/O; the decisions
are the pure functions of ``spec``, ``builders``, ``apply`` and ``status``.
It knows nothing of kopf: it returns an ``Outcome`` (what happened, the
events to post, the error if any) or raises ``TransientApiError``, and the
handlers turn those into kopf's terms.

The order of a reconciliation is what keeps bad input from half-creating
anything:

1. parse the spec (the engine's address parser included);
2. read every Secret it names, and check the keys;
3. build the Deployment, the Service and the NetworkPolicy;
4. read the live children, and refuse any that another owner controls;
5. write: the Service first (the API may still refuse it: a taken node
   port), then the NetworkPolicy (so relay pods never run unprotected),
   then the Deployment; delete a Service or NetworkPolicy the spec dropped;
6. write the status, computed from what the writes returned.

A failure in 1 to 4 writes nothing but the status. An invalid change to a
running tunnel leaves its Deployment as it was: the relays keep serving the
last valid spec while ``Valid=False`` says what to fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, cast

from kubectl_relay.jsontypes import JSONObject

from .apply import changes, contains, controller_of, is_controlled_by, patch_for, with_last_applied
from .bodies import TunnelBody
from .builders import (
    API_VERSION,
    desired_deployment,
    desired_network_policy,
    desired_service,
    owner_from_body,
)
from .client import Kube, path
from .errors import (
    ApiError,
    ConflictError,
    ReconcileError,
    RejectedError,
    SecretError,
    TransientApiError,
    TunnelError,
)
from .fields import parse_ttl
from .metrics import OperatorMetrics, Result
from .settings import Settings
from .spec import TunnelSpec, check_secret, expires_at, parse_spec
from .status import VALID, Condition, Event, Phase, invalid, report, valid

PLURAL = "socattunnels"
Kind = Literal["Deployment", "Service", "NetworkPolicy"]

#: Where each kind of child lives, in the order they are written.
CHILDREN: Mapping[Kind, tuple[str, str]] = {
    "Service": ("v1", "services"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "Deployment": ("apps/v1", "deployments"),
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_timestamp(text: object) -> datetime | None:
    """An RFC 3339 timestamp as the API server writes it (``2024-05-01T12:00:00Z``)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Outcome:
    """What a reconciliation did, for the handlers to report."""

    tunnel: JSONObject  # the body read at the start: events refer to it
    result: Result
    phase: Phase
    events: tuple[Event, ...] = ()
    error: TunnelError | None = None


@dataclass
class Reconciler:
    """Reconciles tunnels through ``kube``; one at a time per tunnel."""

    kube: Kube
    settings: Settings
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], datetime] = utcnow
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        # One reconciliation or status refresh at a time per tunnel: a status
        # computed from older reads must never overwrite a newer one.
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept about a deleted tunnel."""
        self._locks.pop((namespace, name), None)
        self.metrics.phases.pop(f"{namespace}/{name}", None)

    @staticmethod
    def tunnel_url(namespace: str, name: str, subresource: str | None = None) -> str:
        return path(API_VERSION, PLURAL, namespace, name, subresource)

    @staticmethod
    def child_url(kind: Kind, namespace: str, name: str | None = None) -> str:
        api_version, plural = CHILDREN[kind]
        return path(api_version, plural, namespace, name)

    # -- reconciliation ----------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> Outcome | None:
        """Bring the tunnel's children to its spec and report; None if it is gone or going.

        The tunnel is read again here rather than taken from the caller: the
        status written at the end must start from the latest one.
        """
        async with self._lock(namespace, name):
            tunnel = await self.kube.get(self.tunnel_url(namespace, name))
            if tunnel is None or _deleting(tunnel):
                return None
            body = cast(TunnelBody, tunnel)
            generation = _generation(tunnel)
            changes: list[Event] = []
            spec: TunnelSpec | None = None
            error: TunnelError | None = None
            written: dict[Kind, JSONObject | None] = {}
            try:
                try:
                    spec = await self._reconcile_children(body, namespace, name, changes, written)
                except (TunnelError, TransientApiError):
                    raise
                except Exception as exc:  # said in the status: see ReconcileError
                    raise ReconcileError(exc) from exc
                validity = valid(generation)
            except TunnelError as exc:
                error, spec, validity = exc, None, invalid(exc, generation)
                # Report on what runs, if anything: the last valid spec's relays.
                uid = str((tunnel.get("metadata") or {}).get("uid", ""))  # type: ignore[union-attr]
                for kind in ("Deployment", "Service"):
                    obj = await self._read(kind, namespace, name)
                    written[kind] = obj if obj is not None and is_controlled_by(obj, uid) else None
            outcome = await self._report(
                tunnel, validity, spec, written.get("Deployment"), written.get("Service")
            )
            events = list(changes)
            previous = tunnel.get("status")
            previous_generation = (
                previous.get("observedGeneration") if isinstance(previous, dict) else None
            )
            if spec is not None and previous_generation != generation:
                events += [Event("Warning", "InsecureSpec", text) for text in spec.warnings]
            events += outcome.events
            if isinstance(error, SecretError):
                result: Result = "waiting"
            elif error is not None:
                result = "invalid"
            else:
                result = "applied" if changes else "unchanged"
            self.metrics.reconciliations[result] += 1
            return Outcome(tunnel, result, outcome.phase, tuple(events), error)

    async def _reconcile_children(
        self,
        body: TunnelBody,
        namespace: str,
        name: str,
        changes: list[Event],
        written: dict[Kind, JSONObject | None],
    ) -> TunnelSpec:
        """Steps 1 to 5: parse, check Secrets, build, check owners, write; the parsed spec."""
        spec = parse_spec(body, self.settings.tunnel_policy)
        secret_versions = await self._check_secrets(spec)
        owner = owner_from_body(body)
        desired: dict[Kind, JSONObject | None] = {
            "Service": desired_service(spec, owner),
            "NetworkPolicy": desired_network_policy(spec, owner),
            "Deployment": desired_deployment(
                spec, owner, self.settings, secret_versions=secret_versions
            ),
        }
        live = {kind: await self._read(kind, namespace, name) for kind in CHILDREN}
        for kind, obj in live.items():
            if obj is not None and desired[kind] is not None:
                _check_controller(kind, obj, owner["uid"])
        for kind in CHILDREN:
            written[kind], event = await self._apply(kind, live[kind], desired[kind])
            if event is not None:
                changes.append(event)
        return spec

    async def _check_secrets(self, spec: TunnelSpec) -> dict[str, str]:
        """Check every Secret the spec mounts; their resourceVersions (they roll the pods)."""
        versions: dict[str, str] = {}
        for mount in spec.secret_mounts:
            secret = await self.kube.get(path("v1", "secrets", spec.namespace, mount.secret_name))
            check_secret(mount, spec.namespace, secret)
            assert secret is not None
            meta = secret.get("metadata")
            version = meta.get("resourceVersion") if isinstance(meta, dict) else None
            versions[mount.secret_name] = str(version or "")
        return versions

    async def _read(self, kind: Kind, namespace: str, name: str) -> JSONObject | None:
        return await self.kube.get(self.child_url(kind, namespace, name))

    async def _apply(
        self, kind: Kind, live: JSONObject | None, desired: JSONObject | None
    ) -> tuple[JSONObject | None, Event | None]:
        """Create, patch or delete one child; the object as it is now, and what to tell."""
        if desired is None:
            if live is None:
                return None, None
            meta = live.get("metadata")
            assert isinstance(meta, dict)
            name, namespace = str(meta.get("name")), str(meta.get("namespace"))
            await self.kube.delete(self.child_url(kind, namespace, name))
            message = f"deleted {kind} {name}: the spec no longer asks for it"
            return None, Event("Normal", "Deleted", message)
        meta = desired["metadata"]
        assert isinstance(meta, dict)
        name, namespace = str(meta["name"]), str(meta["namespace"])
        try:
            if live is None:
                created = await self.kube.create(
                    self.child_url(kind, namespace), with_last_applied(desired)
                )
                return created, Event("Normal", "Created", f"created {kind} {name}")
            patch = patch_for(live, desired)
            if patch is None:
                return live, None
            patched = await self.kube.patch(self.child_url(kind, namespace, name), patch)
        except ApiError as exc:
            if exc.status == 422:
                raise RejectedError(kind, name, exc) from exc
            raise
        message = f"updated {kind} {name}"
        if kind == "Deployment" and _template_changed(live, desired):
            message += ": the relay pods roll to the new spec"
        return patched, Event("Normal", "Updated", message)

    # -- status ---------------------------------------------------------------------------

    async def _report(
        self,
        tunnel: JSONObject,
        validity: Condition,
        spec: TunnelSpec | None,
        deployment: JSONObject | None,
        service: JSONObject | None,
    ) -> _Reported:
        meta = tunnel.get("metadata")
        assert isinstance(meta, dict)
        namespace, name = str(meta["namespace"]), str(meta["name"])
        created = parse_timestamp(meta.get("creationTimestamp")) or self.clock()
        previous = tunnel.get("status")
        result = report(
            name=name,
            namespace=namespace,
            previous=previous if isinstance(previous, dict) else {},
            validity=validity,
            spec=spec,
            deployment=deployment,
            service=service,
            expires=expires_at(spec, created) if spec is not None else None,
            now=self.clock(),
        )
        if changes(previous, result.status):
            try:
                await self.kube.patch(
                    self.tunnel_url(namespace, name, "status"), {"status": result.status}
                )
            except ApiError as exc:
                if exc.status != 404:
                    raise
                # Deleted since it was read (its children's deletion brings
                # their events here): nothing left to report on.
                return _Reported(result.phase, ())
        self.metrics.phases[f"{namespace}/{name}"] = result.phase
        return _Reported(result.phase, result.events)

    async def refresh(
        self,
        namespace: str,
        name: str,
        *,
        changed: tuple[Literal["Deployment", "Service"], JSONObject] | None = None,
    ) -> Outcome | None:
        """Recompute the status after a child changed (pods became ready, a rollout ended).

        ``changed`` is the child whose change is the reason, as the watch
        delivered it: it is not read again. The Valid condition and
        observedGeneration stay as the last reconciliation wrote them; None
        until there was one.
        """
        async with self._lock(namespace, name):
            tunnel = await self.kube.get(self.tunnel_url(namespace, name))
            if tunnel is None or _deleting(tunnel):
                return None
            previous = tunnel.get("status")
            conditions = previous.get("conditions") if isinstance(previous, dict) else None
            found = [
                c
                for c in (conditions if isinstance(conditions, list) else [])
                if isinstance(c, dict) and c.get("type") == VALID
            ]
            if not found:
                return None
            validity = Condition.from_body(found[0])
            uid = str((tunnel.get("metadata") or {}).get("uid", ""))  # type: ignore[union-attr]
            children: dict[str, JSONObject | None] = {}
            for kind in ("Deployment", "Service"):
                if changed is not None and changed[0] == kind:
                    obj: JSONObject | None = changed[1]
                else:
                    obj = await self._read(kind, namespace, name)
                children[kind] = obj if obj is not None and is_controlled_by(obj, uid) else None
            outcome = await self._report(
                tunnel, validity, None, children["Deployment"], children["Service"]
            )
            return Outcome(tunnel, "unchanged", outcome.phase, outcome.events)

    # -- time to live ---------------------------------------------------------------------------

    def remaining(self, tunnel: Mapping[str, object]) -> float | None:
        """Seconds until the tunnel expires (0 or less: expired); None without a valid ttl."""
        spec = tunnel.get("spec")
        meta = tunnel.get("metadata")
        ttl = spec.get("ttl") if isinstance(spec, Mapping) else None
        created = parse_timestamp(
            meta.get("creationTimestamp") if isinstance(meta, Mapping) else None
        )
        if not isinstance(ttl, str) or created is None:
            return None
        try:
            lifetime = parse_ttl(ttl, "spec.ttl")
        except TunnelError:
            return None  # reported as Valid=False by the reconciliation
        return (created + lifetime - self.clock()).total_seconds()

    async def expire(self, namespace: str, name: str) -> JSONObject | None:
        """Delete the tunnel if its time to live is over; the deleted body, or None."""
        tunnel = await self.kube.get(self.tunnel_url(namespace, name))
        if tunnel is None or _deleting(tunnel):
            return None
        left = self.remaining(tunnel)
        if left is None or left > 0:
            return None
        await self.kube.delete(self.tunnel_url(namespace, name))
        self.metrics.expired += 1
        return tunnel


@dataclass(frozen=True)
class _Reported:
    phase: Phase
    events: tuple[Event, ...]


def _deleting(obj: Mapping[str, object]) -> bool:
    meta = obj.get("metadata")
    return isinstance(meta, Mapping) and bool(meta.get("deletionTimestamp"))


def _generation(obj: Mapping[str, object]) -> int:
    meta = obj.get("metadata")
    generation = meta.get("generation") if isinstance(meta, Mapping) else None
    return generation if isinstance(generation, int) else 1


def _check_controller(kind: Kind, live: Mapping[str, object], uid: str) -> None:
    if is_controlled_by(live, uid):
        return
    meta = live.get("metadata")
    assert isinstance(meta, Mapping)
    controller = controller_of(live)
    name = str(meta.get("name"))
    if controller is not None and controller[:2] == ("SocatTunnel", name):
        # A tunnel deleted and created again under the same name: the garbage
        # collector has yet to remove the old one's children. Soon done.
        raise TransientApiError(
            "GET",
            f"{kind} {name}",
            409,
            "Conflict",
            f"{kind} {name} still belongs to a deleted tunnel of the same name",
        )
    owner = f"{controller[0]} {controller[1]}" if controller else None
    raise ConflictError(kind, str(meta.get("namespace")), name, owner)


def _template_changed(live: Mapping[str, object], desired: JSONObject) -> bool:
    spec = live.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    wanted = desired.get("spec")
    assert isinstance(wanted, dict)
    return not contains(template, wanted.get("template"))
