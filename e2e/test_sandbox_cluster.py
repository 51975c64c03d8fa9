"""The sandbox cluster end to end: workloads, pods, Services, DNS and faults, through the real API.

Objects are created with the kubernetes client (and kubectl where a user would
use it), over HTTP against the sandbox's API server; traffic goes over real
loopback sockets to pod IPs and Service cluster IPs.

Tests marked "relay image" run the project's relay engine inside pods.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from e2e.cluster import sandbox_only
from e2e.conftest import Kube
from e2e.sandbox import ECHO_IMAGE, HTTP_IMAGE, RELAY_IMAGE, TOOLBOX_IMAGE, SandboxThread
from e2e.sandbox.cluster.dns import PodIdentity, lookup
from e2e.sandbox.cluster.images import ImageRegistry, container_argv
from e2e.sandbox.cluster.volumes import rewrite
from tests.conftest import scaled

pytestmark = sandbox_only("tests the sandbox itself, not kubectl-relay")

T = TypeVar("T")

KUBECTL = "kubectl"


# -- helpers ------------------------------------------------------------------------------------


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll ``check`` until it returns a true value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + scaled(timeout)
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # the object may not exist yet
            result, last = None, exc
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what} (last error: {last})")


def exchange(host: str, port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload``, half-close, and read until the peer closes."""
    with socket.create_connection((host, port), timeout=scaled(timeout)) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def read_all(host: str, port: int, timeout: float = 10.0) -> bytes:
    """Connect and read until the peer closes."""
    with socket.create_connection((host, port), timeout=scaled(timeout)) as sock:
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def kubectl(sandbox: SandboxThread, namespace: str, *args: str, timeout: float = 30) -> str:
    """Run kubectl against the sandbox; return stdout (fails the test on a non-zero exit)."""
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(sandbox.kubeconfig), "-n", namespace, *args],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        check=False,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def pod_manifest(
    name: str, image: str, *, labels: dict[str, str] | None = None, **container: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"containers": [{"name": "main", "image": image, **container}]},
    }


def deployment_manifest(
    name: str, image: str, *, replicas: int = 1, **container: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image, **container}]},
            },
        },
    }


def service_manifest(
    name: str, port: int, target: int | str, *, app: str | None = None, protocol: str = "TCP"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": app or name},
            "ports": [{"port": port, "targetPort": target, "protocol": protocol}],
        },
    }


def tcp_ready(port: int) -> dict[str, Any]:
    return {"tcpSocket": {"port": port}, "periodSeconds": 1}


def cluster_ip(kube: Kube, namespace: str, service: str) -> str:
    ip = wait_until(
        f"a cluster IP for {service}",
        lambda: kube.core.read_namespaced_service(service, namespace).spec.cluster_ip,
    )
    return str(ip)


def ready_endpoints(kube: Kube, namespace: str, service: str, count: int) -> list[str]:
    def check() -> list[str] | None:
        endpoints = kube.core.read_namespaced_endpoints(service, namespace)
        ips = [a.ip for s in endpoints.subsets or [] for a in s.addresses or []]
        return ips if len(ips) == count else None

    return wait_until(f"{count} ready endpoints of {service}", check)


def target_service(kube: Kube, namespace: str, sandbox: SandboxThread) -> str:
    """An echo pod behind Service ``target`` (port 80 -> 8080); returns its cluster IP."""
    kube.core.create_namespaced_pod(
        namespace,
        pod_manifest("target", ECHO_IMAGE, args=["--port", "8080"], readinessProbe=tcp_ready(8080)),
    )
    kube.core.create_namespaced_service(namespace, service_manifest("target", 80, 8080))
    sandbox.wait_pod(namespace, "target")
    ready_endpoints(kube, namespace, "target", 1)
    return cluster_ip(kube, namespace, "target")


# -- pods and images ----------------------------------------------------------------------------


