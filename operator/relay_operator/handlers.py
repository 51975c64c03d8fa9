"""The kopf handlers: a few lines each over the ``Reconciler``. The only module importing kopf.

==========================  ============================================================
create, update, resume      reconcile the tunnel (``Reconciler.reconcile``); an invalid
                            spec fails permanently (until the next change), a missing
                            Secret is looked for again every ``secret_recheck`` seconds,
                            a transient API failure is retried with doubling delays
timer (resync), optional    reconcile every ``resync_interval`` seconds: rolls pods after
                            a Secret rotation, repairs children changed by hand
daemon (ttl)                per tunnel with ``spec.ttl``: sleeps until it expires, then
                            deletes the tunnel (its children follow by garbage collection)
event (Deployment, Service) a child changed: recompute the tunnel's status; a child
                            deleted by hand is created again
event (SocatTunnel)         a tunnel is gone: forget its lock and its metrics
==========================  ============================================================

No delete handler: the children carry owner references, so the garbage
collector removes them. Finalizers only where kopf needs one to stop a
per-object task before the object goes: on tunnels with a ``ttl`` (their
daemon), and on every tunnel if the optional resync timer is on. Any other
tunnel can be deleted even while the operator is not running.

kopf keeps its progress and the last handled spec in annotations (the
status schema has no room for kopf's fields, and the API server prunes
unknown ones), and does not scan the cluster for namespaces or CRDs (the
RBAC grants none of that).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Awaitable, Mapping
from typing import Any, Literal, TypeVar, cast

import kopf

from kubectl_relay.jsontypes import JSONObject

from .builders import GROUP, TUNNEL_LABEL, VERSION
from .client import Kube
from .errors import ReconcileError, SecretError, TransientApiError
from .metrics import OperatorMetrics, serve_metrics
from .reconcile import PLURAL, Outcome, Reconciler
from .settings import Settings

T = TypeVar("T")
ChildKind = Literal["Deployment", "Service"]

#: Labels of the children the operator watches (it created them with these).
CHILD_LABELS: dict[str, Any] = {
    TUNNEL_LABEL: kopf.PRESENT,
    "app.kubernetes.io/managed-by": "relay-operator",
}


def configure_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """kopf's log format and level for the whole process (``-v``: debug, ``-q``: warnings)."""
    kopf.configure(verbose=verbose, quiet=quiet)
    if not verbose:
        # One line per liveness probe drowns what matters.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def operator_settings(settings: Settings, *, priority: int | None = None) -> kopf.OperatorSettings:
    """kopf's settings for this operator."""
    config = kopf.OperatorSettings()
    config.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    config.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    config.scanning.disabled = True
    config.posting.reporting_component = "relay-operator"
    config.posting.reporting_instance = socket.gethostname()
    config.posting.event_name_prefix = "relay-operator-"
    config.peering.standalone = settings.peering is None
    if settings.peering is not None:
        config.peering.name = settings.peering
        config.peering.clusterwide = not settings.namespaces
        # Replicas need different priorities: kopf pauses every operator of
        # equal priority. The highest serves, the others stand by.
        config.peering.priority = priority if priority is not None else random.randint(1, 2**31)
        # Asked for peering but the object is missing: fail rather than
        # run several replicas that do not know of each other.
        config.peering.mandatory = True
    return config


def own_identity(environ: Mapping[str, str]) -> str:
    """This replica's name among its peers: ``$POD_ID`` (the chart sets the pod's name), else
    host and process.

    kopf's own fallback asks ``getpass.getuser()``, which fails for a numeric
    user without an ``/etc/passwd`` entry, such as the image's 65532.
    """
    return environ.get("POD_ID", "").strip() or f"{socket.gethostname()}-{os.getpid()}"


async def _retrying(work: Awaitable[T], reconciler: Reconciler, retry: int) -> T:
    """Run ``work``; a transient API failure becomes a retry after a doubling delay."""
    try:
        return await work
    except TransientApiError as exc:
        settings = reconciler.settings
        reconciler.metrics.api_errors += 1
        reconciler.metrics.reconciliations["retried"] += 1
        delay = min(settings.retry_delay_max, settings.retry_delay * 2**retry)
        raise kopf.TemporaryError(f"{exc}; retrying in {delay:g}s", delay=delay) from exc


def _body(raw: Mapping[str, object]) -> kopf.Body:
    return kopf.Body(cast(kopf.RawBody, raw))


def _post(outcome: Outcome | None, metrics: OperatorMetrics) -> None:
    if outcome is None:
        return
    for event in outcome.events:
        body = _body(outcome.tunnel)
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        metrics.events[event.type] += 1


