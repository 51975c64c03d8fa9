"""``kubectl relay -f FILE`` end to end: tunnels of three kinds from one file, and a bad file.

The real kubectl runs the plugin (``test_plugin``'s helpers); the echo
servers are the relay image (``echo_service``). The file's tunnels are a
``tcp`` one and a ``run`` one in the test's namespace (one session: their
relay Jobs carry the same session label) and a ``udp`` one in a second,
"restricted" namespace that reaches the echo Service by its DNS name (a
second session). Each carries real bytes; the trace lines carry the tunnel's
name; Ctrl-C deletes all three relay pods.
"""

from __future__ import annotations

import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.cluster import Cluster
from e2e.conftest import Kube
from e2e.test_plugin import (
    MANAGED,
    Plugin,
    echo_service,
    env,
    no_relay_left,
    plugins,
    relay_objects,
    round_trip,
    run_plugin,
)
from kubectl_relay.plugin.relaypod import LABEL_SESSION
from tests.conftest import scaled
from tests.support import exchange, free_port

__all__ = ["env", "plugins"]  # fixtures, used by name

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def tunnel_file(cluster: Cluster, path: Path, body: str) -> Path:
    """Write a tunnel file; its pods use the cluster's relay image when it is not the default."""
    pod = f"pod: {{image: {cluster.relay_image}}}\n" if cluster.image_args else ""
    path.write_text(pod + body)
    return path


def sessions(kube: Kube, namespace: str) -> list[str]:
    """The session label of each relay Job in the namespace."""
    jobs = kube.batch.list_namespaced_job(namespace, label_selector=MANAGED).items
    return sorted(job.metadata.labels[LABEL_SESSION] for job in jobs)


def lines_with(text: str, output: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_three_tunnels_of_different_kinds_from_one_file(
    cluster: Cluster,
    namespace: str,
    restricted_namespace: str,
    kube: Kube,
    plugins: Callable[..., Plugin],
    tmp_path: Path,
) -> None:
    echo_service(cluster, kube, namespace)
    web, dns, raw = free_port(), free_port(kind=socket.SOCK_DGRAM), free_port()
    file = tunnel_file(
        cluster,
        tmp_path / "tunnels.yaml",
        f"namespace: {namespace}\n"
        "tunnels:\n"
        "  - name: web\n"
        "    kind: tcp\n"
        "    target: svc/echo:tcp\n"
        f"    listen: {web}\n"
        "  - name: dns\n"
        "    kind: udp\n"
        f"    namespace: {restricted_namespace}\n"
        f"    target: echo.{namespace}:53\n"
        f"    listen: {dns}\n"
        "  - name: raw\n"
        "    kind: run\n"
        "    command: TCP-LISTEN:9000,fork,reuseaddr TCP:echo:80\n"
        f"    listen: {raw}\n",
    )
    plugin = plugins("-f", str(file))
    for name in ("web", "dns", "raw"):
        plugin.wait_for(f"[{name}] Forwarding", timeout=90)
    # Two sessions: web and raw share the test's namespace and settings, dns has its own.
    assert len(set(sessions(kube, namespace))) == 1 and len(sessions(kube, namespace)) == 2
    assert len(sessions(kube, restricted_namespace)) == 1

    assert exchange(web, b"via web\n" * 100) == b"via web\n" * 100
    # A run tunnel is a plain port-forward, which carries no half-close: read by length.
    assert round_trip(raw, b"via raw\n" * 100) == b"via raw\n" * 100
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(scaled(20))
        for datagram in (b"via dns one", b"via dns two two"):
            sock.sendto(datagram, ("127.0.0.1", dns))
            assert sock.recvfrom(65536)[0] == datagram

    output = plugin.wait_for("via raw")
    output = plugin.wait_for("via dns two two")
    for name in ("web", "raw", "dns"):
        traced = lines_with(f"via {name}", output)
        assert traced and all(line.startswith(f"[{name}] ") for line in traced), output
    assert "[web] connection 1 closed: 800 bytes sent, 800 received" in plugin.wait_for(
        "[web] connection 1 closed"
    )
    assert plugin.stop(signal.SIGINT) == 0
    assert len(lines_with("deleted relay pod", plugin.text)) == 3, plugin.text
    no_relay_left(kube, namespace)
    no_relay_left(kube, restricted_namespace)


def test_a_file_with_mistakes_creates_nothing(
    cluster: Cluster, namespace: str, kube: Kube, env: dict[str, str], tmp_path: Path
) -> None:
    file = tunnel_file(
        cluster,
        tmp_path / "bad.yaml",
        f"namespace: {namespace}\n"
        "tunnels:\n"
        "  - name: web\n"
        "    kind: tcp\n"
        "    target: svc/echo:tcp\n"
        "    listen: 8080\n"
        "  - name: web\n"
        "    kind: udp\n"
        "    target: svc/echo\n"
        "    listen: 8080\n"
        "    verbose: true\n",
    )
    first = 4 if cluster.image_args else 3  # the line of the first tunnel's name
    result = run_plugin(env, "-f", str(file))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.splitlines() == [
        f"error: {file}: 3 mistakes, nothing was started",
        f'  {file}:{first + 4}:11: tunnels[1].name: "web" is already the name of the tunnel on '
        f"line {first} (accepted: a name of its own for each tunnel)",
        f'  {file}:{first + 6}:13: tunnels[1].target: "svc/echo": the port is missing '
        "(accepted: svc/NAME:PORT, pod/NAME:PORT, deploy/NAME:PORT or HOST:PORT)",
        f'  {file}:{first + 8}:5: tunnels[1]: unknown key "verbose" (accepted: name, kind, '
        "namespace, trace, pod, target, listen)",
    ]
    assert relay_objects(kube, namespace) == []
