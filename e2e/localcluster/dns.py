"""Cluster DNS: CoreDNS as a Deployment behind the ``kube-dns`` Service, as real clusters run it.

The image is CoreDNS built here (``images.COREDNS``, from ``corednsbuild/``)
with only the plugins a cluster's DNS uses. The Corefile serves the cluster
domain and the reverse zones from the API (the ``kubernetes`` plugin) and
forwards nothing: a name outside the cluster gets an error answer, since no
query may leave the machine.

``start`` applies the objects with kubectl as the admin; ``ready`` waits for
the Deployment to be available and for a query of
``kubernetes.default.svc.<domain>`` sent to the Service's ClusterIP from this
host to answer the ``kubernetes`` Service's address (so kube-proxy's rules,
the pod network and CoreDNS's view of the API all work). ``stop`` has
nothing to undo: the objects go with etcd's store.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct

import yaml

from e2e.localcluster.component import admin_kubectl
from e2e.localcluster.images import COREDNS, NONROOT
from e2e.localcluster.settings import ClusterSettings

NAMESPACE = "kube-system"
APP_LABEL = {"k8s-app": "kube-dns"}
READY_PORT = 8181
HEALTH_PORT = 8080


def corefile(settings: ClusterSettings) -> str:
    """The Corefile: the cluster's zones from the API, nothing forwarded."""
    return (
        ".:53 {\n"
        "    errors\n"
        f"    health :{HEALTH_PORT} {{\n        lameduck 5s\n    }}\n"
        f"    ready :{READY_PORT}\n"
        f"    kubernetes {settings.cluster_domain} in-addr.arpa ip6.arpa {{\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        "        ttl 30\n"
        "    }\n"
        "    cache 30\n"
        "    reload\n"
        "    loadbalance\n"
        "}\n"
    )


def dns_objects(settings: ClusterSettings) -> list[dict[str, object]]:
    """ServiceAccount, RBAC, ConfigMap, Deployment and the ``kube-dns`` Service."""
    metadata = {"namespace": NAMESPACE}
    uid = int(NONROOT.split(":")[0])
    container = {
        "name": "coredns",
        "image": COREDNS.reference,
        "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": READY_PORT}, "periodSeconds": 2},
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": HEALTH_PORT},
            "initialDelaySeconds": 10,
            "failureThreshold": 5,
        },
        "resources": {
            "requests": {"cpu": "50m", "memory": "70Mi"},
            "limits": {"memory": "170Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **metadata}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", **metadata},
            "data": {"Corefile": corefile(settings)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "labels": APP_LABEL, **metadata},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": APP_LABEL},
                "template": {
                    "metadata": {"labels": APP_LABEL},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        # Its own resolver is the host's (none here): it forwards nothing anyway.
                        "dnsPolicy": "Default",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": uid,
                            "runAsGroup": uid,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "labels": {**APP_LABEL, "kubernetes.io/name": "CoreDNS"},
                **metadata,
            },
            "spec": {
                "selector": APP_LABEL,
                "clusterIP": settings.cluster_dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]


def query_a(server: str, name: str, timeout: float = 2.0, port: int = 53) -> list[str]:
    """The IPv4 addresses a DNS server answers for ``name`` (one UDP query, RFC 1035)."""
    ident = secrets.randbits(16)
    question = b"".join(
        bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")
    )
    query = (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + question
        + b"\0"
        + struct.pack("!HH", 1, 1)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, (server, port))
        reply, _ = sock.recvfrom(4096)
    answer_id, flags, questions, answers = struct.unpack("!HHHH", reply[:8])
    if answer_id != ident or flags & 0x000F:
        return []
    offset = 12
    for _ in range(questions):
        offset = _skip_name(reply, offset) + 4
    addresses = []
    for _ in range(answers):
        offset = _skip_name(reply, offset)
        kind, _class, _ttl, length = struct.unpack("!HHIH", reply[offset : offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            addresses.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return addresses


def _skip_name(message: bytes, offset: int) -> int:
    """The offset after a (possibly compressed) domain name."""
    while True:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + length


class ClusterDns:
    """Step of ``up``: CoreDNS running in the cluster and answering on the DNS Service's IP."""

    name = "dns"
    ready_timeout = 120.0

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings

    def kubectl(self, *arguments: str, stdin: str | None = None) -> str:
        """Run kubectl as the admin; its stdout, or ``ComponentError``."""
        return admin_kubectl(self.settings, self.name, *arguments, stdin=stdin)

    def start(self) -> None:
        """Apply the objects."""
        documents = yaml.safe_dump_all(dns_objects(self.settings), sort_keys=False)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=documents)

    def ready(self) -> bool:
        """The Deployment is available and the Service answers for the API server's name."""
        deployment = json.loads(
            self.kubectl("get", "deployment", "coredns", "-n", NAMESPACE, "-o", "json")
        )
        if not deployment.get("status", {}).get("availableReplicas"):
            return False
        name = f"kubernetes.default.svc.{self.settings.cluster_domain}"
        return self.settings.kubernetes_service_ip in query_a(self.settings.cluster_dns_ip, name)

    def stop(self) -> None:
        """Nothing: the objects go with etcd's store, the pod with the kubelet's."""