def test_pod_runs_on_its_own_ip_and_two_pods_share_a_port(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    for name in ("one", "two"):
        kube.core.create_namespaced_pod(
            namespace,
            pod_manifest(
                name,
                HTTP_IMAGE,
                args=["--port", "8080", "--text", name],
                readinessProbe=tcp_ready(8080),
            ),
        )
    pods = [sandbox.wait_pod(namespace, name) for name in ("one", "two")]
    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == 2
    assert all(ip.startswith("127.42.") for ip in ips)
    for name, ip in zip(("one", "two"), ips, strict=True):
        reply = exchange(ip, 8080, b"GET / HTTP/1.0\r\n\r\n")
        assert reply.endswith(f"{name}\n".encode())
    pod = kube.core.read_namespaced_pod("one", namespace)
    assert pod.status.phase == "Running"
    assert pod.spec.node_name == "sandbox-node"
    assert pod.status.container_statuses[0].ready is True
    assert pod.status.container_statuses[0].state.running.started_at is not None
    listing = kubectl(sandbox, namespace, "get", "pods", "-o", "wide")
    assert "Running" in listing and ips[0] in listing


def test_pod_readiness_follows_its_probe_and_moves_endpoints(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    kube.core.create_namespaced_pod(
        namespace,
        pod_manifest(
            "slow",
            HTTP_IMAGE,
            args=["--port", "8080", "--delay", "1.5"],
            readinessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
            ports=[{"name": "http", "containerPort": 8080}],
        ),
    )
    kube.core.create_namespaced_service(namespace, service_manifest("slow", 80, "http"))
    running = sandbox.wait_pod(namespace, "slow", phase="Running")
    ready = {c["type"]: c for c in running["status"]["conditions"]}["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"

    def not_ready_address() -> bool:
        subsets = kube.core.read_namespaced_endpoints("slow", namespace).subsets or []
        return any(s.not_ready_addresses for s in subsets)

    wait_until("the pod in notReadyAddresses", not_ready_address)
    sandbox.wait_pod(namespace, "slow")
    [ip] = ready_endpoints(kube, namespace, "slow", 1)
    assert ip == sandbox.pod_ip(namespace, "slow")
    endpoints = kube.core.read_namespaced_endpoints("slow", namespace)
    assert endpoints.subsets[0].ports[0].port == 8080  # the named targetPort, resolved
    reply = exchange(cluster_ip(kube, namespace, "slow"), 80, b"GET / HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK")


def listening_on(port: int) -> dict[str, Any]:
    """The operator's kind of readiness probe: grep the socket table for a LISTEN socket."""
    pattern = rf"^ *[0-9]+: [0-9A-F]+:{port:04X} [0-9A-F]+:0000 0A "
    command = ["grep", "-Eqs", pattern, "/proc/net/tcp", "/proc/net/tcp6"]
    return {"exec": {"command": command}, "periodSeconds": 1}


def test_exec_probes_see_only_their_own_pods_sockets(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    kube.core.create_namespaced_pod(
        namespace, pod_manifest("listener", ECHO_IMAGE, readinessProbe=listening_on(8080))
    )
    kube.core.create_namespaced_pod(
        namespace,
        pod_manifest(
            "idle", TOOLBOX_IMAGE, command=["sleep", "inf"], readinessProbe=listening_on(8080)
        ),
    )
    sandbox.wait_pod(namespace, "listener")
    sandbox.wait_pod(namespace, "idle", phase="Running")
    time.sleep(scaled(0.5))  # several probe periods
    idle = kube.core.read_namespaced_pod("idle", namespace)
    assert idle.status.container_statuses[0].ready is False


def test_killed_container_is_restarted(sandbox: SandboxThread, namespace: str, kube: Kube) -> None:
    kube.core.create_namespaced_pod(
        namespace,
        pod_manifest("victim", ECHO_IMAGE, args=["--port", "8080"], readinessProbe=tcp_ready(8080)),
    )
    ip = sandbox.wait_pod(namespace, "victim")["status"]["podIP"]
    assert exchange(ip, 8080, b"before") == b"before"

    assert sandbox.kill_pod(namespace, "victim", signal.SIGKILL) == 1

    def restarted() -> Any:
        status = kube.core.read_namespaced_pod("victim", namespace).status.container_statuses[0]
        return status if status.restart_count == 1 and status.ready else None

    status = wait_until("a restart", restarted)
    assert status.last_state.terminated.exit_code == 128 + signal.SIGKILL
    assert status.last_state.terminated.reason == "Error"
    assert status.state.running is not None
    assert sandbox.pod_ip(namespace, "victim") == ip  # same pod, same IP
    assert exchange(ip, 8080, b"after") == b"after"


#: A program that ignores SIGTERM once it listens on 8080 (then only SIGKILL ends it).
STUBBORN = (
    "import signal, socket, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: print('SIGTERM ignored', flush=True))\n"
    "server = socket.create_server(('0.0.0.0', 8080))\n"
    "time.sleep(60)\n"
)


def test_deleted_pod_gets_sigterm_then_sigkill_after_its_grace_period(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    sandbox.register_image("sandbox.local/stubborn", [sys.executable, "-c", STUBBORN])
    manifest = pod_manifest("stubborn", "sandbox.local/stubborn", readinessProbe=tcp_ready(8080))
    manifest["spec"]["terminationGracePeriodSeconds"] = 1
    kube.core.create_namespaced_pod(namespace, manifest)
    sandbox.wait_pod(namespace, "stubborn")
    started = time.monotonic()
    kube.core.delete_namespaced_pod("stubborn", namespace)
    sandbox.pods_gone(namespace)
    assert 0.9 <= time.monotonic() - started < scaled(5)


def test_container_exit_codes_decide_the_pod_phase(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    for name, code in (("ok", "0"), ("bad", "3")):
        manifest = pod_manifest(name, TOOLBOX_IMAGE, command=["exit", code, f"bye from {name}"])
        manifest["spec"]["restartPolicy"] = "Never"
        kube.core.create_namespaced_pod(namespace, manifest)
    assert sandbox.wait_pod(namespace, "ok", phase="Succeeded")
    bad = sandbox.wait_pod(namespace, "bad", phase="Failed")
    terminated = bad["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert kube.core.read_namespaced_pod_log("bad", namespace) == "bye from bad\n"


def test_unknown_image_waits_in_image_pull_backoff(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    image = "registry.example.invalid/nothing:1.0"
    kube.core.create_namespaced_pod(namespace, pod_manifest("nothing", image))

    def backoff() -> Any:
        pod = kube.core.read_namespaced_pod("nothing", namespace)
        waiting = pod.status.container_statuses[0].state.waiting
        return pod if waiting and waiting.reason == "ImagePullBackOff" else None

    pod = wait_until("ImagePullBackOff", backoff)
    assert pod.status.phase == "Pending"
    assert image in pod.status.container_statuses[0].state.waiting.message
    events = kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=nothing"
    ).items
    failed = [e.message for e in events if e.reason == "Failed"]
    assert any(image in m and "not found" in m for m in failed)
    assert "ImagePullBackOff" in kubectl(sandbox, namespace, "get", "pod", "nothing")
    # Once the image exists, the pod starts (as after a push to the registry).
    sandbox.register_image(image, [os.environ.get("SHELL", "/bin/sh"), "-c", "sleep 30"])
    assert sandbox.wait_pod(namespace, "nothing")["status"]["phase"] == "Running"


def test_secret_and_configmap_mounted_as_files(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    kube.core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "greeting"},
            "stringData": {"text": "the secret greeting\n"},
        },
    )
    kube.core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"port": "9090"},
        },
    )
    manifest = pod_manifest(
        "files",
        TOOLBOX_IMAGE,
        command=["serve-file", "/etc/greeting/text", "--port", "$(PORT)"],
        env=[
            {"name": "PORT", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "port"}}}
        ],
        volumeMounts=[{"name": "greeting", "mountPath": "/etc/greeting", "readOnly": True}],
        readinessProbe=tcp_ready(9090),
    )
    manifest["spec"]["volumes"] = [{"name": "greeting", "secret": {"secretName": "greeting"}}]
    kube.core.create_namespaced_pod(namespace, manifest)
    ip = sandbox.wait_pod(namespace, "files")["status"]["podIP"]
    assert read_all(ip, 9090) == b"the secret greeting\n"


