"""``kubectl relay`` end to end: the real kubectl runs the plugin against a cluster.

Every test runs ``kubectl relay ...`` as a user does (a subprocess of the real
``kubectl``, which finds ``kubectl-relay`` on PATH), sends real TCP, UDP and
TLS traffic through the tunnel to servers running as pods, and checks the
bytes, the streamed trace, the exit code and that no relay pod or Job is left.

The cluster is ``RELAY_E2E_KUBECONFIG``'s (see ``e2e/README.md``; the tests
skip without it): the servers are the relay image itself (``relay
TCP-LISTEN:...,fork PIPE`` echoes), and broken port-forwards come from the
fault proxy in front of the API server (``Cluster.fault_proxy``). ``ls``,
``gc`` and completion are in ``test_plugin_inventory``, what the plugin cannot
do (one line, a status, nothing left) in ``test_plugin_failures``: both import
this module's fixtures and helpers.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from e2e.cluster import ENV_IMAGE, Cluster
from e2e.cluster import poll as wait_until
from e2e.conftest import Kube
from e2e.faultproxy import FaultProxyThread
from tests.conftest import scaled
from tests.support import exchange, free_port

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

T = TypeVar("T")
MANAGED = "app.kubernetes.io/managed-by=kubectl-relay"


# -- helpers --------------------------------------------------------------------------------------


#: The commands that start relay pods (and take ``--image``).
POD_COMMANDS = ("tcp", "udp", "tls", "run")


def plugin_argv(env: dict[str, str], args: tuple[str, ...]) -> list[str]:
    """``kubectl relay ARGS``, with ``--image`` when the relay image is not the default."""
    image = env.get(ENV_IMAGE)
    if image and args and args[0] in POD_COMMANDS and "--image" not in args:
        args = (args[0], "--image", image, *args[1:])
    return ["kubectl", "relay", *args]


class Plugin:
    """``kubectl relay ARGS`` running in the background, its output read as it comes.

    Two threads drain stdout and stderr all the time, as a terminal does: the
    ``-v`` trace of a few concurrent connections is more than a pipe holds,
    and a plugin blocked on a full pipe stalls every connection it serves.
    """

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            plugin_argv(env, args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._output = {"out": b"", "err": b""}
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._drain, args=(stream, key), daemon=True)
            for stream, key in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))
        ]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream: Any, key: str) -> None:
        while chunk := os.read(stream.fileno(), 65536):
            with self._changed:
                self._output[key] += chunk
                self._changed.notify_all()
        stream.close()

    def _open_streams(self) -> bool:
        return any(reader.is_alive() for reader in self._readers)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Wait until ``text`` appears on stdout; everything so far."""
        deadline = time.monotonic() + scaled(timeout)
        with self._changed:
            while text.encode() not in self._output["out"]:
                left = deadline - time.monotonic()
                if left <= 0 or not self._open_streams():
                    pytest.fail(f"no {text!r} in output:\n{self.text}\nstderr:\n{self.error}")
                self._changed.wait(min(left, 0.5))
        return self.text

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``sig``, wait for the rest of the output, return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        deadline = time.monotonic() + scaled(timeout)
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        try:
            return self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"kubectl relay did not stop; output:\n{self.text}")

    def kill(self) -> None:
        """End it (SIGKILL) if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    @property
    def out(self) -> bytes:
        with self._changed:
            return self._output["out"]

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    @property
    def error(self) -> str:
        with self._changed:
            return self._output["err"].decode(errors="replace")


@pytest.fixture
def env(cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell: the cluster's kubeconfig, the plugin on PATH.

    ``RELAY_E2E_IMAGE`` is set when the relay image is not the default one: the
    helpers pass it to ``kubectl relay --image``, as a user of that image would.
    """
    home = tmp_path / "home"
    home.mkdir()
    return shell_env(cluster, home)


