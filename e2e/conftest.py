"""Fixtures for the end-to-end tests: a cluster per test module, a namespace per test.

The cluster is the real cluster (``./dev cluster up``, kind, AKS...) that
``RELAY_E2E_KUBECONFIG`` names, with ``RELAY_E2E_IMAGE`` as the relay image
(see ``e2e/cluster.py`` and ``e2e/README.md``); without it, every test that
needs a cluster skips, saying so. ``cluster`` (a ``Cluster``) is what tests
use; ``faults`` is a fault-injecting proxy in front of its API server.

Each test gets a fresh namespace (``namespace``); deleting it at the end
deletes everything in it. The deletions run in the background, and the end of
the session waits (bounded) until all of them are gone: waiting after every
test cost about ten seconds each (the pods' graceful stop), and after every
module about ten seconds a module. A test that needs something gone waits for
that itself (``SharedOperator.remove`` waits for the tunnels, not namespaces).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import (
    DEFAULT_RELAY_IMAGE,
    ENV_KUBECONFIG,
    MANIFESTS,
    REAL_CLUSTER,
    RESTRICTED,
    Cluster,
    poll,
)
from e2e.faultproxy import FaultProxyThread
from tests.conftest import (
    no_leaked_children,
    no_leaked_threads,
    pytest_assertrepr_compare,
    scaled,
)

__all__ = [
    "SHARED_OPERATOR",
    "cluster",
    "deleted_namespaces",
    "extra_namespaces",
    "faults",
    "installed",
    "kube",
    "namespace",
    "no_leaked_children",
    "no_leaked_threads",
    "no_operator",
    "pytest_assertrepr_compare",
    "restricted_namespace",
]


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    """The cluster under test, the one of ``RELAY_E2E_KUBECONFIG``; skips when it is unset."""
    if not REAL_CLUSTER:
        pytest.skip(f"{ENV_KUBECONFIG} is not set: needs a real cluster "
                    "(./dev cluster up prints its kubeconfig)")
    return Cluster.real()


@pytest.fixture(scope="session")
def deleted_namespaces() -> Iterator[list[str]]:
    """Namespaces whose deletion the session's tests started; all gone at its end."""
    names: list[str] = []
    yield names
    if names:  # (only tests with a cluster start deletions)
        Cluster.real().wait_namespaces_gone(names, timeout=300)


def _namespace_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")
    return f"{base[:50].rstrip('-')}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest,
              deleted_namespaces: list[str]) -> Iterator[str]:
    """A fresh namespace, deleted with everything in it after the test."""
    name = cluster.create_namespace(_namespace_name(request))
    yield name
    cluster.start_namespace_deletion(name)
    deleted_namespaces.append(name)


@pytest.fixture
def restricted_namespace(cluster: Cluster, request: pytest.FixtureRequest,
                         deleted_namespaces: list[str]) -> Iterator[str]:
    """A fresh namespace where Pod Security admission enforces "restricted"."""
    name = cluster.create_namespace(_namespace_name(request), labels=RESTRICTED)
    yield name
    cluster.start_namespace_deletion(name)
    deleted_namespaces.append(name)


class SharedOperator:
    """The operator installed from manifests/ as a user would, once for every test that only
    needs one to run: installing and deleting it cost about half a minute each time.

    It serves every namespace, so a test that must have no installed operator (one of its
    own, in-process or from helm, or the demo's) removes it first (``no_operator``); the
    session's end removes it too.
    """

    def __init__(self) -> None:
        self._on: Cluster | None = None

    def ensure(self, cluster: Cluster) -> None:
        """Install the CRD, the cluster-wide RBAC and the operator, unless they run already."""
        if self._on is not None:
            return
        cluster.kubectl("apply", "-f", str(MANIFESTS / "crd"),
                        "-f", str(MANIFESTS / "rbac" / "cluster.yaml"))
        # The operator's image and its relays' image: the cluster's relay image (as a
        # kustomize `images:` override would set them).
        operator = (MANIFESTS / "operator.yaml").read_text()
        cluster.kubectl("apply", "-f", "-",
                        stdin=operator.replace(DEFAULT_RELAY_IMAGE, cluster.relay_image))
        self._on = cluster  # from here on, remove() deletes what was applied
        cluster.kubectl("wait", "--for=condition=Established",
                        "crd/socattunnels.relay.kubectl-relay.io", "--timeout=30s")
        cluster.kubectl("rollout", "status", "-n", "relay-system", "deployment/relay-operator",
                        f"--timeout={int(scaled(60))}s", timeout=90)

    def remove(self) -> None:
        """Uninstall the operator (not the CRD) if it was installed; wait until it is gone."""
        cluster, self._on = self._on, None
        if cluster is None:
            return
        # The tunnels' finalizers are the operator's: every tunnel (those of namespaces
        # being deleted too) must be gone before it is.
        poll("every SocatTunnel to be deleted", lambda: not cluster.kubectl(
            "get", "socattunnels", "--all-namespaces", "-o", "name").stdout.strip(),
            timeout=180)
        # Wait until relay-system is gone: a real API server refuses new objects in a
        # namespace being deleted, and the next install applies the operator there again.
        cluster.kubectl("delete", "-f", str(MANIFESTS / "operator.yaml"), "--ignore-not-found",
                        "--wait=true", f"--timeout={int(scaled(120))}s", timeout=150,
                        check=False)
        cluster.pods_gone("relay-system", timeout=30)


#: The one installed operator of this pytest session.
SHARED_OPERATOR = SharedOperator()


@pytest.fixture(scope="session", autouse=True)
def shared_operator_removed_at_the_end() -> Iterator[None]:
    """Leave no installed operator behind the session."""
    yield
    SHARED_OPERATOR.remove()


@pytest.fixture
def installed(cluster: Cluster) -> None:
    """The CRD, the cluster-wide RBAC and the operator from manifests/ (``SharedOperator``)."""
    SHARED_OPERATOR.ensure(cluster)


@pytest.fixture
def no_operator(cluster: Cluster) -> None:
    """No installed operator runs: the test runs one of its own (or none)."""
    SHARED_OPERATOR.remove()


@pytest.fixture
def extra_namespaces(cluster: Cluster,
                     deleted_namespaces: list[str]) -> Iterator[Callable[[str], str]]:
    """Namespaces with fixed names (``internal``, ``example``), deleted after the test in the
    background, as ``namespace``'s; one of the same name still being deleted is waited for."""
    made: list[str] = []

    def make(name: str) -> str:
        cluster.wait_namespaces_gone([name], timeout=180)
        cluster.create_namespace(name)
        made.append(name)
        return name

    yield make
    for name in made:
        cluster.start_namespace_deletion(name)
        deleted_namespaces.append(name)


@pytest.fixture
def faults(cluster: Cluster, tmp_path: Path) -> Iterator[FaultProxyThread]:
    """A fault-injecting proxy in front of the cluster's API server (``e2e/faultproxy.py``).

    Only clients given ``faults.kubeconfig`` go through it.
    """
    with cluster.fault_proxy(tmp_path) as proxy:
        yield proxy


class Kube:
    """The kubernetes client's APIs for the cluster, on one ApiClient."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client  # noqa: PLC0415 - imported with the fixture only

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)


@pytest.fixture
def kube(cluster: Cluster) -> Iterator[Kube]:
    """The kubernetes client (CoreV1Api, AppsV1Api, BatchV1Api) configured for the cluster."""
    with cluster.api_client() as api_client:
        yield Kube(api_client)