def test_missing_secret_keeps_the_pod_creating_until_it_exists(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    manifest = pod_manifest(
        "later",
        TOOLBOX_IMAGE,
        command=["serve-file", "/s/key", "--port", "9090"],
        volumeMounts=[{"name": "s", "mountPath": "/s"}],
        readinessProbe=tcp_ready(9090),
    )
    manifest["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": "later"}}]
    kube.core.create_namespaced_pod(namespace, manifest)

    def failed_mount() -> bool:
        events = kube.core.list_namespaced_event(namespace).items
        return any(e.reason == "FailedMount" and "later" in e.message for e in events)

    wait_until("a FailedMount event", failed_mount)
    assert kube.core.read_namespaced_pod("later", namespace).status.phase == "Pending"
    kube.core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later"},
            "stringData": {"key": "now"},
        },
    )
    ip = sandbox.wait_pod(namespace, "later")["status"]["podIP"]
    assert read_all(ip, 9090) == b"now"


def test_cluster_dns_names_resolve_inside_pods(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    ip = target_service(kube, namespace, sandbox)
    names = [
        "target",
        f"target.{namespace}",
        f"target.{namespace}.svc",
        f"target.{namespace}.svc.cluster.local",
        "localhost",
        "missing",
    ]
    manifest = pod_manifest("resolver", TOOLBOX_IMAGE, command=["resolve", *names])
    manifest["spec"]["restartPolicy"] = "Never"
    kube.core.create_namespaced_pod(namespace, manifest)
    pod = sandbox.wait_pod(namespace, "resolver", phase="Succeeded")
    lines = kube.core.read_namespaced_pod_log("resolver", namespace).splitlines()
    answers = dict(line.split(" -> ", 1) for line in lines)
    for name in names[:4]:
        assert answers[name] == ip
    assert answers["localhost"] == pod["status"]["podIP"]
    assert answers["missing"].startswith("error")


# -- Services -------------------------------------------------------------------------------------


def test_service_proxy_balances_tcp_and_relays_udp(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    kube.apps.create_namespaced_deployment(
        namespace,
        deployment_manifest(
            "web", HTTP_IMAGE, replicas=2, args=["--port", "8080"], readinessProbe=tcp_ready(8080)
        ),
    )
    kube.core.create_namespaced_service(namespace, service_manifest("web", 80, 8080))
    sandbox.wait_deployment(namespace, "web")
    ready_endpoints(kube, namespace, "web", 2)
    ip = cluster_ip(kube, namespace, "web")
    assert ip.startswith("127.43.")
    replies = {exchange(ip, 80, b"GET / HTTP/1.0\r\n\r\n").split(b"\r\n\r\n")[1] for _ in range(4)}
    assert len(replies) == 2  # round robin over both pods ("hello from <pod name>")

    kube.core.create_namespaced_pod(
        namespace,
        pod_manifest(
            "udp", ECHO_IMAGE, args=["--port", "5353", "--udp"], readinessProbe=tcp_ready(5353)
        ),
    )
    kube.core.create_namespaced_service(
        namespace, service_manifest("udp", 53, 5353, protocol="UDP")
    )
    ready_endpoints(kube, namespace, "udp", 1)
    udp_ip = cluster_ip(kube, namespace, "udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(scaled(5))
        sock.sendto(b"ping", (udp_ip, 53))
        data, source = sock.recvfrom(100)
    assert (data, source) == (b"ping", (udp_ip, 53))


def test_load_balancer_service_gets_a_node_port_and_an_ingress_address(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    kube.core.create_namespaced_pod(
        namespace, pod_manifest("lb", ECHO_IMAGE, readinessProbe=tcp_ready(8080))
    )
    manifest = service_manifest("lb", 80, 8080)
    manifest["spec"]["type"] = "LoadBalancer"
    kube.core.create_namespaced_service(namespace, manifest)
    ready_endpoints(kube, namespace, "lb", 1)

    def ingress() -> Any:
        service = kube.core.read_namespaced_service("lb", namespace)
        return service if (service.status.load_balancer.ingress or []) else None

    service = wait_until("a load-balancer address", ingress)
    address = service.status.load_balancer.ingress[0].ip
    assert address == service.spec.cluster_ip
    node_port = service.spec.ports[0].node_port
    assert 30000 <= node_port <= 32767
    [node] = kube.core.list_node().items
    node_ip = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    assert exchange(address, 80, b"via the load balancer") == b"via the load balancer"
    assert exchange(node_ip, node_port, b"via the node port") == b"via the node port"


# -- Deployments ---------------------------------------------------------------------------


def test_deployment_rolls_pods_on_template_change(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    manifest = deployment_manifest(
        "web",
        HTTP_IMAGE,
        replicas=2,
        args=["--port", "8080", "--text", "v1"],
        readinessProbe=tcp_ready(8080),
    )
    kube.apps.create_namespaced_deployment(namespace, manifest)
    kube.core.create_namespaced_service(namespace, service_manifest("web", 80, 8080))
    sandbox.wait_deployment(namespace, "web")
    first = kube.apps.list_namespaced_replica_set(namespace).items
    assert len(first) == 1
    old_hash = first[0].metadata.labels["pod-template-hash"]
    assert first[0].metadata.owner_references[0].controller is True
    pods = kube.core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert {p.metadata.labels["pod-template-hash"] for p in pods} == {old_hash}
    assert all(p.metadata.owner_references[0].uid == first[0].metadata.uid for p in pods)

    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "main", "args": ["--port", "8080", "--text", "v2"]}]
                }
            }
        }
    }
    kube.apps.patch_namespaced_deployment("web", namespace, patch)
    # Old pods go only once new ones are ready: never fewer than 2 ready pods meanwhile.
    deadline = time.monotonic() + scaled(20)
    while time.monotonic() < deadline:
        pods = kube.core.list_namespaced_pod(namespace, label_selector="app=web").items
        ready = [
            p
            for p in pods
            if p.status.container_statuses and all(c.ready for c in p.status.container_statuses)
        ]
        assert len(ready) >= 2, [p.metadata.name for p in pods]
        hashes = {p.metadata.labels["pod-template-hash"] for p in pods}
        if len(pods) == 2 and old_hash not in hashes:
            break
        time.sleep(0.02)
    out = kubectl(sandbox, namespace, "rollout", "status", "deployment/web", "--timeout=20s")
    assert "successfully rolled out" in out
    deployment = kube.apps.read_namespaced_deployment("web", namespace)
    status = deployment.status
    assert status.observed_generation == deployment.metadata.generation == 2
    assert (
        status.replicas,
        status.updated_replicas,
        status.ready_replicas,
        status.available_replicas,
    ) == (2, 2, 2, 2)
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Available"].status == "True"
    assert conditions["Progressing"].reason == "NewReplicaSetAvailable"
    sets = {
        rs.metadata.labels["pod-template-hash"]: rs
        for rs in kube.apps.list_namespaced_replica_set(namespace).items
    }
    assert len(sets) == 2 and sets[old_hash].spec.replicas == 0
    assert deployment.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    reply = exchange(cluster_ip(kube, namespace, "web"), 80, b"GET / HTTP/1.0\r\n\r\n")
    assert reply.endswith(b"v2\n")


