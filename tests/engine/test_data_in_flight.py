"""No byte in flight is lost: slow readers after a half-close, stopped upstreams, stopping.

Each test runs a real relay process between real loopback sockets and
compares a SHA-256 of everything the client received with what the server
sent. The figures that matter (how many bytes arrive) do not depend on the
machine's speed: a relay that keeps its rules delivers every byte however
slowly the client reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.conftest import RELAY, SOCAT, requires_socat, scaled
from tests.engine.test_bridge import FAST, GENERAL, RelayPath
from tests.support import (
    ThreadedServer,
    free_port,
    recv_all,
    relay_listening,
    wait_for_port,
)

# -- how a test's relay runs its sessions --------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A path of the engine, and the global options that choose it."""

    path: RelayPath
    options: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return " ".join((self.path.name, *self.options))


#: The fast path, the general path, and a run the fast path does not take
#: (``-v`` traces every block) though the fast path would be on.
VARIANTS = [Variant(FAST), Variant(GENERAL), Variant(FAST, ("-v",))]


@pytest.fixture(params=VARIANTS, ids=lambda variant: variant.name)
def variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Variant:
    chosen: Variant = request.param
    monkeypatch.setenv("RELAY_FAST_PATH", "1" if chosen.path.fast else "0")
    return chosen


def logged(stderr: str, level: str) -> list[str]:
    """The relay's log lines of ``level``, found anywhere: a ``-v`` trace shares stderr
    and need not end in a newline before the next log line."""
    pattern = rf"\d{{4}}/\d\d/\d\d \d\d:\d\d:\d\d relay\[\d+\] {level} ([^\n]*)"
    return re.findall(pattern, stderr)


# -- slow readers ---------------------------------------------------------------------

REPLY_SIZE = 8 << 20
#: Slow enough that the relay stops reading its upstream (backpressure) for
#: longer than ``-t`` at a time: its 1 MiB write buffer drains in about 0.4 s.
READ_RATE = 2 << 20
CLOSE_TIMEOUT = "0.25"


def replier(payload: bytes) -> ThreadedServer:
    """A server that reads a request until EOF, then sends ``payload`` and closes.

    An empty request (a probe that connects and closes) gets no reply.
    """

    def handle(conn: socket.socket) -> None:
        if recv_all(conn):
            conn.sendall(payload)

    return ThreadedServer(handle)


def slow_request(port: int, rate: int, chunk: int = 64 * 1024) -> tuple[int, str]:
    """Send a request, half-close, read the reply at ``rate`` bytes a second: (size, SHA-256)."""
    digest, received = hashlib.sha256(), 0
    with socket.socket() as conn:
        # A small receive window, so the client's kernel does not soak up the reply.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, chunk)
        conn.settimeout(scaled(30))
        conn.connect(("127.0.0.1", port))
        conn.sendall(b"GET /big\n")
        conn.shutdown(socket.SHUT_WR)
        began = time.monotonic()
        while data := conn.recv(chunk):
            digest.update(data)
            received += len(data)
            ahead = received / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
    return received, digest.hexdigest()


def test_half_closed_session_delivers_a_large_reply_to_a_slow_reader(variant: Variant) -> None:
    payload = os.urandom(REPLY_SIZE)
    with replier(payload) as server:
        listen = free_port()
        args = [*variant.options, "-t", CLOSE_TIMEOUT,
                f"TCP-LISTEN:{listen},fork,reuseaddr", variant.path.tcp(server.port)]
        with relay_listening(args, listen) as relay:
            received, digest = slow_request(listen, READ_RATE)
    assert (received, digest) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert "Traceback" not in relay.stderr_text


# -- many half-closed sessions at once -------------------------------------------------

#: Sessions of the half-close stress, run ``HALF_CLOSE_CONCURRENCY`` at a time.
HALF_CLOSE_SESSIONS = 300
HALF_CLOSE_CONCURRENCY = 40
#: Reply sizes: small ones, ones about the 128 KiB where read buffers become
#: mappings, and ones larger than the 1 MiB write buffer of a side.
HALF_CLOSE_SIZES = (1, 4_000, 65_536, 131_071, 131_072, 131_073, 300_000, 1_500_000)


