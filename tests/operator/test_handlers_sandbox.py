"""The operator, in-process, against the sandbox cluster: real pods, real traffic, real faults."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme

from e2e.conftest import kube, namespace, sandbox  # noqa: F401 - fixtures
from e2e.sandbox import ECHO_IMAGE, HTTP_IMAGE, SandboxThread
from kubectl_relay.engine.addresses import parse_address
from kubectl_relay.engine.errors import RelayError
from tests.operator.sandboxed import (
    API_VERSION,
    Cluster,
    eventually,
    exchange,
    http_get,
    install_crd,
    running_operator,
    settings_for,
    tunnel,
)

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

PLURAL = "socattunnels"


@pytest.fixture(autouse=True)
def crd(sandbox: SandboxThread) -> Iterator[None]:  # noqa: F811
    install_crd(sandbox)
    yield


async def target(cluster: Cluster, name: str, image: str, *args: str, port: int = 7000) -> None:
    """A pod ``name`` behind Service ``name`` (port 80 -> ``port``).

    The port is one no relay listens on: the sandbox has no network
    namespaces, and a relay's readiness probe (a LISTEN socket on its port in
    /proc/net/tcp) would see the target's socket.
    """
    labels = {"app": name}
    await cluster.create("v1", "pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{
            "name": "main", "image": image, "args": ["--port", str(port), *args],
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
        }]},
    })
    await cluster.create("v1", "services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": port}]},
    })


def cluster_ip(service: dict[str, Any]) -> str:
    ip = service["spec"]["clusterIP"]
    assert ip
    return str(ip)


async def test_create_relays_traffic_and_reports_ready(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "target", ECHO_IMAGE)
        await cluster.create(API_VERSION, PLURAL, tunnel("web", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80",
            "replicas": 2, "service": {"port": 80},
        }))
        ready = await cluster.wait_ready("web")
        status = ready["status"]
        uid = ready["metadata"]["uid"]
        assert status["phase"] == "Ready"
        assert status["readyReplicas"] == 2
        assert status["observedGeneration"] == 1
        assert status["serviceAddress"] == f"web.{namespace}.svc:80"
        assert status["listen"] == "TCP-LISTEN:8080,fork,reuseaddr"
        assert status["connect"] == "TCP:target:80"
        for api_version, plural in (("apps/v1", "deployments"), ("v1", "services")):
            child = await cluster.get(api_version, plural, "web")
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
                "SocatTunnel", "web", uid, True)
        assert await cluster.get("networking.k8s.io/v1", "networkpolicies", "web") is None
        assert "finalizers" not in ready["metadata"]

        service = await cluster.get("v1", "services", "web")
        payload = bytes(range(256)) * 512
        for _ in range(3):
            assert await exchange(cluster_ip(service), 80, payload) == payload

        events = await cluster.events("web")
        reasons = [(kind, reason) for kind, reason, _ in events]
        assert ("Normal", "Created") in reasons and ("Normal", "Ready") in reasons

        # Each relay pod serves its counters; the traffic above went through them.
        pods = await cluster.list("v1", "pods", "relay.kubectl-relay.io/tunnel=web")
        assert len(pods) == 2
        sessions = 0
        for pod in pods:
            assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9464"
            text = (await http_get(pod["status"]["podIP"], 9464, "/metrics")).decode()
            sessions += int(metric(text, "relay_sessions_total"))
            if metric(text, "relay_sessions_total"):
                assert int(metric(text, 'relay_bytes_total{direction="left-to-right"}')) > 0
        assert sessions >= 3
        # And so does the operator.
        text = (await http_get("127.0.0.1", operator.metrics_port, "/metrics")).decode()
        assert int(metric(text, 'relay_operator_reconciliations_total{result="applied"}')) >= 1
        assert metric(text, 'relay_operator_tunnels{phase="Ready"}') == "1"


def metric(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return line.split()[-1]
    raise AssertionError(f"{name} not in {text}")


async def relay_pods(cluster: Cluster, name: str) -> set[str]:
    pods = await cluster.list("v1", "pods", f"relay.kubectl-relay.io/tunnel={name}")
    return {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}


async def test_spec_change_rolls_the_relay_pods(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "one", HTTP_IMAGE, "--text", "one")
        await target(cluster, "two", HTTP_IMAGE, "--text", "two")
        await cluster.create(API_VERSION, PLURAL, tunnel("web", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:one:80",
            "service": {"port": 80},
        }))
        await cluster.wait_ready("web")
        ip = cluster_ip(await cluster.get("v1", "services", "web"))
        assert (await http_get(ip, 80)).endswith(b"one\n")
        before = await relay_pods(cluster, "web")

        await cluster.patch(API_VERSION, PLURAL, "web", {"spec": {"connect": "TCP:two:80"}})

        async def rolled() -> bool:
            obj = await cluster.tunnel("web")
            status = obj["status"]
            return (
                status.get("observedGeneration") == 2
                and status.get("phase") == "Ready"
                and not (await relay_pods(cluster, "web")) & before
            )

        await eventually("the relay pods to roll", rolled, timeout=40)
        assert (await http_get(ip, 80)).endswith(b"two\n")
        obj = await cluster.tunnel("web")
        assert obj["status"]["connect"] == "TCP:two:80"
        ready = {c["type"]: c for c in obj["status"]["conditions"]}["Ready"]
        assert ready["observedGeneration"] == 2
        messages = [m for _, reason, m in await cluster.events("web") if reason == "Updated"]
        assert messages == ["updated Deployment web: the relay pods roll to the new spec"]

        # Scaling is a change of the Deployment, not of its pods.
        await cluster.patch(API_VERSION, PLURAL, "web", {"spec": {"replicas": 2}})
        await eventually("2 ready relays", lambda: _ready_replicas(cluster, "web", 2))
        assert len(await relay_pods(cluster, "web")) == 2


async def _ready_replicas(cluster: Cluster, name: str, count: int) -> bool:
    obj = await cluster.tunnel(name)
    status = obj.get("status") or {}
    return bool(status.get("readyReplicas") == count and status.get("phase") == "Ready")


async def test_restarted_operator_resumes_without_duplicating(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    settings = settings_for(namespace)
    async with running_operator(sandbox, settings) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "target", ECHO_IMAGE)
        await cluster.create(API_VERSION, PLURAL, tunnel("web", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80",
            "service": {"port": 80},
        }))
        await cluster.wait_ready("web")
        children = {
            plural: (await cluster.get(api, plural, "web"))["metadata"]
            for api, plural in (("apps/v1", "deployments"), ("v1", "services"))
        }
        events = await cluster.events("web")
    async with running_operator(sandbox, settings) as operator:
        cluster = Cluster(operator.kube, namespace)
        # The resumed operator reconciled (and changed nothing): same objects, same versions.
        await eventually("the resume", lambda: _reconciled(operator.reconciler))
        for api, plural in (("apps/v1", "deployments"), ("v1", "services")):
            (only,) = await cluster.list(api, plural, "relay.kubectl-relay.io/tunnel=web")
            assert only["metadata"]["uid"] == children[plural]["uid"]
            assert only["metadata"]["resourceVersion"] == children[plural]["resourceVersion"]
        assert len(await cluster.list("apps/v1", "replicasets")) == 1
        assert await cluster.events("web") == events
        ip = cluster_ip(await cluster.get("v1", "services", "web"))
        assert await exchange(ip, 80, b"still there") == b"still there"
    # A change made while no operator runs is applied by the next one.
    async with running_operator(sandbox, settings) as operator:
        cluster = Cluster(operator.kube, namespace)
        await cluster.patch(API_VERSION, PLURAL, "web", {"spec": {"replicas": 0}})
    async with running_operator(sandbox, settings) as operator:
        cluster = Cluster(operator.kube, namespace)
        await cluster.wait_condition("web", "Ready", "False", reason="Paused")
        assert (await cluster.tunnel("web"))["status"]["phase"] == "Paused"
        assert (await cluster.get("apps/v1", "deployments", "web"))["spec"]["replicas"] == 0


async def _reconciled(reconciler: Any) -> bool:
    return bool(sum(reconciler.metrics.reconciliations.values()))


async def test_deleted_tunnel_takes_its_children_along(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "target", ECHO_IMAGE)
        await cluster.create(API_VERSION, PLURAL, tunnel("web", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80",
            "service": {}, "allowedSources": ["127.0.0.0/8"],
        }))
        await cluster.wait_ready("web")
        assert await cluster.get("networking.k8s.io/v1", "networkpolicies", "web")
        assert await cluster.delete(API_VERSION, PLURAL, "web")

        async def gone() -> bool:
            for api, plural in (("apps/v1", "deployments"), ("v1", "services"),
                                ("networking.k8s.io/v1", "networkpolicies"),
                                (API_VERSION, PLURAL)):
                if await cluster.get(api, plural, "web") is not None:
                    return False
            return not await relay_pods(cluster, "web")

        await eventually("the tunnel and its children to go", gone)


async def test_a_dropped_service_is_deleted_and_a_deleted_deployment_recreated(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "target", ECHO_IMAGE)
        await cluster.create(API_VERSION, PLURAL, tunnel("web", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80",
            "service": {},
        }))
        await cluster.wait_ready("web")
        await cluster.patch(API_VERSION, PLURAL, "web", {"spec": {"service": None}})
        await eventually("the Service to go",
                         lambda: _absent(cluster, "v1", "services", "web"))
        assert (await cluster.tunnel("web"))["status"].get("serviceAddress") is None
        old = (await cluster.get("apps/v1", "deployments", "web"))["metadata"]["uid"]
        await cluster.delete("apps/v1", "deployments", "web")

        async def recreated() -> bool:
            new = await cluster.get("apps/v1", "deployments", "web")
            return bool(new and new["metadata"]["uid"] != old)

        await eventually("the Deployment to come back", recreated)
        await cluster.wait_ready("web")


async def _absent(cluster: Cluster, api: str, plural: str, name: str) -> bool:
    return await cluster.get(api, plural, name) is None


async def test_invalid_address_reports_the_engines_message_and_creates_nothing(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    bad = "TCP:target"  # no port
    with pytest.raises(RelayError) as engine:
        parse_address(bad)
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "target", ECHO_IMAGE)
        await cluster.create(API_VERSION, PLURAL, tunnel("bad", {
            "listen": "TCP-LISTEN:8080,fork", "connect": bad, "service": {},
        }))
        # Another tunnel is served all the same.
        await cluster.create(API_VERSION, PLURAL, tunnel("good", {
            "listen": "TCP-LISTEN:8080,fork", "connect": "TCP:target:80", "service": {},
        }))
        condition = await cluster.wait_condition("bad", "Valid", "False")
        assert condition["reason"] == "InvalidAddress"
        assert condition["message"] == f"spec.connect: {engine.value}"
        obj = await cluster.tunnel("bad")
        assert obj["status"]["phase"] == "Invalid"
        assert obj["status"]["observedGeneration"] == 1
        ready = {c["type"]: c for c in obj["status"]["conditions"]}["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "InvalidAddress")
        assert ("Warning", "InvalidAddress", condition["message"]) in await cluster.events("bad")
        for api, plural in (("apps/v1", "deployments"), ("v1", "services")):
            assert await cluster.get(api, plural, "bad") is None
        await cluster.wait_ready("good")

        # Fixed: the tunnel is created and serves.
        await cluster.patch(API_VERSION, PLURAL, "bad", {"spec": {"connect": "TCP:target:80"}})
        await cluster.wait_ready("bad")
        assert ("Normal", "SpecValid", "the spec is valid again") in await cluster.events("bad")


async def test_invalid_change_keeps_the_last_valid_relays_serving(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "target", ECHO_IMAGE)
        await cluster.create(API_VERSION, PLURAL, tunnel("web", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80",
            "service": {},
        }))
        await cluster.wait_ready("web")
        deployment = await cluster.get("apps/v1", "deployments", "web")
        await cluster.patch(API_VERSION, PLURAL, "web",
                            {"spec": {"listen": "TCP-LISTEN:9464,fork"}})
        condition = await cluster.wait_condition("web", "Valid", "False")
        assert condition["message"] == (
            "spec.listen: port 9464 is the relay pod's metrics port; listen on another port; "
            "spec.service.port can still expose the tunnel as 9464"
        )
        obj = await cluster.tunnel("web")
        assert obj["status"]["phase"] == "Invalid"
        assert obj["status"]["listen"] == "TCP-LISTEN:8080,fork,reuseaddr"  # what runs
        unchanged = await cluster.get("apps/v1", "deployments", "web")
        assert unchanged["metadata"]["generation"] == deployment["metadata"]["generation"]
        ip = cluster_ip(await cluster.get("v1", "services", "web"))
        assert await exchange(ip, 8080, b"still served") == b"still served"


def tls_secret(name: str, ca: trustme.CA, host: str) -> dict[str, Any]:
    cert = ca.issue_cert(host)
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name},
        "data": {
            "tls.crt": base64.b64encode(cert.cert_chain_pems[0].bytes()).decode(),
            "tls.key": base64.b64encode(cert.private_key_pem.bytes()).decode(),
        },
    }


async def test_missing_secret_is_reported_then_healed_by_creating_it(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    ca = trustme.CA()
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "target", ECHO_IMAGE)
        await cluster.create(API_VERSION, PLURAL, tunnel("tls", {
            "listen": "OPENSSL-LISTEN:8443,fork,verify=0", "connect": "TCP:target:80",
            "tls": {"listen": {"certificate": {"secretName": "relay-tls"}}},
            "service": {},
        }))
        condition = await cluster.wait_condition("tls", "Valid", "False")
        assert condition["reason"] == "SecretNotFound"
        assert condition["message"] == (
            f'spec.tls.listen.certificate: Secret "relay-tls" not found in namespace '
            f'"{namespace}"; create it (kubectl create secret tls relay-tls --cert=tls.crt '
            f"--key=tls.key -n {namespace}) or correct spec.tls.listen.certificate.secretName"
        )
        assert await cluster.get("apps/v1", "deployments", "tls") is None
        assert await cluster.get("v1", "services", "tls") is None
        # Checked again and again, but told once.
        await asyncio.sleep(1.5)
        warnings = [e for e in await cluster.events("tls") if e[1] == "SecretNotFound"]
        assert warnings == [("Warning", "SecretNotFound", condition["message"])]

        await cluster.create("v1", "secrets", tls_secret("relay-tls", ca, "tls-relay"))
        await cluster.wait_ready("tls")
        ip = cluster_ip(await cluster.get("v1", "services", "tls"))
        context = ssl.create_default_context()
        ca.configure_trust(context)
        reply = await exchange(ip, 8443, b"over TLS", tls=context, server_hostname="tls-relay")
        assert reply == b"over TLS"


async def test_transient_api_failures_are_retried(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    faults = sandbox.sandbox.api.faults
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "target", ECHO_IMAGE)
        sandbox.call(lambda: faults.fail("POST", r"/deployments$", status=500, times=2))
        sandbox.call(lambda: faults.fail("GET", r"/secrets/", status=503, times=1))
        sandbox.call(lambda: faults.fail("PATCH", r"/socattunnels/web/status$", status=429,
                                         times=1, retry_after=0))
        await cluster.create(API_VERSION, PLURAL, tunnel("web", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80",
            "service": {},
        }))
        await cluster.wait_ready("web")
        assert operator.reconciler.metrics.api_errors >= 3
        (only,) = await cluster.list("apps/v1", "deployments")
        assert only["metadata"]["name"] == "web"
        ip = cluster_ip(await cluster.get("v1", "services", "web"))
        assert await exchange(ip, 8080, b"after faults") == b"after faults"


async def test_name_conflicts_and_refused_node_ports_create_nothing(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    faults = sandbox.sandbox.api.faults
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "taken", ECHO_IMAGE)  # a Service "taken" of someone else
        await cluster.create(API_VERSION, PLURAL, tunnel("taken", {
            "listen": "TCP-LISTEN:8080,fork", "connect": "TCP:taken:80", "service": {},
        }))
        condition = await cluster.wait_condition("taken", "Valid", "False")
        assert condition["reason"] == "ServiceConflict"
        assert condition["message"] == (
            f'Service "taken" already exists in namespace "{namespace}" and was not created '
            "by this tunnel; rename the tunnel, or delete the Service if it is no longer needed"
        )
        assert await cluster.get("apps/v1", "deployments", "taken") is None

        message = ('Service "nodes" is invalid: spec.ports[0].nodePort: Invalid value: 30080: '
                   "provided port is already allocated")
        sandbox.call(lambda: faults.fail("POST", r"/services$", status=422, message=message))
        await cluster.create(API_VERSION, PLURAL, tunnel("nodes", {
            "listen": "TCP-LISTEN:8080,fork", "connect": "TCP:taken:80",
            "service": {"type": "NodePort", "nodePort": 30080},
        }))
        condition = await cluster.wait_condition("nodes", "Valid", "False")
        assert condition["reason"] == "NodePortConflict"
        assert condition["message"] == (
            f'the API server refused Service "nodes": {message}; choose another '
            "spec.service.nodePort, or remove it to get a free one"
        )
        assert await cluster.get("apps/v1", "deployments", "nodes") is None
        assert ("Warning", "NodePortConflict", condition["message"]) in await cluster.events(
            "nodes")


async def test_expired_tunnel_deletes_itself(
    sandbox: SandboxThread, namespace: str  # noqa: F811
) -> None:
    async with running_operator(sandbox, settings_for(namespace)) as operator:
        cluster = Cluster(operator.kube, namespace)
        await target(cluster, "target", ECHO_IMAGE)
        await cluster.create(API_VERSION, PLURAL, tunnel("brief", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80",
            "service": {}, "ttl": "5s",
        }))
        async def reported() -> Any:
            found = await cluster.tunnel("brief")
            return found if (found.get("status") or {}).get("expiresAt") else None

        # Not necessarily Ready first: on a slow machine the ttl may run out before.
        obj = await eventually("the expiry in the status", reported)
        created = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        expires = datetime.fromisoformat(obj["status"]["expiresAt"].replace("Z", "+00:00"))
        assert expires - created == timedelta(seconds=5)
        # kopf needs a finalizer to stop the ttl's timer; tunnels without ttl have none.
        assert obj["metadata"]["finalizers"]

        async def gone() -> bool:
            return all([
                await cluster.tunnel("brief") is None,
                await cluster.get("apps/v1", "deployments", "brief") is None,
                await cluster.get("v1", "services", "brief") is None,
            ])

        await eventually("the tunnel to expire", gone, timeout=30)
        assert datetime.now(UTC) >= expires
        (expired,) = [e for e in await cluster.events("brief") if e[1] == "Expired"]
        assert expired == ("Normal", "Expired",
                           "the ttl of 5s is over: the tunnel and its relay pods are deleted")
        assert operator.reconciler.metrics.expired == 1
