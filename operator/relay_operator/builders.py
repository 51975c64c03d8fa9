"""The desired Deployment, Service and NetworkPolicy of a tunnel, as fresh dicts.

Pure functions of a ``TunnelSpec``, the owner (passed explicitly, not guessed
from a handler's context) and the operator's ``Settings``. The handlers
build everything first and apply it afterwards, so that an error in any part
leaves nothing half-created.

The relay pods pass the Pod Security "restricted" profile: a numeric
non-root user, seccomp ``RuntimeDefault``, every capability dropped, no
privilege escalation, a read-only root filesystem, no service-account
token; they have requests and limits, and a readiness probe on the listen
port. ``tests/operator/podsecurity.py`` writes the profile's rules down, and
the builder tests check every pod against them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TypedDict

from kubectl_relay.jsontypes import JSONObject, JSONValue
from kubectl_relay.podsecurity import (
    restricted_container_security_context,
    restricted_pod_security_context,
)

from .bodies import TunnelBody
from .fields import Resources, parse_quantity, required_string
from .settings import Settings
from .spec import METRICS_PORT, SESSION_LOG_FLAGS, TRACING_FLAGS, TunnelSpec

GROUP = "relay.kubectl-relay.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SocatTunnel"

#: The label that ties every object of a tunnel to it (selectors use it).
TUNNEL_LABEL = f"{GROUP}/tunnel"
#: Pod-template annotation: a hash of everything the relay pods depend on.
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
#: Name of the relay container and of its port (Service targetPort).
CONTAINER = "relay"
PORT_NAME = "relay"
#: Name of the relay container's metrics port (``relay --metrics``).
METRICS_PORT_NAME = "metrics"
#: Annotations by which a Prometheus configured the customary way (the
#: ``kubernetes-pods`` job of the community Helm chart) finds the relay pods.
SCRAPE_ANNOTATIONS: Mapping[str, str] = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(METRICS_PORT),
    "prometheus.io/path": "/metrics",
}
#: Mode of the mounted TLS files: readable by the pod's group (fsGroup),
#: which is the relay's own group; never by others.
SECRET_FILE_MODE = 0o440
#: The namespaced sysctl that lets a non-root process bind ports below 1024.
#: It is on Kubernetes' "safe" list (since 1.22), so the kubelet allows it
#: by default and Pod Security "restricted" accepts it. An added
#: NET_BIND_SERVICE would not reach a non-root process: Kubernetes sets no
#: ambient capabilities, and no_new_privs ignores file capabilities.
UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"


class Owner(TypedDict):
    """What an owner reference needs of the SocatTunnel."""

    apiVersion: str
    kind: str
    name: str
    uid: str


def owner_from_body(body: TunnelBody) -> Owner:
    """The owner of a tunnel's objects: the tunnel itself."""
    meta: Mapping[str, object] = body.get("metadata") or {}
    return Owner(
        apiVersion=body.get("apiVersion") or API_VERSION,
        kind=body.get("kind") or KIND,
        name=required_string(meta, "name", "metadata"),
        uid=required_string(meta, "uid", "metadata"),
    )


def owner_reference(owner: Owner) -> JSONObject:
    # controller: the tunnel is the one object reconciling these children.
    # blockOwnerDeletion: a foreground deletion of the tunnel waits for them
    # (this needs "update" on socattunnels/finalizers, granted in the RBAC).
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector(spec: TunnelSpec) -> dict[str, str]:
    """Labels that select the tunnel's pods; they never change, as Deployment selectors must not.

    ``component`` keeps relay pods apart from the operator's own pods, which
    share ``app.kubernetes.io/name``.
    """
    return {
        "app.kubernetes.io/name": "kubectl-relay",
        "app.kubernetes.io/component": "relay",
        TUNNEL_LABEL: spec.name,
    }


def labels(spec: TunnelSpec) -> dict[str, str]:
    """Labels of every object the operator creates for a tunnel."""
    return {
        **selector(spec),
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/managed-by": "relay-operator",
    }


def _metadata(spec: TunnelSpec, owner: Owner) -> JSONObject:
    return {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": dict[str, JSONValue](labels(spec)),
        "ownerReferences": [owner_reference(owner)],
    }


def relay_command(spec: TunnelSpec) -> list[str]:
    """The relay's command line, written as one would type it.

    ``--metrics`` serves the relay's Prometheus counters (sessions, errors,
    bytes per direction) on ``METRICS_PORT``. ``-d -d`` logs notices: each
    accepted client and each connection to the target, which is what one
    reads in ``kubectl logs`` when a shared tunnel misbehaves. ``-v``/``-x``
    add the data trace; ``spec.sessionLogs: Errors`` keeps the notices of each
    connection out (``--quiet-accepts --quiet-sessions``).
    ``--deny-connect``/``--allow-connect`` carry the destination policy's
    networks, which the relay checks on the addresses the connect host
    resolves to. ``-t``: ``spec.closeTimeoutSeconds``.
    """
    return [
        "relay",
        "--metrics",
        str(METRICS_PORT),
        *spec.connect_rules.arguments(),
        *TRACING_FLAGS[spec.tracing],
        "-d",
        "-d",
        *SESSION_LOG_FLAGS[spec.session_logs],
        "-t",
        str(spec.close_timeout),
        spec.listen,
        spec.connect,
    ]


