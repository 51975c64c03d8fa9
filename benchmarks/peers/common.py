"""Helpers shared by the peer programs: payload, clock, JSON lines, sockets."""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import time

#: One read or write of the bulk peers. Large enough that per-call overhead
#: of Python is negligible next to the kernel's copy (1 MiB per syscall).
CHUNK = 1 << 20

#: The loopback address every benchmark uses.
HOST = "127.0.0.1"

_LINE = b"kubectl-relay benchmark payload: the quick brown fox jumps over the lazy dog 0123456789\n"


def payload(size: int = CHUNK) -> bytes:
    """``size`` bytes of printable text lines.

    Text rather than zeros so that ``-v`` tracing formats real lines the way
    it would for a typical protocol, and nothing on the path can shortcut it.
    """
    repeats = size // len(_LINE) + 1
    return (_LINE * repeats)[:size]


def now() -> float:
    """``CLOCK_MONOTONIC`` in seconds: one clock for all processes of the machine.

    Peers in different processes report times on this clock, so the harness
    can subtract a source's start from a sink's end.
    """
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def emit(message: dict[str, object]) -> None:
    """Write one JSON line on stdout for the harness, unbuffered."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def listen(backlog: int = 1024, port: int = 0) -> socket.socket:
    """A listening loopback TCP socket on ``port`` (0: one the kernel chose)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((HOST, port))
    server.listen(backlog)
    return server


def server_tls_context(cert_file: str) -> ssl.SSLContext:
    """A TLS server context for a combined certificate and key PEM file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file)
    return context


def client_tls_context() -> ssl.SSLContext:
    """A TLS client context that trusts anything (the benchmark's own certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_for_stdin_eof() -> None:
    """Block until the harness closes our stdin: its way of saying "stop now"."""
    while os.read(0, 4096):
        pass