def build_registry(reconciler: Reconciler) -> kopf.OperatorRegistry:
    """A fresh registry with every handler of the operator, bound to ``reconciler``."""
    registry = kopf.OperatorRegistry()
    settings = reconciler.settings
    metrics = reconciler.metrics

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # The same configuration as the reconciler's client: one kubeconfig
        # (or service account) for both, read once, explicitly.
        found = reconciler.kube.credentials()
        return kopf.ConnectionInfo(
            server=found.server,
            ca_path=found.ca_path,
            insecure=found.insecure,
            scheme=found.scheme,
            token=found.token,
            certificate_path=found.certificate_path,
            private_key_path=found.private_key_path,
        )

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def reconcile(namespace: str | None, name: str, retry: int, **_: Any) -> None:
        assert namespace is not None  # SocatTunnels are namespaced
        outcome = await _retrying(reconciler.reconcile(namespace, name), reconciler, retry)
        _post(outcome, metrics)
        if outcome is None or outcome.error is None:
            return
        if isinstance(outcome.error, SecretError):
            # Not the tunnel's fault: creating the Secret fixes it, and the
            # operator may not watch Secrets. Look again later.
            raise kopf.TemporaryError(str(outcome.error), delay=settings.secret_recheck)
        if isinstance(outcome.error, ReconcileError) and outcome.error.retry:
            # Refused by the API server (a right missing): the admin may fix it.
            raise kopf.TemporaryError(str(outcome.error), delay=settings.retry_delay_max)
        raise kopf.PermanentError(str(outcome.error))

    if settings.resync_interval is not None:

        @kopf.timer(
            GROUP,
            VERSION,
            PLURAL,
            interval=settings.resync_interval,
            initial_delay=settings.resync_interval,
            registry=registry,
        )
        async def resync(
            namespace: str | None, name: str, logger: kopf.Logger, **_: Any
        ) -> None:
            assert namespace is not None
            try:
                outcome = await reconciler.reconcile(namespace, name)
            except TransientApiError as exc:
                metrics.api_errors += 1
                logger.warning("resync postponed to the next interval: %s", exc)
                return
            _post(outcome, metrics)

    @kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        field="spec.ttl",
        value=kopf.PRESENT,
        cancellation_timeout=5,
        registry=registry,
    )
    async def expire(
        stopped: kopf.DaemonStopped,
        body: kopf.Body,
        namespace: str | None,
        name: str,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        assert namespace is not None
        # ``body`` is live: a changed ttl is seen at the next wake-up.
        while not stopped:
            left = reconciler.remaining(body)
            if left is None or left > 0:
                await stopped.wait(min(left or settings.ttl_recheck, settings.ttl_recheck))
                continue
            try:
                # The deletion stops this daemon, and kopf cancels it 5 s later: on a
                # slow API the event would be lost with it, so both happen out of reach.
                await asyncio.shield(expire_and_announce(namespace, name))
            except TransientApiError as exc:
                metrics.api_errors += 1
                logger.warning("could not delete the expired tunnel, retrying: %s", exc)
                await stopped.wait(settings.retry_delay)
                continue
            return

    async def expire_and_announce(namespace: str, name: str) -> None:
        gone = await reconciler.expire(namespace, name)
        if gone is not None:
            ttl = gone.get("spec", {}).get("ttl")  # type: ignore[union-attr]
            message = f"the ttl of {ttl} is over: the tunnel and its relay pods are deleted"
            kopf.event(_body(gone), type="Normal", reason="Expired", message=message)
            metrics.events["Normal"] += 1

    @kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS, registry=registry)
    @kopf.on.event("", "v1", "services", labels=CHILD_LABELS, registry=registry)
    async def child_changed(
        type: str,
        namespace: str | None,
        labels: kopf.Labels,
        body: kopf.Body,
        resource: kopf.Resource,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        assert namespace is not None
        tunnel = labels[TUNNEL_LABEL]
        try:
            if type == "DELETED":
                # Deleted by hand (the garbage collector removes the tunnel first).
                outcome = await reconciler.reconcile(namespace, tunnel)
            else:
                # The event carries the child as it is now: no need to read it again.
                kind: ChildKind = "Deployment" if resource.plural == "deployments" else "Service"
                changed = (kind, cast(JSONObject, dict(body)))
                outcome = await reconciler.refresh(namespace, tunnel, changed=changed)
        except TransientApiError as exc:
            metrics.api_errors += 1
            logger.warning("status of tunnel %s not refreshed: %s", tunnel, exc)
            return
        _post(outcome, metrics)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def tunnel_event(type: str, namespace: str | None, name: str, **_: Any) -> None:
        if type == "DELETED" and namespace is not None:
            reconciler.forget(namespace, name)

    return registry


async def run(
    settings: Settings,
    kube: Kube,
    *,
    liveness: str | None = None,
    metrics_address: tuple[str, int] | None = None,
    priority: int | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    reconciler: Reconciler | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or a signal, when run by the CLI).

    ``liveness`` is kopf's liveness endpoint URL (``http://0.0.0.0:8080/healthz``);
    ``metrics_address`` where to serve the operator's ``/metrics``. The
    caller owns ``kube`` and closes it afterwards.
    """
    reconciler = reconciler or Reconciler(kube, settings)
    identity = own_identity(os.environ)
    server = None
    if metrics_address is not None:
        server = await serve_metrics(reconciler.metrics, *metrics_address)
    try:
        await kopf.operator(
            registry=build_registry(reconciler),
            settings=operator_settings(settings, priority=priority),
            standalone=settings.peering is None,
            peering_name=settings.peering,
            priority=priority,
            # kopf types it as its private NewType ``Identity`` of str.
            identity=cast(Any, identity),
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
