"""The measurements, against a local port that a tunnel forwards to the target pod.

Each is bounded: the bulk transfer by a socket timeout per call, the
connection rates by their window, the round trips by their count and a timeout.
The connection rate and latency clients are the benchmark's own peers
(``benchmarks/peers/connector.py``, ``pingpong.py``), each a process of its own;
``socks5_rate``, one client through ``kubectl relay proxy``, and ``udp_senders``, one
through ``kubectl relay udp``, run here.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time

from ..peers.common import CHUNK, HOST, payload
from ..processes import REPO_ROOT

#: A bulk call (connect, one send, the answer) that takes longer than this fails the figure.
BULK_STALL_SECONDS = 60.0
#: A proxied short connection that takes longer than this counts as an error.
CONNECTION_STALL_SECONDS = 10.0


def bulk(port: int, size: int) -> float:
    """Send ``size`` bytes to the sink through ``port``; MB/s (10^6) until the sink's answer."""
    chunk = memoryview(payload(CHUNK))
    with socket.create_connection((HOST, port), timeout=BULK_STALL_SECONDS) as conn:
        start = time.monotonic()
        conn.sendall(b"S" + struct.pack(">Q", size))
        left = size
        while left > 0:
            part = chunk[: min(left, CHUNK)]
            conn.sendall(part)
            left -= len(part)
        answer = conn.recv(1)
        elapsed = time.monotonic() - start
    if answer != b"k":
        raise ConnectionError(f"the sink did not confirm the {size} bytes (got {answer!r})")
    return size / elapsed / 1e6


def _peer(module: str, *args: str, timeout: float) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.peers.{module}", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{module} failed: {result.stderr.strip()[-400:]}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def connection_rate(port: int, clients: int, seconds: float) -> dict[str, float]:
    """Short connections (connect, 1 byte, its echo, close) per second: ``rate``, ``errors``."""
    return _peer("connector", str(port), "--concurrency", str(clients),
                 "--duration", str(seconds), timeout=seconds + 60)


def latency(port: int, count: int) -> dict[str, float]:
    """1-byte round trips on one connection: ``median_us``, ``p99_us``."""
    return _peer("pingpong", str(port), str(count), "--warmup", str(max(10, count // 10)),
                 "--timeout", "20", timeout=120)


def socks5_rate(port: int, target_ip: str, target_port: int, seconds: float) -> dict[str, float]:
    """One client's short connections per second through a SOCKS5 proxy on ``port``.

    Each: connect, a SOCKS5 greeting and CONNECT to ``target_ip:target_port`` at
    once, the two replies, 1 byte and its echo, close. ``rate`` and ``errors``.
    """
    request = (b"\x05\x01\x00" + b"\x05\x01\x00\x01" + socket.inet_aton(target_ip)
               + struct.pack(">H", target_port))
    done = errors = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            with socket.create_connection((HOST, port), timeout=CONNECTION_STALL_SECONDS) as conn:
                conn.sendall(request)
                replies = b""
                while len(replies) < 12:  # 2 + a CONNECT reply with an IPv4 address
                    chunk = conn.recv(64)
                    if not chunk:
                        raise ConnectionError(f"closed after {replies!r}")
                    replies += chunk
                if replies[:4] != b"\x05\x00\x05\x00":
                    raise ConnectionError(f"refused: {replies!r}")
                conn.sendall(b"E")
                if conn.recv(1) != b"E":
                    raise ConnectionError("no echo")
            done += 1
        except OSError:
            errors += 1
    return {"rate": done / (time.monotonic() - start), "errors": errors}


def udp_senders(port: int, count: int) -> dict[str, float]:
    """New UDP senders per second through ``port``, ``count`` of them one after the other.

    Each, as a resolver's query from a fresh source port: a socket of its own, one
    datagram, its echo, close. A tunnel opens a session for every sender. ``rate``
    and ``errors`` (an echo missing for ``CONNECTION_STALL_SECONDS``).
    """
    done = errors = 0
    start = time.monotonic()
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.settimeout(CONNECTION_STALL_SECONDS)
            try:
                sender.sendto(b"Q", (HOST, port))
                if sender.recv(64) != b"Q":
                    raise ConnectionError("not the echo")
                done += 1
            except OSError:
                errors += 1
    return {"rate": done / (time.monotonic() - start), "errors": errors}
