"""The operator installed from manifests/ as a user would, and every example applied to it.

``kubectl apply -f manifests/crd/ -f manifests/rbac/cluster.yaml -f manifests/operator.yaml``
starts the operator's Deployment, once for the session (``installed``).
Then each file of ``manifests/examples/`` is applied with kubectl into a fresh
namespace, next to stubs for the hosts it names, and checked the way a user
would: ``kubectl wait --for=condition=Ready``, ``kubectl get socattunnels``,
and traffic through the tunnel's Service.

Hosts the cluster cannot stand in for: the Azure endpoints
(``*.windows.net``) are public names that cluster DNS never answers, so the
Azure examples are checked by status and children only (the relays run and
listen; a client would reach Azure). ``postgres.payments.internal`` and
``api.partner.example`` become pods with a hostname in a headless Service's
subdomain (namespaces ``internal`` and ``example``), which a pod's DNS search
path completes exactly as in a real cluster.

The operator's manifests are applied with the cluster's relay image
(``RELAY_E2E_IMAGE``) in place of the project's image, and Services are reached
from the test through ``kubectl relay`` tunnels (``Cluster.reach``). Every stub
server is the relay image itself: ``relay TCP-LISTEN:...,fork PIPE`` echoes, ``SYSTEM:cat``
of a canned HTTP answer, and ``relay -d -d -d OPENSSL-LISTEN:...`` for the partner
API (its log names the client certificate). Stubs on ports below 1024 run as
the image's non-root user with the namespaced, "safe" sysctl
``net.ipv4.ip_unprivileged_port_start=0``, which Pod Security "restricted" allows.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import trustme
import yaml

from e2e.cluster import MANIFESTS, Cluster
from e2e.cluster import poll as wait_until
from e2e.conftest import Kube
from tests.conftest import scaled
from tests.support import exchange as plain_exchange
from tests.support import tls_exchange

T = TypeVar("T")

EXAMPLES = MANIFESTS / "examples"
#: Lets a non-root server listen on ports below 1024 (a namespaced sysctl that Pod
#: Security "restricted" allows): the stubs keep the ports the examples name.
LOW_PORTS = {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}


# -- helpers ---------------------------------------------------------------------------------


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None,
            timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(*args, stdin=stdin, timeout=timeout, check=check)




def exchange(host: str, port: int, payload: bytes, *, context: ssl.SSLContext | None = None,
             server_hostname: str | None = None) -> bytes:
    """``exchange_once``, retried while the connection is refused or reset.

    A Service's endpoints can lag behind its pod's readiness for a moment
    (kube-proxy writes its rules after the endpoints change).
    """
    return wait_until(f"an answer from {host}:{port}", lambda: exchange_once(
        host, port, payload, context=context, server_hostname=server_hostname), timeout=15)


def exchange_once(host: str, port: int, payload: bytes, *,
                  context: ssl.SSLContext | None = None,
                  server_hostname: str | None = None) -> bytes:
    """Send ``payload`` and read it back (plain: until EOF after a half-close)."""
    if context is None:
        return plain_exchange(port, payload, host)
    return tls_exchange(port, payload, context, host, server_hostname)


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def apply_example(cluster: Cluster, namespace: str, name: str) -> None:
    out = kubectl(cluster, "apply", "-n", namespace, "-f", str(EXAMPLES / name)).stdout
    for document in documents(name):
        assert f"{document['kind'].lower()}" in out.lower()


def wait_ready(cluster: Cluster, namespace: str, tunnel: str, timeout: float = 60) -> None:
    result = kubectl(cluster, "wait", "-n", namespace, "--for=condition=Ready",
                     f"socattunnel/{tunnel}", f"--timeout={int(scaled(timeout))}s",
                     timeout=timeout + 10, check=False)
    if result.returncode != 0:
        status = kubectl(cluster, "get", "-n", namespace, "st", tunnel, "-o", "yaml").stdout
        logs = kubectl(cluster, "logs", "-n", "relay-system", "deployment/relay-operator",
                       "--tail=40", check=False).stdout
        pytest.fail(f"{tunnel} not Ready: {result.stderr}\n{status}\noperator log:\n{logs}")


def tunnel_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = kubectl(cluster, "get", "-n", namespace, "socattunnel", name, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out)["status"]
    return status


def stub(kube: Kube, namespace: str, service: str, image: str, port: int, *command: str,
         protocol: str = "TCP", hostname: str | None = None,
         volumes: dict[str, dict[str, Any]] | None = None) -> None:
    """A pod of the relay ``image`` behind Service ``service`` (same port), ready when it listens.

    It runs ``command``, by default a TCP echo server on ``port``
    (``relay TCP-LISTEN:PORT,fork,reuseaddr PIPE``). ``volumes``: name -> volume
    source, each mounted at ``/NAME``.
    """
    labels = {"stub": service}
    container: dict[str, Any] = {
        "name": "main", "image": image,
        "command": list(command) or ["relay", f"TCP-LISTEN:{port},fork,reuseaddr", "PIPE"],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
        "volumeMounts": [{"name": name, "mountPath": f"/{name}"} for name in volumes or {}],
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": name, **source} for name, source in (volumes or {}).items()],
    }
    if port < 1024:
        spec["securityContext"] = LOW_PORTS
    service_spec: dict[str, Any] = {
        "selector": labels, "ports": [{"port": port, "targetPort": port, "protocol": protocol}],
    }
    if hostname:
        spec |= {"hostname": hostname, "subdomain": service}
        service_spec["clusterIP"] = "None"
    kube.core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": service, "labels": labels},
        "spec": spec})
    kube.core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
        "spec": service_spec})


def tls_secret(kube: Kube, namespace: str, name: str, cert: trustme.LeafCert) -> None:
    kube.core.create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert.cert_chain_pems[0].bytes()).decode(),
            "tls.key": base64.b64encode(cert.private_key_pem.bytes()).decode(),
        },
    })


def ca_secret(kube: Kube, namespace: str, name: str, key: str, ca: trustme.CA) -> None:
    kube.core.create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "data": {key: base64.b64encode(ca.cert_pem.bytes()).decode()},
    })


# -- the examples -----------------------------------------------------------------------------


def test_traced_relay(cluster: Cluster, installed: None, namespace: str,
                      kube: Kube) -> None:
    """The problem service thinks for 2 s before it echoes: the client half-closes at once,
    and the relay (``-t 30``, ``spec.closeTimeoutSeconds``) still waits for the answer."""
    stub(kube, namespace, "problem-service", cluster.relay_image, 80,
         "relay", "-t", "10", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:sleep 2; cat")
    apply_example(cluster, namespace, "traced-relay.yaml")
    wait_ready(cluster, namespace, "traced-relay")
    listing = kubectl(cluster, "get", "-n", namespace, "socattunnels").stdout
    assert listing.split("\n")[0].split() == ["NAME", "LISTEN", "CONNECT", "READY", "AGE"]
    assert listing.split("\n")[1].split()[:4] == [
        "traced-relay", "TCP-LISTEN:8080,fork", "TCP:problem-service:80", "True"]
    status = tunnel_status(cluster, namespace, "traced-relay")
    assert status["serviceAddress"] == f"traced-relay.{namespace}.svc:80"
    assert (status["phase"], status["readyReplicas"]) == ("Ready", 1)
    with cluster.reach(namespace, "svc/traced-relay", 80) as (host, port):
        assert exchange(host, port, b"hello through the trace\n") == b"hello through the trace\n"
    logs = wait_until("the trace in the relay's log", lambda: (
        out if "hello through the trace" in (out := kubectl(
            cluster, "logs", "-n", namespace, "deployment/traced-relay").stdout) else None))
    assert "> " in logs  # socat's -v direction marker


def test_syslog_bridge_relays_datagrams_to_a_tcp_collector(
    cluster: Cluster, installed: None, namespace: str, kube: Kube
) -> None:
    stub(kube, namespace, "logserver", cluster.relay_image, 514)
    apply_example(cluster, namespace, "syslog-bridge.yaml")
    wait_ready(cluster, namespace, "syslog-bridge")
    message = b"<134>Nov 24 12:00:00 device app: relayed over TCP"

    def answer(host: str, port: int) -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(scaled(1))
            sock.sendto(message, (host, port))
            try:
                return sock.recvfrom(4096)[0]
            except TimeoutError:
                return None

    # The collector (an echo server here) answers over the same TCP connection.
    with cluster.reach(namespace, "svc/syslog-bridge", 514, "udp") as (host, port):
        assert wait_until("the datagram to come back", lambda: answer(host, port)) == message
    status = tunnel_status(cluster, namespace, "syslog-bridge")
    assert status["listen"] == "UDP-LISTEN:514,fork"
    # sessionLogs: Errors: the relay said it listens, and nothing about the sender.
    notices = [line for line in kubectl(
        cluster, "logs", "-n", namespace, "deployment/syslog-bridge").stdout.splitlines()
        if " N " in line]
    assert [line.split(" N ", 1)[1] for line in notices] == [
        "listening on UDP AF=2 0.0.0.0:514"], notices


def test_tls_termination_and_mutual_tls(
    cluster: Cluster, installed: None, namespace: str, kube: Kube
) -> None:
    server_ca, clients_ca = trustme.CA(), trustme.CA()
    tls_secret(kube, namespace, "relay-server-tls", server_ca.issue_cert("relay.example"))
    ca_secret(kube, namespace, "clients-ca", "ca.crt", clients_ca)
    stub(kube, namespace, "secure-service", cluster.relay_image, 443)
    apply_example(cluster, namespace, "tls-termination.yaml")
    for name in ("tls-termination", "mtls-termination"):
        wait_ready(cluster, namespace, name)
    context = ssl.create_default_context()
    server_ca.configure_trust(context)
    with cluster.reach(namespace, "svc/tls-termination", 8443) as (host, port):
        reply = exchange(host, port, b"terminated", context=context,
                         server_hostname="relay.example")
    assert reply == b"terminated"

    with cluster.reach(namespace, "svc/mtls-termination", 9443) as (host, port):
        with pytest.raises((ssl.SSLError, ConnectionError)):  # no client certificate: refused
            exchange_once(host, port, b"anonymous", context=context,
                          server_hostname="relay.example")
        clients_ca.issue_cert("client.example").configure_cert(context)
        reply = exchange(host, port, b"mutual", context=context, server_hostname="relay.example")
    assert reply == b"mutual"
    status = tunnel_status(cluster, namespace, "mtls-termination")
    assert status["listen"] == (
        "OPENSSL-LISTEN:9443,fork,cert=/etc/relay/tls/listen-certificate/tls.crt,"
        "key=/etc/relay/tls/listen-certificate/tls.key,cafile=/etc/relay/tls/listen-ca/ca.crt"
    )


def test_mtls_origination_to_a_partner_api(
    cluster: Cluster, installed: None, namespace: str, kube: Kube,
    extra_namespaces: Callable[[str], str],
) -> None:
    partner_ca, client_ca = trustme.CA(), trustme.CA()
    client_certificate = client_ca.issue_cert("relay-client", common_name="relay-client")
    tls_secret(kube, namespace, "partner-client-tls", client_certificate)
    ca_secret(kube, namespace, "partner-ca", "ca.pem", partner_ca)
    # api.partner.example: pod "api" in subdomain "partner" of namespace "example", a TLS
    # echo server that requires a client certificate and logs its subject (-d -d -d).
    example = extra_namespaces("example")
    tls_secret(kube, example, "api-tls", partner_ca.issue_cert("api.partner.example"))
    ca_secret(kube, example, "clients", "ca.crt", client_ca)
    listen = ("OPENSSL-LISTEN:443,fork,reuseaddr,cert=/tls/tls.crt,key=/tls/tls.key,"
              "cafile=/clients/ca.crt")
    stub(kube, example, "partner", cluster.relay_image, 443,
         "relay", "-d", "-d", "-d", listen, "PIPE", hostname="api",
         volumes={"tls": {"secret": {"secretName": "api-tls"}},
                  "clients": {"secret": {"secretName": "clients"}}})
    cluster.wait_pod(example, "partner")
    apply_example(cluster, namespace, "mtls-origination.yaml")
    wait_ready(cluster, namespace, "partner-api")
    with cluster.reach(namespace, "svc/partner-api", 8080) as (host, port):
        assert exchange(host, port, b"plain in, mutual TLS out") == b"plain in, mutual TLS out"
    logs = wait_until("the partner's log of its client", lambda: (
        out if "CN = relay-client" in (out := kube.core.read_namespaced_pod_log(
            "partner", example)) else None))
    assert "peer certificate is trusted" in logs


def test_temporary_tunnel_reaches_an_internal_name_and_shows_its_expiry(
    cluster: Cluster, installed: None, namespace: str, kube: Kube,
    extra_namespaces: Callable[[str], str],
) -> None:
    internal = extra_namespaces("internal")
    stub(kube, internal, "payments", cluster.relay_image, 5432, hostname="postgres")
    cluster.wait_pod(internal, "payments")
    apply_example(cluster, namespace, "temporary-tunnel.yaml")
    wait_ready(cluster, namespace, "debug-postgres")
    with cluster.reach(namespace, "svc/debug-postgres", 5432) as (host, port):
        assert exchange(host, port, b"SELECT 1") == b"SELECT 1"
    out = kubectl(cluster, "get", "-n", namespace, "st", "debug-postgres", "-o", "json").stdout
    obj = json.loads(out)
    created = obj["metadata"]["creationTimestamp"]
    expires = obj["status"]["expiresAt"]
    from datetime import datetime, timedelta  # noqa: PLC0415

    def moment(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    assert moment(expires) - moment(created) == timedelta(hours=2)
    wide = kubectl(cluster, "get", "-n", namespace, "st", "-o", "wide").stdout
    assert wide.split("\n")[0].split()[-1] == "EXPIRES"


AZURE = [
    pytest.param("azure-sql.yaml", "azure-sql", 2, "ClusterIP", 1433, id="azure-sql"),
    pytest.param("azure-redis.yaml", "azure-redis", 1, "ClusterIP", 6379, id="azure-redis"),
    pytest.param("azure-storage.yaml", "azure-storage", 1, "ClusterIP", 10000,
                 id="azure-storage"),
    pytest.param("source-cidrs.yaml", "onprem-sql", 2, "LoadBalancer", 1433, id="source-cidrs"),
]


@pytest.mark.parametrize(("example", "name", "replicas", "kind", "port"), AZURE)
def test_azure_examples_run_their_relays(
    cluster: Cluster, installed: None, namespace: str, kube: Kube,
    example: str, name: str, replicas: int, kind: str, port: int,
) -> None:
    """Status and children only: cluster DNS cannot answer for *.windows.net."""
    apply_example(cluster, namespace, example)
    # source-cidrs.yaml pins its relays to an AKS node pool ("agentpool: relay").
    with node_label(cluster, "agentpool", "relay") if example == "source-cidrs.yaml" else (
            contextlib.nullcontext()):
        wait_ready(cluster, namespace, name)
    status = tunnel_status(cluster, namespace, name)
    assert (status["phase"], status["readyReplicas"]) == ("Ready", replicas)
    service = kube.core.read_namespaced_service(name, namespace)
    assert (service.spec.type, service.spec.ports[0].port) == (kind, port)
    deployment = kube.apps.read_namespaced_deployment(name, namespace)
    assert deployment.spec.template.spec.containers[0].command[:3] == [
        "relay", "--metrics", "9464"]
    policies = kube_list_policies(cluster, namespace)
    if example == "source-cidrs.yaml":
        # The load balancer's address once it has one (the sandbox gives one at once);
        # without a load-balancer controller (a bare cluster), the Service's DNS name.
        ingress = (service.status.load_balancer and service.status.load_balancer.ingress) or []
        address = ingress[0].ip or ingress[0].hostname if ingress else f"{name}.{namespace}.svc"
        assert status["serviceAddress"] == f"{address}:1433"
        assert policies == ["onprem-sql"]
        assert service.spec.external_traffic_policy == "Local"
        assert service.spec.load_balancer_source_ranges == ["10.20.0.0/16", "192.168.10.0/24"]
    else:
        assert status["serviceAddress"] == f"{name}.{namespace}.svc:{port}"
        assert policies == []


@contextlib.contextmanager
def node_label(cluster: Cluster, key: str, value: str) -> Iterator[None]:
    """A node labelled ``key=value`` for the block (the first node, unless one already is)."""
    nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json").stdout)["items"]
    if any((n["metadata"].get("labels") or {}).get(key) == value for n in nodes):
        yield
        return
    node = nodes[0]["metadata"]["name"]
    kubectl(cluster, "label", "node", node, f"{key}={value}")
    try:
        yield
    finally:
        kubectl(cluster, "label", "node", node, f"{key}-", check=False)


def kube_list_policies(cluster: Cluster, namespace: str) -> list[str]:
    out = kubectl(cluster, "get", "networkpolicies", "-n", namespace, "-o", "json").stdout
    return [item["metadata"]["name"] for item in json.loads(out)["items"]]


def test_debug_pod(cluster: Cluster, namespace: str, kube: Kube) -> None:
    stub(kube, namespace, "problem-service", cluster.relay_image, 80)
    apply_example(cluster, namespace, "debug-pod.yaml")
    cluster.wait_pod(namespace, "socat-debug")
    with cluster.reach(namespace, "pod/socat-debug", 8080) as (host, port):
        assert exchange(host, port, b"debugging") == b"debugging"
    logs = wait_until("the trace", lambda: (
        out if "debugging" in (out := kubectl(
            cluster, "logs", "-n", namespace, "socat-debug").stdout) else None))
    assert "> " in logs


#: What the failing service answers to every request.
FAILING_ANSWER = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                  "Content-Length: 14\r\nConnection: close\r\n\r\nstill failing\n")


def test_trace_job(cluster: Cluster, namespace: str, kube: Kube) -> None:
    # The failing service: the relay image answering every connection with a canned 503.
    kube.core.create_namespaced_config_map(namespace, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "failing-answer"},
        "data": {"answer.http": FAILING_ANSWER}})
    stub(kube, namespace, "failing-service", cluster.relay_image, 80,
         "relay", "TCP-LISTEN:80,fork,reuseaddr", "SYSTEM:cat /answer/answer.http",
         volumes={"answer": {"configMap": {"name": "failing-answer"}}})
    cluster.wait_pod(namespace, "failing-service")
    # The Job connects once (backoffLimit 0): before kube-proxy routes the Service it
    # would fail with "No route to host", as it would for a user who applied both at once.
    cluster.wait_routed(namespace, "failing-service", 80)
    apply_example(cluster, namespace, "trace-job.yaml")
    ended = wait_until("the Job to end", lambda: next((
        condition.type for condition in
        kube.batch.read_namespaced_job("trace-failing-service", namespace).status.conditions or []
        if condition.type in ("Complete", "Failed") and condition.status == "True"), None),
        timeout=60)
    # The Job's pod by its label: the sandbox's `kubectl logs job/NAME` takes the
    # namespace's first pod when other pods (the stub) are there.
    (pod,) = kube.core.list_namespaced_pod(
        namespace, label_selector="job-name=trace-failing-service").items
    logs = kube.core.read_namespaced_pod_log(pod.metadata.name, namespace)
    assert ended == "Complete", f"the Job failed; its log:\n{logs}"
    assert "GET /healthz HTTP/1.1" in logs and "still failing" in logs
    assert "> " in logs and "< " in logs  # both directions of the -v trace


def test_bad_tunnels_are_explained_in_status_events_and_by_kubectl(
    cluster: Cluster, installed: None, namespace: str, kube: Kube
) -> None:
    bad = """\
