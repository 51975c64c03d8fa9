"""A fake node for the relay pods: a Node object that kwok plays the kubelet of.

kwok (``sigs.k8s.io/kwok``, built by ``scripts/gotools.py``) watches the
nodes that carry ``MANAGED_LABEL`` and the pods bound to them, and writes
their status through the real API server as a kubelet would (a Ready node
with a heartbeat, pods Running and Ready with an IP), so the scheduler, the
controller manager and the operator do their real work for 1,000 pods that
run nowhere. The node is tainted: only pods that tolerate ``TAINT_KEY``
(the benchmark's tunnels do) land there, never a real workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

from relay_operator.client import Kube, path

from .conditions import conditions
from .operatorproc import background

NODE_NAME = "relay-bench-kwok"
MANAGED_LABEL = "relay.kubectl-relay.io/bench-node"
TAINT_KEY = "kwok.x-k8s.io/node"
#: The pod IPs kwok hands out: beside the local cluster's 198.18.0.0/24, routed nowhere.
POD_CIDR = "198.18.16.0/20"


def node_body() -> dict[str, object]:
    """The fake node: labelled for the tunnels' node selector, tainted against the rest."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {
                MANAGED_LABEL: "kwok",
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "type": "kwok",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {
            "podCIDR": POD_CIDR,
            "podCIDRs": [POD_CIDR],
            "taints": [{"key": TAINT_KEY, "value": "fake", "effect": "NoSchedule"}],
        },
    }


def tunnel_placement() -> dict[str, object]:
    """``spec.pod`` of a benchmark tunnel: on the fake node only."""
    return {
        "nodeSelector": {MANAGED_LABEL: "kwok"},
        "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    }


def kwok_process(binary: Path, stages: list[Path], kubeconfig: Path,
                 log: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """kwok managing the nodes labelled ``MANAGED_LABEL``."""
    command = [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--manage-nodes-with-label-selector={MANAGED_LABEL}",
        f"--cidr={POD_CIDR}",
        "--node-ip=198.18.16.1",
    ]
    for stage in stages:
        command += ["--config", str(stage)]
    return background(command, log, stop_timeout=15)


async def create_node(kube: Kube) -> None:
    """Create the fake node (a leftover of an interrupted run is replaced)."""
    url = path("v1", "nodes", None)
    await kube.delete(f"{url}/{NODE_NAME}")
    await _wait_gone(kube, f"{url}/{NODE_NAME}", 60)
    await kube.create(url, node_body())


async def delete_node(kube: Kube) -> None:
    await kube.delete(path("v1", "nodes", None, NODE_NAME))


async def wait_node_ready(kube: Kube, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until kwok reports the fake node Ready; fails if kwok exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kwok exited with status {process.returncode} (see its log)")
        node = await kube.get(path("v1", "nodes", None, NODE_NAME))
        if conditions(node).get("Ready") == "True":
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the fake node {NODE_NAME} was not Ready within {timeout:g} s")


async def _wait_gone(kube: Kube, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await kube.get(url) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} still exists after {timeout:g} s")
        await asyncio.sleep(0.5)