def test_deployment_scales(sandbox: SandboxThread, namespace: str, kube: Kube) -> None:
    kube.apps.create_namespaced_deployment(
        namespace,
        deployment_manifest("web", ECHO_IMAGE, replicas=1, readinessProbe=tcp_ready(8080)),
    )
    sandbox.wait_deployment(namespace, "web")
    kubectl(sandbox, namespace, "scale", "deployment/web", "--replicas=3")
    wait_until(
        "3 available replicas",
        lambda: (
            kube.apps.read_namespaced_deployment("web", namespace).status.available_replicas == 3
        ),
    )
    kube.apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
    wait_until("1 pod left", lambda: len(kube.core.list_namespaced_pod(namespace).items) == 1)
    sandbox.wait_deployment(namespace, "web")


def test_deleting_a_deployment_removes_its_pods_and_processes(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    kube.apps.create_namespaced_deployment(
        namespace,
        deployment_manifest("gone", ECHO_IMAGE, replicas=2, readinessProbe=tcp_ready(8080)),
    )
    sandbox.wait_deployment(namespace, "gone")
    ips = [p.status.pod_ip for p in kube.core.list_namespaced_pod(namespace).items]
    assert exchange(ips[0], 8080, b"x") == b"x"
    kube.apps.delete_namespaced_deployment("gone", namespace)
    wait_until("no pod left", lambda: not kube.core.list_namespaced_pod(namespace).items)
    assert not kube.apps.list_namespaced_replica_set(namespace).items
    sandbox.pods_gone(namespace)
    for ip in ips:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ip, 8080), timeout=scaled(2)).close()


