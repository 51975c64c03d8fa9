"""The operator, in-process, against a real cluster: real pods, real traffic, real faults.

The cluster is ``RELAY_E2E_KUBECONFIG``'s (the tests skip without it); each
test has a namespace of its own. Targets are pods of the relay image itself
(``relay TCP-LISTEN:...,fork PIPE`` echoes, ``SYSTEM:printf`` answers HTTP);
API faults come from the fault-injecting proxy (``e2e/faultproxy.py``) that
the operator is given as its API server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme

from e2e.cluster import Cluster as E2ECluster
from e2e.conftest import faults, namespace  # noqa: F401 - fixtures
from e2e.faultproxy import FaultProxyThread
from kubectl_relay.engine.addresses import parse_address
from kubectl_relay.engine.errors import RelayError
from relay_operator.errors import ApiError
from relay_operator.policy import DEFAULT_DENIED, DestinationPolicy, Destinations, TunnelPolicy
from tests.operator.realcluster import (
    API_VERSION,
    Cluster,
    eventually,
    exchange,
    exchange_once,
    http_get,
    install_crd,
    no_installed_operator,
    reach,
    running_operator,
    settings_for,
    tunnel,
)

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

PLURAL = "socattunnels"


@pytest.fixture(autouse=True)
def crd(cluster: E2ECluster) -> Iterator[None]:
    no_installed_operator(cluster)
    install_crd(cluster)
    yield


def echo(port: int) -> list[str]:
    """The relay image as a TCP echo server on ``port``."""
    return ["relay", f"TCP-LISTEN:{port},fork,reuseaddr", "PIPE"]


def http_server(port: int, text: str) -> list[str]:
    """The relay image as an HTTP server on ``port`` answering ``text`` to every request.

    No quotes or colons in the command: the address parser takes them, as socat's does.
    """
    answer = f"echo HTTP/1.0 200 OK; echo; echo {text}"
    return ["relay", f"TCP-LISTEN:{port},fork,reuseaddr", f"SYSTEM:{answer}"]


async def target(cluster: Cluster, name: str, image: str,
                 command: Callable[[int], list[str]] = echo, port: int = 7000) -> None:
    """A pod ``name`` of ``image`` running ``command(port)``, behind Service ``name``
    (port 80 -> ``port``), ready when it listens."""
    labels = {"app": name}
    await cluster.create("v1", "pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{
            "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": command(port),
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
        }]},
    })
    await cluster.create("v1", "services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": port}]},
    })


async def test_create_relays_traffic_and_reports_ready(
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        ready = await web_tunnel(api, cluster.relay_image, replicas=2, service={"port": 80})
        status = ready["status"]
        uid = ready["metadata"]["uid"]
        assert status["phase"] == "Ready"
        assert status["readyReplicas"] == 2
        assert status["observedGeneration"] == 1
        assert status["serviceAddress"] == f"web.{namespace}.svc:80"
        assert status["listen"] == "TCP-LISTEN:8080,fork,reuseaddr"
        assert status["connect"] == "TCP:target:80"
        for api_version, plural in (("apps/v1", "deployments"), ("v1", "services")):
            child = await api.get(api_version, plural, "web")
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
                "SocatTunnel", "web", uid, True)
        assert await api.get("networking.k8s.io/v1", "networkpolicies", "web") is None
        assert "finalizers" not in ready["metadata"]

        payload = bytes(range(256)) * 512
        async with reach(cluster, namespace, "svc/web", 80) as (host, port):
            for _ in range(3):
                assert await exchange(host, port, payload) == payload

        events = await api.events("web")
        reasons = [(kind, reason) for kind, reason, _ in events]
        assert ("Normal", "Created") in reasons and ("Normal", "Ready") in reasons

        # Each relay pod serves its counters; the traffic above went through them.
        pods = await api.list("v1", "pods", "relay.kubectl-relay.io/tunnel=web")
        assert len(pods) == 2
        sessions = 0
        for pod in pods:
            assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9464"
            async with reach(cluster, namespace, f"pod/{pod['metadata']['name']}",
                             9464) as (host, port):
                text = (await http_get(host, port, "/metrics")).decode()
            sessions += int(metric(text, "relay_sessions_total"))
            if int(metric(text, "relay_sessions_total")):
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
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        await target(api, "one", cluster.relay_image, lambda port: http_server(port, "one"))
        await target(api, "two", cluster.relay_image, lambda port: http_server(port, "two"))
        await api.create(API_VERSION, PLURAL, tunnel("web", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:one:80",
            "service": {"port": 80},
        }))
        await api.wait_ready("web")
        async with reach(cluster, namespace, "svc/web", 80) as (host, port):
            assert (await http_get(host, port)).endswith(b"one\n")
        before = await relay_pods(api, "web")

        await api.patch(API_VERSION, PLURAL, "web", {"spec": {"connect": "TCP:two:80"}})

        async def rolled() -> bool:
            obj = await api.tunnel("web")
            status = obj["status"]
            return (
                status.get("observedGeneration") == 2
                and status.get("phase") == "Ready"
                and not (await relay_pods(api, "web")) & before
            )

        await eventually("the relay pods to roll", rolled, timeout=40)
        async with reach(cluster, namespace, "svc/web", 80) as (host, port):
            assert (await http_get(host, port)).endswith(b"two\n")
        obj = await api.tunnel("web")
        assert obj["status"]["connect"] == "TCP:two:80"
        ready = {c["type"]: c for c in obj["status"]["conditions"]}["Ready"]
        assert ready["observedGeneration"] == 2
        messages = [m for _, reason, m in await api.events("web") if reason == "Updated"]
        assert messages == ["updated Deployment web: the relay pods roll to the new spec"]

        # Scaling is a change of the Deployment, not of its pods.
        await api.patch(API_VERSION, PLURAL, "web", {"spec": {"replicas": 2}})
        await eventually("2 ready relays", lambda: _ready_replicas(api, "web", 2))
        assert len(await relay_pods(api, "web")) == 2


async def _ready_replicas(cluster: Cluster, name: str, count: int) -> bool:
    obj = await cluster.tunnel(name)
    status = obj.get("status") or {}
    return bool(status.get("readyReplicas") == count and status.get("phase") == "Ready")


async def test_restarted_operator_resumes_without_duplicating(
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    settings = settings_for(cluster, namespace)
    async with running_operator(cluster.kubeconfig, settings) as operator:
        api = Cluster(operator.kube, namespace)
        await web_tunnel(api, cluster.relay_image, service={"port": 80})
        children = {
            plural: (await api.get(version, plural, "web"))["metadata"]
            for version, plural in (("apps/v1", "deployments"), ("v1", "services"))
        }
        events = await api.events("web")
    async with running_operator(cluster.kubeconfig, settings) as operator:
        api = Cluster(operator.kube, namespace)
        # The resumed operator reconciled (and changed nothing): same objects, same versions.
        await eventually("the resume", lambda: _reconciled(operator.reconciler))
        for version, plural in (("apps/v1", "deployments"), ("v1", "services")):
            (only,) = await api.list(version, plural, "relay.kubectl-relay.io/tunnel=web")
            assert only["metadata"]["uid"] == children[plural]["uid"]
            assert only["metadata"]["resourceVersion"] == children[plural]["resourceVersion"]
        assert len(await api.list("apps/v1", "replicasets")) == 1
        assert await api.events("web") == events
        async with reach(cluster, namespace, "svc/web", 80) as (host, port):
            assert await exchange(host, port, b"still there") == b"still there"
    # A change made while no operator runs is applied by the next one.
    async with running_operator(cluster.kubeconfig, settings) as operator:
        api = Cluster(operator.kube, namespace)
        await api.patch(API_VERSION, PLURAL, "web", {"spec": {"replicas": 0}})
    async with running_operator(cluster.kubeconfig, settings) as operator:
        api = Cluster(operator.kube, namespace)
        await api.wait_condition("web", "Ready", "False", reason="Paused")

        async def paused() -> bool:
            # Settled: a rehearsal once read phase Ready just after the condition said
            # Paused (a status write of the stopped operator landing late, it seems).
            tunnel = await api.tunnel("web")
            return tunnel is not None and tunnel["status"]["phase"] == "Paused"

        await eventually("phase Paused", paused)
        assert (await api.get("apps/v1", "deployments", "web"))["spec"]["replicas"] == 0


async def _reconciled(reconciler: Any) -> bool:
    return bool(sum(reconciler.metrics.reconciliations.values()))


async def test_deleted_tunnel_takes_its_children_along(
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        await web_tunnel(api, cluster.relay_image, allowedSources=["127.0.0.0/8"])
        assert await api.get("networking.k8s.io/v1", "networkpolicies", "web")
        assert await api.delete(API_VERSION, PLURAL, "web")

        async def gone() -> bool:
            for version, plural in (("apps/v1", "deployments"), ("v1", "services"),
                                ("networking.k8s.io/v1", "networkpolicies"),
                                (API_VERSION, PLURAL)):
                if await api.get(version, plural, "web") is not None:
                    return False
            return not await relay_pods(api, "web")

        await eventually("the tunnel and its children to go", gone)


async def test_a_dropped_service_is_deleted_and_a_deleted_deployment_recreated(
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        await web_tunnel(api, cluster.relay_image)
        await api.patch(API_VERSION, PLURAL, "web", {"spec": {"service": None}})
        await eventually("the Service to go",
                         lambda: _absent(api, "v1", "services", "web"))

        async def no_service_address() -> bool:
            return (await api.tunnel("web"))["status"].get("serviceAddress") is None

        # kopf writes the handler's status after it returns, so after the deletion.
        await eventually("the status to drop the Service's address", no_service_address)
        old = (await api.get("apps/v1", "deployments", "web"))["metadata"]["uid"]
        await api.delete("apps/v1", "deployments", "web")

        async def recreated() -> bool:
            new = await api.get("apps/v1", "deployments", "web")
            return bool(new and new["metadata"]["uid"] != old)

        await eventually("the Deployment to come back", recreated)
        await api.wait_ready("web")


async def web_tunnel(api: Cluster, image: str, **spec: Any) -> Any:
    """A target pod and the tunnel ``web`` to it, plain TCP with a Service (``spec`` adds to
    its spec or overrides it), once it is Ready."""
    await target(api, "target", image)
    await api.create(API_VERSION, PLURAL, tunnel("web", {
        "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80", "service": {},
        **spec,
    }))
    return await api.wait_ready("web")


async def _absent(cluster: Cluster, api: str, plural: str, name: str) -> bool:
    return await cluster.get(api, plural, name) is None


async def test_invalid_address_reports_the_engines_message_and_creates_nothing(
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    bad = "TCP:target"  # no port
    with pytest.raises(RelayError) as engine:
        parse_address(bad)
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        await target(api, "target", cluster.relay_image)
        await api.create(API_VERSION, PLURAL, tunnel("bad", {
            "listen": "TCP-LISTEN:8080,fork", "connect": bad, "service": {},
        }))
        # Another tunnel is served all the same.
        await api.create(API_VERSION, PLURAL, tunnel("good", {
            "listen": "TCP-LISTEN:8080,fork", "connect": "TCP:target:80", "service": {},
        }))
        condition = await api.wait_condition("bad", "Valid", "False")
        assert condition["reason"] == "InvalidAddress"
        assert condition["message"] == f"spec.connect: {engine.value}"
        obj = await api.tunnel("bad")
        assert obj["status"]["phase"] == "Invalid"
        assert obj["status"]["observedGeneration"] == 1
        ready = {c["type"]: c for c in obj["status"]["conditions"]}["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "InvalidAddress")
        await api.wait_event("bad", ("Warning", "InvalidAddress", condition["message"]))
        for version, plural in (("apps/v1", "deployments"), ("v1", "services")):
            assert await api.get(version, plural, "bad") is None
        await api.wait_ready("good")

        # Fixed: the tunnel is created and serves.
        await api.patch(API_VERSION, PLURAL, "bad", {"spec": {"connect": "TCP:target:80"}})
        await api.wait_ready("bad")
        await api.wait_event("bad", ("Normal", "SpecValid", "the spec is valid again"))


async def test_invalid_change_keeps_the_last_valid_relays_serving(
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        await web_tunnel(api, cluster.relay_image)
        deployment = await api.get("apps/v1", "deployments", "web")
        await api.patch(API_VERSION, PLURAL, "web",
                            {"spec": {"listen": "TCP-LISTEN:9464,fork"}})
        condition = await api.wait_condition("web", "Valid", "False")
        assert condition["message"] == (
            "spec.listen: port 9464 is the relay pod's metrics port; listen on another port; "
            "spec.service.port can still expose the tunnel as 9464"
        )
        obj = await api.tunnel("web")
        assert obj["status"]["phase"] == "Invalid"
        assert obj["status"]["listen"] == "TCP-LISTEN:8080,fork,reuseaddr"  # what runs
        unchanged = await api.get("apps/v1", "deployments", "web")
        assert unchanged["metadata"]["generation"] == deployment["metadata"]["generation"]
        async with reach(cluster, namespace, "svc/web", 8080) as (host, port):
            assert await exchange(host, port, b"still served") == b"still served"


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
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    ca = trustme.CA()
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        await target(api, "target", cluster.relay_image)
        await api.create(API_VERSION, PLURAL, tunnel("tls", {
            "listen": "OPENSSL-LISTEN:8443,fork,verify=0", "connect": "TCP:target:80",
            "tls": {"listen": {"certificate": {"secretName": "relay-tls"}}},
            "service": {},
        }))
        condition = await api.wait_condition("tls", "Valid", "False")
        assert condition["reason"] == "SecretNotFound"
        assert condition["message"] == (
            f'spec.tls.listen.certificate: Secret "relay-tls" not found in namespace '
            f'"{namespace}"; create it (kubectl create secret tls relay-tls --cert=tls.crt '
            f"--key=tls.key -n {namespace}) or correct spec.tls.listen.certificate.secretName"
        )
        assert await api.get("apps/v1", "deployments", "tls") is None
        assert await api.get("v1", "services", "tls") is None
        # Checked again and again, but told once.
        await asyncio.sleep(1.5)
        warnings = [e for e in await api.events("tls") if e[1] == "SecretNotFound"]
        assert warnings == [("Warning", "SecretNotFound", condition["message"])]

        await api.create("v1", "secrets", tls_secret("relay-tls", ca, "tls-relay"))
        await api.wait_ready("tls")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with reach(cluster, namespace, "svc/tls", 8443) as (host, port):
            reply = await exchange(host, port, b"over TLS", tls=context,
                                   server_hostname="tls-relay")
        assert reply == b"over TLS"


async def test_transient_api_failures_are_retried(
    cluster: E2ECluster, namespace: str, faults: FaultProxyThread  # noqa: F811
) -> None:
    # The operator's API server is the fault proxy in front of the cluster's.
    async with running_operator(faults.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        await target(api, "target", cluster.relay_image)
        faults.fail("POST", r"/deployments$", status=500, times=2)
        faults.fail("GET", r"/secrets/", status=503, times=1)
        faults.fail("PATCH", r"/socattunnels/web/status$", status=429, times=1, retry_after=0)
        await api.create(API_VERSION, PLURAL, tunnel("web", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80",
            "service": {},
        }))
        await api.wait_ready("web")
        assert operator.reconciler.metrics.api_errors >= 3
        (only,) = await api.list("apps/v1", "deployments")
        assert only["metadata"]["name"] == "web"
        async with reach(cluster, namespace, "svc/web", 8080) as (host, port):
            assert await exchange(host, port, b"after faults") == b"after faults"


async def test_name_conflicts_and_refused_node_ports_create_nothing(
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        await target(api, "taken", cluster.relay_image)  # a Service "taken" of someone else
        await api.create(API_VERSION, PLURAL, tunnel("taken", {
            "listen": "TCP-LISTEN:8080,fork", "connect": "TCP:taken:80", "service": {},
        }))
        condition = await api.wait_condition("taken", "Valid", "False")
        assert condition["reason"] == "ServiceConflict"
        assert condition["message"] == (
            f'Service "taken" already exists in namespace "{namespace}" and was not created '
            "by this tunnel; rename the tunnel, or delete the Service if it is no longer needed"
        )
        assert await api.get("apps/v1", "deployments", "taken") is None

        # A nodePort someone else holds (the API server allocates it), and what the API
        # server answers to anyone asking for it again: a real 422.
        holder = await api.create("v1", "services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "holder"},
            "spec": {"type": "NodePort", "selector": {"app": "taken"},
                     "ports": [{"port": 80, "targetPort": 7000}]},
        })
        node_port = holder["spec"]["ports"][0]["nodePort"]
        with pytest.raises(ApiError) as refused:
            await api.create("v1", "services", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "nodes"},
                "spec": {"type": "NodePort", "selector": {"app": "taken"},
                         "ports": [{"port": 8080, "nodePort": node_port}]},
            })
        assert refused.value.status == 422
        message = refused.value.message
        assert message == (f'Service "nodes" is invalid: spec.ports[0].nodePort: Invalid value: '
                           f"{node_port}: provided port is already allocated")
        await api.create(API_VERSION, PLURAL, tunnel("nodes", {
            "listen": "TCP-LISTEN:8080,fork", "connect": "TCP:taken:80",
            "service": {"type": "NodePort", "nodePort": node_port},
        }))
        condition = await api.wait_condition("nodes", "Valid", "False")
        assert condition["reason"] == "NodePortConflict"
        assert condition["message"] == (
            f'the API server refused Service "nodes": {message}; choose another '
            "spec.service.nodePort, or remove it to get a free one"
        )
        assert await api.get("apps/v1", "deployments", "nodes") is None
        await api.wait_event("nodes", ("Warning", "NodePortConflict", condition["message"]))


async def test_expired_tunnel_deletes_itself(
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        api = Cluster(operator.kube, namespace)
        await target(api, "target", cluster.relay_image)
        await api.create(API_VERSION, PLURAL, tunnel("brief", {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80",
            "service": {}, "ttl": "5s",
        }))
        async def reported() -> Any:
            found = await api.tunnel("brief")
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
                await api.tunnel("brief") is None,
                await api.get("apps/v1", "deployments", "brief") is None,
                await api.get("v1", "services", "brief") is None,
            ])

        await eventually("the tunnel to expire", gone, timeout=30)
        assert datetime.now(UTC) >= expires

        async def expired_event() -> Any:
            found = [e for e in await api.events("brief") if e[1] == "Expired"]
            assert len(found) <= 1, found
            return found[0] if found else None

        # kopf posts events from a queue of its own: the event may land after the deletion.
        expired = await eventually("the Expired event", expired_event)
        assert expired == ("Normal", "Expired",
                           "the ttl of 5s is over: the tunnel and its relay pods are deleted")
        assert operator.reconciler.metrics.expired == 1


async def test_hijacking_labels_are_refused_and_a_name_is_checked_where_it_resolves(
    cluster: E2ECluster, namespace: str  # noqa: F811
) -> None:
    """A tunnel cannot join Service target's endpoints; a name passes the spec check but the
    relay refuses the denied address it resolves to (here the admin denies target's ClusterIP)."""
    async with running_operator(cluster.kubeconfig, settings_for(cluster, namespace)) as operator:
        await target(Cluster(operator.kube, namespace), "target", cluster.relay_image)
        service = await Cluster(operator.kube, namespace).get("v1", "services", "target")
    denied = ipaddress.ip_network(f"{service['spec']['clusterIP']}/32")
    policy = TunnelPolicy(DestinationPolicy(denied=DEFAULT_DENIED + Destinations((denied,))))
    settings = settings_for(cluster, namespace, tunnel_policy=policy)
    async with running_operator(cluster.kubeconfig, settings) as operator:
        api = Cluster(operator.kube, namespace)
        await api.create(API_VERSION, PLURAL, tunnel("hijack", {
            "listen": "TCP-LISTEN:8080,fork", "connect": "TCP:target:80",
            "pod": {"labels": {"app": "target"}},
        }))
        await api.create(API_VERSION, PLURAL, tunnel("sneaky", {
            "listen": "TCP-LISTEN:8080,fork", "connect": "TCP:target:80", "service": {},
        }))
        condition = await api.wait_condition("hijack", "Valid", "False")
        assert condition["reason"] == "InvalidSpec"
        assert condition["message"].startswith(
            'spec.pod.labels["app"]: a label on the relay pods could make them receive traffic '
            "meant for other pods")
        assert await api.get("apps/v1", "deployments", "hijack") is None

        await api.wait_ready("sneaky")
        async with reach(cluster, namespace, "svc/sneaky", 8080) as (host, port):
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                assert await exchange_once(host, port, b"token please") == b""
        logs = cluster.kubectl(
            "logs", "-n", namespace, "-l", "relay.kubectl-relay.io/tunnel=sneaky", "--tail=-1"
        ).stdout
        assert f"E connecting to {denied.network_address}: denied by --deny-connect" in logs