def shell_env(cluster: Cluster, home: Path) -> dict[str, str]:
    """``env``'s environment, with ``home`` as ``$HOME`` (for module-wide fixtures too)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    shell = {k: v for k, v in os.environ.items() if k != ENV_IMAGE}
    shell |= {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(home), "PATH": path}
    if cluster.image_args:
        shell[ENV_IMAGE] = cluster.relay_image
    return shell


@pytest.fixture
def plugins(env: dict[str, str]) -> Iterator[Callable[..., Plugin]]:
    """Start ``kubectl relay`` processes; each is stopped (SIGKILL if need be) at the end.

    ``kubeconfig=PATH`` runs one with another kubeconfig (the fault proxy's).
    """
    started: list[Plugin] = []

    def start(*args: str, kubeconfig: Path | None = None) -> Plugin:
        plugin = Plugin({**env, "KUBECONFIG": str(kubeconfig)} if kubeconfig else env, *args)
        started.append(plugin)
        return plugin

    yield start
    for plugin in started:
        plugin.kill()


def run_plugin(
    env: dict[str, str], *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        plugin_argv(env, args),
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        check=False,
    )


def relay_objects(kube: Kube, namespace: str) -> list[str]:
    """The relay Jobs and pods (not yet being deleted) in the namespace."""
    jobs = kube.batch.list_namespaced_job(namespace, label_selector=MANAGED).items
    pods = kube.core.list_namespaced_pod(namespace, label_selector=MANAGED).items
    return [f"job/{j.metadata.name}" for j in jobs] + [
        f"pod/{p.metadata.name}" for p in pods if p.metadata.deletion_timestamp is None
    ]


def no_relay_left(kube: Kube, namespace: str) -> None:
    wait_until("no relay Job or pod left", lambda: not relay_objects(kube, namespace), 15)


def echo_service(
    cluster: Cluster, kube: Kube, namespace: str, name: str = "echo", *, slow: bool = False
) -> None:
    """A Deployment echoing TCP and UDP on 8080, a Service on 80 (TCP) and 53 (UDP).

    The echo servers are the relay image: ``relay TCP-LISTEN:8080,fork PIPE``
    sends every connection's bytes back and half-closes after them; the UDP
    one answers each datagram. ``-t 10``: the echo goes on after the client's
    half-close, and socat's 0.5 s would cut it short whenever it paused that long.
    ``slow``: also port 81 (``slow``), which reads a request to its end, says
    nothing for 2 s, then answers with its length.
    """
    containers: list[dict[str, Any]] = [
        {
            "name": "main",
            "image": cluster.relay_image,
            "command": ["relay", "-t", "10", "TCP-LISTEN:8080,fork,reuseaddr", "PIPE"],
            "ports": [{"name": "echo", "containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        },
        {
            "name": "udp",
            "image": cluster.relay_image,
            "command": ["relay", "UDP-LISTEN:8080,fork,reuseaddr", "PIPE"],
            "ports": [{"name": "echo-udp", "containerPort": 8080, "protocol": "UDP"}],
        },
    ]
    ports = [
        {"name": "tcp", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "dns", "port": 53, "targetPort": 8080, "protocol": "UDP"},
    ]
    if slow:
        containers.append({
            "name": "slow",
            "image": cluster.relay_image,
            "command": ["relay", "-t", "10", "TCP-LISTEN:8081,fork,reuseaddr",
                        "SYSTEM:sleep 2; wc -c"],
            "readinessProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1},
        })
        ports.append({"name": "slow", "port": 81, "targetPort": 8081, "protocol": "TCP"})
    kube.apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": containers},
                },
            },
        },
    )
    kube.core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": ports},
        },
    )
    cluster.wait_deployment(namespace, name)
    # A tunnel opened before kube-proxy routes the Service sees its first connection refused.
    cluster.wait_routed(namespace, name, 80)


def round_trip(port: int, payload: bytes) -> bytes:
    """Send and read the echo back by length, without half-closing first.

    For TLS targets built on asyncio's SSL, which cannot half-close: the
    relay forwards a half-close as close_notify (as socat does), and asyncio
    then drops what the echo server writes after it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(20)) as conn:
        conn.sendall(payload)
        received = b""
        while len(received) < len(payload) and (chunk := conn.recv(65536)):
            received += chunk
    return received


def tunnel(plugins: Callable[..., Plugin], namespace: str, *args: str,
           kubeconfig: Path | None = None) -> Plugin:
    plugin = plugins(*args, "-n", namespace, kubeconfig=kubeconfig)
    plugin.wait_for("Press Ctrl-C")
    return plugin


