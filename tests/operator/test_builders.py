"""The desired Deployment, Service and NetworkPolicy: hardened, owned, consistent.

The pod checks use ``podsecurity`` (the "restricted" rules as Kubernetes
documents them); the readiness probe is run for real against sockets on this
machine; every built object validates against the Kubernetes schemas.
"""

from __future__ import annotations

import ast
import copy
import socket
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubectl_relay.engine.cli import parse_command_line
from relay_operator import builders
from relay_operator.builders import (
    CONFIG_HASH_ANNOTATION,
    Owner,
    desired_deployment,
    desired_network_policy,
    desired_service,
    owner_from_body,
    readiness_command,
)
from relay_operator.settings import Settings
from relay_operator.spec import TunnelSpec, parse_spec
from tests.conftest import scaled
from tests.operator.podsecurity import hardening_violations, restricted_violations
from tests.operator.test_spec import body

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings()
#: The destination policy's default networks, as the relay pods get them.
DENIED = (
    "0.0.0.0/8,127.0.0.0/8,::1/128,::/128,169.254.0.0/16,fe80::/10,fd00:ec2::254/128,"
    "168.63.129.16/32,100.100.100.200/32"
)
OWNER = Owner(
    apiVersion="relay.kubectl-relay.io/v1alpha1", kind="SocatTunnel", name="tunnel", uid="u-1"
)
TLS = {
    "listen": {
        "certificate": {"secretName": "server-tls"},
        "ca": {"secretName": "clients-ca", "key": "ca.pem"},
    }
}

