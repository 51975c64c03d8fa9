"""Two replicas of the operator under kopf peering, on a real cluster: one serves at a time.

Each replica is a ``relay-operator`` process (two kopf operators cannot share
one event loop: each owns its loop's signal handling and, on stop, cancels
what its loop started after it), run as the chart runs them: the same peering
name, ``POD_ID`` as their identity, the chart's peering CRDs, and a
``KopfPeering`` in the served namespace (where kopf looks for it when it serves
some namespaces). Priorities are fixed, so the test knows which one serves.

What the API sees tells who acted: the peering object's status lists the live
replicas; each replica's log (``--verbose``) has every request it sent, so
the URLs of a tunnel's reads and writes show who handled it; events are
posted once per handled change. The test reads all of it through the
kubernetes client, as the cluster's admin (``RELAY_E2E_KUBECONFIG``).
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from e2e.cluster import Cluster
from e2e.conftest import Kube, kube, namespace  # noqa: F401 - fixtures
from tests.conftest import scaled
from tests.operator.realcluster import API_VERSION, install_crd, no_installed_operator, tunnel

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
PEERING_CRDS = ROOT / "charts" / "kubectl-relay" / "crds" / "kopfpeerings.yaml"
PEERING = "relay-operator"
RELAY_OPERATOR = Path(sys.executable).with_name("relay-operator")
#: What kopf logs when a replica starts serving (it starts paused).
RESUMING = "Resuming operations after the pause"


@pytest.fixture(autouse=True)
def crds(cluster: Cluster) -> None:
    no_installed_operator(cluster)
    install_crd(cluster)
    install_crd(cluster, PEERING_CRDS)


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {result!r}")
        time.sleep(0.1)


class Replica:
    """One ``relay-operator`` process, its log in a file."""

    def __init__(self, cluster: Cluster, namespace: str, identity: str,  # noqa: F811
                 priority: int, log: Path) -> None:
        self.identity = identity
        self.log_path = log
        environ = {**os.environ, "POD_ID": identity}
        for name in list(environ):
            if name.startswith("RELAY_OPERATOR_"):
                del environ[name]
        environ["RELAY_OPERATOR_RELAY_IMAGE"] = cluster.relay_image
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [str(RELAY_OPERATOR), "--kubeconfig", str(cluster.kubeconfig),
                 "--namespace", namespace, "--peering", PEERING, "--priority", str(priority),
                 "--health-port", "0", "--metrics-port", "0", "--verbose"],
                stdout=output, stderr=subprocess.STDOUT, env=environ,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def handled(self, namespace: str, name: str) -> bool:  # noqa: F811
        """Whether the replica sent a request about the tunnel (``--verbose`` logs each one).

        Watches and lists name no object: only a replica handling the
        tunnel reads or writes it by name.
        """
        return f"/namespaces/{namespace}/socattunnels/{name}" in self.log()

    def stop(self) -> int:
        """SIGTERM, as the kubelet stops a pod; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture
def replicas(cluster: Cluster, namespace: str,  # noqa: F811
             tmp_path: Path) -> Iterator[Callable[[str, int], Replica]]:
    """Start replicas with ``start(identity, priority)``; all are stopped after the test."""
    started: list[Replica] = []

    def start(identity: str, priority: int) -> Replica:
        replica = Replica(cluster, namespace, identity, priority, tmp_path / f"{identity}.log")
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop()


