"""Stories only a real cluster can tell: port-forward, exec, Helm, Pod Security admission.

Each test runs what a user of ``/work/shared/USE-CASES.md`` section 2 runs,
against the real API server, kubelet and container runtime of
``RELAY_E2E_KUBECONFIG``:

- ``kubectl port-forward`` to a relay pod, and traffic through it;
- the debug pod of the use cases, its manifest verbatim (the YAML flow list
  that splits ``TCP-LISTEN:8080,fork`` in two included), its ``-v`` trace read
  with ``kubectl logs``, and ``kubectl exec -it socat-debug -- socat ...``;
- ``helm install`` of ``charts/kubectl-relay`` into a namespace enforcing Pod
  Security "restricted", the operator's pods Running and its relays serving;
- a relay pod that breaks "restricted" refused by the API server (so the
  admission check is known to be live), and the relay pods of every example
  under ``manifests/examples/`` admitted by it;
- the batch Job of the use cases, its ``-v`` trace kept in ``kubectl logs job/...``.

Without ``RELAY_E2E_KUBECONFIG`` these tests skip.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from e2e.cluster import DEFAULT_RELAY_IMAGE, MANIFESTS, REAL_CLUSTER, Cluster
from e2e.cluster import poll as wait_until
from e2e.conftest import Kube
from kubectl_relay.podsecurity import (
    restricted_container_security_context,
    restricted_pod_security_context,
)
from tests.conftest import scaled
from tests.support import exchange

pytestmark = [
    pytest.mark.skipif(not REAL_CLUSTER, reason="needs a real cluster (RELAY_E2E_KUBECONFIG): "
                       "kubelet streams, Helm and Pod Security admission"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = MANIFESTS / "examples"
CHART = ROOT / "charts" / "kubectl-relay"

#: The debug pod of USE-CASES.md section 2, verbatim but for the image.
DEBUG_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: socat-debug}
spec:
  containers:
  - name: socat
    image: IMAGE
    command: [socat, -v, TCP-LISTEN:8080,fork, TCP:problem-service:80]
"""


# -- helpers ----------------------------------------------------------------------------------


def echo_server(kube: Kube, cluster: Cluster, namespace: str, name: str,
                *, service_port: int = 80) -> None:
    """A restricted pod of the relay image echoing TCP on 8080, behind Service ``name``."""
    kube.core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"echo": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": restricted_pod_security_context(),
            "containers": [{
                "name": "echo", "image": cluster.relay_image,
                "command": ["relay", "TCP-LISTEN:8080,fork,reuseaddr", "PIPE"],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "securityContext": restricted_container_security_context(),
            }],
        },
    })
    kube.core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"echo": name},
                 "ports": [{"port": service_port, "targetPort": 8080}]},
    })
    cluster.wait_pod(namespace, name)


