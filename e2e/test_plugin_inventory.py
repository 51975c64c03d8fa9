"""``kubectl relay ls``, ``gc`` and shell completion end to end, against a real cluster.

The inventory commands and the completion kubectl asks of
``kubectl_complete-relay``, run as a user runs them (the real ``kubectl``
finds the plugin on PATH). The shell, the tunnels and the echo servers are
``test_plugin``'s: its fixtures and helpers are imported from there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable

import pytest
import yaml

from e2e import test_plugin
from e2e.cluster import Cluster
from e2e.conftest import Kube
from e2e.test_plugin import (
    Plugin,
    echo_service,
    no_relay_left,
    relay_objects,
    run_plugin,
    tunnel,
)
from tests.conftest import scaled
from tests.support import free_port

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

# test_plugin's fixtures, bound here so that pytest finds them for this module's tests.
env = test_plugin.env
plugins = test_plugin.plugins


def test_ls_and_gc(
    cluster: Cluster,
    namespace: str,
    kube: Kube,
    env: dict[str, str],
    plugins: Callable[..., Plugin],
) -> None:
    echo_service(cluster, kube, namespace)
    plugin = tunnel(
        plugins,
        namespace,
        "tcp",
        "svc/echo:80",
        "--listen",
        str(free_port()),
        "--keep-finished",
        "1h",
    )
    listed = run_plugin(env, "ls")
    assert listed.returncode == 0, listed.stderr
    # Every namespace is listed: on a shared cluster others' relays may be there too.
    (ours,) = [line for line in listed.stdout.splitlines() if line.startswith(namespace)]
    assert "svc/echo:80" in ours and "orphan" not in ours
    as_json = run_plugin(env, "ls", "-n", namespace, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    (relay,) = json.loads(as_json.stdout)
    pod = next(n[4:] for n in relay_objects(kube, namespace) if n.startswith("pod/"))
    assert (relay["namespace"], relay["pod"], relay["target"]) == (namespace, pod, "svc/echo:80")
    assert relay["phase"] == "Running" and relay["orphan"] is None
    as_yaml = run_plugin(env, "ls", "-n", namespace, "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout) == [relay]
    wide = run_plugin(env, "ls", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-4:] == ["JOB", "USER", "SESSION", "DEADLINE"]
    assert wide[1].split()[-4:-2] == [relay["job"], relay["user"]]
    plugin.proc.kill()
    plugin.proc.wait()
    listed = run_plugin(env, "ls", "-n", namespace)
    assert "orphan: its client" in listed.stdout, listed.stdout
    # A dry run names what the run then deletes, with the same counts.
    dry = run_plugin(env, "gc", "-n", namespace, "--dry-run")
    assert dry.stdout.splitlines()[-1] == "1 relay pod(s) would be deleted, 0 left", dry.stdout
    assert relay_objects(kube, namespace)
    collected = run_plugin(env, "gc", "-n", namespace)
    assert collected.returncode == 0, collected.stderr
    assert collected.stdout.splitlines() == [
        line.replace("would delete", "deleted").replace("would be deleted", "deleted")
        for line in dry.stdout.splitlines()
    ]
    assert "its client" in collected.stdout
    no_relay_left(kube, namespace)


def completions(env: dict[str, str], *words: str) -> list[str]:
    """What ``kubectl relay WORDS<TAB>`` offers: kubectl runs kubectl_complete-relay."""
    result = subprocess.run(
        ["kubectl", "__complete", "relay", *words],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=True,
    )
    return [line.split("\t")[0] for line in result.stdout.splitlines() if line[:1] != ":"]


def test_completion_names_what_the_cluster_has(
    cluster: Cluster, namespace: str, kube: Kube, env: dict[str, str]
) -> None:
    echo_service(cluster, kube, namespace)
    assert completions(env, "") == ["expose", "gc", "ls", "proxy", "run", "tcp", "tls", "udp"]
    assert "--listen" in completions(env, "tcp", "--l")
    assert namespace in completions(env, "tcp", "-n", "")
    assert completions(env, "tcp", "-n", namespace, "") == ["svc/", "pod/", "deploy/"]
    assert completions(env, "udp", "-n", namespace, "svc/") == ["svc/echo:tcp", "svc/echo:dns"]
    assert completions(env, "tcp", "--namespace", namespace, "deploy/e") == [
        "deploy/echo:echo",
        "deploy/echo:echo-udp",
    ]
    (pod,) = [p.metadata.name for p in kube.core.list_namespaced_pod(namespace).items]
    assert completions(env, "tcp", "-n", namespace, "pod/") == [
        f"pod/{pod}:echo",
        f"pod/{pod}:echo-udp",
    ]
