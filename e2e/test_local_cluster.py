"""The local real cluster (``./dev cluster up``) is what the e2e suite expects of one.

Runs against the cluster ``RELAY_E2E_KUBECONFIG`` names (it skips only when
that is unset): the pinned release for client and server, a Ready node,
PodSecurity "restricted" refusing a privileged pod at the API, and RBAC
refusing the unprivileged user ``relay-dev`` until it is granted rights.

``relay-dev``'s kubeconfig is ``RELAY_E2E_USER_KUBECONFIG``, by default
``relay-dev.kubeconfig`` next to the admin's (where ``up`` writes both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import ENV_KUBECONFIG, REAL_CLUSTER, poll, real_kubeconfig
from e2e.kubeclient import api_client_for
from e2e.localcluster.settings import RELEASE, ClusterSettings
from tests.conftest import scaled

pytestmark = pytest.mark.skipif(not REAL_CLUSTER, reason=f"{ENV_KUBECONFIG} is not set")

ENV_USER_KUBECONFIG = "RELAY_E2E_USER_KUBECONFIG"

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def kubeconfig() -> Path:
    path = real_kubeconfig()
    assert path is not None
    return path


def user_kubeconfig() -> Path:
    """The unprivileged user's kubeconfig (see the module docstring)."""
    value = os.environ.get(ENV_USER_KUBECONFIG, "").strip()
    path = Path(value) if value else kubeconfig().parent / "relay-dev.kubeconfig"
    assert path.is_file(), f"no unprivileged user's kubeconfig at {path} ({ENV_USER_KUBECONFIG})"
    return path


def kubectl_path() -> str:
    """The kubectl built with the cluster (same release), else the one on PATH."""
    built = ClusterSettings.from_environment().binary("kubectl")
    if built.exists():
        return str(built)
    found = shutil.which("kubectl")
    assert found, f"no kubectl: neither {built} nor one on PATH"
    return found


def kubectl(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_path(), "--kubeconfig", str(config or kubeconfig()), *args],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )


@pytest.fixture
def core() -> Iterator[Any]:
    from kubernetes import client  # noqa: PLC0415

    with api_client_for(kubeconfig()) as api_client:
        yield client.CoreV1Api(api_client)


@pytest.fixture
def restricted_namespace(core: Any) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security "restricted", deleted afterwards."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"generateName": "local-cluster-", "labels": RESTRICTED},
    }
    name: str = core.create_namespace(body).metadata.name
    yield name
    core.delete_namespace(name)


def pod(name: str, security: dict[str, Any], container_security: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": security,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/never-pulled:1",
                    "securityContext": container_security,
                }
            ],
        },
    }


def test_client_and_server_are_the_pinned_release() -> None:
    result = kubectl("version", "-o", "json")
    assert result.returncode == 0, result.stderr
    versions = json.loads(result.stdout)
    assert versions["clientVersion"]["gitVersion"] == RELEASE
    assert versions["serverVersion"]["gitVersion"] == RELEASE


def test_apiserver_is_ready() -> None:
    result = kubectl("get", "--raw", "/readyz")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_the_node_is_ready(core: Any) -> None:
    def ready_nodes() -> list[str]:
        return [
            node.metadata.name
            for node in core.list_node().items
            if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        ]

    assert poll("a Ready node", ready_nodes, timeout=180)


def test_privileged_pod_is_refused_in_a_restricted_namespace(
    core: Any, restricted_namespace: str
) -> None:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    privileged = pod("privileged", {}, {"privileged": True})
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(restricted_namespace, privileged)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "privileged" in message
    # The same namespace admits a pod that meets "restricted": the refusal is PodSecurity's.
    compliant = pod(
        "compliant",
        {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    )
    created = core.create_namespaced_pod(restricted_namespace, compliant, dry_run="All")
    assert created.metadata.name == "compliant"


def test_unprivileged_user_is_forbidden_until_granted(restricted_namespace: str) -> None:
    ns = restricted_namespace
    refused = kubectl("get", "pods", "-n", ns, config=user_kubeconfig())
    assert refused.returncode != 0
    expected = (
        f'User "relay-dev" cannot list resource "pods" in API group "" in the namespace "{ns}"'
    )
    assert expected in refused.stderr
    granted = kubectl(
        "create",
        "rolebinding",
        "relay-dev-view",
        "-n",
        ns,
        "--clusterrole=view",
        "--user=relay-dev",
    )
    assert granted.returncode == 0, granted.stderr

    def allowed() -> bool:
        return kubectl("get", "pods", "-n", ns, config=user_kubeconfig()).returncode == 0

    poll("relay-dev to list pods once granted", allowed, timeout=30)
    # Namespace-scoped only: other namespaces stay forbidden.
    assert kubectl("get", "pods", "-n", "kube-system", config=user_kubeconfig()).returncode != 0