class Background:
    """A ``kubectl`` command running in the background, its output read with deadlines."""

    def __init__(self, cluster: Cluster, *args: str) -> None:
        self.proc = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.out = b""

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Read the output until ``pattern`` matches; the match."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + scaled(timeout)
        while not (found := re.search(pattern, self.out.decode(errors="replace"))):
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not select.select(
                    [self.proc.stdout], [], [], 0)[0]):
                pytest.fail(f"no {pattern!r} from {self.proc.args}:\n{self.text}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                self.out += os.read(self.proc.stdout.fileno(), 65536)
        return found

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(scaled(20))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def background(cluster: Cluster) -> Iterator[Callable[..., Background]]:
    """Start background ``kubectl`` commands; each is stopped at the end."""
    started: list[Background] = []

    def start(*args: str) -> Background:
        started.append(Background(cluster, *args))
        return started[-1]

    yield start
    for command in started:
        command.stop()


def port_forward(background: Callable[..., Background], namespace: str, target: str,
                 port: int) -> int:
    """``kubectl port-forward TARGET :PORT``; the local port kubectl chose."""
    forward = background("port-forward", "-n", namespace, target, f":{port}")
    found = forward.wait_for(r"Forwarding from 127\.0\.0\.1:(\d+) -> " + str(port))
    return int(found.group(1))


class PortForward:
    """``kubectl port-forward TARGET :PORT``, started again when it has ended.

    kubectl ends a port-forward when a stream to the pod fails ("lost connection to pod"),
    as one does while the pod's listener or the Service behind it is not ready yet; its
    local port then refuses every later connection.
    """

    def __init__(self, background: Callable[..., Background], namespace: str, target: str,
                 port: int) -> None:
        self.args = ("port-forward", "-n", namespace, target, f":{port}")
        self.pattern = r"Forwarding from 127\.0\.0\.1:(\d+) -> " + str(port)
        self.background = background
        self.start()

    def start(self) -> None:
        self.forward = self.background(*self.args)
        self.port = int(self.forward.wait_for(self.pattern).group(1))

    def exchange(self, payload: bytes) -> bytes:
        if self.forward.proc.poll() is not None:
            self.start()
        return exchange(self.port, payload)


# -- port-forward and exec ---------------------------------------------------------------------


def test_kubectl_port_forward_to_a_relay_pod(
    cluster: Cluster, restricted_namespace: str, kube: Kube,
    background: Callable[..., Background],
) -> None:
    namespace = restricted_namespace
    echo_server(kube, cluster, namespace, "echo")
    local = port_forward(background, namespace, "pod/echo", 8080)
    payload = bytes(range(256)) * 256  # every byte value, 64 KiB
    assert exchange(local, payload) == payload
    # The Service too, as `kubectl port-forward svc/...` resolves it to a pod.
    local = port_forward(background, namespace, "svc/echo", 80)
    for number in range(5):
        assert exchange(local, b"connection %d\n" % number) == b"connection %d\n" % number


def test_the_debug_pod_of_the_use_cases_verbatim(
    cluster: Cluster, namespace: str, kube: Kube, background: Callable[..., Background],
) -> None:
    echo_server(kube, cluster, namespace, "problem-service")
    echo_server(kube, cluster, namespace, "service")
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    stdin=DEBUG_POD.replace("IMAGE", cluster.relay_image))
    cluster.wait_pod(namespace, "socat-debug")
    # The flow list gives socat five arguments; the relay joins "fork" back and says so.
    spec = yaml.safe_load(DEBUG_POD)["spec"]["containers"][0]
    assert spec["command"] == ["socat", "-v", "TCP-LISTEN:8080", "fork", "TCP:problem-service:80"]

    forward = PortForward(background, namespace, "pod/socat-debug", 8080)
    # A Service's endpoints (and kube-proxy's rules) can lag behind its pod's readiness.
    wait_until("an echo through the debug pod",
               lambda: forward.exchange(b"up?\n") == b"up?\n")
    for number in range(3):  # fork: one connection after another
        message = b"debugging %d\n" % number
        assert forward.exchange(message) == message
    logs = wait_until("the -v trace in kubectl logs", lambda: (
        out if "debugging 2" in (out := cluster.kubectl(
            "logs", "-n", namespace, "socat-debug").stdout) else None))
    assert "> " in logs and "< " in logs  # socat's -v direction markers, both ways
    assert 'argument "fork" is not an address' in logs

    # kubectl exec -it socat-debug -- socat TCP-LISTEN:...,fork TCP:service:80
    # (port 9090: 8080 is the pod's own relay). Without a terminal kubectl says
    # "Unable to use a TTY" and goes on.
    background("exec", "-it", "-n", namespace, "socat-debug", "--",
               "socat", "TCP-LISTEN:9090,fork", "TCP:service:80")
    wait_until("the exec'd socat to listen", lambda: cluster.kubectl(
        "exec", "-n", namespace, "socat-debug", "--",
        "socat", "-u", "/dev/null", "TCP:localhost:9090", check=False).returncode == 0, 30)
    forward = PortForward(background, namespace, "pod/socat-debug", 9090)
    wait_until("an echo through the exec'd socat",
               lambda: forward.exchange(b"through exec\n") == b"through exec\n")


# -- Pod Security "restricted" -------------------------------------------------------------------