apiVersion: relay.kubectl-relay.io/v1alpha1
kind: SocatTunnel
metadata:
  name: bad
spec:
  listen: TCP-LISTEN:8080
  connect: TCP:db:1433
"""
    kubectl(cluster, "apply", "-n", namespace, "-f", "-", stdin=bad)
    kubectl(cluster, "wait", "-n", namespace, "--for=condition=Valid=false", "st/bad",
            f"--timeout={int(scaled(30))}s", timeout=40)
    message = ('spec.listen: a shared tunnel serves many clients, so the listen address needs '
               'the "fork" option (without it the relay ends after the first client); write '
               '"TCP-LISTEN:8080,fork"')
    status = tunnel_status(cluster, namespace, "bad")
    assert status["phase"] == "Invalid"
    valid = {c["type"]: c for c in status["conditions"]}["Valid"]
    assert (valid["reason"], valid["message"]) == ("InvalidSpec", message)
    describe = wait_until("the event", lambda: (
        out if "InvalidSpec" in (out := kubectl(
            cluster, "describe", "-n", namespace, "st", "bad").stdout) else None))
    assert "Warning" in describe
    assert kube.apps.list_namespaced_deployment(namespace).items == []
    # An unknown field never reaches the operator: kubectl (strict field validation) refuses it.
    typo = bad.replace("TCP-LISTEN:8080", "TCP-LISTEN:8080,fork") + "  servce: {}\n"
    refused = kubectl(cluster, "apply", "-n", namespace, "-f", "-", stdin=typo, check=False)
    assert refused.returncode != 0
    assert 'unknown field "spec.servce"' in refused.stderr
