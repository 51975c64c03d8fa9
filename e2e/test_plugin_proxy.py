"""``kubectl relay proxy`` end to end: curl through the proxy to a Service and to a pod by name.

One proxy serves the whole module (a relay pod takes seconds to start, and CI
time is short): ``kubectl relay proxy --deny 'secret.*'`` in a namespace with

- ``web``: Python's HTTP server behind a Service (``http_service``);
- ``web-0``: a pod with ``hostname: web-0`` and ``subdomain: pods`` and the
  headless Service ``pods``, which gives it the DNS name
  ``web-0.pods.<ns>.svc.cluster.local`` (a pod has no DNS name of its own
  otherwise; its IP works too, and is tested);
- ``secret``: a second Service in front of ``web``'s pods, refused by name.

The last test ends the proxy with Ctrl-C (SIGINT) and checks that the relay
pod and its Job are gone.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator

import pytest

from e2e.cluster import Cluster
from e2e.cluster import poll as wait_until  # scales its timeout itself
from e2e.conftest import Kube
from e2e.test_plugin import Plugin, http_service, no_relay_left, relay_objects, shell_env
from tests.conftest import _children, scaled
from tests.support import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None or shutil.which("curl") is None,
    reason="kubectl and curl are needed",
)

POD_PORT = 8080


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """As everywhere (tests/conftest.py), except for the module's one proxy, which runs on."""
    yield
    left = [c for c in _children() if "kubectl-relay proxy" not in c and "relay proxy" not in c]
    assert not left, f"child processes left running: {left}"


@pytest.fixture(scope="module")
def kube(cluster: Cluster) -> Iterator[Kube]:
    with cluster.api_client() as api_client:
        yield Kube(api_client)


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, kube: Kube) -> Iterator[str]:
    """The module's namespace with its servers (see the module docstring)."""
    name = cluster.create_namespace(f"proxy-{secrets.token_hex(3)}")
    try:
        http_service(cluster, kube, name)
        kube.core.create_namespaced_service(name, {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "secret"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        })
        named_pod(cluster, kube, name)
        yield name
    finally:
        # Python's HTTP server, as PID 1, ignores SIGTERM: its pods would take the whole
        # grace period (30 s) to go, and the namespace with them.
        kube.core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
        cluster.start_namespace_deletion(name)
        cluster.wait_namespaces_gone([name], timeout=180)


def named_pod(cluster: Cluster, kube: Kube, namespace: str) -> None:
    """``web-0`` under the headless Service ``pods``: web-0.pods.NS.svc.cluster.local."""
    command = ["/opt/relay/bin/python", "-m", "http.server", str(POD_PORT), "--directory",
               "/opt/relay"]
    kube.core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "pods"},
        "spec": {"clusterIP": "None", "selector": {"app": "web-0"},
                 "ports": [{"name": "http", "port": POD_PORT}]},
    })
    kube.core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "labels": {"app": "web-0"}},
        "spec": {
            "hostname": "web-0", "subdomain": "pods",
            "containers": [{
                "name": "main", "image": cluster.relay_image, "command": command,
                "ports": [{"containerPort": POD_PORT}],
                "readinessProbe": {"tcpSocket": {"port": POD_PORT}, "periodSeconds": 1},
            }],
        },
    })

    def ready() -> bool:
        pod = kube.core.read_namespaced_pod("web-0", namespace)
        conditions = pod.status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    wait_until("pod web-0 ready", ready, 90)


@pytest.fixture(scope="module")
def env(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The user's shell, as ``e2e/test_plugin.py``'s ``env`` (module-wide here)."""
    return shell_env(cluster, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def proxy(env: dict[str, str], namespace: str, cluster: Cluster) -> Iterator[tuple[Plugin, int]]:
    """``kubectl relay proxy`` on a free local port, denying ``secret.*``."""
    port = free_port()
    plugin = Plugin(
        env, "proxy", "--image", cluster.relay_image, "-n", namespace,
        "--listen", str(port), "--deny", "secret.*",
    )
    try:
        plugin.wait_for("Press Ctrl-C", timeout=120)
        yield plugin, port
    finally:
        plugin.kill()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(int(scaled(20))), *args],
        capture_output=True, text=True, timeout=scaled(40), check=False,
    )


@pytest.mark.parametrize("host", ["web", "web.{ns}.svc", "web.{ns}.svc.cluster.local"])
def test_socks5_to_a_service_by_its_dns_name(
    proxy: tuple[Plugin, int], namespace: str, host: str
) -> None:
    plugin, port = proxy
    name = host.format(ns=namespace)
    result = curl("--socks5-hostname", f"127.0.0.1:{port}", f"http://{name}/bin/")
    assert result.returncode == 0, result.stderr
    assert "Directory listing for /bin/" in result.stdout
    output = plugin.wait_for(f" proxy: SOCKS5 to {name}:80")
    assert "relay accepted a connection" in output
    plugin.wait_for("GET /bin/ HTTP/1.1\\r")  # the -v trace of the proxied bytes


def test_http_connect_to_a_service(proxy: tuple[Plugin, int], namespace: str) -> None:
    plugin, port = proxy
    result = curl("-p", "-x", f"http://127.0.0.1:{port}", f"http://web.{namespace}:80/bin/")
    assert result.returncode == 0, result.stderr
    assert "Directory listing for /bin/" in result.stdout
    plugin.wait_for(f" proxy: HTTP CONNECT to web.{namespace}:80")


def test_a_pod_by_its_dns_name_and_by_its_ip(
    proxy: tuple[Plugin, int], namespace: str, kube: Kube
) -> None:
    plugin, port = proxy
    name = f"web-0.pods.{namespace}.svc.cluster.local"
    result = curl("--socks5-hostname", f"127.0.0.1:{port}", f"http://{name}:{POD_PORT}/bin/")
    assert result.returncode == 0, result.stderr
    assert "Directory listing for /bin/" in result.stdout
    plugin.wait_for(f" proxy: SOCKS5 to {name}:{POD_PORT}")
    ip = kube.core.read_namespaced_pod("web-0", namespace).status.pod_ip
    result = curl("-p", "-x", f"http://127.0.0.1:{port}", f"http://{ip}:{POD_PORT}/bin/")
    assert result.returncode == 0, result.stderr
    plugin.wait_for(f" proxy: HTTP CONNECT to {ip}:{POD_PORT}")


def test_a_refused_destination(proxy: tuple[Plugin, int], namespace: str) -> None:
    plugin, port = proxy
    name = f"secret.{namespace}"
    result = curl("--socks5-hostname", f"127.0.0.1:{port}", f"http://{name}/")
    assert result.returncode != 0
    assert "Directory listing" not in result.stdout
    result = curl("-p", "-x", f"http://127.0.0.1:{port}", f"http://{name}:80/")
    assert result.returncode != 0
    assert "403" in result.stderr  # curl: "CONNECT tunnel failed, response 403"
    plugin.wait_for(f"relay error: connecting to {name}: denied by --deny-connect secret.*")


def test_ctrl_c_deletes_the_relay_pod(
    proxy: tuple[Plugin, int], namespace: str, kube: Kube
) -> None:
    plugin, _ = proxy
    assert relay_objects(kube, namespace)
    assert plugin.stop(signal.SIGINT) == 0
    assert "deleted relay pod" in plugin.text
    no_relay_left(kube, namespace)
