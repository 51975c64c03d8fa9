"""A SocatTunnel's ``allowedSources`` hold at the network: the operator's NetworkPolicy, enforced.

The relay enforces ``allowedSources`` itself too (socat's ``range=``): it
accepts the connection, then closes it. So "the other pod is refused" alone
would pass on a cluster that ignores NetworkPolicy; what only an enforced
policy gives is a connect that fails (a reject or a drop), which the test
asserts. The cluster must enforce NetworkPolicy (the local one does, with
kube-router); the operator is installed from manifests/ as in
``test_operator_examples.py``.
"""

from __future__ import annotations

import subprocess

import yaml

from e2e.cluster import Cluster
from e2e.conftest import Kube
from e2e.test_local_cluster_node import until_refused
from e2e.test_operator_examples import stub, wait_ready

CLIENT_PORT = 9000
BACKEND_PORT = 7000
TUNNEL_PORT = 8000


def send(
    cluster: Cluster, namespace: str, client: str, line: str
) -> subprocess.CompletedProcess[str]:
    """From pod ``client``, ``line`` through the tunnel's Service (the exec's result)."""
    address = f"TCP:guarded:{TUNNEL_PORT},connect-timeout=3"
    return cluster.kubectl(
        "exec", "-i", "-n", namespace, client, "--", "relay", "-", address, stdin=line, check=False
    )


def test_allowed_sources_admit_the_allowed_pod_and_refuse_another_at_the_network(
    cluster: Cluster,
    installed: None,
    namespace: str,
    kube: Kube,
) -> None:
    for name in ("allowed", "stranger"):
        stub(kube, namespace, name, cluster.relay_image, CLIENT_PORT)
    stub(kube, namespace, "backend", cluster.relay_image, BACKEND_PORT)
    allowed_ip = cluster.wait_pod(namespace, "allowed")["status"]["podIP"]
    cluster.wait_pod(namespace, "stranger")
    cluster.wait_pod(namespace, "backend")
    tunnel = {
        "apiVersion": "relay.kubectl-relay.io/v1alpha1",
        "kind": "SocatTunnel",
        "metadata": {"name": "guarded"},
        "spec": {
            "listen": f"TCP-LISTEN:{TUNNEL_PORT},fork,reuseaddr",
            "connect": f"TCP:backend:{BACKEND_PORT}",
            "allowedSources": [f"{allowed_ip}/32"],
            "service": {},
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(tunnel))
    wait_ready(cluster, namespace, "guarded")
    policy = cluster.kubectl(
        "get",
        "-n",
        namespace,
        "networkpolicy",
        "guarded",
        "-o",
        "jsonpath={.spec.ingress[0].from[0].ipBlock.cidr}",
    ).stdout
    assert policy == f"{allowed_ip}/32"

    # The relay pod's firewall follows the pod's start: wait (bounded) for the refusal.
    until_refused(
        lambda: send(cluster, namespace, "stranger", "let me in\n"),
        "the stranger's connect to the tunnel",
    )

    admitted = send(cluster, namespace, "allowed", "through the tunnel\n")
    assert (admitted.returncode, admitted.stdout) == (0, "through the tunnel\n"), admitted.stderr