# -- tunnels -------------------------------------------------------------------------------------


def test_tcp_tunnel_relays_bytes_and_streams_the_trace(
    cluster: Cluster, namespace: str, kube: Kube, plugins: Callable[..., Plugin]
) -> None:
    echo_service(cluster, kube, namespace)
    port = free_port()
    plugin = tunnel(plugins, namespace, "tcp", "svc/echo:tcp", "--listen", str(port))
    assert relay_objects(kube, namespace)  # the relay pod runs while the tunnel is up

    payload = b"hello relay\r\n" + bytes(range(256)) * 8
    assert exchange(port, payload) == payload  # byte for byte, half-close included
    results: dict[int, bytes] = {}

    def client(number: int) -> None:
        results[number] = exchange(port, b"client %d\n" % number * 500)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(scaled(30))
    assert results == {n: b"client %d\n" % n * 500 for n in range(6)}

    plugin.wait_for("hello relay\\r")
    output = plugin.wait_for("← from target  length=")
    assert "relay accepted a connection" in output
    assert "→ to target  length=" in output and "← from target  length=" in output
    assert "connection 1 closed: 2061 bytes sent, 2061 received" in output
    assert plugin.stop(signal.SIGINT) == 0
    assert "deleted relay pod" in plugin.text
    no_relay_left(kube, namespace)


def test_a_client_that_half_closes_gets_a_reply_that_took_the_server_seconds(
    cluster: Cluster, namespace: str, kube: Kube, plugins: Callable[..., Plugin]
) -> None:
    """The relay pod waits for the reply (its -t); at socat's 0.5 s the client got nothing."""
    echo_service(cluster, kube, namespace, slow=True)
    port = free_port()
    plugin = tunnel(plugins, namespace, "tcp", "svc/echo:slow", "--listen", str(port), "-q")
    assert exchange(port, b"question\n" * 100) == b"900\n"
    assert plugin.stop(signal.SIGINT) == 0


def test_relay_namespace_runs_the_pod_there_and_looks_the_target_up_in_the_targets(
    cluster: Cluster, namespace: str, restricted_namespace: str, kube: Kube,
    plugins: Callable[..., Plugin],
) -> None:
    """``-n`` names the targets' namespace, ``--relay-namespace`` only where the pod runs."""
    echo_service(cluster, kube, namespace)
    port = free_port()
    plugin = tunnel(plugins, namespace, "tcp", "svc/echo:tcp", "--listen", str(port),
                    "--relay-namespace", restricted_namespace)
    assert relay_objects(kube, restricted_namespace) and not relay_objects(kube, namespace)
    payload = b"across namespaces\n" * 64
    assert exchange(port, payload) == payload
    assert plugin.stop(signal.SIGINT) == 0
    no_relay_left(kube, restricted_namespace)


def test_udp_tunnel_keeps_datagram_boundaries(
    cluster: Cluster, namespace: str, kube: Kube, plugins: Callable[..., Plugin]
) -> None:
    echo_service(cluster, kube, namespace)
    port = free_port(kind=socket.SOCK_DGRAM)
    plugin = tunnel(plugins, namespace, "udp", "deploy/echo:8080", "--listen", str(port))
    datagrams = [b"one", b"two two", b"\x00" * 1200, b"last"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(scaled(20))
        replies = []
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))
            try:
                replies.append(sock.recvfrom(65536)[0])
            except TimeoutError:
                plugin.stop()
                pytest.fail(f"no reply to {datagram!r}; output:\n{plugin.text}\n{plugin.error}")
    assert replies == datagrams
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:  # a second sender
        other.settimeout(scaled(20))
        other.sendto(b"another sender", ("127.0.0.1", port))
        assert other.recvfrom(65536)[0] == b"another sender"
    plugin.wait_for("length=7 from=3 to=9")  # the trace counts the UDP stream's offsets
    assert plugin.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    no_relay_left(kube, namespace)