def test_a_relay_pod_breaking_restricted_is_refused(
    cluster: Cluster, restricted_namespace: str, kube: Kube,
) -> None:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    def pod(container_security: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "relay"},
            "spec": {
                "securityContext": restricted_pod_security_context(),
                "containers": [{
                    "name": "relay", "image": cluster.relay_image,
                    "command": ["relay", "TCP-LISTEN:8080,fork", "TCP:example:80"],
                    "securityContext": container_security,
                }],
            },
        }

    # Privileged, otherwise hardened (the API's validation refuses privileged together with
    # allowPrivilegeEscalation: false, before admission would see it).
    privileged = {**restricted_container_security_context(), "privileged": True}
    del privileged["allowPrivilegeEscalation"]
    with pytest.raises(ApiException) as refused:
        kube.core.create_namespaced_pod(restricted_namespace, pod(privileged))
    assert refused.value.status == 403
    body = json.loads(refused.value.body)
    assert 'violates PodSecurity "restricted:latest"' in body["message"]
    assert "privileged" in body["message"]
    # The same pod, hardened, is admitted: the refusal was for the privilege only.
    kube.core.create_namespaced_pod(
        restricted_namespace, pod(restricted_container_security_context()), dry_run="All")


def example_pods(kube: Kube, namespace: str, selector: dict[str, str]) -> list[Any]:
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    return list(kube.core.list_namespaced_pod(namespace, label_selector=labels).items)


def test_the_relay_pods_of_every_example_are_admitted_in_a_restricted_namespace(
    cluster: Cluster, installed: None, restricted_namespace: str, kube: Kube,
) -> None:
    namespace = restricted_namespace
    # The Secrets the examples name: the operator makes no relay pod without them.
    ca = trustme.CA()
    leaf = ca.issue_cert("relay.example")
    for name in ("relay-server-tls", "partner-client-tls"):
        kube.core.create_namespaced_secret(namespace, {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "kubernetes.io/tls", "data": {
                "tls.crt": base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode(),
                "tls.key": base64.b64encode(leaf.private_key_pem.bytes()).decode()}})
    for name, key in (("clients-ca", "ca.crt"), ("partner-ca", "ca.pem")):
        kube.core.create_namespaced_secret(namespace, {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {key: base64.b64encode(ca.cert_pem.bytes()).decode()}})
    tunnels, others = [], []
    for example in sorted(EXAMPLES.glob("*.yaml")):
        result = cluster.kubectl("apply", "-n", namespace, "-f", str(example), check=False)
        assert result.returncode == 0, f"{example.name}: {result.stderr}"
        assert "would violate PodSecurity" not in result.stderr, result.stderr
        for document in yaml.safe_load_all(example.read_text()):
            if document and document["kind"] == "SocatTunnel":
                tunnels.append(document["metadata"]["name"])
            elif document and document["kind"] in ("Pod", "Job"):
                others.append((document["kind"], document["metadata"]["name"]))

    def admitted(name: str) -> list[Any] | None:
        deployment = kube.apps.read_namespaced_deployment(name, namespace)
        pods = example_pods(kube, namespace, deployment.spec.selector.match_labels)
        return pods or None

    for name in tunnels:
        wait_until(f"a pod of tunnel {name}", lambda name=name: admitted(name), 60)
    for kind, name in others:
        selector = {"job-name": name} if kind == "Job" else {}
        if kind == "Pod":
            assert kube.core.read_namespaced_pod(name, namespace).metadata.name == name
        else:
            wait_until(f"a pod of {kind} {name}",
                       lambda s=selector: example_pods(kube, namespace, s), 60)
    refusals = [e.message for e in kube.core.list_namespaced_event(namespace).items
                if "violates PodSecurity" in (e.message or "")]
    assert refusals == []
    assert len(tunnels) >= 10 and ("Pod", "socat-debug") in others


