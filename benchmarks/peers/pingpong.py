"""Latency client: round trips of 1-byte messages on one connection.

``python -m benchmarks.peers.pingpong PORT COUNT [--warmup N]`` connects once,
sends one byte and waits for the one-byte echo, ``COUNT`` times after
``--warmup`` untimed ones, and prints ``{"median_us", "p99_us", ...}``.
Blocking calls, ``TCP_NODELAY`` and a process of its own keep the client's
share of each round trip small and the same for every candidate.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

from .common import HOST, emit


def round_trips(conn: socket.socket, count: int) -> list[int]:
    """Time ``count`` 1-byte round trips in nanoseconds."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        conn.send(b"x")
        if not conn.recv(1):
            raise ConnectionError("the echo connection closed during the test")
        samples.append(clock() - start)
    return samples


def main() -> int:
    """Connect, measure, report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.pingpong")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    with socket.create_connection((HOST, args.port), timeout=args.timeout) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        round_trips(conn, args.warmup)
        samples = round_trips(conn, args.count)
    micros = [ns / 1000 for ns in samples]
    cuts = statistics.quantiles(micros, n=100, method="inclusive")
    emit({
        "count": len(micros),
        "median_us": statistics.median(micros),
        "p90_us": cuts[89],
        "p99_us": cuts[98],
        "min_us": min(micros),
        "mean_us": statistics.fmean(micros),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