def custom_object(kube: Kube, api_version: str, plural: str, namespace: str,  # noqa: F811
                  name: str) -> Any:
    """A namespaced object of a custom resource, as the API's JSON; None when there is none."""
    from kubernetes import client  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    group, version = api_version.split("/")
    try:
        return client.CustomObjectsApi(kube.api_client).get_namespaced_custom_object(
            group, version, namespace, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def create(kube: Kube, api_version: str, plural: str, namespace: str,  # noqa: F811
           body: dict[str, Any]) -> None:
    from kubernetes import client  # noqa: PLC0415

    group, version = api_version.split("/")
    client.CustomObjectsApi(kube.api_client).create_namespaced_custom_object(
        group, version, namespace, plural, body)


def deployment(kube: Kube, namespace: str, name: str) -> Any:  # noqa: F811
    """The Deployment as the API's JSON; None when there is none."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    try:
        found = kube.apps.read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return kube.api_client.sanitize_for_serialization(found)


def peers(kube: Kube, namespace: str) -> set[str]:  # noqa: F811
    """Identities of the replicas with a live keep-alive in the namespace's KopfPeering."""
    body = custom_object(kube, "kopf.dev/v1", "kopfpeerings", namespace, PEERING) or {}
    return set(body.get("status") or {})


def events(kube: Kube, namespace: str, name: str) -> list[tuple[str, str]]:  # noqa: F811
    """(reason, message) of the events about tunnel ``name`` (not about its Deployment,
    which the cluster's controllers post about)."""
    found = [e for e in kube.core.list_namespaced_event(namespace).items
             if e.involved_object.name == name and e.involved_object.kind == "SocatTunnel"]
    return [(e.reason or "", e.message or "") for e in found]


def create_tunnel(kube: Kube, namespace: str, name: str) -> None:  # noqa: F811
    body = tunnel(name, {"listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80"})
    create(kube, API_VERSION, "socattunnels", namespace, body)


def reconciled(kube: Kube, namespace: str, name: str) -> bool:  # noqa: F811
    """The tunnel's children exist and its status reports on them."""
    body = custom_object(kube, API_VERSION, "socattunnels", namespace, name) or {}
    return deployment(kube, namespace, name) is not None and bool(
        (body.get("status") or {}).get("conditions"))


def test_one_replica_serves_and_the_other_takes_over(
    kube: Kube, namespace: str,  # noqa: F811
    replicas: Callable[[str, int], Replica],
) -> None:
    body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
            "metadata": {"name": PEERING, "namespace": namespace}}
    create(kube, "kopf.dev/v1", "kopfpeerings", namespace, body)

    # Peering is mandatory when named: each replica starts paused and resumes
    # only once the peering object shows no replica of a higher priority.
    active = replicas("operator-a", 20)
    wait_until("operator-a in the peering", lambda: "operator-a" in peers(kube, namespace))
    wait_until("operator-a to serve", lambda: RESUMING in active.log())
    standby = replicas("operator-b", 10)
    wait_until("both in the peering", lambda: peers(kube, namespace) == {
        "operator-a", "operator-b"})
    wait_until("operator-b's paused watches", lambda: "(paused)" in standby.log())

    names = ["first", "second"]
    for name in names:
        create_tunnel(kube, namespace, name)
    for name in names:
        wait_until(f"{name} reconciled", functools.partial(reconciled, kube, namespace, name))
        wait_until(f"operator-a's log of {name}", functools.partial(active.handled, namespace, name))
    # Give a second replica acting by mistake time to show in its log and in events.
    time.sleep(scaled(2))
    for name in names:
        assert not standby.handled(namespace, name), standby.log()
        posted = events(kube, namespace, name)
        assert posted
        assert [e for e, n in collections.Counter(posted).items() if n > 1] == []
        child = deployment(kube, namespace, name)
        assert child["metadata"]["generation"] == 1
    assert RESUMING not in standby.log()
    assert "Pausing operations" not in active.log()

    # A clean stop (SIGTERM: a rolling update, a drain) takes the replica out of the
    # peering at once: the standby resumes without waiting for the keep-alive to expire.
    assert active.stop() == 0
    assert peers(kube, namespace) == {"operator-b"}
    wait_until("operator-b to serve", lambda: RESUMING in standby.log())
    create_tunnel(kube, namespace, "third")
    wait_until("third reconciled", lambda: reconciled(kube, namespace, "third"))
    assert standby.handled(namespace, "third")
    assert not active.handled(namespace, "third")