def test_tls_tunnel_verifies_the_target(
    cluster: Cluster,
    namespace: str,
    kube: Kube,
    plugins: Callable[..., Plugin],
    tmp_path: Path,
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_cert = ca.issue_cert(f"secure.{namespace}.svc")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    kube.core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "secure-tls"},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(server_cert.cert_chain_pems[0].bytes()).decode(),
                "tls.key": base64.b64encode(server_cert.private_key_pem.bytes()).decode(),
            },
        },
    )
    # A TLS echo server: the relay image, terminating TLS (no client certificate asked).
    listen = "OPENSSL-LISTEN:8443,fork,reuseaddr,cert=/tls/tls.crt,key=/tls/tls.key,verify=0"
    kube.core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "secure", "labels": {"app": "secure"}},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": cluster.relay_image,
                        "command": ["relay", listen, "PIPE"],
                        "volumeMounts": [{"name": "tls", "mountPath": "/tls"}],
                        "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1},
                    }
                ],
                "volumes": [{"name": "tls", "secret": {"secretName": "secure-tls"}}],
            },
        },
    )
    kube.core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "secure"},
            "spec": {"selector": {"app": "secure"}, "ports": [{"port": 443, "targetPort": 8443}]},
        },
    )
    cluster.wait_pod(namespace, "secure")

    verified_port, unverified_port = free_port(), free_port()
    verified = tunnel(
        plugins,
        namespace,
        "tls",
        "svc/secure:443",
        "--listen",
        str(verified_port),
        "--cafile",
        str(ca_file),
    )
    assert round_trip(verified_port, b"secret payload\n") == b"secret payload\n"
    verified.wait_for("secret payload")  # the trace shows the plaintext
    assert verified.stop() == 0

    # Without the CA, verification (on by default) refuses the server.
    unverified = tunnel(
        plugins, namespace, "tls", "svc/secure:443", "--listen", str(unverified_port)
    )
    assert exchange(unverified_port, b"never sent\n") == b""
    output = unverified.wait_for("relay error")
    assert "certificate verify failed" in output
    assert unverified.stop() == 0
    no_relay_left(kube, namespace)


#: ``kubectl relay --lease``: the tests that wait for a lease to run out ask for
#: the shortest (``relaypod.MIN_LEASE_SECONDS``, renewed every 3 s) rather than
#: wait for the default 40 s; the mechanism is the same.
SHORT_LEASE = ("--lease", "12s")


def relay_pods(kube: Kube, namespace: str) -> list[str]:
    """The relay pods not being deleted in the namespace."""
    return [name for name in relay_objects(kube, namespace) if name.startswith("pod/")]


def test_a_killed_client_leaves_no_relay_behind(
    cluster: Cluster, namespace: str, kube: Kube, plugins: Callable[..., Plugin]
) -> None:
    """SIGKILL: no cleanup by the client, and the default 10-minute idle timeout."""
    echo_service(cluster, kube, namespace)
    port = free_port()
    plugin = tunnel(plugins, namespace, "tcp", "svc/echo:80", "--listen", str(port),
                    *SHORT_LEASE, "--keep-finished", "5s")
    assert exchange(port, b"ping\n") == b"ping\n"
    plugin.proc.kill()
    plugin.proc.wait()
    # Its lease runs out: the Job controller ends the pod within a minute...
    wait_until("the relay pod to end", lambda: not relay_pods(kube, namespace), 60)
    # ...and the TTL controller deletes the finished Job (--keep-finished) soon after.
    wait_until("the Job to go", lambda: not relay_objects(kube, namespace), 60)


def test_a_client_that_sleeps_less_than_its_lease_keeps_its_tunnel(
    cluster: Cluster, namespace: str, kube: Kube, plugins: Callable[..., Plugin]
) -> None:
    """A laptop that sleeps: SIGSTOP, then SIGCONT 10 s later; the same relay pod serves."""
    echo_service(cluster, kube, namespace)
    port = free_port()
    # The default lease's proportions, halved: 20 s renewed every 5 s.
    plugin = tunnel(plugins, namespace, "tcp", "svc/echo:80", "--listen", str(port),
                    "--lease", "20s")
    pods = relay_pods(kube, namespace)
    plugin.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(10)  # less than the lease (20 s) minus its renewal period (5 s)
    finally:
        plugin.proc.send_signal(signal.SIGCONT)
    assert exchange(port, b"awake\n") == b"awake\n"
    assert relay_pods(kube, namespace) == pods
    assert plugin.stop() == 0
    assert "starting a new relay pod" not in plugin.text
    no_relay_left(kube, namespace)