def readiness_command(spec: TunnelSpec) -> list[str]:
    """A check that the relay has bound its listen port, without connecting to it.

    A ``tcpSocket`` probe would connect: the relay would then open a session
    to the target for every probe (a TLS handshake to Azure SQL every few
    seconds, a connection to the very service being debugged), fill a
    ``-v`` trace with probe sessions, fail TLS handshakes on OPENSSL-LISTEN
    and be refused by ``range=``. For UDP the kubelet has no probe at all.
    So the probe reads the kernel's socket table instead: for TCP a socket
    in state LISTEN (``0A``) on the port, for UDP any socket bound to it.
    ``grep`` reads /proc/net of the container, i.e. of the pod's network
    namespace; ``-s`` ignores a missing ``tcp6``/``udp6`` (IPv6 disabled).
    """
    port = f"{spec.port:04X}"
    if spec.protocol == "TCP":
        pattern = rf"^ *[0-9]+: [0-9A-F]+:{port} [0-9A-F]+:0000 0A "
        tables = ["/proc/net/tcp", "/proc/net/tcp6"]
    else:
        pattern = rf"^ *[0-9]+: [0-9A-F]+:{port} "
        tables = ["/proc/net/udp", "/proc/net/udp6"]
    return ["grep", "-Eqs", pattern, *tables]


def resources(spec: TunnelSpec, settings: Settings) -> Resources:
    """The tunnel's requests and limits over the operator's defaults, name by name.

    What the tunnel sets wins. A default that would contradict it bends: a
    limit set below the default request lowers the request to it (as
    Kubernetes does for a missing request), a request set above the default
    limit raises the limit to it.
    """
    own = spec.pod.resources
    requests = {**settings.default_resources.requests, **own.requests}
    limits = {**settings.default_resources.limits, **own.limits}
    for name in requests.keys() & limits.keys():
        if parse_quantity(requests[name]) <= parse_quantity(limits[name]):
            continue
        if name in own.limits and name not in own.requests:
            requests[name] = limits[name]
        else:
            limits[name] = requests[name]
    return Resources(requests=requests, limits=limits)


def _container(spec: TunnelSpec, settings: Settings) -> JSONObject:
    merged = resources(spec, settings)
    mounts: list[JSONValue] = [
        {"name": mount.volume_name, "mountPath": mount.mount_path, "readOnly": True}
        for mount in spec.secret_mounts
    ]
    container: JSONObject = {
        "name": CONTAINER,
        "image": settings.relay_image,
        "imagePullPolicy": settings.relay_pull_policy,
        "command": list[JSONValue](relay_command(spec)),
        "ports": [
            {"name": PORT_NAME, "containerPort": spec.port, "protocol": spec.protocol},
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "exec": {"command": list[JSONValue](readiness_command(spec))},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": dict[str, JSONValue](merged.requests),
            "limits": dict[str, JSONValue](merged.limits),
        },
        "securityContext": restricted_container_security_context(),
    }
    if mounts:
        container["volumeMounts"] = mounts
    return container


def _pod_spec(spec: TunnelSpec, settings: Settings) -> JSONObject:
    # Secret volumes are group-owned by fsGroup; with mode 0440 only the
    # relay's group can read the private key.
    security = restricted_pod_security_context()
    if spec.port < 1024:
        # Only this pod's network namespace is affected, and only ports from
        # the listen port up become bindable without privilege.
        security["sysctls"] = [{"name": UNPRIVILEGED_PORT_SYSCTL, "value": str(spec.port)}]
    pod: JSONObject = {
        # The relay never talks to the API server: no token in the pod.
        "automountServiceAccountToken": False,
        # The relay resolves names through DNS; service environment
        # variables would only clutter its environment.
        "enableServiceLinks": False,
        "securityContext": security,
        "containers": [_container(spec, settings)],
    }
    node_selector = {**settings.default_node_selector, **spec.pod.node_selector}
    if node_selector:
        pod["nodeSelector"] = dict[str, JSONValue](node_selector)
    if spec.pod.tolerations:
        tolerations: list[JSONValue] = []
        for toleration in spec.pod.tolerations:
            item: JSONObject = {"operator": toleration.operator}
            if toleration.key is not None:
                item["key"] = toleration.key
            if toleration.value is not None:
                item["value"] = toleration.value
            if toleration.effect is not None:
                item["effect"] = toleration.effect
            if toleration.seconds is not None:
                item["tolerationSeconds"] = toleration.seconds
            tolerations.append(item)
        pod["tolerations"] = tolerations
    if spec.secret_mounts:
        volumes: list[JSONValue] = []
        for mount in spec.secret_mounts:
            items: list[JSONValue] = [{"key": key, "path": name} for key, name in mount.files]
            volumes.append(
                {
                    "name": mount.volume_name,
                    "secret": {
                        "secretName": mount.secret_name,
                        "items": items,
                        "defaultMode": SECRET_FILE_MODE,
                    },
                }
            )
        pod["volumes"] = volumes
    return pod


