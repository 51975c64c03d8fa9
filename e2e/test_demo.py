"""The README's demo command runs to the end: every part of the project, in one cluster.

The cluster is ``RELAY_E2E_KUBECONFIG``'s (the demo reads it too); without it the test skips.
"""

from __future__ import annotations

import subprocess
import sys

from e2e.cluster import Cluster
from tests.conftest import scaled


def test_demo_runs_to_the_end(cluster: Cluster, no_operator: None) -> None:
    # (skips without a cluster; the demo installs and deletes an operator of its own)
    result = subprocess.run(
        [sys.executable, "-m", "e2e.demo"],
        capture_output=True,
        text=True,
        timeout=scaled(600),
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # The engine in a pod, the operator's tunnel, and the plugin's traced tunnel all answered.
    assert out.count("hello from the target pod") >= 4, out[-3000:]
    assert "socattunnel.relay.kubectl-relay.io/web condition met" in out
    assert "deleted relay pod kubectl-relay-" in out
    assert "every pod stopped" in out
