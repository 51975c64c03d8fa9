"""The operator's own settings, passed explicitly to whatever needs them.

The operator reads them once, from its environment (``Settings.from_environ``):
the Helm chart and ``manifests/operator.yaml`` set these variables, and a test
checks that they set no variable this module does not know.

====================================  ==========================================
``RELAY_OPERATOR_NAMESPACES``         namespaces to watch, comma-separated;
                                      unset or empty: every namespace
``RELAY_OPERATOR_RELAY_IMAGE``        image of the relay pods
``RELAY_OPERATOR_RELAY_PULL_POLICY``  its ``imagePullPolicy``
``RELAY_OPERATOR_RELAY_RESOURCES``    JSON ``{"requests": {...}, "limits": {...}}``
``RELAY_OPERATOR_RELAY_NODE_SELECTOR`` JSON ``{"label": "value"}``
``RELAY_OPERATOR_HEALTH_PORT``        port of the liveness endpoint ``/healthz``
``RELAY_OPERATOR_METRICS_PORT``       port of the operator's ``/metrics``; 0: off
``RELAY_OPERATOR_PEERING``            name of the kopf peering object shared by
                                      the operator's replicas; unset: standalone
``RELAY_OPERATOR_DESTINATIONS``       JSON destination policy (below)
``RELAY_OPERATOR_POD_LABEL_KEYS``     label keys tunnels may set on relay pods
                                      beyond ``tunnel.kubectl-relay.io/*``,
                                      comma-separated
``RELAY_OPERATOR_API_CONCURRENCY``    the operator's own API requests in flight
                                      at once (1 to 256; its reads and writes
                                      of children and status, not kopf's)
====================================  ==========================================

The destination policy (``relay_operator.policy``), every field optional::

    {"denyDefaults": true,                  # the built-in denied list, and the API server
     "deny": ["10.1.0.0/16", "*.corp"],     # added to it
     "allow": ["10.0.0.0/8", "*.database.windows.net"],  # if given: only these
     "namespaces": {"team-a": {"deny": [...], "allow": [...]}}}

A namespace's ``deny`` adds to the global one, its ``allow`` replaces the
global ``allow``; an empty ``allow`` is no allow list (the chart's default).
With ``denyDefaults`` (the default) the API server's own address as the
kubelet gives it to the operator's pod
(``KUBERNETES_SERVICE_HOST``: the ``kubernetes`` Service's ClusterIP, or the
API server's name on AKS) is denied as well.

The timing fields (retries, rechecks, resync) have no variables: their
defaults suit clusters, and tests pass shorter ones explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from kubectl_relay import __version__

from .errors import SettingsError, SpecError
from .fields import (
    DNS_1123_LABEL,
    DNS_SUBDOMAIN,
    Resources,
    check_label_value,
    check_qualified_name,
    parse_resources,
)
from .policy import (
    DEFAULT_DENIED,
    DestinationPolicy,
    Destinations,
    NamespaceDestinations,
    TunnelPolicy,
)

PullPolicy = Literal["Always", "IfNotPresent", "Never"]

#: The repository of the project's one image (engine, operator and plugin).
IMAGE_REPOSITORY = "ghcr.io/kubectl-relay/relay"

ENV_PREFIX = "RELAY_OPERATOR_"
ENV_NAMESPACES = ENV_PREFIX + "NAMESPACES"
ENV_RELAY_IMAGE = ENV_PREFIX + "RELAY_IMAGE"
ENV_RELAY_PULL_POLICY = ENV_PREFIX + "RELAY_PULL_POLICY"
ENV_RELAY_RESOURCES = ENV_PREFIX + "RELAY_RESOURCES"
ENV_RELAY_NODE_SELECTOR = ENV_PREFIX + "RELAY_NODE_SELECTOR"
ENV_HEALTH_PORT = ENV_PREFIX + "HEALTH_PORT"
ENV_METRICS_PORT = ENV_PREFIX + "METRICS_PORT"
ENV_PEERING = ENV_PREFIX + "PEERING"
ENV_DESTINATIONS = ENV_PREFIX + "DESTINATIONS"
ENV_POD_LABEL_KEYS = ENV_PREFIX + "POD_LABEL_KEYS"
ENV_API_CONCURRENCY = ENV_PREFIX + "API_CONCURRENCY"
#: Set by the kubelet in every pod: where the API server is.
ENV_API_SERVER_HOST = "KUBERNETES_SERVICE_HOST"
#: Every variable ``from_environ`` reads.
ENVIRONMENT = (
    ENV_NAMESPACES,
    ENV_RELAY_IMAGE,
    ENV_RELAY_PULL_POLICY,
    ENV_RELAY_RESOURCES,
    ENV_RELAY_NODE_SELECTOR,
    ENV_HEALTH_PORT,
    ENV_METRICS_PORT,
    ENV_PEERING,
    ENV_DESTINATIONS,
    ENV_POD_LABEL_KEYS,
    ENV_API_CONCURRENCY,
)


def _default_resources() -> Resources:
    # Measured need of one relay process with a few hundred idle TLS
    # sessions is well under 64 MiB; the limits leave room for bursts and
    # for large -b blocks. No CPU limit would avoid throttling, but the
    # issue asks for limits on every relay pod, and a shared tunnel should
    # not be able to starve its node.
    return Resources(
        requests={"cpu": "50m", "memory": "64Mi"},
        limits={"cpu": "500m", "memory": "256Mi"},
    )


@dataclass(frozen=True)
class Settings:
    """How the operator builds relay pods and what it watches."""

    relay_image: str = f"{IMAGE_REPOSITORY}:{__version__}"
    """Image of the relay pods. It defaults to the operator's own version, so
    that an upgrade of the operator rolls the relays onto the same engine."""

    relay_pull_policy: PullPolicy = "IfNotPresent"
    """``imagePullPolicy`` of the relay containers. Versioned tags never
    change, so pulling once per node is enough."""

    namespaces: tuple[str, ...] = ()
    """Namespaces whose SocatTunnels are served; empty means every namespace
    (which needs the cluster-wide RBAC variant). Exact names, no patterns:
    patterns would need the right to list and watch namespaces."""

    default_resources: Resources = field(default_factory=_default_resources)
    """Requests and limits of relay containers; ``spec.pod.resources`` of a
    tunnel overrides them name by name."""

    default_node_selector: Mapping[str, str] = field(
        default_factory=lambda: {"kubernetes.io/os": "linux"}
    )
    """Node selector of relay pods, merged under ``spec.pod.nodeSelector``.
    The image is Linux-only; AKS clusters often have Windows node pools."""

    health_port: int = 8080
    """Port of the operator's liveness endpoint (``/healthz``), which its
    Deployment probes."""

    metrics_port: int = 9464
    """Port of the operator's own Prometheus endpoint (``/metrics``); 0 turns
    it off. The same number as the relay pods' metrics port: one port to
    remember, and the two never share a network namespace."""

    peering: str | None = None
    """Name of the kopf peering object (a ``ClusterKopfPeering`` when every
    namespace is watched, else a ``KopfPeering`` in each watched namespace:
    kopf looks where it watches) through which replicas of the operator find
    each other; the one with the highest priority serves, the others stand
    by, and take over when it stops (at once after a clean stop, after its
    keep-alive lifetime of 60 seconds when it dies). Peering is mandatory
    when named: without the kopf.dev CRDs or the object, the operator stays
    paused. ``None`` runs standalone: one replica only."""

    retry_delay: float = 1.0
    """Seconds before the first retry after a transient API failure (a 5xx,
    a 429, a timeout, a refused connection); each retry doubles it."""

    retry_delay_max: float = 60.0
    """The longest delay between retries after transient failures."""

    secret_recheck: float = 30.0
    """Seconds between checks of a tunnel waiting for a Secret (the operator
    may only ``get`` Secrets, so it looks again rather than watching)."""

    resync_interval: float | None = None
    """Seconds between reconciliations of a tunnel without any change to it,
    which roll the relay pods after a Secret rotation (the operator may not
    watch Secrets) and repair changes made by hand to a child. ``None``
    (the default) turns it off: kopf's timers need a finalizer on every
    tunnel, and a tunnel with a finalizer cannot be deleted while the
    operator is not running. Deleted children are recreated either way."""

    ttl_recheck: float = 300.0
    """Longest sleep of a temporary tunnel's timer: a changed ``spec.ttl`` is
    seen within this time (sooner when the tunnel expires sooner)."""

    api_timeout: float = 30.0
    """Seconds one API request may take before it counts as a transient failure."""

    api_concurrency: int = 16
    """The operator's own API requests in flight at once (threads of its
    client, and kept connections). With 4, a wave of 1,000 new tunnels
    queued behind the client: see ``benchmarks/README.md``."""

    tunnel_policy: TunnelPolicy = field(default_factory=TunnelPolicy)
    """What tunnels may ask for: destinations, and pod label keys beyond
    ``tunnel.kubectl-relay.io/`` (see ``relay_operator.policy``)."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from ``RELAY_OPERATOR_*`` variables; unset or empty ones keep the defaults."""
        default = cls()

        def get(variable: str) -> str:
            return environ.get(variable, "").strip()

        namespaces = default.namespaces
        if raw := get(ENV_NAMESPACES):
            namespaces = tuple(name.strip() for name in raw.split(",") if name.strip())
            for name in namespaces:
                if len(name) > 63 or not DNS_1123_LABEL.match(name):
                    raise SettingsError(ENV_NAMESPACES, raw, f'"{name}" is not a namespace name')
        pull_policy = default.relay_pull_policy
        if raw := get(ENV_RELAY_PULL_POLICY):
            for policy in get_args(PullPolicy):
                if raw == policy:
                    pull_policy = policy
                    break
            else:
                choices = ", ".join(get_args(PullPolicy))
                raise SettingsError(ENV_RELAY_PULL_POLICY, raw, f"expected one of {choices}")
        resources = default.default_resources
        if raw := get(ENV_RELAY_RESOURCES):
            try:
                resources = parse_resources(_json(ENV_RELAY_RESOURCES, raw), "resources")
            except SpecError as exc:
                raise SettingsError(ENV_RELAY_RESOURCES, raw, str(exc)) from exc
        node_selector = default.default_node_selector
        if raw := get(ENV_RELAY_NODE_SELECTOR):
            node_selector = _node_selector(raw)
        health_port = default.health_port
        if raw := get(ENV_HEALTH_PORT):
            if not raw.isdigit() or not 1 <= int(raw) <= 65535:
                raise SettingsError(ENV_HEALTH_PORT, raw, "expected a port from 1 to 65535")
            health_port = int(raw)
        metrics_port = default.metrics_port
        if raw := get(ENV_METRICS_PORT):
            if not raw.isdigit() or not 0 <= int(raw) <= 65535:
                raise SettingsError(ENV_METRICS_PORT, raw, "expected a port from 0 to 65535")
            metrics_port = int(raw)
        peering = default.peering
        if raw := get(ENV_PEERING):
            if len(raw) > 253 or not DNS_SUBDOMAIN.match(raw):
                raise SettingsError(ENV_PEERING, raw, "not a valid object name")
            peering = raw
        label_keys = tuple(k.strip() for k in get(ENV_POD_LABEL_KEYS).split(",") if k.strip())
        for key in label_keys:
            try:
                check_qualified_name(key, key)
            except SpecError as exc:
                raise SettingsError(ENV_POD_LABEL_KEYS, get(ENV_POD_LABEL_KEYS), str(exc)) from exc
        concurrency = default.api_concurrency
        if raw := get(ENV_API_CONCURRENCY):
            if not raw.isdigit() or not 1 <= int(raw) <= 256:
                raise SettingsError(ENV_API_CONCURRENCY, raw, "expected a number from 1 to 256")
            concurrency = int(raw)
        policy = TunnelPolicy(
            destinations=_destinations(get(ENV_DESTINATIONS), get(ENV_API_SERVER_HOST)),
            pod_label_keys=label_keys,
        )
        return cls(
            relay_image=get(ENV_RELAY_IMAGE) or default.relay_image,
            relay_pull_policy=pull_policy,
            namespaces=namespaces,
            default_resources=resources,
            default_node_selector=node_selector,
            health_port=health_port,
            metrics_port=metrics_port,
            peering=peering,
            api_concurrency=concurrency,
            tunnel_policy=policy,
        )