def test_a_broken_port_forward_and_a_deleted_pod_are_recovered(
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

    with socket.create_connection(("127.0.0.1", port), timeout=scaled(20)) as conn:
        conn.sendall(b"before\n")
        assert conn.recv(100) == b"before\n"
        assert faults.break_portforwards() >= 1
        assert conn.recv(100) == b""  # that connection is lost with its port-forward...
    assert exchange(port, b"after\n") == b"after\n"  # ...the listener is not

    # Port-forward requests failing for a while: the connection waits and retries. (The
    # tunnel's one port-forward, for every connection, broken first: the next opens it.)
    # Two failures: the SPDY upgrade, then the WebSocket tried after it.
    faults.fail("*", r"/portforward", status=503, times=2)
    assert faults.break_portforwards() == 1
    wait_until("the plugin to see its port-forward end again",
               lambda: plugin.text.count("the next connection opens it again") >= 2)
    assert exchange(port, b"retried\n") == b"retried\n"
    plugin.wait_for("retrying in")

    # The relay pod deleted under the tunnel: a new one takes over.
    first_pod = next(n for n in relay_objects(kube, namespace) if n.startswith("pod/"))
    kube.core.delete_namespaced_pod(first_pod[4:], namespace)
    plugin.wait_for("starting a new relay pod")
    wait_until("a new relay pod", lambda: exchange(port, b"again\n") == b"again\n", 30)
    assert plugin.stop() == 0
    no_relay_left(kube, namespace)


def test_port_forwards_go_over_spdy_and_fall_back_to_the_websocket(
    cluster: Cluster,
    namespace: str,
    kube: Kube,
    faults: FaultProxyThread,
    plugins: Callable[..., Plugin],
) -> None:
    echo_service(cluster, kube, namespace)
    payload = os.urandom(3 << 20)

    def relayed_through_faults() -> tuple[int, Plugin]:
        """A tunnel through the fault proxy, and 3 MiB echoed through it."""
        port = free_port()
        plugin = tunnel(plugins, namespace, "tcp", "svc/echo:80", "--listen", str(port),
                        kubeconfig=faults.kubeconfig)
        assert exchange(port, payload) == payload
        return port, plugin

    # Every WebSocket port-forward (a GET) refused: the tunnel still works, so it is SPDY (a POST).
    faults.fail("GET", r"/portforward", status=500, times=None)
    _, plugin = relayed_through_faults()
    assert faults.fired == 0
    assert plugin.stop() == 0

    # A front that refuses SPDY upgrades (as one that strips them makes the API server answer):
    # the WebSocket carries the tunnel, said once.
    faults.clear()
    faults.fail("POST", r"/portforward", status=400, times=None,
                message="Upgrade request required")
    port, plugin = relayed_through_faults()
    faults.break_portforwards()  # the next connection opens a port-forward again: no SPDY try
    wait_until("the plugin to see its port-forward end",
               lambda: "the next connection opens it again" in plugin.text)
    assert exchange(port, b"again\n") == b"again\n"
    assert faults.fired == 1
    assert plugin.text.count("refused port-forwards over SPDY (400 Upgrade request required)") == 1
    assert plugin.stop() == 0
    no_relay_left(kube, namespace)


def test_deployment_target_follows_a_rollout(
    cluster: Cluster, namespace: str, kube: Kube, plugins: Callable[..., Plugin]
) -> None:
    echo_service(cluster, kube, namespace)
    port = free_port()
    plugin = tunnel(plugins, namespace, "tcp", "deploy/echo:echo", "--listen", str(port))
    assert exchange(port, b"v1\n") == b"v1\n"
    kube.apps.patch_namespaced_deployment(
        "echo", namespace, {"spec": {"template": {"metadata": {"annotations": {"rollout": "2"}}}}}
    )
    plugin.wait_for("is no longer ready", timeout=40)
    wait_until("the tunnel on the new pod", lambda: exchange(port, b"v2\n") == b"v2\n", 30)
    assert plugin.stop() == 0
    no_relay_left(kube, namespace)


def test_run_streams_a_relay_command_and_ends_with_its_status(
    cluster: Cluster, namespace: str, kube: Kube, env: dict[str, str]
) -> None:
    echo_service(cluster, kube, namespace)
    result = run_plugin(
        env, "run", "-n", namespace, "--", "-u", "SYSTEM:echo hi-there", "TCP:echo:80"
    )
    assert result.returncode == 0, result.stderr
    assert "hi-there" in result.stdout and "→ to target" in result.stdout
    no_relay_left(kube, namespace)


# -- traces a person can follow --------------------------------------------------------------


def test_concurrent_connections_each_carry_their_number_in_order(
    cluster: Cluster, namespace: str, kube: Kube, plugins: Callable[..., Plugin]
) -> None:
    echo_service(cluster, kube, namespace)
    port = free_port()
    plugin = tunnel(plugins, namespace, "tcp", "svc/echo:80", "--listen", str(port))
    conns = [socket.create_connection(("127.0.0.1", port), timeout=scaled(20)) for _ in range(3)]
    try:
        for round_ in range(3):  # the connections' blocks interleave in the relay's trace
            for index, conn in enumerate(conns):
                word = f"conn{index}-round{round_}\n".encode()
                conn.sendall(word)
                assert conn.recv(100) == word, plugin.text
        peers = [conn.getsockname()[1] for conn in conns]
        for conn in conns:
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(100) == b""
    finally:
        for conn in conns:
            conn.close()
    for number in (1, 2, 3):
        plugin.wait_for(f"connection {number} closed")
    assert plugin.stop() == 0
    lines = plugin.text.splitlines()
    numbers = {}
    for line in lines:
        if line.startswith("connection ") and " from 127.0.0.1:" in line:
            numbers[int(line.rsplit(":", 1)[1])] = int(line.split()[1])
    for index, peer in enumerate(peers):
        number = numbers[peer]
        mine = [at for at, line in enumerate(lines) if line.startswith(f"#{number} ")]
        opened = lines.index(next(x for x in lines if x.startswith(f"connection {number} from")))
        closed = lines.index(next(x for x in lines if x.startswith(f"connection {number} closed")))
        assert opened < mine[0] and mine[-1] < closed, plugin.text
        payload = "\n".join(lines[at] for at in mine)
        for round_ in range(3):
            assert f"conn{index}-round{round_}" in payload
        for other in set(range(3)) - {index}:
            assert f"conn{other}-" not in payload
    no_relay_left(kube, namespace)


def http_service(cluster: Cluster, kube: Kube, namespace: str, name: str = "web") -> None:
    """Python's own HTTP server (from the relay image's interpreter) behind a Service on 80."""
    command = ["/opt/relay/bin/python", "-m", "http.server", "8080", "--directory", "/opt/relay"]
    kube.apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                # http.server is the container's pid 1 and sets no SIGTERM handler, so
                # the kernel drops the signal: without this, deleting the namespace
                # waits the default 30 s of grace before the kubelet's SIGKILL.
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main", "image": cluster.relay_image, "command": command,
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }],
            }},
        },
    })
    kube.core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })
    cluster.wait_deployment(namespace, name)


def test_summary_shows_one_line_per_http_request(
    cluster: Cluster, namespace: str, kube: Kube, plugins: Callable[..., Plugin]
) -> None:
    import http.client  # noqa: PLC0415

    http_service(cluster, kube, namespace)
    port = free_port()
    plugin = tunnel(plugins, namespace, "tcp", "svc/web:80", "--listen", str(port), "--summary")
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(20))
    try:
        for path in ("/", "/bin/", "/missing"):
            # The server answers HTTP/1.0 and closes: http.client connects again each time.
            client.request("GET", path)
            client.getresponse().read()
    finally:
        client.close()
    output = plugin.wait_for("GET /missing → 404")
    assert plugin.stop() == 0
    assert "#1 GET / → 200 OK  (" in output
    assert "#2 GET /bin/ → 200 OK  (" in output
    assert "#3 GET /missing → 404 File not found  (" in output
    assert "length=" not in output  # no raw trace
    no_relay_left(kube, namespace)
