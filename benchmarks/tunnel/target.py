"""The pod both tunnels reach, and the two tunnels as processes.

The pod runs the relay image's Python (``python3``, no other image is in the
cluster) as one server on ``TARGET_PORT`` that both tunnels reach:

- a connection whose first byte is ``S`` is a *sink*: 8 bytes of big-endian
  length follow, then that many bytes, which the server reads and drops; it
  then answers one byte. The bulk client times until that byte, so the
  figure never depends on how a tunnel passes a half-close (``kubectl
  port-forward`` has none of its own);
- any other connection is an *echo*: every byte comes back (the connection
  rate and latency peers send 1 byte and wait for it);
- on UDP, the same port answers each datagram with itself.

One thread per connection: its cost per connection (tens of microseconds) is
small next to a tunnel's milliseconds, and the same for both candidates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: The server's port in the pod.
TARGET_PORT = 8080
#: Seconds a tunnel gets to say it is ready.
READY_SECONDS = 120.0

_SERVER = r"""
import socket, struct, threading

def serve(conn):
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = conn.recv(1)
        if first == b"S":
            header = b""
            while len(header) < 8:
                part = conn.recv(8 - len(header))
                if not part:
                    return
                header += part
            left = struct.unpack(">Q", header)[0]
            buffer = bytearray(1 << 20)
            while left > 0:
                count = conn.recv_into(buffer, min(left, len(buffer)))
                if not count:
                    return
                left -= count
            conn.sendall(b"k")
            return
        data = first
        while data:
            conn.sendall(data)
            data = conn.recv(65536)

def udp_echo():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", PORT))
    while True:
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)

threading.Thread(target=udp_echo, daemon=True).start()
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", PORT))
server.listen(1024)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def pod_manifest(name: str, namespace: str, image: str) -> dict[str, object]:
    """The target pod: the sink/echo server, restricted Pod Security, ready once it listens."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "server",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-u", "-c",
                                _SERVER.replace("PORT", str(TARGET_PORT))],
                    "ports": [{"name": "bench", "containerPort": TARGET_PORT}],
                    "readinessProbe": {"tcpSocket": {"port": TARGET_PORT},
                                       "periodSeconds": 1},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }


def kubectl(*args: str, stdin: str | None = None, timeout: float = 120.0) -> str:
    """Run the cluster's ``kubectl`` (first on PATH); its stdout, or ``RuntimeError``."""
    result = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def create_target(namespace: str, name: str, image: str) -> None:
    """The namespace and the pod, once the pod is ready."""
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-f", "-", stdin=json.dumps(pod_manifest(name, namespace, image)))
    kubectl("wait", "-n", namespace, "--for=condition=Ready", f"pod/{name}", "--timeout=120s",
            timeout=130)


def delete_target(namespace: str) -> None:
    """Delete the namespace (and with it the pod and any relay pod left), without waiting."""
    kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


@dataclass
class Tunnel:
    """One running tunnel process and its local port."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    #: Seconds from its start until it said it was ready.
    ready_after: float
    log: IO[bytes]

    def stop(self) -> int:
        """SIGINT (both clean up on it), then SIGKILL after a bound; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            status = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self.log.close()
        return status


def start_tunnel(
    name: str,
    argv: list[str],
    port: int,
    ready_text: str,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> Tunnel:
    """Start ``argv`` (``env`` added, output to ``log_path``) until it prints ``ready_text``."""
    log = log_path.open("w+b")
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, env={**os.environ, **(env or {})})
    deadline = started + READY_SECONDS
    while time.monotonic() < deadline:
        if ready_text.encode() in log_path.read_bytes():
            return Tunnel(name, process, port, time.monotonic() - started, log)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    log.close()
    raise RuntimeError(f"{name} did not become ready: {log_path.read_text(errors='replace')}")