# -- Jobs ------------------------------------------------------------------------------------------


def test_job_retries_then_fails_at_its_backoff_limit(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    kube.batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "flaky"},
            "spec": {
                "backoffLimit": 1,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "main", "image": TOOLBOX_IMAGE, "command": ["exit", "1"]}
                        ],
                    }
                },
            },
        },
    )
    sandbox.wait_job(namespace, "flaky")
    job = kube.batch.read_namespaced_job("flaky", namespace)
    assert job.status.failed == 2
    assert job.spec.selector.match_labels == {
        "batch.kubernetes.io/controller-uid": job.metadata.uid
    }
    conditions = {c.type: c for c in job.status.conditions}
    assert conditions["Failed"].reason == "BackoffLimitExceeded"
    pods = kube.core.list_namespaced_pod(namespace, label_selector="job-name=flaky").items
    assert [p.status.phase for p in pods] == ["Failed", "Failed"]


def test_job_fails_when_it_runs_past_its_active_deadline(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    kube.batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "slow"},
            "spec": {
                "activeDeadlineSeconds": 1,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "main", "image": TOOLBOX_IMAGE, "command": ["sleep", "inf"]}
                        ],
                    }
                },
            },
        },
    )
    job = sandbox.wait_job(namespace, "slow")
    conditions = {c["type"]: c for c in job["status"]["conditions"]}
    assert conditions["Failed"]["reason"] == "DeadlineExceeded"
    assert conditions["FailureTarget"]["reason"] == "DeadlineExceeded"
    assert job["status"]["failed"] == 1 and "active" not in job["status"]
    sandbox.pods_gone(namespace)  # the running pod was stopped


