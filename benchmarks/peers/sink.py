"""Bulk sink: accept one connection, read it to EOF, report how much and when.

``python -m benchmarks.peers.sink [--tls CERT]`` prints ``{"port": N}`` once
listening, then ``{"bytes": B, "first": T1, "end": T2, "busy": F}`` with
times on ``CLOCK_MONOTONIC`` and ``F`` the sink's CPU time over the wall time
from first byte to EOF (near 1.0: the sink itself is the bottleneck).

Plain TCP is spliced through a pipe into ``/dev/null``: the data never comes
to user space, and the sink needs about half the CPU of ``recv_into`` a 1 MiB
buffer (measured here: 0.25 against 0.5 of a core at 6 GB/s). On a machine
with two cores, whatever the sink does not use is left to the relay. TLS has
to be decrypted, so a TLS sink reads into a 1 MiB buffer.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import time

from .common import CHUNK, emit, listen, now, server_tls_context

#: ``fcntl.F_SETPIPE_SZ`` (Linux), which Python 3.11's fcntl module does not name.
F_SETPIPE_SZ = 1031


class Meter:
    """Bytes, first-byte time and CPU use of one drain."""

    def __init__(self) -> None:
        self.total = 0
        self.first = self.first_cpu = 0.0

    def count(self, size: int) -> None:
        """Count ``size`` bytes received now."""
        if not self.total:
            self.first, self.first_cpu = now(), time.process_time()
        self.total += size

    def report(self) -> dict[str, float]:
        """The sink's answer, at EOF."""
        end = now()
        busy = (time.process_time() - self.first_cpu) / (end - self.first) if self.total else 0.0
        return {"bytes": self.total, "first": self.first, "end": end, "busy": busy}


def drain_into_buffer(conn: socket.socket) -> dict[str, float]:
    """Read to EOF into one reused 1 MiB buffer."""
    meter = Meter()
    view = memoryview(bytearray(CHUNK))
    while received := conn.recv_into(view):
        meter.count(received)
    return meter.report()


def drain_splice(conn: socket.socket) -> dict[str, float]:
    """Splice to EOF through a 1 MiB pipe into ``/dev/null``."""
    meter = Meter()
    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, CHUNK)
        while moved := os.splice(conn.fileno(), write_end, CHUNK):
            meter.count(moved)
            while moved:
                moved -= os.splice(read_end, devnull, moved)
        return meter.report()
    finally:
        for fd in (read_end, write_end, devnull):
            os.close(fd)


def main() -> int:
    """Serve one connection and report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.sink")
    parser.add_argument("--tls", metavar="CERT", help="terminate TLS with this PEM (cert+key)")
    args = parser.parse_args()
    with listen() as server:
        emit({"port": server.getsockname()[1]})
        conn, _ = server.accept()
    with conn:
        if not args.tls:
            report = drain_splice(conn)
        else:
            with server_tls_context(args.tls).wrap_socket(conn, server_side=True) as tls:
                report = drain_into_buffer(tls)
                # Answer the client's close_notify so that its unwrap() returns.
                tls.unwrap()
    emit(dict(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
