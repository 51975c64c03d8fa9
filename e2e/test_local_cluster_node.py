"""The local cluster's node runs real pods: the relay image, exec, port-forward, Services, DNS.

Against the cluster ``RELAY_E2E_KUBECONFIG`` names (skipped only when it is
unset), in one namespace labelled ``pod-security.kubernetes.io/enforce=restricted``:

- ``echo``: the relay image as an echo server (``TCP-LISTEN:9000,fork PIPE``)
  behind the Service ``echo``;
- ``relay``: the relay image relaying ``:8080`` to the echo pod's address.

Both run with a "restricted" security context (non-root uid 65532, seccomp
RuntimeDefault, no capability, no privilege escalation, read-only root).
A NetworkPolicy is checked to deny traffic (kube-router enforces it, see
``e2e/localcluster/netpolicy.py``; ``test_local_cluster_netpol.py`` has the rest).
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import ENV_KUBECONFIG, REAL_CLUSTER
from e2e.localcluster.images import RELAY_REFERENCE
from e2e.localcluster.settings import ClusterSettings
from e2e.test_local_cluster import RESTRICTED, kubeconfig, kubectl, kubectl_path
from tests.conftest import scaled

pytestmark = pytest.mark.skipif(not REAL_CLUSTER, reason=f"{ENV_KUBECONFIG} is not set")

ECHO_PORT = 9000
RELAY_PORT = 8080

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}


def relay_pod(name: str, args: list[str]) -> dict[str, Any]:
    """A pod of the relay image running ``relay <args>``, as "restricted" admits."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "securityContext": POD_SECURITY,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "relay",
                    "image": RELAY_REFERENCE,
                    "imagePullPolicy": "IfNotPresent",
                    "args": args,
                    "securityContext": CONTAINER_SECURITY,
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "32Mi"},
                        "limits": {"memory": "128Mi"},
                    },
                }
            ],
        },
    }


def checked(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def apply(namespace: str, *objects: dict[str, Any]) -> None:
    document = yaml.safe_dump_all(objects)
    result = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig()), "apply", "-n", namespace, "-f", "-"],
        input=document,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    checked(result)


def exec_in(
    namespace: str, pod: str, *command: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``kubectl exec [-i] <pod> -- command`` (not checked)."""
    interactive = ["-i"] if stdin is not None else []
    return subprocess.run(
        [
            kubectl_path(),
            "--kubeconfig",
            str(kubeconfig()),
            "exec",
            *interactive,
            "-n",
            namespace,
            pod,
            "--",
            *command,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )


#: What a refused connect says (a reject, or a drop that ends in the connect timeout).
REFUSALS = ("Connection refused", "timed out", "No route to host")

#: Bounds of the wait for a NetworkPolicy to take effect (the API server stores it at
#: once; the implementation applies it some time later).
ENFORCEMENT_TIMEOUT = 60.0
ENFORCEMENT_ATTEMPTS = 60


def refused(result: subprocess.CompletedProcess[str]) -> bool:
    """Whether a client's exec failed at connect, as an enforced policy makes it."""
    return result.returncode != 0 and any(word in result.stderr for word in REFUSALS)


def until_refused(attempt: Callable[[], subprocess.CompletedProcess[str]], what: str) -> None:
    """Repeat ``attempt`` (bounded in time and count) until it is ``refused``."""
    deadline = time.monotonic() + scaled(ENFORCEMENT_TIMEOUT)
    result = attempt()
    for _ in range(ENFORCEMENT_ATTEMPTS):
        if refused(result) or time.monotonic() > deadline:
            break
        time.sleep(1)
        result = attempt()
    assert refused(result), (
        f"{what} was not refused: exit {result.returncode}, "
        f"stdout {result.stdout!r}, stderr {result.stderr!r}"
    )


@dataclass(frozen=True)
class Pods:
    namespace: str
    echo_ip: str
    service_ip: str


def restricted_namespace(prefix: str) -> str:
    """A new namespace named ``prefix`` and a random suffix, enforcing "restricted"."""
    namespace_object = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"generateName": prefix, "labels": RESTRICTED},
    }
    result = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig()), "create", "-o", "name", "-f", "-"],
        input=json.dumps(namespace_object),
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    return checked(result).strip().removeprefix("namespace/")


@pytest.fixture(scope="module")
def pods() -> Iterator[Pods]:
    """The restricted namespace with the echo and relay pods Ready and the echo Service."""
    namespace = restricted_namespace("local-node-")
    try:
        echo = relay_pod("echo", [f"TCP-LISTEN:{ECHO_PORT},fork,reuseaddr", "PIPE"])
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": ECHO_PORT}]},
        }
        apply(namespace, echo, service)
        checked(
            kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/echo", "--timeout=180s")
        )
        echo_ip = checked(
            kubectl("get", "-n", namespace, "pod/echo", "-o", "jsonpath={.status.podIP}")
        )
        relay = relay_pod(
            "relay", [f"TCP-LISTEN:{RELAY_PORT},fork,reuseaddr", f"TCP:{echo_ip}:{ECHO_PORT}"]
        )
        apply(namespace, relay)
        checked(
            kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/relay", "--timeout=180s")
        )
        service_ip = checked(
            kubectl("get", "-n", namespace, "service/echo", "-o", "jsonpath={.spec.clusterIP}")
        )
        yield Pods(namespace, echo_ip, service_ip)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false")