def test_job_with_on_failure_restarts_in_place_and_completes(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    # Fails until its emptyDir holds a marker, so the second run (a restart) succeeds.
    script = "test -e /work/ran && exit 0; touch /work/ran; exit 1"
    sandbox.register_image("sandbox.local/sh", [os.environ.get("SHELL", "/bin/sh"), "-c"])
    kube.batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "again"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "volumes": [{"name": "work", "emptyDir": {}}],
                        "containers": [
                            {
                                "name": "main",
                                "image": "sandbox.local/sh",
                                "args": [script],
                                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                            }
                        ],
                    }
                }
            },
        },
    )
    job = sandbox.wait_job(namespace, "again")
    assert job["status"]["succeeded"] == 1 and "failed" not in job["status"]
    assert job["status"]["completionTime"]
    [pod] = kube.core.list_namespaced_pod(namespace, label_selector="job-name=again").items
    assert pod.status.container_statuses[0].restart_count == 1
    assert "job.batch/again condition met" in kubectl(
        sandbox, namespace, "wait", "--for=condition=complete", "job/again", "--timeout=10s"
    )


# -- the relay image -----------------------------------------------------------------------


def relay_deployment(name: str, command: list[str], port: int, replicas: int = 1) -> dict[str, Any]:
    return deployment_manifest(
        name, RELAY_IMAGE, replicas=replicas, command=command, readinessProbe=tcp_ready(port)
    )


def test_relay_deployment_relays_through_its_service(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    """Relay image: ``relay TCP-LISTEN:8080,fork TCP:target:80`` behind Service ``relay``."""
    target_service(kube, namespace, sandbox)
    kube.apps.create_namespaced_deployment(
        namespace,
        relay_deployment(
            "relay", ["relay", "TCP-LISTEN:8080,fork,reuseaddr", "TCP:target:80"], 8080, replicas=2
        ),
    )
    kube.core.create_namespaced_service(namespace, service_manifest("relay", 80, 8080))
    sandbox.wait_deployment(namespace, "relay")
    ready_endpoints(kube, namespace, "relay", 2)
    ip = cluster_ip(kube, namespace, "relay")
    payload = os.urandom(256 * 1024)
    for _ in range(3):  # both relay pods (round robin) carry the bytes both ways
        assert exchange(ip, 80, payload) == payload


def test_relay_job_runs_to_completion_with_its_trace_in_the_logs(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    """Relay image: a Job ``socat -v -u OPEN:/data/request TCP:target:80`` (a mounted ConfigMap)."""
    target_service(kube, namespace, sandbox)
    kube.core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "request"},
            "data": {"request": "hello through the relay\n"},
        },
    )
    kube.batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "probe"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "volumes": [{"name": "data", "configMap": {"name": "request"}}],
                        "containers": [
                            {
                                "name": "socat",
                                "image": RELAY_IMAGE,
                                "command": [
                                    "socat",
                                    "-v",
                                    "-u",
                                    "OPEN:/data/request",
                                    "TCP:target:80",
                                ],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ],
                    }
                },
            },
        },
    )
    job = sandbox.wait_job(namespace, "probe", timeout=scaled(20))
    conditions = {c["type"]: c["status"] for c in job["status"]["conditions"]}
    assert conditions.get("Complete") == "True", job["status"]
    assert job["status"]["succeeded"] == 1
    [pod] = kube.core.list_namespaced_pod(namespace, label_selector="job-name=probe").items
    trace = kube.core.read_namespaced_pod_log(pod.metadata.name, namespace)
    assert "hello through the relay" in trace
    assert "> " in trace  # socat's -v direction marker, left to right
    assert trace in kubectl(sandbox, namespace, "logs", "job/probe")