def _json(variable: str, raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(variable, raw, f"not JSON: {exc.msg}") from exc


def _node_selector(raw: str) -> dict[str, str]:
    value = _json(ENV_RELAY_NODE_SELECTOR, raw)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SettingsError(ENV_RELAY_NODE_SELECTOR, raw, "expected a JSON object of strings")
    try:
        for key, item in value.items():
            check_qualified_name(key, key)
            check_label_value(item, key)
    except SpecError as exc:
        raise SettingsError(ENV_RELAY_NODE_SELECTOR, raw, str(exc)) from exc
    return dict(value)


def _destinations(raw: str, api_server: str) -> DestinationPolicy:
    """The destination policy from ``RELAY_OPERATOR_DESTINATIONS`` (JSON, or empty)."""
    value = _json(ENV_DESTINATIONS, raw) if raw else {}
    if not isinstance(value, dict):
        raise SettingsError(ENV_DESTINATIONS, raw, "expected a JSON object")
    known = ("denyDefaults", "deny", "allow", "namespaces")
    for name in value:
        if name not in known:
            raise SettingsError(ENV_DESTINATIONS, raw, f'unknown field "{name}"; use {known}')
    defaults = value.get("denyDefaults", True)
    if not isinstance(defaults, bool):
        raise SettingsError(ENV_DESTINATIONS, raw, "denyDefaults: expected true or false")

    def entries(obj: dict[str, object], key: str, path: str) -> Destinations | None:
        items = obj.get(key)
        if items is None:
            return None
        if not isinstance(items, list):
            raise SettingsError(ENV_DESTINATIONS, raw, f"{path}: expected a list")
        try:
            return Destinations.parse(items, path)
        except SpecError as exc:
            raise SettingsError(ENV_DESTINATIONS, raw, str(exc)) from exc

    denied = entries(value, "deny", "deny") or Destinations()
    if defaults:
        denied = DEFAULT_DENIED + denied
        if api_server:
            denied = denied + Destinations.parse([api_server], ENV_API_SERVER_HOST)
    namespaces: dict[str, NamespaceDestinations] = {}
    raw_namespaces = value.get("namespaces") or {}
    if not isinstance(raw_namespaces, dict):
        raise SettingsError(ENV_DESTINATIONS, raw, "namespaces: expected an object")
    for namespace, rules in raw_namespaces.items():
        path = f"namespaces.{namespace}"
        if not isinstance(rules, dict) or not set(rules) <= {"deny", "allow"}:
            raise SettingsError(ENV_DESTINATIONS, raw, f"{path}: expected {{deny, allow}}")
        namespaces[namespace] = NamespaceDestinations(
            denied=entries(rules, "deny", f"{path}.deny") or Destinations(),
            allowed=entries(rules, "allow", f"{path}.allow") or None,
        )
    return DestinationPolicy(
        denied=denied, allowed=entries(value, "allow", "allow") or None, namespaces=namespaces
    )
