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
====================================  ==========================================
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
    Resources,
    check_label_value,
    check_qualified_name,
    parse_resources,
)

PullPolicy = Literal["Always", "IfNotPresent", "Never"]

#: The repository of the project's one image (engine, operator and plugin).
IMAGE_REPOSITORY = "ghcr.io/kubectl-relay/relay"

#: The numeric user and group the image runs as (its ``USER``), and so the
#: relay pods: Pod Security "restricted" wants a non-root user, and a
#: numeric id lets the kubelet check ``runAsNonRoot`` without reading
#: /etc/passwd. 65532 is the customary "nonroot" id of distroless images.
NONROOT_ID = 65532

ENV_PREFIX = "RELAY_OPERATOR_"
ENV_NAMESPACES = ENV_PREFIX + "NAMESPACES"
ENV_RELAY_IMAGE = ENV_PREFIX + "RELAY_IMAGE"
ENV_RELAY_PULL_POLICY = ENV_PREFIX + "RELAY_PULL_POLICY"
ENV_RELAY_RESOURCES = ENV_PREFIX + "RELAY_RESOURCES"
ENV_RELAY_NODE_SELECTOR = ENV_PREFIX + "RELAY_NODE_SELECTOR"
ENV_HEALTH_PORT = ENV_PREFIX + "HEALTH_PORT"
#: Every variable ``from_environ`` reads.
ENVIRONMENT = (
    ENV_NAMESPACES,
    ENV_RELAY_IMAGE,
    ENV_RELAY_PULL_POLICY,
    ENV_RELAY_RESOURCES,
    ENV_RELAY_NODE_SELECTOR,
    ENV_HEALTH_PORT,
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
        return cls(
            relay_image=get(ENV_RELAY_IMAGE) or default.relay_image,
            relay_pull_policy=pull_policy,
            namespaces=namespaces,
            default_resources=resources,
            default_node_selector=node_selector,
            health_port=health_port,
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