def config_hash(pod_spec: JSONObject, secret_versions: Mapping[str, str]) -> str:
    """A short hash of what the relay pods depend on.

    The pod spec alone would not need it (a changed template rolls the pods
    anyway); the hash adds the ``resourceVersion`` of each mounted Secret,
    so that a rotated certificate, which the relay reads once at start,
    also rolls the pods. ``replicas`` and the Service are not in it:
    scaling or exposing a tunnel does not restart it.
    """
    material = json.dumps(
        {"pod": pod_spec, "secrets": dict(sorted(secret_versions.items()))},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def desired_deployment(
    spec: TunnelSpec,
    owner: Owner,
    settings: Settings,
    *,
    secret_versions: Mapping[str, str] | None = None,
) -> JSONObject:
    """The relay pods' Deployment.

    ``secret_versions`` maps each mounted Secret's name to its
    ``resourceVersion``, when the caller has read them.
    """
    pod_spec = _pod_spec(spec, settings)
    # The tunnel's own annotations come after the scrape annotations, so that
    # a tunnel can opt out with prometheus.io/scrape: "false".
    annotations: JSONObject = {
        **SCRAPE_ANNOTATIONS,
        **spec.pod.annotations,
        CONFIG_HASH_ANNOTATION: config_hash(pod_spec, secret_versions or {}),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, owner),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": dict[str, JSONValue](selector(spec))},
            # A shared tunnel keeps serving while it rolls: the new pod is
            # ready before an old one goes, even with a single replica.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": dict[str, JSONValue]({**spec.pod.labels, **labels(spec)}),
                    "annotations": annotations,
                },
                "spec": pod_spec,
            },
        },
    }


def desired_service(spec: TunnelSpec, owner: Owner) -> JSONObject | None:
    """The Service in front of the relay pods, or None when ``spec.service`` is absent."""
    if spec.service is None:
        return None
    port: JSONObject = {
        "name": PORT_NAME,
        "port": spec.service.port,
        "targetPort": PORT_NAME,
        "protocol": spec.protocol,
    }
    if spec.service.node_port is not None:
        port["nodePort"] = spec.service.node_port
    service_spec: JSONObject = {
        "type": spec.service.type,
        "selector": dict[str, JSONValue](selector(spec)),
        "ports": [port],
    }
    if spec.allowed_sources and spec.service.type != "ClusterIP":
        # Traffic from outside the cluster reaches pods SNATed to a node's
        # address unless it stays on the node that received it; "Local"
        # keeps the client's address, which range= and the NetworkPolicy check.
        service_spec["externalTrafficPolicy"] = "Local"
    if spec.allowed_sources and spec.service.type == "LoadBalancer":
        # The cloud load balancer (on AKS, the NSG) filters before the cluster.
        service_spec["loadBalancerSourceRanges"] = [str(n) for n in spec.allowed_sources]
    metadata = _metadata(spec, owner)
    if spec.service.annotations:
        metadata["annotations"] = dict[str, JSONValue](spec.service.annotations)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": service_spec}


def desired_network_policy(spec: TunnelSpec, owner: Owner) -> JSONObject | None:
    """Ingress to the relay pods from ``spec.allowedSources`` only; None without sources.

    It repeats what ``range=`` does inside the relay, one layer lower, so that
    a refused peer never reaches the process. How ``ipBlock`` treats pod
    addresses depends on the network plugin (Kubernetes leaves it open);
    ``range=`` applies either way.

    The metrics port stays open to every peer: a policy that selects the pods
    denies whatever it does not list, Prometheus included, and the counters
    tell nothing about the relayed data.
    """
    if not spec.allowed_sources:
        return None
    peers: list[JSONValue] = [{"ipBlock": {"cidr": str(n)}} for n in spec.allowed_sources]
    metrics_port: JSONObject = {"protocol": "TCP", "port": METRICS_PORT}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(spec, owner),
        "spec": {
            "podSelector": {"matchLabels": dict[str, JSONValue](selector(spec))},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": peers, "ports": [{"protocol": spec.protocol, "port": spec.port}]},
                {"ports": [metrics_port]},
            ],
        },
    }
