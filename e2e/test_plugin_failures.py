"""``kubectl relay`` given what it cannot do, end to end: one line, a status, nothing left.

Each failure a user can meet on a real cluster (a target or port that does not
exist, no rights in the namespace or none to delete, a busy local port, an image
that cannot be pulled, a relay that never listens, an API server outage, a host
the relay pod cannot resolve) gives one ``error:`` line that names the cause and
the fix, the documented exit status, and leaves no relay pod or Job behind. The
user without rights is a real one (``Cluster.user_kubeconfig``), the outage comes
from the fault proxy in front of the API server (``Cluster.fault_proxy``), and the
relay that never listens is a test image (``e2e/images/mute``). The tunnels and
the echo servers are ``test_plugin``'s: its fixtures and helpers are imported
from there.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e import test_plugin
from e2e.cluster import Cluster
from e2e.cluster import poll as wait_until
from e2e.conftest import Kube
from e2e.faultproxy import FaultProxyThread
from e2e.test_plugin import (
    SHORT_LEASE,
    Plugin,
    echo_service,
    no_relay_left,
    relay_objects,
    relay_pods,
    run_plugin,
    tunnel,
)
from tests.support import exchange, free_port

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

# test_plugin's fixtures, bound here so that pytest finds them for this module's tests.
env = test_plugin.env
plugins = test_plugin.plugins


def check_failure(result: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0]


def test_unknown_target(cluster: Cluster, namespace: str, kube: Kube, env: dict[str, str]) -> None:
    result = run_plugin(env, "tcp", "svc/nope:80", "--listen", str(free_port()), "-n", namespace)
    check_failure(result, 3, 'service "nope" not found', "kubectl get services")
    assert not relay_objects(kube, namespace)


def test_wrong_port_name(cluster: Cluster, namespace: str, kube: Kube, env: dict[str, str]) -> None:
    echo_service(cluster, kube, namespace)
    result = run_plugin(env, "tcp", "svc/echo:http", "--listen", str(free_port()), "-n", namespace)
    check_failure(result, 3, "has no port http", "80 (tcp)")
    assert not relay_objects(kube, namespace)


def test_no_rights_in_the_namespace(
    cluster: Cluster,
    namespace: str,
    kube: Kube,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    # A real user with edit rights in another namespace only.
    elsewhere = cluster.create_namespace(f"{namespace[:50]}-else")
    try:
        kubeconfig = cluster.user_kubeconfig(
            "visitor", tmp_path, namespaces=[elsewhere], namespace=namespace)
        result = run_plugin({**env, "KUBECONFIG": str(kubeconfig)},
                            "tcp", "10.0.0.1:80", "--listen", str(free_port()))
    finally:
        cluster.delete_namespace(elsewhere, timeout=180)
    check_failure(result, 3, "forbidden", f'namespace "{namespace}"', "ask for rights")
    assert not relay_objects(kube, namespace)


def test_local_port_in_use(
    cluster: Cluster, namespace: str, kube: Kube, env: dict[str, str]
) -> None:
    echo_service(cluster, kube, namespace)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_plugin(env, "tcp", "svc/echo:80", "--listen", str(port), "-n", namespace)
    check_failure(result, 4, f"127.0.0.1:{port}", "Address already in use", "--listen")
    assert not relay_objects(kube, namespace)


def test_image_that_cannot_be_pulled(
    cluster: Cluster, namespace: str, kube: Kube, env: dict[str, str]
) -> None:
    echo_service(cluster, kube, namespace)
    result = run_plugin(
        env,
        "tcp",
        "svc/echo:80",
        "--listen",
        str(free_port()),
        "-n",
        namespace,
        "--image",
        "registry.invalid/nothing:1",
    )
    check_failure(result, 5, 'cannot pull image "registry.invalid/nothing:1"', "check --image")
    no_relay_left(kube, namespace)


def test_relay_that_never_becomes_ready(
    cluster: Cluster, namespace: str, kube: Kube, env: dict[str, str]
) -> None:
    echo_service(cluster, kube, namespace)
    mute_image = cluster.test_image("mute")
    result = run_plugin(
        env,
        "tcp",
        "svc/echo:80",
        "--listen",
        str(free_port()),
        "-n",
        namespace,
        "--image",
        mute_image,
        "--pod-timeout",
        "3s",
    )
    check_failure(result, 5, "did not start listening within 3s", "--pod-timeout")
    no_relay_left(kube, namespace)


#: What a user needs to run a tunnel, without the right to delete anything.
RIGHTS_WITHOUT_DELETE = [
    {"apiGroups": ["batch"], "resources": ["jobs"],
     "verbs": ["create", "get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["pods", "services", "events"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
]


def test_a_cleanup_without_the_right_to_delete_fails_and_names_the_right(
    cluster: Cluster,
    namespace: str,
    kube: Kube,
    plugins: Callable[..., Plugin],
    tmp_path: Path,
) -> None:
    from e2e.users import grant_rules  # noqa: PLC0415

    echo_service(cluster, kube, namespace)
    kubeconfig = cluster.user_kubeconfig("no-delete", tmp_path, namespace=namespace)
    grant_rules(kube.api_client, "no-delete", namespace, "relay-no-delete", RIGHTS_WITHOUT_DELETE)
    port = free_port()
    plugin = tunnel(plugins, namespace, "tcp", "svc/echo:80", "--listen", str(port),
                    *SHORT_LEASE, kubeconfig=kubeconfig)
    assert exchange(port, b"ping\n") == b"ping\n"
    assert plugin.stop() == 3  # Ctrl-C could not clean up
    (line,) = [line for line in plugin.error.splitlines() if line.strip()]
    assert line.startswith("error: could not delete job/kubectl-relay-"), line
    assert 'user "no-delete" has no right to delete jobs.batch' in line
    assert "ask for rights to create, patch and delete jobs" in line
    # The Job is still there, and its lease ends it by itself.
    assert [name for name in relay_objects(kube, namespace) if name.startswith("job/")]
    wait_until("the relay pod to end", lambda: not relay_pods(kube, namespace), 60)


def test_an_api_server_outage_is_told_once_and_its_end_once(
    cluster: Cluster,
    namespace: str,
    kube: Kube,
    faults: FaultProxyThread,
    plugins: Callable[..., Plugin],
) -> None:
    echo_service(cluster, kube, namespace)
    port = free_port()
    plugin = tunnel(plugins, namespace, "tcp", "svc/echo:80", "--listen", str(port),
                    kubeconfig=faults.kubeconfig)
    faults.fail("*", "", status=503, times=None)
    plugin.wait_for("cannot reach the API server")
    wait_until("several failed checks", lambda: faults.fired >= 6, 30)
    faults.clear()
    plugin.wait_for("the API server answers again")
    assert exchange(port, b"still here\n") == b"still here\n"
    assert plugin.stop() == 0
    assert plugin.text.count("cannot reach the API server") == 1
    assert plugin.text.count("the API server answers again") == 1
    no_relay_left(kube, namespace)


def test_an_unresolvable_host_is_refused_before_forwarding(
    cluster: Cluster, namespace: str, kube: Kube, env: dict[str, str]
) -> None:
    target = f"nosuchhost.{namespace}:80"
    result = run_plugin(env, "tcp", target, "--listen", str(free_port()), "-n", namespace)
    check_failure(result, 3, f'"{target}" cannot be resolved from relay pod',
                  "check the host name")
    assert "Forwarding" not in result.stdout
    no_relay_left(kube, namespace)
