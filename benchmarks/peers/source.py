"""Bulk source: connect, send a number of bytes, half-close, wait for the peer to close.

``python -m benchmarks.peers.source PORT BYTES [--tls]`` prints
``{"start": T, "sent": B, "busy": F}``, ``T`` being the ``CLOCK_MONOTONIC``
time right after the connection (and the TLS handshake) was established, and
``F`` the CPU time the source used while sending over the wall time it took
(near 1.0: the source itself is the bottleneck). The sink's EOF time minus
``T`` is the transfer time.

A 1 MiB buffer of text is sent with ``sendall``: one copy per MiB, as cheap
for the CPU as a source in user space gets (``sendfile`` from the page cache
measured slower here).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import time

from .common import CHUNK, HOST, client_tls_context, emit, now, payload


def send(conn: socket.socket, total: int) -> None:
    """Send ``total`` bytes from one 1 MiB buffer."""
    view = memoryview(payload(CHUNK))
    left = total
    while left >= CHUNK:
        conn.sendall(view)
        left -= CHUNK
    if left:
        conn.sendall(view[:left])


def main() -> int:
    """Connect, send, report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.source")
    parser.add_argument("port", type=int)
    parser.add_argument("bytes", type=int)
    parser.add_argument("--tls", action="store_true", help="speak TLS (no verification)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    with socket.create_connection((HOST, args.port), timeout=args.timeout) as conn:
        if not args.tls:
            start, cpu = now(), time.process_time()
            send(conn, args.bytes)
            busy = (time.process_time() - cpu) / (now() - start)
            # Half-close and read until the peer closes, so nothing is reset under the data.
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
            emit({"start": start, "sent": args.bytes, "busy": busy})
            return 0
        with client_tls_context().wrap_socket(conn) as tls:
            start, cpu = now(), time.process_time()
            send(tls, args.bytes)
            busy = (time.process_time() - cpu) / (now() - start)
            version, cipher = tls.version(), tls.cipher()
            # close_notify, then the peer's: the TLS way of saying EOF. A peer that
            # just closes is fine too: the sink has counted everything already.
            with contextlib.suppress(ssl.SSLError, OSError):
                tls.unwrap()
    emit({
        "start": start, "sent": args.bytes, "busy": busy,
        "tls": version, "cipher": cipher and cipher[0],
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
