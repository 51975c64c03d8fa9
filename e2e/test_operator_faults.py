"""The operator against a misbehaving API server: failed writes, 429s, dropped and expired watches.

``relay-operator`` runs here as a process, as ``relay-operator --kubeconfig``
runs by hand, with the fault proxy's kubeconfig: every request it makes goes
through ``e2e/faultproxy.py`` to the cluster's real API server, which the
test breaks on purpose. The tunnels must still become Ready and relay, and a
tunnel created after the operator's watches were cut or expired must be seen.
The CRD and RBAC come from manifests/; the in-cluster operator is not
installed, so this process is the only one reconciling.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.cluster import MANIFESTS, Cluster
from e2e.cluster import poll as wait_until
from e2e.conftest import Kube
from e2e.faultproxy import FaultProxyThread
from tests.conftest import scaled
from tests.support import exchange

API = "relay.kubectl-relay.io/v1alpha1"


@pytest.fixture
def local_operator(
    cluster: Cluster, namespace: str, faults: FaultProxyThread, tmp_path: Path,
    no_operator: None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``relay-operator -n NAMESPACE`` through the fault proxy; its log in ``tmp_path``."""
    cluster.kubectl("apply", "-f", str(MANIFESTS / "crd"),
                    "-f", str(MANIFESTS / "rbac" / "cluster.yaml"))
    cluster.kubectl("wait", "--for=condition=Established",
                    "crd/socattunnels.relay.kubectl-relay.io", "--timeout=30s")
    log = (tmp_path / "operator.log").open("wb")
    env = {**os.environ, "RELAY_OPERATOR_RELAY_IMAGE": cluster.relay_image}
    operator = subprocess.Popen(
        [str(Path(sys.executable).parent / "relay-operator"), "--kubeconfig",
         str(faults.kubeconfig), "-n", namespace, "--standalone", "--health-port", "0",
         "--metrics-port", "0", "-v"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield operator
    finally:
        faults.clear()
        # The tunnels' finalizers are the operator's: delete them while it runs.
        cluster.kubectl("delete", "st", "--all", "-n", namespace, "--wait=true",
                        f"--timeout={int(scaled(60))}s", timeout=80, check=False)
        operator.terminate()
        try:
            operator.wait(scaled(30))
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
        log.close()


def tunnel(cluster: Cluster, namespace: str, name: str, connect: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=f"""\
apiVersion: {API}
kind: SocatTunnel
metadata: {{name: {name}}}
spec:
  listen: TCP-LISTEN:8080,fork,reuseaddr
  connect: {connect}
  service: {{port: 80}}
""")


def ready(cluster: Cluster, namespace: str, name: str, log: Path) -> None:
    result = cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"st/{name}",
                             f"--timeout={int(scaled(90))}s", timeout=100, check=False)
    if result.returncode != 0:
        pytest.fail(f"{name} not Ready: {result.stderr}\noperator log (tail):\n"
                    + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))


def echo_target(cluster: Cluster, kube: Kube, namespace: str) -> None:
    kube.core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "target",
                                                       "labels": {"app": "target"}},
        "spec": {"containers": [{
            "name": "echo", "image": cluster.relay_image,
            "command": ["relay", "TCP-LISTEN:8080,fork,reuseaddr", "PIPE"],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]},
    })
    kube.core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "target"},
        "spec": {"selector": {"app": "target"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })
    cluster.wait_pod(namespace, "target")


def test_the_operator_recovers_from_api_faults(
    cluster: Cluster, namespace: str, kube: Kube, faults: FaultProxyThread,
    local_operator: subprocess.Popen[bytes], tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    echo_target(cluster, kube, namespace)
    # Writes failing for a while, and a rate limit on the status: retried, not given up.
    # Any request on the tunnel's Deployment (reads, writes, whichever the operator makes first).
    faults.fail("*", r"/deployments(/first)?$", status=500, times=2)
    faults.fail("POST", r"/services$", status=503, times=1, retry_after=1)
    faults.fail("PATCH", r"/socattunnels/first/status$", status=429, times=1, retry_after=1)
    tunnel(cluster, namespace, "first", "TCP:target:80")
    ready(cluster, namespace, "first", log)
    assert faults.fired >= 4
    assert local_operator.poll() is None, "the operator ended"

    # Its watches cut mid-stream, then ended with 410 Gone: it must watch again, and see
    # a tunnel created afterwards.
    wait_until("the operator's watches", lambda: faults.drop_watches() > 0, 30)
    wait_until("the operator's watches again", lambda: faults.expire_watches() > 0, 60)
    tunnel(cluster, namespace, "second", "TCP:target:80")
    ready(cluster, namespace, "second", log)
    with cluster.reach(namespace, "svc/second", 80) as (host, port):
        assert wait_until("an echo through the second tunnel",
                          lambda: exchange(port, b"after the faults", host)) == b"after the faults"
    assert local_operator.poll() is None, "the operator ended"