def test_a_batch_job_keeps_the_trace_in_its_logs(
    cluster: Cluster, restricted_namespace: str, kube: Kube,
) -> None:
    namespace = restricted_namespace
    # The failing service: a restricted relay pod answering every request with a 503.
    answer = ("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 14\r\n"
              "Connection: close\r\n\r\nstill failing\n")
    kube.core.create_namespaced_config_map(namespace, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "answer"},
        "data": {"answer.http": answer}})
    kube.core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "failing", "labels": {"app": "failing"}},
        "spec": {
            "securityContext": restricted_pod_security_context(),
            "containers": [{
                "name": "http", "image": cluster.relay_image,
                "command": ["relay", "TCP-LISTEN:8080,fork,reuseaddr",
                            "SYSTEM:cat /answer/answer.http"],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "securityContext": restricted_container_security_context(),
                "volumeMounts": [{"name": "answer", "mountPath": "/answer"}],
            }],
            "volumes": [{"name": "answer", "configMap": {"name": "answer"}}],
        },
    })
    kube.core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "failing-service"},
        "spec": {"selector": {"app": "failing"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })
    cluster.wait_pod(namespace, "failing")
    # The Job is not retried (backoffLimit: 0): before kube-proxy routes the Service,
    # its one connection would be refused, or time out where nothing routes the IP yet.
    cluster.wait_routed(namespace, "failing-service", 80)
    job = (EXAMPLES / "trace-job.yaml").read_text()
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    stdin=job.replace(DEFAULT_RELAY_IMAGE, cluster.relay_image))
    status = wait_until("the trace Job to end", lambda: (
        s if (s := kube.batch.read_namespaced_job("trace-failing-service", namespace).status)
        and (s.succeeded or s.failed) else None), 90)
    logs = cluster.kubectl("logs", "-n", namespace, "job/trace-failing-service").stdout
    assert status.succeeded, logs
    assert "GET /healthz HTTP/1.1" in logs  # the request, traced
    assert "HTTP/1.1 503 Service Unavailable" in logs and "still failing" in logs  # the reply


# -- Helm ---------------------------------------------------------------------------------------


def helm_binary() -> str:
    """helm, fetched once by the project's own script (``scripts/fetch_helm.py``)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_helm.py")],
                            capture_output=True, text=True, timeout=scaled(300), check=False)
    if result.returncode != 0:
        pytest.fail(f"scripts/fetch_helm.py: {result.stderr.strip()}")
    return result.stdout.strip()


def test_helm_install_into_a_restricted_namespace(
    cluster: Cluster, no_operator: None, restricted_namespace: str, kube: Kube,
) -> None:
    namespace = restricted_namespace
    helm = helm_binary()
    release = f"relay-{namespace[-5:]}"  # cluster-wide RBAC objects are named after it
    repository, _, tag = cluster.relay_image.rpartition(":")

    def run_helm(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([helm, "--kubeconfig", str(cluster.kubeconfig), *args],
                              capture_output=True, text=True, timeout=scaled(timeout),
                              check=False)

    installed = run_helm("install", release, str(CHART), "-n", namespace,
                         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                         "--wait", f"--timeout={int(scaled(150))}s", timeout=200)
    try:
        assert installed.returncode == 0, installed.stdout + installed.stderr
        (deployment,) = kube.apps.list_namespaced_deployment(
            namespace, label_selector=f"app.kubernetes.io/instance={release}").items
        pods = example_pods(kube, namespace, deployment.spec.selector.match_labels)
        assert [p.status.phase for p in pods] == ["Running"] * deployment.spec.replicas
        # The operator serves: a tunnel in its namespace becomes Ready and relays.
        echo_server(kube, cluster, namespace, "backend")
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump({
            "apiVersion": "relay.kubectl-relay.io/v1alpha1", "kind": "SocatTunnel",
            "metadata": {"name": "via-helm"},
            "spec": {"listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:backend:80",
                     "service": {"port": 80}},
        }))
        cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "st/via-helm",
                        f"--timeout={int(scaled(90))}s", timeout=100)
        with cluster.reach(namespace, "svc/via-helm", 80) as (_host, port):
            assert exchange(port, b"installed with helm\n") == b"installed with helm\n"
    finally:
        cluster.kubectl("delete", "-n", namespace, "st", "--all", "--wait=true",
                        f"--timeout={int(scaled(60))}s", check=False, timeout=80)
        uninstalled = run_helm("uninstall", release, "-n", namespace, "--wait")
        assert uninstalled.returncode == 0, uninstalled.stderr