def test_relay_pods_resolve_service_names_and_localhost(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    """Relay image: ``TCP:<every spelling of the Service>:80`` and ``TCP:localhost:9001``."""
    target_service(kube, namespace, sandbox)
    spellings = [
        "target",
        f"target.{namespace}",
        f"target.{namespace}.svc",
        f"target.{namespace}.svc.cluster.local",
    ]
    containers = [
        {
            "name": f"c{index}",
            "image": RELAY_IMAGE,
            "command": ["relay", f"TCP-LISTEN:{9001 + index},fork,reuseaddr", f"TCP:{name}:80"],
            "readinessProbe": tcp_ready(9001 + index),
        }
        for index, name in enumerate(spellings)
    ]
    containers.append(
        {
            "name": "local",
            "image": RELAY_IMAGE,
            "command": ["socat", "TCP-LISTEN:9100,fork,reuseaddr", "TCP:localhost:9001"],
            "readinessProbe": tcp_ready(9100),
        }
    )
    kube.core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "dns"},
            "spec": {"containers": containers},
        },
    )
    ip = sandbox.wait_pod(namespace, "dns", timeout=scaled(20))["status"]["podIP"]
    for port in (9001, 9002, 9003, 9004, 9100):
        assert exchange(ip, port, f"via {port}".encode()) == f"via {port}".encode()
    logs = kube.core.read_namespaced_pod_log("target", namespace)
    assert f"connection from {ip}:" in logs  # the relay pod connects from its own IP