SPECS = {
    "plain": {},
    "udp-low-port": {"listen": "UDP-LISTEN:514,fork", "connect": "TCP:logserver:514"},
    "tls": {"listen": "OPENSSL-LISTEN:8443,fork", "tls": TLS, "tracing": "Text"},
    "sources": {"allowedSources": ["10.0.0.0/8"], "service": {"type": "LoadBalancer"}},
    "pod-settings": {
        "replicas": 3,
        "pod": {
            "resources": {"limits": {"memory": "32Mi"}},
            "nodeSelector": {"agentpool": "relay"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "labels": {"tunnel.kubectl-relay.io/team": "data"},
            "annotations": {"example.com/owner": "data"},
        },
    },
}


def tunnel(spec: dict[str, Any] | None = None, **fields: Any) -> TunnelSpec:
    return parse_spec(body(spec, **fields))


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def example_tunnels() -> list[Any]:
    found = []
    for path in sorted((ROOT / "manifests" / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] == "SocatTunnel":
                document["metadata"].setdefault("namespace", "examples")
                document["metadata"]["uid"] = "u-example"
                name = f"{path.stem}/{document['metadata']['name']}"
                found.append(pytest.param(document, id=name))
    return found


# --- The relay pod -----------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_pod_passes_the_restricted_profile(spec: dict[str, Any]) -> None:
    deployment = desired_deployment(tunnel(spec), OWNER, SETTINGS)
    template = deployment["spec"]["template"]
    assert restricted_violations(template["spec"], template["metadata"]) == []
    assert hardening_violations(template["spec"]) == []


@pytest.mark.parametrize("document", example_tunnels())
def test_every_example_builds_restricted_valid_objects(document: dict[str, Any]) -> None:
    spec = parse_spec(document)
    owner = owner_from_body(document)
    deployment = desired_deployment(spec, owner, SETTINGS)
    template = deployment["spec"]["template"]
    assert restricted_violations(template["spec"], template["metadata"]) == []
    assert hardening_violations(template["spec"]) == []
    for built in (deployment, desired_service(spec, owner), desired_network_policy(spec, owner)):
        if built is not None:
            for version in ("1.30.0", kubernetes_validate.latest_version()):
                kubernetes_validate.validate(built, version, strict=True)


def test_labels_selector_and_owner() -> None:
    deployment = desired_deployment(tunnel(SPECS["pod-settings"]), OWNER, SETTINGS)
    metadata = deployment["metadata"]
    assert metadata["name"] == "tunnel"
    assert metadata["namespace"] == "team"
    assert metadata["labels"] == {
        "app.kubernetes.io/name": "kubectl-relay",
        "app.kubernetes.io/instance": "tunnel",
        "app.kubernetes.io/component": "relay",
        "app.kubernetes.io/managed-by": "relay-operator",
        "relay.kubectl-relay.io/tunnel": "tunnel",
    }
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "relay.kubectl-relay.io/v1alpha1",
            "kind": "SocatTunnel",
            "name": "tunnel",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    selector = deployment["spec"]["selector"]["matchLabels"]
    template = deployment["spec"]["template"]["metadata"]
    assert selector.items() <= template["labels"].items()
    assert template["labels"]["tunnel.kubectl-relay.io/team"] == "data"
    assert template["annotations"]["example.com/owner"] == "data"
    # The operator's own pods carry component=operator: never selected here.
    assert selector["app.kubernetes.io/component"] == "relay"
    assert deployment["spec"]["replicas"] == 3


def test_owner_from_body() -> None:
    assert owner_from_body(body()) == OWNER


def test_container_runs_the_relay_with_the_wired_addresses() -> None:
    spec = tunnel(SPECS["tls"])
    (container,) = pod_spec(desired_deployment(spec, OWNER, SETTINGS))["containers"]
    assert container["image"] == "ghcr.io/kubectl-relay/relay:0.1.0"
    assert container["command"] == [
        "relay", "--metrics", "9464", "--deny-connect", DENIED, "-v", "-d", "-d", "-t", "30",
        spec.listen, spec.connect,
    ]  # fmt: skip
    assert container["ports"] == [
        {"name": "relay", "containerPort": 8443, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9464, "protocol": "TCP"},
    ]


#: What the kubelet waits after SIGTERM when a pod does not say.
KUBERNETES_DEFAULT_TERMINATION_GRACE = 30


def test_the_relay_ends_its_sessions_before_the_kubelet_kills_the_pod() -> None:
    """On SIGTERM (each rollout) running sessions get the relay's grace period, then are
    cut with a log line: all of that inside the pod's terminationGracePeriodSeconds."""
    pod = pod_spec(desired_deployment(tunnel(), OWNER, SETTINGS))
    (container,) = pod["containers"]
    line = parse_command_line(container["command"][1:])
    allowed = pod.get("terminationGracePeriodSeconds", KUBERNETES_DEFAULT_TERMINATION_GRACE)
    assert 0 < line.grace_period < allowed - 5


def test_relay_pods_invite_prometheus_unless_told_otherwise() -> None:
    template = desired_deployment(tunnel(), OWNER, SETTINGS)["spec"]["template"]
    assert {k: v for k, v in template["metadata"]["annotations"].items()
            if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9464",
        "prometheus.io/path": "/metrics",
    }
    opted_out = tunnel({"pod": {"annotations": {"prometheus.io/scrape": "false"}}})
    template = desired_deployment(opted_out, OWNER, SETTINGS)["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "false"


@pytest.mark.parametrize(
    ("tracing", "flags"),
    [("Disabled", []), ("Text", ["-v"]), ("Hex", ["-x"]), ("TextAndHex", ["-v", "-x"])],
)
def test_tracing_flags(tracing: str, flags: list[str]) -> None:
    (container,) = pod_spec(desired_deployment(tunnel(tracing=tracing), OWNER, SETTINGS))[
        "containers"
    ]
    assert container["command"][5:-4] == [*flags, "-d", "-d"]


@pytest.mark.parametrize(
    ("session_logs", "flags"),
    [("Notices", []), ("Errors", ["--quiet-accepts", "--quiet-sessions"])],
)
def test_session_logs_flags(session_logs: str, flags: list[str]) -> None:
    spec = tunnel({"sessionLogs": session_logs, "tracing": "Text"})
    (container,) = pod_spec(desired_deployment(spec, OWNER, SETTINGS))["containers"]
    assert container["command"][5:-4] == ["-v", "-d", "-d", *flags]


def test_tls_secrets_are_mounted_read_only_where_the_address_points() -> None:
    spec = tunnel(SPECS["tls"])
    pod = pod_spec(desired_deployment(spec, OWNER, SETTINGS))
    assert pod["volumes"] == [
        {
            "name": "tls-listen-certificate",
            "secret": {
                "secretName": "server-tls",
                "items": [
                    {"key": "tls.crt", "path": "tls.crt"},
                    {"key": "tls.key", "path": "tls.key"},
                ],
                "defaultMode": 0o440,
            },
        },
        {
            "name": "tls-listen-ca",
            "secret": {
                "secretName": "clients-ca",
                "items": [{"key": "ca.pem", "path": "ca.crt"}],
                "defaultMode": 0o440,
            },
        },
    ]
    mounts = pod["containers"][0]["volumeMounts"]
    assert mounts == [
        {
            "name": "tls-listen-certificate",
            "mountPath": "/etc/relay/tls/listen-certificate",
            "readOnly": True,
        },
        {"name": "tls-listen-ca", "mountPath": "/etc/relay/tls/listen-ca", "readOnly": True},
    ]
    for option in ("cert=/etc/relay/tls/listen-certificate/tls.crt",
                   "key=/etc/relay/tls/listen-certificate/tls.key",
                   "cafile=/etc/relay/tls/listen-ca/ca.crt"):
        assert option in spec.listen.split(",")
    # Mode 0440 is readable through the group the kubelet gives the files.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == 65532


def test_low_port_gets_the_unprivileged_port_sysctl() -> None:
    low = pod_spec(desired_deployment(tunnel(SPECS["udp-low-port"]), OWNER, SETTINGS))
    assert low["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "514"}
    ]
    high = pod_spec(desired_deployment(tunnel(), OWNER, SETTINGS))
    assert "sysctls" not in high["securityContext"]


def test_default_node_selector_is_linux_and_merges() -> None:
    assert pod_spec(desired_deployment(tunnel(), OWNER, SETTINGS))["nodeSelector"] == {
        "kubernetes.io/os": "linux"
    }
    merged = pod_spec(desired_deployment(tunnel(SPECS["pod-settings"]), OWNER, SETTINGS))
    assert merged["nodeSelector"] == {"kubernetes.io/os": "linux", "agentpool": "relay"}
    assert merged["tolerations"] == [{"operator": "Exists", "key": "dedicated"}]


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        pytest.param(
            {},
            {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi"},
            },
            id="defaults",
        ),
        pytest.param(
            {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
            {
                "requests": {"cpu": "100m", "memory": "64Mi"},
                "limits": {"cpu": "1", "memory": "256Mi"},
            },
            id="name-by-name",
        ),
        pytest.param(
            {"limits": {"memory": "32Mi"}},
            {
                "requests": {"cpu": "50m", "memory": "32Mi"},
                "limits": {"cpu": "500m", "memory": "32Mi"},
            },
            id="a-low-limit-lowers-the-default-request",
        ),
        pytest.param(
            {"requests": {"cpu": "2"}},
            {
                "requests": {"cpu": "2", "memory": "64Mi"},
                "limits": {"cpu": "2", "memory": "256Mi"},
            },
            id="a-high-request-raises-the-default-limit",
        ),
    ],
)
def test_resources(own: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = tunnel(pod={"resources": own})
    (container,) = pod_spec(desired_deployment(spec, OWNER, SETTINGS))["containers"]
    assert container["resources"] == expected


def test_rollout_keeps_serving() -> None:
    deployment = desired_deployment(tunnel(), OWNER, SETTINGS)
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


# --- The config hash ---------------------------------------------------------


def config_hash(spec: TunnelSpec, **secret_versions: str) -> str:
    versions = {name.replace("_", "-"): value for name, value in secret_versions.items()}
    deployment = desired_deployment(spec, OWNER, SETTINGS, secret_versions=versions)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations[CONFIG_HASH_ANNOTATION]
    return value


def test_a_change_the_pods_depend_on_changes_the_hash() -> None:
    base = config_hash(tunnel())
    assert len(base) == 16
    assert config_hash(tunnel()) == base  # deterministic
    assert config_hash(tunnel(tracing="Text")) != base
    assert config_hash(tunnel(connect="TCP:db:1434")) != base
    assert config_hash(tunnel(pod={"labels": {"tunnel.kubectl-relay.io/team": "x"}})) == base  # labels are not the pod spec
    assert config_hash(tunnel(pod={"resources": {"limits": {"cpu": "1"}}})) != base


def test_scaling_or_exposing_does_not_roll_the_pods() -> None:
    base = config_hash(tunnel())
    assert config_hash(tunnel(replicas=5)) == base
    assert config_hash(tunnel(service={"type": "LoadBalancer"})) == base
    assert config_hash(tunnel(ttl="1h")) == base


def test_a_rotated_secret_rolls_the_pods() -> None:
    spec = tunnel(SPECS["tls"])
    assert config_hash(spec, server_tls="100") != config_hash(spec, server_tls="101")


# --- Readiness ---------------------------------------------------------------


def probe(spec: TunnelSpec) -> int:
    """Run the probe's command as the kubelet would (exec), here; its exit status."""
    return subprocess.run(readiness_command(spec), timeout=scaled(10), check=False).returncode


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("listen", "kind"),
    [("TCP-LISTEN:{},fork", socket.SOCK_STREAM), ("UDP-LISTEN:{},fork", socket.SOCK_DGRAM)],
    ids=["tcp", "udp"],
)
def test_readiness_probe_sees_the_bound_port_without_connecting(listen: str, kind: int) -> None:
    port = free_port(kind)
    spec = tunnel(listen=listen.format(port))
    (container,) = pod_spec(desired_deployment(spec, OWNER, SETTINGS))["containers"]
    assert container["readinessProbe"]["exec"]["command"] == readiness_command(spec)
    assert probe(spec) == 1
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("0.0.0.0", port))
        if kind == socket.SOCK_STREAM:
            assert probe(spec) == 1  # bound is not listening
            sock.listen()
        assert probe(spec) == 0
    assert probe(spec) == 1


def test_readiness_probe_ignores_connections_from_the_port() -> None:
    """An outgoing connection whose source port is the listen port is not a listener."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = free_port(socket.SOCK_STREAM)
        with socket.socket() as client:
            client.bind(("127.0.0.1", port))
            client.connect(server.getsockname())
            assert probe(tunnel(listen=f"TCP-LISTEN:{port},fork")) == 1


# --- Service and NetworkPolicy -----------------------------------------------


def test_no_service_without_spec_service() -> None:
    assert desired_service(tunnel(), OWNER) is None


def test_service() -> None:
    service = desired_service(tunnel(SPECS["udp-low-port"], service={"port": 1514}), OWNER)
    assert service is not None
    assert service["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": {
            "app.kubernetes.io/name": "kubectl-relay",
            "app.kubernetes.io/component": "relay",
            "relay.kubectl-relay.io/tunnel": "tunnel",
        },
        "ports": [{"name": "relay", "port": 1514, "targetPort": "relay", "protocol": "UDP"}],
    }


def test_load_balancer_with_sources_keeps_client_addresses() -> None:
    annotations = {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}
    spec = tunnel(
        allowedSources=["10.0.0.0/8", "fd00::/8"],
        service={"type": "LoadBalancer", "nodePort": 31433, "annotations": annotations},
    )
    service = desired_service(spec, OWNER)
    assert service is not None
    assert service["metadata"]["annotations"] == annotations
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8", "fd00::/8"]
    assert service["spec"]["ports"][0]["nodePort"] == 31433
    cluster_ip = desired_service(tunnel(allowedSources=["10.0.0.0/8"], service={}), OWNER)
    assert cluster_ip is not None
    assert "externalTrafficPolicy" not in cluster_ip["spec"]


def test_no_network_policy_without_sources() -> None:
    assert desired_network_policy(tunnel(), OWNER) is None


def test_network_policy_admits_only_the_sources_on_the_listen_port() -> None:
    policy = desired_network_policy(tunnel(allowedSources=["10.20.0.0/16", "fd00::/8"]), OWNER)
    assert policy is not None
    assert policy["metadata"]["name"] == "tunnel"
    assert policy["spec"] == {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "kubectl-relay",
                "app.kubernetes.io/component": "relay",
                "relay.kubectl-relay.io/tunnel": "tunnel",
            }
        },
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}, {"ipBlock": {"cidr": "fd00::/8"}}],
                "ports": [{"protocol": "TCP", "port": 1433}],
            },
            # Prometheus scrapes the relay's metrics from anywhere.
            {"ports": [{"protocol": "TCP", "port": 9464}]},
        ],
    }


# --- Purity ------------------------------------------------------------------


def test_builders_return_fresh_objects() -> None:
    spec = tunnel(SPECS["sources"])
    first = desired_deployment(spec, OWNER, SETTINGS)
    kept = copy.deepcopy(first)
    pod_spec(first)["containers"][0]["command"].append("mutated")
    first["metadata"]["labels"]["x"] = "y"
    assert desired_deployment(spec, OWNER, SETTINGS) == kept


#: Modules allowed an import that the rest of the operator must not make.
ALLOWED = {"handlers": {"kopf"}, "client": {"kubernetes", "urllib3"}}


def test_pure_modules_import_neither_kopf_nor_the_kubernetes_client() -> None:
    """kopf only in the handlers; the Kubernetes client only in ``client``."""
    package = Path(builders.__file__).parent
    for path in sorted(package.glob("*.py")):
        forbidden = {"kopf", "kubernetes", "urllib3", "click", "rich"} - ALLOWED.get(
            path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