def test_relay_pod_runs_in_a_restricted_namespace(pods: Pods) -> None:
    pod = json.loads(checked(kubectl("get", "-n", pods.namespace, "pod/relay", "-o", "json")))
    assert pod["status"]["phase"] == "Running"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == RELAY_REFERENCE
    assert container["securityContext"] == CONTAINER_SECURITY
    labels = json.loads(checked(kubectl("get", "namespace", pods.namespace, "-o", "json")))
    assert labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # It runs as the non-root user the image and the pod name.
    assert exec_in(pods.namespace, "relay", "id", "-u").stdout.strip() == "65532"


def test_kubectl_exec_it_socat_answers(pods: Pods) -> None:
    """``kubectl exec -it <pod> -- socat -V`` on a real terminal (``script`` gives the pty)."""
    command = shlex.join(
        [
            kubectl_path(),
            "--kubeconfig",
            str(kubeconfig()),
            "exec",
            "-it",
            "-n",
            pods.namespace,
            "relay",
            "--",
            "socat",
            "-V",
        ]
    )
    result = subprocess.run(
        ["script", "--quiet", "--return", "--command", command, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "socat version 1.8" in result.stdout
    assert "kubectl-relay" in result.stdout


def test_port_forward_to_a_relay_pod_reaches_the_echo(pods: Pods) -> None:
    process = subprocess.Popen(
        [
            kubectl_path(),
            "--kubeconfig",
            str(kubeconfig()),
            "port-forward",
            "-n",
            pods.namespace,
            "pod/relay",
            f":{RELAY_PORT}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) ->", line)
        assert match, line + (process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
        payload = b"through port-forward, the relay pod and the echo pod\n" * 100
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=scaled(20)) as c:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := c.recv(65536):
                received += chunk
        assert received == payload
    finally:
        process.terminate()
        process.communicate(timeout=scaled(20))


@pytest.mark.parametrize("target", ["cluster IP", "service name", "short name"])
def test_a_service_is_reached_from_another_pod(pods: Pods, target: str) -> None:
    host = {
        "cluster IP": pods.service_ip,
        "service name": f"echo.{pods.namespace}.svc.cluster.local",
        "short name": "echo",
    }[target]
    result = exec_in(
        pods.namespace, "relay", "relay", "-", f"TCP:{host}:{ECHO_PORT}", stdin="over a Service\n"
    )
    assert (result.returncode, result.stdout) == (0, "over a Service\n"), result.stderr


def test_cluster_dns_resolves_the_api_server_from_a_pod(pods: Pods) -> None:
    settings = ClusterSettings.from_environment()
    script = "import socket, sys; print(socket.gethostbyname(sys.argv[1]))"
    name = f"kubernetes.default.svc.{settings.cluster_domain}"
    result = exec_in(pods.namespace, "relay", "python3", "-c", script, name)
    assert result.stdout.strip() == settings.kubernetes_service_ip, result.stderr
    resolv = exec_in(pods.namespace, "relay", "cat", "/etc/resolv.conf").stdout
    assert f"nameserver {settings.cluster_dns_ip}" in resolv


def test_nothing_leaves_the_machine_from_a_pod(pods: Pods) -> None:
    """The pod has no default route, so a connection outside fails inside the pod itself."""
    routes = exec_in(pods.namespace, "relay", "cat", "/proc/net/route").stdout.splitlines()[1:]
    destinations = {line.split()[1] for line in routes}
    # Before any attempt: no default route (destination 00000000) in the pod.
    assert "00000000" not in destinations, routes
    outside = "192.0.2.1"  # this host's own LAN gateway: the address most likely to leak to
    result = exec_in(
        pods.namespace, "relay", "relay", "-", f"TCP:{outside}:80,connect-timeout=2", stdin=""
    )
    assert result.returncode != 0
    assert "Network is unreachable" in result.stderr
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"


def test_a_network_policy_that_denies_ingress_denies_it(pods: Pods) -> None:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-echo"},
        "spec": {"podSelector": {"matchLabels": {"app": "echo"}}, "policyTypes": ["Ingress"]},
    }
    apply(pods.namespace, policy)
    try:
        until_refused(
            lambda: exec_in(
                pods.namespace,
                "relay",
                "relay",
                "-",
                f"TCP:{pods.echo_ip}:{ECHO_PORT},connect-timeout=3",
                stdin="denied\n",
            ),
            "the relay pod's connect to the echo pod",
        )
    finally:
        kubectl("delete", "-n", pods.namespace, "networkpolicy/deny-echo")