def streaming_replier() -> ThreadedServer:
    """A server that starts its reply while the request still comes, then waits for EOF.

    The request's first line is ``SIZE SEED``; the reply is ``SIZE`` bytes
    made from ``SEED``, sent as soon as that line is read, so that the
    client's half-close reaches the relay while the reply is under way.
    """

    def handle(conn: socket.socket) -> None:
        head = b""
        while b"\n" not in head and (chunk := conn.recv(64)):
            head += chunk
        if b"\n" not in head:
            return  # a probe that connects and closes
        size, seed = map(int, head.split(b"\n", 1)[0].split())
        conn.sendall(random.Random(seed).randbytes(size))
        recv_all(conn)  # the rest of the request, up to the client's EOF

    return ThreadedServer(handle)


def half_closed_exchange(port: int, number: int) -> str:
    """One session: a request, a half-close, the whole reply read (slowly for one in three).

    Returns "" when the reply is whole, else what went wrong.
    """
    size = HALF_CLOSE_SIZES[number % len(HALF_CLOSE_SIZES)]
    slow = number % 3 == 0
    expected = hashlib.sha256(random.Random(number).randbytes(size)).hexdigest()
    digest, received = hashlib.sha256(), 0
    with socket.socket() as conn:
        if slow:  # a small window: the relay's write buffer, not the kernel, holds the reply
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        conn.settimeout(scaled(30))  # a stalled session fails the test, it does not hang it
        conn.connect(("127.0.0.1", port))
        conn.sendall(b"%d %d\n" % (size, number) + b"x" * (number % 5000))
        conn.shutdown(socket.SHUT_WR)
        try:
            while data := conn.recv(16 * 1024 if slow else 256 * 1024):
                digest.update(data)
                received += len(data)
                if slow:
                    time.sleep(0.001)
        except OSError as exc:
            return f"session {number}: {exc!r} after {received} of {size} bytes"
    if (received, digest.hexdigest()) != (size, expected):
        return f"session {number}: {received} of {size} bytes, digest {digest.hexdigest()[:12]}"
    return ""


def test_many_half_closed_sessions_each_get_their_whole_reply(variant: Variant) -> None:
    """Issue 12: a client half-closes while its reply is still on the way, hundreds of times.

    A stress of about 7,000 such sessions once left about 13 unfinished on
    the fast path. The stalls reproduced on 2026-12-06 all came from the
    clients' 4 KiB socket buffers (the kernel's loopback retransmission
    timer backing off to tens of seconds, on socat 1.8 as often as on the
    relay); with ordinary buffers none stalled in 7,000 sessions. This keeps
    the shape of that stress in the suite: replies of every size about the
    buffer thresholds, one reader in three slow, ``-t`` generous so that
    only a stall or a loss can fail it.
    """
    with streaming_replier() as server:
        listen = free_port()
        args = [*variant.options, "-t", "10", f"TCP-LISTEN:{listen},fork,reuseaddr",
                variant.path.tcp(server.port)]
        with (
            relay_listening(args, listen) as relay,
            ThreadPoolExecutor(HALF_CLOSE_CONCURRENCY, thread_name_prefix="test-client") as pool,
        ):
            failures = [
                failure
                for failure in pool.map(
                    partial(half_closed_exchange, listen), range(HALF_CLOSE_SESSIONS)
                )
                if failure
            ]
    assert failures == []
    assert logged(relay.stderr_text, "E") == []
    assert "Traceback" not in relay.stderr_text


# -- TLS: a client that only writes --------------------------------------------------

TLS_TRANSFER = 100_000
TLS_RUNS = 50


#: The sink starts reading this late: the TLS server holds the bytes unread
#: meanwhile, as a busy server does, which is when a reset destroys them.
SINK_DELAY = 0.3