def test_relay_terminates_tls_with_a_certificate_from_a_mounted_secret(
    sandbox: SandboxThread, namespace: str, kube: Kube
) -> None:
    """Relay image: ``OPENSSL-LISTEN:8443,cert=/tls/tls.crt,key=/tls/tls.key`` (a TLS Secret)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    issued = ca.issue_cert(f"tls.{namespace}.svc")
    kube.core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tls"},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(issued.cert_chain_pems[0].bytes()).decode(),
                "tls.key": base64.b64encode(issued.private_key_pem.bytes()).decode(),
            },
        },
    )
    target_service(kube, namespace, sandbox)
    listen = "OPENSSL-LISTEN:8443,fork,reuseaddr,cert=/tls/tls.crt,key=/tls/tls.key,verify=0"
    manifest = pod_manifest(
        "tls",
        RELAY_IMAGE,
        command=["socat", listen, "TCP:target:80"],
        volumeMounts=[{"name": "tls", "mountPath": "/tls", "readOnly": True}],
        readinessProbe=listening_on(8443),
    )
    manifest["spec"]["volumes"] = [{"name": "tls", "secret": {"secretName": "tls"}}]
    kube.core.create_namespaced_pod(namespace, manifest)
    ip = sandbox.wait_pod(namespace, "tls", timeout=scaled(20))["status"]["podIP"]
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with (
        socket.create_connection((ip, 8443), timeout=scaled(10)) as raw,
        context.wrap_socket(raw, server_hostname=f"tls.{namespace}.svc") as tls,
    ):
        tls.sendall(b"over tls")
        assert tls.recv(100) == b"over tls"


# -- the pure parts: DNS rules, mount paths, command lines ---------------------------------------
RECORDS = {
    "services": {
        "ns/web": {"addresses": ["127.43.1.2"]},
        "ns/ext": {"addresses": [], "cname": "example.com"},
    },
    "hosts": {"ns/sub/db-0": "127.42.1.9"},
}
ME = PodIdentity(namespace="ns", pod_ip="127.42.1.5", hostname="me")


@pytest.mark.parametrize(
    ("name", "addresses"),
    [
        ("web", ["127.43.1.2"]),
        ("web.ns", ["127.43.1.2"]),
        ("web.ns.svc", ["127.43.1.2"]),
        ("web.ns.svc.cluster.local", ["127.43.1.2"]),
        ("web.ns.svc.cluster.local.", ["127.43.1.2"]),
        ("localhost", ["127.42.1.5"]),
        ("me", ["127.42.1.5"]),
        ("db-0.sub", ["127.42.1.9"]),
        ("127-42-1-7.ns.pod", ["127.42.1.7"]),
        ("nothing", []),
        ("nothing.ns.svc.cluster.local", []),
    ],
)
def test_dns_lookup_follows_the_pod_search_path(name: str, addresses: list[str]) -> None:
    answer = lookup(name, RECORDS, ME)
    assert answer is not None and answer.addresses == addresses


@pytest.mark.parametrize("name", ["example.com", "web.other", "127.0.0.1", "::1", ""])
def test_dns_lookup_leaves_other_names_to_the_host(name: str) -> None:
    assert lookup(name, RECORDS, ME) is None


def test_dns_lookup_of_an_external_name_service_is_a_cname() -> None:
    answer = lookup("ext", RECORDS, ME)
    assert answer is not None and answer.cname == "example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "OPENSSL-LISTEN:443,cert=/certs/tls.crt,key=/certs/tls.key",
            "OPENSSL-LISTEN:443,cert=/h/c/tls.crt,key=/h/c/tls.key",
        ),
        ("/certs", "/h/c"),
        ("--config=/etc/app/x.yaml", "--config=/h/a/x.yaml"),
        ("/certsfoo/x", "/certsfoo/x"),
        ("relative/certs/x", "relative/certs/x"),
        ("/etc/application", "/etc/application"),
    ],
)
def test_mount_paths_are_rewritten_only_at_path_boundaries(text: str, expected: str) -> None:
    assert rewrite(text, {"/certs": "/h/c", "/etc/app": "/h/a"}) == expected


@pytest.mark.parametrize(
    ("image", "command", "args", "tail"),
    [
        (
            "ghcr.io/kubectl-relay/relay:0.1.0",
            [],
            ["-v", "A", "B"],
            ["--script", "relay", "--", "-v", "A", "B"],
        ),
        (
            "ghcr.io/kubectl-relay/relay:0.1.0",
            ["socat"],
            ["A", "B"],
            ["--script", "socat", "--", "A", "B"],
        ),
        (
            "my.registry/kubectl-relay:dev",
            ["/usr/bin/socat", "A"],
            [],
            ["--script", "socat", "--", "A"],
        ),
        (
            "ghcr.io/kubectl-relay/relay:0.1.0",
            ["relay-operator"],
            ["--standalone"],
            ["--script", "relay-operator", "--", "--standalone"],
        ),
    ],
)
def test_relay_image_commands_run_through_the_pod_shim(
    image: str, command: list[str], args: list[str], tail: list[str]
) -> None:
    resolved = ImageRegistry().resolve(image)
    assert resolved is not None and resolved.kind == "relay"
    argv = container_argv(resolved, command, args, python="py")
    assert argv == ["py", "-m", "e2e.sandbox.cluster.podshim", *tail]


def test_other_commands_of_the_relay_image_run_as_given() -> None:
    resolved = ImageRegistry().resolve("ghcr.io/kubectl-relay/relay:latest")
    assert resolved is not None
    assert container_argv(resolved, ["sh", "-c", "socat A B"], []) == ["sh", "-c", "socat A B"]


def test_unknown_images_resolve_to_nothing() -> None:
    registry = ImageRegistry()
    registry.register("example.com/tool", ["/bin/true"])
    assert registry.resolve("example.com/tool:1.2") is not None
    assert registry.resolve("example.com/other") is None
    with pytest.raises(ValueError, match="module-level function"):
        registry.register("example.com/lambda", lambda argv: 0)
