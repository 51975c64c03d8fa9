"""Idle-connection holder: open connections one by one, keep them open until told to stop.

``python -m benchmarks.peers.holder PORT COUNT`` opens ``COUNT`` connections,
each confirmed end to end by a 1-byte echo before the next is opened, then
prints ``{"open": N, "retries": R, "seconds": S}`` and holds them, idle,
until its stdin closes; then closes them and prints ``{"closed": N}``.

Confirming each connection before opening the next paces the client to the
server's speed: socat's listen backlog is 5 by default and a burst of
connects would overflow it, leaving SYNs to the kernel's 1 s retransmission.
"""

from __future__ import annotations

import argparse
import socket
import time

from .common import HOST, emit, now, wait_for_stdin_eof

#: Attempts per connection before giving up on the whole run.
ATTEMPTS = 5


def open_confirmed(port: int, timeout: float) -> socket.socket:
    """One connection whose echo came back."""
    conn = socket.create_connection((HOST, port), timeout=timeout)
    try:
        conn.sendall(b"x")
        if conn.recv(1) != b"x":
            raise EOFError("no echo")
    except BaseException:
        conn.close()
        raise
    return conn


def main() -> int:
    """Open, report, hold, close."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.holder")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    started = now()
    held: list[socket.socket] = []
    retries = 0
    try:
        for _ in range(args.count):
            for attempt in range(ATTEMPTS):
                try:
                    held.append(open_confirmed(args.port, args.timeout))
                    break
                except (OSError, EOFError):
                    if attempt == ATTEMPTS - 1:
                        raise
                    retries += 1
                    time.sleep(0.05 * (attempt + 1))
        emit({"open": len(held), "retries": retries, "seconds": now() - started})
        wait_for_stdin_eof()
    finally:
        for conn in held:
            conn.close()
    emit({"closed": len(held)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
