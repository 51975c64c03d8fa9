"""``kubectl relay -f FILE`` end to end: tunnels of every kind from one file, and a bad file.

The real kubectl runs the plugin (``test_plugin``'s helpers); the echo
servers are the relay image (``echo_service``). One file holds a ``tcp``, a
``run`` and a ``proxy`` tunnel in the test's namespace (one session: their
relay Jobs carry the same session label), a ``udp`` one in a second,
"restricted" namespace that reaches the echo Service by its DNS name, and an
``expose`` one, whose Service an in-cluster pod calls to reach an echo
server on this machine. Each carries real bytes; every line of a tunnel
carries its name; Ctrl-C deletes every relay pod and the Service.
"""

from __future__ import annotations

import shutil
import signal
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.cluster import Cluster
from e2e.cluster import poll as wait_until
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


def recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := conn.recv(size - len(data))):
        data += chunk
    return data


def through_socks5(port: int, host: str, target_port: int, payload: bytes) -> bytes:
    """Send ``payload`` to ``host:target_port`` through the SOCKS5 proxy; as many bytes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(20)) as conn:
        conn.sendall(b"\x05\x01\x00")  # version 5, one method: no authentication
        assert recv_exact(conn, 2) == b"\x05\x00"
        name = host.encode()
        conn.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + target_port.to_bytes(2))
        reply = recv_exact(conn, 4)
        assert reply[:2] == b"\x05\x00", reply  # succeeded
        bound = {1: 4, 4: 16}.get(reply[3]) or recv_exact(conn, 1)[0]
        recv_exact(conn, bound + 2)
        conn.sendall(payload)
        return recv_exact(conn, len(payload))


class _Echo(socketserver.StreamRequestHandler):
    """The local server an ``expose`` tunnel reaches: echoes to EOF."""

    def handle(self) -> None:
        while chunk := self.request.recv(65536):
            self.request.sendall(chunk)


@pytest.fixture
def local_echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    serving.join()


#: The in-cluster client of the ``expose`` tunnel: what its Service answers.
PROBE = """
import socket
with socket.create_connection(("back", 80), timeout=20) as conn:
    conn.sendall(b"via back " * 100)
    conn.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
print(data.decode())
"""


def test_tunnels_of_every_kind_from_one_file(
    cluster: Cluster,
    namespace: str,
    restricted_namespace: str,
    kube: Kube,
    plugins: Callable[..., Plugin],
    local_echo: int,
    tmp_path: Path,
) -> None:
    echo_service(cluster, kube, namespace)
    web, dns, raw, socks = (
        free_port(),
        free_port(kind=socket.SOCK_DGRAM),
        free_port(),
        free_port(),
    )
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
        f"    listen: {raw}\n"
        "  - name: socks\n"
        "    kind: proxy\n"
        f"    listen: {socks}\n"
        "    deny: [169.254.0.0/16]\n"
        "  - name: back\n"
        "    kind: expose\n"
        f"    local-port: {local_echo}\n",
    )
    plugin = plugins("-f", str(file))
    for name in ("web", "dns", "raw", "socks"):
        plugin.wait_for(f"[{name}] Forwarding", timeout=90)
    plugin.wait_for("[back] Exposing service", timeout=90)
    # web, raw and socks share the test's namespace and settings: one session; dns has its
    # own, and so has the expose tunnel (its relay Job in the test's namespace).
    in_namespace = sessions(kube, namespace)
    assert len(in_namespace) == 4 and len(set(in_namespace)) == 2, in_namespace
    assert len(sessions(kube, restricted_namespace)) == 1

    assert exchange(web, b"via web\n" * 100) == b"via web\n" * 100
    # A run tunnel is a plain port-forward, which carries no half-close: read by length.
    assert round_trip(raw, b"via raw\n" * 100) == b"via raw\n" * 100
    assert through_socks5(socks, "echo", 80, b"via socks\n" * 100) == b"via socks\n" * 100
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(scaled(20))
        for datagram in (b"via dns one", b"via dns two two"):
            sock.sendto(datagram, ("127.0.0.1", dns))
            assert sock.recvfrom(65536)[0] == datagram
    cluster.kubectl(
        "run",
        "probe",
        "-n",
        namespace,
        f"--image={cluster.relay_image}",
        "--restart=Never",
        "--command",
        "--",
        "python3",
        "-c",
        PROBE,
    )
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "pod/probe",
        "--for=jsonpath={.status.phase}=Succeeded",
        f"--timeout={int(scaled(60))}s",
        timeout=90,
    )
    assert cluster.kubectl("logs", "-n", namespace, "probe").stdout == "via back " * 100 + "\n"

    output = plugin.wait_for("via dns two two")
    for name in ("web", "raw", "socks", "dns"):
        traced = lines_with(f"via {name}", output)
        assert traced and all(line.startswith(f"[{name}] ") for line in traced), output
    assert "[web] connection 1 closed: 800 bytes sent, 800 received" in plugin.wait_for(
        "[web] connection 1 closed"
    )
    assert "[back] connection 1 closed: 900 bytes sent, 900 received" in plugin.wait_for(
        "[back] connection 1 closed"
    )
    assert plugin.stop(signal.SIGINT) == 0
    assert len(lines_with("deleted relay pod", plugin.text)) == 5, plugin.text
    no_relay_left(kube, namespace)
    no_relay_left(kube, restricted_namespace)
    wait_until(
        "the exposed Service deleted",
        lambda: (
            "service/back"
            not in cluster.kubectl("get", "services", "-n", namespace, "-o", "name").stdout
        ),
        30,
    )


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
        "namespace, trace, pod, target, listen, session-idle)",
    ]
    assert relay_objects(kube, namespace) == []
