"""``kubectl relay expose`` end to end: in-cluster clients reach a server on this machine.

One expose session serves the module (CI time): a Service ``dev-api`` in a
namespace of its own, whose connections reach a small server on loopback
here. An in-cluster client pod (the relay image, which has Python) makes 20
concurrent HTTP requests through it, and a half-closing exchange; the last
test ends the session with Ctrl-C and checks that the Service and the relay
pod are gone. A second session is killed with SIGKILL right at the start
and checked at the end, so that waiting for its lease overlaps the other
tests.
"""

from __future__ import annotations

import json
import os
import signal
import socketserver
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import ENV_IMAGE, Cluster
from e2e.cluster import poll as wait_until
from e2e.conftest import Kube
from e2e.test_plugin import Plugin, relay_objects
from tests.conftest import _children, scaled
from tests.support import free_port

#: The in-cluster requests that must be in flight at the same time.
CONCURRENT = 20
#: The half-closing client's upload and the reply it still gets after its EOF.
UPLOAD = 100_000
REPLY_TAIL = 200_000


class _LaptopServer(socketserver.StreamRequestHandler):
    """The local server: HTTP/1.0 GETs, or ``COUNT``: read to EOF, then answer.

    ``/c/N`` requests wait at a barrier of ``CONCURRENT``: they are answered
    only once all of them have arrived, so they must be in flight together.
    """

    barrier = threading.Barrier(CONCURRENT)

    def handle(self) -> None:
        first = self.rfile.readline()
        if first == b"COUNT\n":
            counted = len(self.rfile.read())  # to the client's EOF
            self.wfile.write(b"counted %d\n" % counted + b"y" * REPLY_TAIL)
            return
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        path = first.split()[1].decode() if len(first.split()) > 1 else "/"
        status = b"200 OK"
        if path.startswith("/c/"):
            try:
                self.barrier.wait(scaled(60))
            except threading.BrokenBarrierError:
                status = b"503 Not All Together"
        body = f"laptop answers {path}\n".encode() * 100
        self.wfile.write(b"HTTP/1.0 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        self.wfile.write(body)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


#: A GET through the exposed Service from the client pod, retried for up to 30 s.
WARM_UP = (
    "import time, urllib.request\n"
    "for _ in range(60):\n"
    "    try:\n"
    "        urllib.request.urlopen('http://dev-api/warm-up', timeout=10).read()\n"
    "        print('true')\n"
    "        break\n"
    "    except OSError:\n"
    "        time.sleep(0.5)\n"
    "else:\n"
    "    print('false')\n"
)


def body_of(path: str) -> str:
    return f"laptop answers {path}\n" * 100


def expose(env: dict[str, str], namespace: str, port: int, name: str, *extra: str) -> Plugin:
    image = ["--image", env[ENV_IMAGE]] if env.get(ENV_IMAGE) else []
    plugin = Plugin(env, "expose", str(port), "--name", name, "-n", namespace, *image, *extra)
    plugin.wait_for("Exposing service", timeout=120)
    return plugin


def services(cluster: Cluster, namespace: str) -> list[str]:
    result = cluster.kubectl("get", "services", "-n", namespace, "-o", "name")
    return sorted(result.stdout.split())


def in_cluster(cluster: Cluster, namespace: str, script: str) -> Any:
    """Run ``script`` with Python in the client pod; what it printed, as JSON."""
    result = cluster.kubectl(
        "exec", "-n", namespace, "client", "--", "python3", "-c", script, timeout=120
    )
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def shared(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The module's namespace, client pod, local server and expose sessions."""
    namespace = cluster.create_namespace(f"expose-{os.urandom(3).hex()}")
    home = tmp_path_factory.mktemp("home")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {k: v for k, v in os.environ.items() if k != ENV_IMAGE}
    env |= {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(home), "PATH": path}
    if cluster.image_args:
        env[ENV_IMAGE] = cluster.relay_image
    server = _Server(("127.0.0.1", 0), _LaptopServer)
    serving = threading.Thread(target=server.serve_forever, name="laptop", daemon=True)
    serving.start()
    port = server.server_address[1]
    plugins: list[Plugin] = []
    try:
        cluster.kubectl("run", "client", "-n", namespace, f"--image={cluster.relay_image}",
                        "--restart=Never", "--command", "--", "python3", "-c",
                        # PID 1 ignores SIGTERM unless it says otherwise: without
                        # this the namespace's deletion waits 30 s for the pod.
                        "import signal, sys, time; "
                        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); time.sleep(3600)")
        # The SIGKILL victim first: its lease runs out while the other tests run.
        victim = expose(
            env, namespace, free_port(), "killed", "--keep-finished", "5s", "--lease", "12s"
        )
        plugins.append(victim)
        victim.proc.kill()
        victim.proc.wait()
        plugins.append(expose(env, namespace, port, "dev-api"))
        cluster.wait_pod(namespace, "client", timeout=120)
        # kube-proxy programs the Service a moment after its endpoint is ready:
        # until then the client's connections fail with "No route to host".
        assert in_cluster(cluster, namespace, WARM_UP) is True
        yield {"namespace": namespace, "plugin": plugins[-1], "env": env}
    finally:
        for plugin in plugins:
            if plugin.proc.poll() is None:
                plugin.proc.kill()
            plugin.stop()
            for stream in (plugin.proc.stdout, plugin.proc.stderr):
                if stream is not None:
                    stream.close()
        server.shutdown()
        server.server_close()
        serving.join()
        cluster.delete_namespace(namespace, timeout=180)


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """The conftest's check, but the module's own expose sessions run across its tests."""
    yield
    left = [c for c in _children() if " expose " not in f" {c} "]
    assert not left, f"child processes left running: {left}"


def test_twenty_concurrent_requests_reach_the_local_server(
    cluster: Cluster, shared: dict[str, Any]
) -> None:
    script = (
        "import json, threading, urllib.request\n"
        "results = {}\n"
        "def get(n):\n"
        "    try:\n"
        f"        with urllib.request.urlopen(f'http://dev-api/c/{{n}}', timeout=90) as r:\n"
        "            results[n] = [r.status, r.read().decode()]\n"
        "    except Exception as e:\n"
        "        results[n] = [0, repr(e)]\n"
        f"threads = [threading.Thread(target=get, args=(n,)) for n in range({CONCURRENT})]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join(120)\n"
        "print(json.dumps(results))\n"
    )
    results = in_cluster(cluster, shared["namespace"], script)
    assert results == {str(n): [200, body_of(f"/c/{n}")] for n in range(CONCURRENT)}
    plugin: Plugin = shared["plugin"]
    wait_until(
        "a line per connection closed",
        lambda: plugin.text.count(" closed: ") >= CONCURRENT + 1,
        30,
    )
    assert "connection 1 from" in plugin.text


def test_a_client_that_half_closes_still_gets_the_whole_reply(
    cluster: Cluster, shared: dict[str, Any]
) -> None:
    script = (
        "import json, socket\n"
        "s = socket.create_connection(('dev-api', 80), timeout=60)\n"
        f"s.sendall(b'COUNT\\n' + b'x' * {UPLOAD})\n"
        "s.shutdown(socket.SHUT_WR)\n"
        "data = b''\n"
        "while chunk := s.recv(65536):\n"
        "    data += chunk\n"
        "head, _, tail = data.partition(b'\\n')\n"
        "print(json.dumps([head.decode(), len(tail), set(tail) == {ord('y')}]))\n"
    )
    assert in_cluster(cluster, shared["namespace"], script) == [
        f"counted {UPLOAD}", REPLY_TAIL, True
    ]


def test_ctrl_c_deletes_the_service_and_the_relay_pod(
    cluster: Cluster, shared: dict[str, Any], kube: Kube
) -> None:
    namespace, plugin = shared["namespace"], shared["plugin"]
    session = cluster.kubectl(
        "get", "service", "dev-api", "-n", namespace,
        "-o", "jsonpath={.metadata.labels.relay\\.kubectl-relay\\.io/session}",
    ).stdout
    assert session and any(session in name for name in relay_objects(kube, namespace))
    assert plugin.stop(signal.SIGINT) == 0
    assert f"deleted service {namespace}/dev-api" in plugin.text
    assert "service/dev-api" not in services(cluster, namespace)
    wait_until(
        "the session's relay Job and pod to go",
        lambda: not [name for name in relay_objects(kube, namespace) if session in name],
        30,
    )


def test_after_kill_9_the_service_and_pod_go_within_the_lease(
    cluster: Cluster, shared: dict[str, Any], kube: Kube
) -> None:
    """The victim was killed at the start: its lease (12 s here), the TTL (5 s), then the GC."""
    namespace = shared["namespace"]
    wait_until("the killed session's Service to go",
               lambda: "service/killed" not in services(cluster, namespace), 120)
    wait_until("every relay Job and pod to go", lambda: not relay_objects(kube, namespace), 60)