class DigestSink(ThreadedServer):
    """A slow TCP server that keeps the length and SHA-256 of every connection's bytes."""

    def __init__(self) -> None:
        self.received: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        super().__init__(self._take)

    def _take(self, conn: socket.socket) -> None:
        time.sleep(SINK_DELAY)
        data = recv_all(conn)
        with self.lock:
            self.received.append((len(data), hashlib.sha256(data).hexdigest()))

    def __enter__(self) -> DigestSink:
        super().__enter__()
        return self

    def wait_for(self, count: int) -> list[tuple[int, str]]:
        deadline = time.monotonic() + scaled(10)
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        with self.lock:
            return list(self.received)


def tls_server_command(kind: str, port: int, pem: Path, sink: int) -> list[str]:
    """A forking TLS server that writes each connection's plaintext to ``sink`` (one-way)."""
    listen = f"OPENSSL-LISTEN:{port},fork,reuseaddr,cert={pem},verify=0"
    target = f"TCP:127.0.0.1:{sink}"
    if kind == "socat":
        assert SOCAT is not None
        return [SOCAT, "-u", listen, target]
    return [*RELAY, "-u", listen, target]


def send_through(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
        conn.sendall(payload)


@pytest.mark.serial  # beside a busy worker, sessions were once missing at its sink's end
@pytest.mark.parametrize("server_kind", ["relay", pytest.param("socat", marks=requires_socat)])
def test_a_one_way_tls_client_delivers_every_byte_every_time(
    server_kind: str, server_pem: Path
) -> None:
    """relay -u TCP-LISTEN,fork OPENSSL:...: each session's bytes all reach the TLS server."""
    with DigestSink() as sink:
        tls_port = free_port()
        server = subprocess.Popen(
            tls_server_command(server_kind, tls_port, server_pem, sink.port),
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(tls_port)
            listen = free_port()
            args = ["-u", f"TCP-LISTEN:{listen},fork,reuseaddr", f"OPENSSL:127.0.0.1:{tls_port},verify=0"]
            payloads = [os.urandom(TLS_TRANSFER) for _ in range(TLS_RUNS)]
            with relay_listening(args, listen) as client:
                for payload in payloads:
                    send_through(listen, payload)
                received = sink.wait_for(TLS_RUNS)
        finally:
            server.terminate()
            server_errors = server.communicate(timeout=scaled(10))[1].decode(errors="replace")
    expected = sorted((len(p), hashlib.sha256(p).hexdigest()) for p in payloads)
    short = [length for length, _ in received if length != TLS_TRANSFER]
    assert sorted(received) == expected, f"short transfers: {short}; server said:\n{server_errors}"
    assert "Traceback" not in client.stderr_text


# -- stopping on SIGTERM ----------------------------------------------------------------

DOWNLOAD_SIZE = 4 << 20
#: A download far longer than the tests that cut it (8 s at ``READ_RATE``).
LONG_DOWNLOAD_SIZE = 16 << 20


class SlowDownload:
    """A client reading a reply through the relay at ``rate`` bytes a second, in a thread."""

    def __init__(self, port: int, rate: int) -> None:
        self.port, self.rate = port, rate
        self.received = 0
        self.digest = ""
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-download")

    def _run(self) -> None:
        try:
            with socket.socket() as conn:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                conn.settimeout(scaled(30))
                conn.connect(("127.0.0.1", self.port))
                conn.sendall(b"GET /big\n")
                conn.shutdown(socket.SHUT_WR)
                digest, began = hashlib.sha256(), time.monotonic()
                while data := conn.recv(64 * 1024):
                    digest.update(data)
                    self.received += len(data)
                    self.started.set()
                    ahead = self.received / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
                self.digest = digest.hexdigest()
        except BaseException as exc:
            self.error = exc
        finally:
            self.started.set()

    def __enter__(self) -> SlowDownload:
        self.thread.start()
        assert self.started.wait(scaled(10)), "no byte of the download arrived"
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(scaled(30))
        assert not self.thread.is_alive(), "the download never ended"


def wait_until_refused(port: int) -> None:
    """Wait until connecting to ``port`` is refused: the relay closed its listener."""
    deadline = time.monotonic() + scaled(5)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=scaled(5)).close()
        except ConnectionRefusedError:
            return
        except ConnectionResetError:
            pass  # queued in the backlog as the listener closed: refused next time
        assert time.monotonic() < deadline, "the listener still accepts after SIGTERM"
        time.sleep(0.05)


def test_sigterm_lets_a_running_download_finish_and_refuses_new_peers(variant: Variant) -> None:
    payload = os.urandom(DOWNLOAD_SIZE)
    with replier(payload) as server:
        listen = free_port()
        args = [*variant.options, f"TCP-LISTEN:{listen},fork,reuseaddr", variant.path.tcp(server.port)]
        with relay_listening(args, listen) as relay:
            with SlowDownload(listen, READ_RATE) as download:
                relay.proc.send_signal(signal.SIGTERM)
                wait_until_refused(listen)  # at once, while the download goes on
                assert download.received < len(payload), "the download ended before the signal"
            status = relay.wait()
    assert download.error is None
    assert (download.received, download.digest) == (
        len(payload), hashlib.sha256(payload).hexdigest()
    )
    assert status == 128 + signal.SIGTERM
    assert logged(relay.stderr_text, "E") == []
    assert logged(relay.stderr_text, "W") == [f"exiting on signal {int(signal.SIGTERM)}"]


@pytest.mark.parametrize(
    ("grace_period", "second_signal"),
    [
        ("0.5", None),  # the grace period runs out
        # A grace period far longer than the test: only the second signal can end the run.
        ("3600", signal.SIGTERM),
        ("3600", signal.SIGINT),
    ],
    ids=["grace-period-ends", "second-sigterm", "then-sigint"],
)
def test_a_session_still_running_at_the_end_of_a_stop_is_cut_with_a_line(
    variant: Variant, grace_period: str, second_signal: int | None
) -> None:
    payload = os.urandom(LONG_DOWNLOAD_SIZE)
    with replier(payload) as server:
        listen = free_port()
        args = [*variant.options, "--grace-period", grace_period,
                f"TCP-LISTEN:{listen},fork,reuseaddr", variant.path.tcp(server.port)]
        with (
            relay_listening(args, listen) as relay,
            SlowDownload(listen, READ_RATE) as download,
        ):
            relay.proc.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            ended_before_the_second_signal = None
            if second_signal is not None:
                wait_until_refused(listen)
                ended_before_the_second_signal = relay.proc.poll()
                relay.proc.send_signal(second_signal)
            status = relay.wait()
            # What a rare failure (once in R34: a reset, no cut line) needs to be told apart.
            seen = (f"{download.received} bytes received; relay ended "
                    f"{time.monotonic() - stopped_at:.2f}s after the first SIGTERM, status "
                    f"{ended_before_the_second_signal} before the second signal")
    assert status == 128 + signal.SIGTERM
    assert download.received < len(payload)
    # A reset, not a clean end: the client can tell that the download is short.
    assert isinstance(download.error, ConnectionResetError), download.error
    # A line for each session cut: an E line when the relay or its kernel held
    # bytes for it at that instant (the reset discards the kernel's send queue),
    # a W line when its peer had taken everything. The download is short either
    # way, as asserted above; wait_until_refused's probe may have become a
    # session too.
    cut = [line for level in ("E", "W") for line in logged(relay.stderr_text, level)
           if "cut after" in line]
    assert cut and len(logged(relay.stderr_text, "E")) <= 1, (seen, relay.stderr_text)
    for line in cut:
        assert re.fullmatch(rf"session with AF=2 127\.0\.0\.1:\d+ cut after the {grace_period}s "
                            r"grace period(: up to \d+ bytes not delivered| \(no bytes held\))",
                            line), cut
    assert "Traceback" not in relay.stderr_text


def test_sigterm_ends_a_relay_that_does_not_listen_at_once(tmp_path: Path) -> None:
    # One session, not a service: nothing to drain for, so SIGTERM ends it as
    # socat (the grace period would keep it 3600 s: the wait below is shorter).
    proc = subprocess.Popen(
        [*RELAY, "--grace-period", "3600", "-d", "-d", f"PTY,link={tmp_path / 'tty'},rawer",
         "SYSTEM:cat"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + scaled(20)
        stderr = b""
        while b"starting data transfer loop" not in stderr:
            assert time.monotonic() < deadline and proc.poll() is None, stderr
            stderr += os.read(proc.stderr.fileno(), 4096) if proc.stderr else b""
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=scaled(20))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM
    assert b"cut after" not in stderr + rest


# -- a stopped upstream -----------------------------------------------------------------

#: A server process (so that the test can stop it with SIGSTOP): per connection,
#: read one request line, then send SIZE bytes of a fixed pattern and close.
UPSTREAM_PROGRAM = """
import socket, sys, threading
size = int(sys.argv[1])
payload = bytes(range(256)) * (size // 256)
server = socket.create_server(("127.0.0.1", 0), backlog=128)
print(server.getsockname()[1], flush=True)
def serve(conn):
    with conn:
        conn.makefile("rb").readline()
        conn.sendall(payload)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""
STOPPED_SESSIONS = 20
#: Larger than what the kernel's buffers absorb (about 4 MiB): the relay holds the rest.
STOPPED_REPLY = 6 << 20
#: Each client reads its reply this fast once it comes (see ``READ_RATE``).
STOPPED_READ_RATE = READ_RATE
STOP_SECONDS = 3.0


@contextlib.contextmanager
def stoppable_upstream() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The upstream process and its port."""
    process = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM_PROGRAM, str(STOPPED_REPLY)], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        yield process, int(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def request_and_read(port: int, results: list[str], lock: threading.Lock) -> None:
    """One request line (no half-close: the server's EOF ends the reply), the reply read at
    ``STOPPED_READ_RATE``; appends its SHA-256."""
    digest, received = hashlib.sha256(), 0
    with socket.socket() as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # see slow_request
        conn.settimeout(scaled(30))
        conn.connect(("127.0.0.1", port))
        conn.sendall(b"GET /\n")
        began = None
        while data := conn.recv(64 * 1024):
            began = began or time.monotonic()
            digest.update(data)
            received += len(data)
            ahead = received / STOPPED_READ_RATE - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
    with lock:
        results.append(digest.hexdigest())


@pytest.mark.parametrize("program", ["relay", pytest.param("socat", marks=requires_socat)])
def test_sessions_survive_an_upstream_stopped_for_seconds(variant: Variant, program: str) -> None:
    """The upstream stops (SIGSTOP) while requests wait, then answers them all at once."""
    if program == "socat" and variant != VARIANTS[0]:
        pytest.skip("socat runs once, as the reference")
    expected = hashlib.sha256(bytes(range(256)) * (STOPPED_REPLY // 256)).hexdigest()
    results: list[str] = []
    lock = threading.Lock()
    with stoppable_upstream() as (upstream, upstream_port):
        listen = free_port()
        args = ["-t", CLOSE_TIMEOUT,
                f"TCP-LISTEN:{listen},fork,reuseaddr", variant.path.tcp(upstream_port)]
        command = [*RELAY, *variant.options, *args] if program == "relay" else [str(SOCAT), *args]
        with tempfile.TemporaryFile() as stderr:
            relay = subprocess.Popen(command, stderr=stderr)
            try:
                wait_for_port(listen)
                upstream.send_signal(signal.SIGSTOP)
                clients = [
                    threading.Thread(target=request_and_read, args=(listen, results, lock))
                    for _ in range(STOPPED_SESSIONS)
                ]
                for client in clients:
                    client.start()
                time.sleep(STOP_SECONDS)
                upstream.send_signal(signal.SIGCONT)
                for client in clients:
                    client.join(scaled(30))
            finally:
                relay.terminate()
                relay.wait(scaled(10))
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace")
    assert results == [expected] * STOPPED_SESSIONS, errors
    assert "Traceback" not in errors
