"""NetworkPolicy on the local cluster is enforced: real pods, real connections, real refusals.

Every pod is the relay image as a TCP echo server (``TCP-LISTEN:9000,fork
PIPE``), so each one is both a server and, through ``kubectl exec ... relay -
TCP:<address>:9000``, a client. Each test first shows the connection works,
then applies a policy and shows that exactly what it allows still works while
the rest is refused at connect (kube-router answers with a reject, or the
packet is dropped and the connect times out). A cluster that stores
NetworkPolicies without enforcing them fails every test here.

kube-router applies a change some time after the API server stored it, so a
refusal is waited for (bounded); an allowed connection is checked after it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.cluster import ENV_KUBECONFIG, REAL_CLUSTER
from e2e.test_local_cluster import kubectl
from e2e.test_local_cluster_node import (
    ECHO_PORT,
    apply,
    checked,
    exec_in,
    relay_pod,
    restricted_namespace,
    until_refused,
)
from tests.conftest import scaled

pytestmark = pytest.mark.skipif(not REAL_CLUSTER, reason=f"{ENV_KUBECONFIG} is not set")


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str


def echo_pod(namespace: str, name: str, labels: dict[str, str] | None = None) -> Pod:
    """An echo pod of the relay image, Ready; its address."""
    pod = relay_pod(name, [f"TCP-LISTEN:{ECHO_PORT},fork,reuseaddr", "PIPE"])
    pod["metadata"]["labels"] |= labels or {}
    apply(namespace, pod)
    checked(
        kubectl(
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            f"pod/{name}",
            f"--timeout={int(scaled(180))}s",
        )
    )
    ip = checked(kubectl("get", "-n", namespace, f"pod/{name}", "-o", "jsonpath={.status.podIP}"))
    return Pod(namespace, name, ip)


def connect(client: Pod, server: Pod) -> subprocess.CompletedProcess[str]:
    """From ``client``, a line sent to ``server``'s echo port (the result of the exec)."""
    address = f"TCP:{server.ip}:{ECHO_PORT},connect-timeout=3"
    return exec_in(client.namespace, client.name, "relay", "-", address, stdin=f"{client.name}\n")


def assert_reaches(client: Pod, server: Pod) -> None:
    result = connect(client, server)
    assert (result.returncode, result.stdout) == (0, f"{client.name}\n"), (
        f"{client.name} -> {server.name}: {result.stderr}"
    )


def assert_refused(client: Pod, server: Pod) -> None:
    """Wait (bounded) until ``client``'s connect to ``server`` fails as a policy makes it."""
    until_refused(lambda: connect(client, server), f"{client.name} -> {server.name}")


@pytest.fixture
def namespaces() -> Iterator[Callable[[], str]]:
    """Makes restricted namespaces of the test's own; deletes them afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(restricted_namespace("netpol-"))
        return made[-1]

    yield make
    for namespace in made:
        kubectl("delete", "namespace", namespace, "--wait=false")


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_default_deny_ingress_blocks_a_pod_to_pod_connection(
    namespaces: Callable[[], str],
) -> None:
    namespace = namespaces()
    server = echo_pod(namespace, "server")
    client = echo_pod(namespace, "client")
    assert_reaches(client, server)
    apply(namespace, policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    assert_refused(client, server)
    assert_refused(server, client)


def test_a_pod_selector_lets_exactly_the_allowed_client_through(
    namespaces: Callable[[], str],
) -> None:
    namespace = namespaces()
    server = echo_pod(namespace, "server", {"tier": "db"})
    allowed = echo_pod(namespace, "allowed", {"role": "client"})
    other = echo_pod(namespace, "other", {"role": "stranger"})
    assert_reaches(other, server)
    apply(
        namespace,
        policy(
            "clients-only",
            {
                "podSelector": {"matchLabels": {"tier": "db"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                        "ports": [{"protocol": "TCP", "port": ECHO_PORT}],
                    }
                ],
            },
        ),
    )
    assert_refused(other, server)
    assert_reaches(allowed, server)
    # The policy selects the server only: the other pods still talk to each other.
    assert_reaches(allowed, other)


def test_a_namespace_selector_admits_the_other_namespace_and_not_the_own(
    namespaces: Callable[[], str],
) -> None:
    home, friends = namespaces(), namespaces()
    server = echo_pod(home, "server")
    neighbour = echo_pod(home, "neighbour")
    friend = echo_pod(friends, "friend")
    assert_reaches(neighbour, server)
    apply(
        home,
        policy(
            "from-friends",
            {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": friends}
                                }
                            }
                        ]
                    }
                ],
            },
        ),
    )
    assert_refused(neighbour, server)
    assert_reaches(friend, server)


def test_an_egress_policy_limits_a_pod_to_one_destination(
    namespaces: Callable[[], str],
) -> None:
    namespace = namespaces()
    limited = echo_pod(namespace, "limited", {"egress": "limited"})
    permitted = echo_pod(namespace, "permitted")
    forbidden = echo_pod(namespace, "forbidden")
    assert_reaches(limited, forbidden)
    apply(
        namespace,
        policy(
            "one-destination",
            {
                "podSelector": {"matchLabels": {"egress": "limited"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"ipBlock": {"cidr": f"{permitted.ip}/32"}}],
                        "ports": [{"protocol": "TCP", "port": ECHO_PORT}],
                    }
                ],
            },
        ),
    )
    assert_refused(limited, forbidden)
    assert_reaches(limited, permitted)
    # Egress of the limited pod only: others still reach the forbidden one.
    assert_reaches(permitted, forbidden)
