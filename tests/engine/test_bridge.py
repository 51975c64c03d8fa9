"""The fast path (``bridge.py``) against the general path, through real relay processes.

``relay TCP-LISTEN:P,fork TCP:host:port`` runs its sessions on event-loop
protocols (``bridge.py``) unless ``RELAY_FAST_PATH=0`` sends them through
``session.py`` + ``transfer.py``. The behavioural tests below run on both,
with real sockets on loopback, to show that a user cannot tell them apart:

- ``fast``: the fast path, the loop connecting to the upstream by itself;
- ``fast-opener``: the fast path with an upstream option (``nodelay``), so the
  upstream is opened by the general opener and handed to the loop;
- ``general``: ``RELAY_FAST_PATH=0``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from kubectl_relay.engine import fastpath
from kubectl_relay.engine.addresses import parse_address
from kubectl_relay.engine.session import FAST_PATH_VARIABLE, Relay, RunSettings
from kubectl_relay.engine.trace import TraceSettings
from kubectl_relay.engine.transfer import TransferSettings
from tests.conftest import scaled
from tests.support import (
    RelayProcess,
    ThreadedServer,
    echo,
    exchange,
    free_port,
    log_lines,
    recv_all,
    recv_exactly,
    relay_listening,
    wait_for_output,
    wait_for_path,
    wait_for_port,
)

# -- the paths ------------------------------------------------------------------


@dataclass(frozen=True)
class RelayPath:
    """How a test's relay runs its sessions (see the module docstring)."""

    name: str
    fast: bool
    upstream_options: str = ""

    def tcp(self, port: int) -> str:
        """The ``TCP:`` upstream address for ``port`` on this path."""
        return f"TCP:127.0.0.1:{port}{self.upstream_options}"


FAST = RelayPath("fast", fast=True)
FAST_OPENER = RelayPath("fast-opener", fast=True, upstream_options=",nodelay")
GENERAL = RelayPath("general", fast=False)


def _select(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> RelayPath:
    path: RelayPath = request.param
    # The relay subprocess inherits os.environ: say which path explicitly, so
    # that a RELAY_FAST_PATH set around the test run changes nothing here.
    monkeypatch.setenv(FAST_PATH_VARIABLE, "1" if path.fast else "0")
    return path


@pytest.fixture(params=[FAST, FAST_OPENER, GENERAL], ids=lambda p: p.name)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> RelayPath:
    """Every path, the fast one with both ways of connecting upstream."""
    return _select(request, monkeypatch)


@pytest.fixture(params=[FAST, GENERAL], ids=lambda p: p.name)
def both(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> RelayPath:
    """The fast path and the general path (for upstreams without a TCP option)."""
    return _select(request, monkeypatch)


# -- helpers --------------------------------------------------------------------


@contextlib.contextmanager
def in_background(
    jobs: list[Callable[[], None]], timeout: float, name: str = "test-client"
) -> Iterator[None]:
    """Run ``jobs`` in threads while the block runs; then join them within ``timeout``.

    The first failure of a job is raised here, in the test's thread (pytest
    would only warn about an exception left in a thread).
    """
    failures: list[BaseException] = []
    lock = threading.Lock()

    def guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:
            with lock:
                failures.append(exc)

    threads = [
        threading.Thread(target=guarded, args=(job,), name=f"{name}-{index}")
        for index, job in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        deadline = time.monotonic() + scaled(timeout)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    if failures:
        raise failures[0]
    assert not stuck, f"threads still running after {timeout} s: {stuck}"


def run_threads(jobs: list[Callable[[], None]], timeout: float) -> None:
    """Run ``jobs`` in threads and wait for all of them (see ``in_background``)."""
    with in_background(jobs, timeout):
        pass


def send_and_close(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(payload)
    conn.shutdown(socket.SHUT_WR)


def echo_round_trip(port: int, payload: bytes) -> bytes:
    """Send ``payload`` and half-close while receiving the reply: echoes larger than buffers."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=scaled(30)) as conn,
        in_background([partial(send_and_close, conn, payload)], 30, name="test-sender"),
    ):
        return recv_all(conn)


def closed_by_peer(conn: socket.socket) -> bool:
    """Whether the relay closed ``conn``: EOF or a reset, not a timeout."""
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True


def vm_rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (``VmRSS`` of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def scrape(port: int) -> dict[str, int]:
    """``GET /metrics`` of a relay's ``--metrics`` endpoint, as name -> value."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=scaled(5)) as reply:
        text = reply.read().decode()
    return {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^(relay_\S+) (\d+)$", text, re.MULTILINE)
    }


def settled_metrics(port: int) -> dict[str, int]:
    """The counters once no session is active any more (sessions end just after the client's)."""
    deadline = time.monotonic() + scaled(5)
    counters = scrape(port)
    while counters["relay_sessions_active"] and time.monotonic() < deadline:
        time.sleep(0.02)
        counters = scrape(port)
    return counters


@contextlib.contextmanager
def held_open(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` client connections to ``port``, each checked with one echoed message."""
    with contextlib.ExitStack() as stack:
        conns = []
        for index in range(count):
            conn = stack.enter_context(
                socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
            )
            message = b"ping %d" % index
            conn.sendall(message)
            received = b""
            while len(received) < len(message):
                chunk = conn.recv(len(message) - len(received))
                assert chunk, "the session ended before its echo"
                received += chunk
            assert received == message
            conns.append(conn)
        yield conns


# -- 1. which runs take the fast path -----------------------------------------------

LISTEN = "TCP-LISTEN:0,fork,reuseaddr"
DEFAULTS = TransferSettings()


def is_eligible(
    first: str,
    second: str,
    settings: TransferSettings = DEFAULTS,
    tracing: bool = False,
) -> bool:
    return fastpath.eligible(parse_address(first), parse_address(second), settings, tracing)


@pytest.mark.parametrize(
    "second", ["TCP:127.0.0.1:80", "TCP4:127.0.0.1:80", "TCP6:[::1]:80", "UNIX-CONNECT:/x"]
)
def test_forking_tcp_listener_to_a_socket_upstream_is_eligible(second: str) -> None:
    assert is_eligible(LISTEN, second)
    assert is_eligible("TCP4-LISTEN:0,fork", second)
    assert is_eligible("TCP6-LISTEN:0,fork", second)
    # The acceptor takes a max-children slot before each accept.
    assert is_eligible("TCP-LISTEN:0,fork,max-children=3", second)


@pytest.mark.parametrize(
    ("first", "second", "settings", "tracing"),
    [
        pytest.param("TCP-LISTEN:0,reuseaddr", "TCP:127.0.0.1:80", DEFAULTS, False,
                     id="no-fork"),
        pytest.param(LISTEN, "TCP:127.0.0.1:80", DEFAULTS, True, id="tracing-v"),
        pytest.param("TCP-LISTEN:0,fork,accept-timeout=5", "TCP:127.0.0.1:80", DEFAULTS, False,
                     id="accept-timeout"),
        pytest.param("TCP-LISTEN:0,fork,crnl", "TCP:127.0.0.1:80", DEFAULTS, False,
                     id="crnl-first"),
        pytest.param(LISTEN, "TCP:127.0.0.1:80,crnl", DEFAULTS, False, id="crnl-second"),
        pytest.param(LISTEN, "TCP:127.0.0.1:80,cr", DEFAULTS, False, id="cr-second"),
        pytest.param(LISTEN, "TCP:127.0.0.1:80,readbytes=5", DEFAULTS, False, id="readbytes"),
        pytest.param("TCP-LISTEN:0,fork,ignoreeof", "TCP:127.0.0.1:80", DEFAULTS, False,
                     id="ignoreeof"),
        pytest.param(LISTEN, "OPENSSL:127.0.0.1:443,verify=0", DEFAULTS, False, id="openssl"),
        pytest.param(LISTEN, "EXEC:cat", DEFAULTS, False, id="exec"),
        pytest.param(LISTEN, "PIPE", DEFAULTS, False, id="pipe"),
        pytest.param("UNIX-LISTEN:/x,fork", "TCP:127.0.0.1:80", DEFAULTS, False,
                     id="unix-listener"),
        pytest.param("OPENSSL-LISTEN:0,fork,cert=c.pem", "TCP:127.0.0.1:80", DEFAULTS, False,
                     id="openssl-listener"),
        pytest.param(LISTEN, "TCP:127.0.0.1:80", TransferSettings(unidirectional="left-to-right"),
                     False, id="unidirectional-u"),
        pytest.param(LISTEN, "TCP:127.0.0.1:80", TransferSettings(unidirectional="right-to-left"),
                     False, id="unidirectional-U"),
    ],
)
def test_runs_that_need_the_general_path_are_not_eligible(
    first: str, second: str, settings: TransferSettings, tracing: bool
) -> None:
    assert not is_eligible(first, second, settings, tracing)


def test_a_dual_address_is_not_eligible() -> None:
    assert not is_eligible(LISTEN, "TCP:127.0.0.1:80!!TCP:127.0.0.1:81")


@pytest.mark.parametrize(
    ("second", "family", "expected"),
    [
        ("TCP:127.0.0.1:80", socket.AF_UNSPEC, ("127.0.0.1", 80, socket.AF_UNSPEC)),
        ("TCP:127.0.0.1:80", socket.AF_INET, ("127.0.0.1", 80, socket.AF_INET)),  # -4
        ("TCP4:127.0.0.1:80", socket.AF_UNSPEC, ("127.0.0.1", 80, socket.AF_INET)),
        ("TCP6:[::1]:80", socket.AF_UNSPEC, ("::1", 80, socket.AF_INET6)),
    ],
)
def test_direct_upstream_for_plain_tcp(
    second: str, family: int, expected: tuple[str, int, int]
) -> None:
    assert fastpath.direct_upstream(parse_address(second), family) == expected


@pytest.mark.parametrize(
    "second",
    [
        "TCP:127.0.0.1:80,nodelay",
        "TCP:127.0.0.1:80,connect-timeout=1",
        "TCP:127.0.0.1:http",
        "TCP:localhost:8080",  # names are looked up by the general opener
        "TCP4:[::1]:80",  # the general opener says why this cannot work
        "UNIX-CONNECT:/x",
    ],
)
def test_no_direct_upstream_with_options_a_name_or_another_kind(second: str) -> None:
    assert fastpath.direct_upstream(parse_address(second), socket.AF_UNSPEC) is None


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("1", True), ("0", False)])
def test_relay_fast_path_variable_switches_the_fast_path_off(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv(FAST_PATH_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(FAST_PATH_VARIABLE, value)
    relay = Relay(parse_address(LISTEN), parse_address("TCP:127.0.0.1:80"), RunSettings())
    assert relay._fast_path() is expected
    traced = Relay(
        parse_address(LISTEN),
        parse_address("TCP:127.0.0.1:80"),
        RunSettings(trace=TraceSettings(verbose=True)),
    )
    assert traced._fast_path() is False


# -- 2. a server that speaks first ----------------------------------------------------


def test_server_speaking_first_reaches_the_client(path: RelayPath) -> None:
    # Larger than one read: the first block arrives before the client side is
    # linked, the rest after.
    banner = os.urandom(200_000)
    payload = os.urandom(100_000)

    def speaks_first(conn: socket.socket) -> None:
        conn.sendall(banner)
        echo(conn)

    with ThreadedServer(speaks_first) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork", path.tcp(server.port)]
        with (
            relay_listening(args, listen),
            socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn,
        ):
            received = b""
            while len(received) < len(banner):
                chunk = conn.recv(len(banner) - len(received))
                assert chunk, f"EOF after {len(received)} bytes of the banner"
                received += chunk
            assert received == banner
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            assert recv_all(conn) == payload


# -- 3. data and EOF before the upstream exists ---------------------------------------


@pytest.mark.parametrize("size", [1, 300_000])
def test_early_data_and_eof_then_a_reply_after_the_eof(path: RelayPath, size: int) -> None:
    payload = os.urandom(size)
    seen: list[bytes] = []

    def answers_after_eof(conn: socket.socket) -> None:
        request = recv_all(conn)  # returns only at the relayed EOF
        seen.append(request)
        conn.sendall(b"got %d bytes, then EOF" % len(request))
        conn.shutdown(socket.SHUT_WR)

    with ThreadedServer(answers_after_eof) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork", path.tcp(server.port)]
        # connect + send + shutdown take microseconds: all of it is queued in
        # the accepted socket before the relay has accepted it or connected.
        with (
            relay_listening(args, listen),
            socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn,
        ):
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            reply = recv_all(conn)
    assert seen == [payload]
    assert reply == b"got %d bytes, then EOF" % size


def test_data_and_eof_wait_for_an_upstream_that_comes_up_later(both: RelayPath) -> None:
    """The client is done before the upstream even listens: the relay retries, then relays.

    ``retry`` is an upstream option, so the fast path opens the upstream with
    the general opener here (its retry loop), then hands it to the loop.
    """
    payload = os.urandom(50_000)
    seen: list[bytes] = []

    def answers_after_eof(conn: socket.socket) -> None:
        request = recv_all(conn)
        seen.append(request)
        conn.sendall(b"late but whole")
        conn.shutdown(socket.SHUT_WR)

    upstream = free_port()
    listen = free_port()
    args = [f"TCP-LISTEN:{listen},fork", f"TCP:127.0.0.1:{upstream},retry=50,interval=0.1"]
    with (
        relay_listening(args, listen) as relay,
        socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn,
    ):
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        # Refused attempts while the client's data and EOF wait. Waited for, not
        # slept: the port answers before the relay's event loop runs (start-up).
        wait_for_output(relay, lambda _stdout, stderr: "Connection refused" in stderr)
        with ThreadedServer(answers_after_eof, address=("127.0.0.1", upstream)):
            reply = recv_all(conn)
    assert seen == [payload]
    assert reply == b"late but whole"
    refusals = [line for line in log_lines(relay.stderr_text, "W") if "Connection refused" in line]
    assert refusals, relay.stderr_text
    assert log_lines(relay.stderr_text, "E") == []


# -- 4. backpressure ------------------------------------------------------------------

PAYLOAD_MIB = 64
#: Half the payload: a relay that read whatever the client sent while the
#: upstream stalls would grow by most of it (the client gets all of it out
#: during the stall); a bounded one grows by its read buffers, the block
#: being written and the ones its pool keeps (``engine/blocks.py``: two or
#: more of each size up to 4 MiB), 4 to 16 MiB measured.
RSS_GROWTH_LIMIT_KIB = 32 * 1024


def test_backpressure_bounds_memory_and_keeps_every_byte(path: RelayPath) -> None:
    payload = os.urandom(PAYLOAD_MIB << 20)
    stalling = threading.Event()
    stall_over = threading.Event()

    def slow_reader(conn: socket.socket) -> None:
        stalling.set()
        time.sleep(1.0)  # read nothing for a second: the relay must hold back
        stall_over.set()
        digest = hashlib.sha256()
        while data := conn.recv(1 << 20):
            digest.update(data)
        conn.sendall(digest.hexdigest().encode())
        conn.shutdown(socket.SHUT_WR)

    replies: list[bytes] = []

    sent = [0]  # bytes the client has handed to its socket so far

    def client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(30)) as conn:
            view = memoryview(payload)
            while sent[0] < len(payload):
                sent[0] += conn.send(view[sent[0] : sent[0] + (1 << 20)])
            conn.shutdown(socket.SHUT_WR)
            replies.append(recv_all(conn))

    with ThreadedServer(slow_reader) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork", path.tcp(server.port)]
        with relay_listening(args, listen) as relay:
            start_rss = vm_rss_kib(relay.proc.pid)
            with in_background([partial(client, listen)], 60):
                assert stalling.wait(scaled(10)), "the upstream was never connected"
                peak = start_rss
                while not stall_over.is_set():
                    peak = max(peak, vm_rss_kib(relay.proc.pid))
                    time.sleep(0.02)
                sent_during_stall = sent[0]
    growth = peak - start_rss
    assert growth < RSS_GROWTH_LIMIT_KIB, (
        f"the relay's RSS grew by {growth} KiB while the upstream was stalled "
        f"(the client had sent {sent_during_stall} bytes by then)"
    )
    assert replies == [hashlib.sha256(payload).hexdigest().encode()]


# -- 5. concurrent sessions -----------------------------------------------------------


def test_forty_concurrent_sessions_each_get_their_own_bytes_back(path: RelayPath) -> None:
    payloads = [os.urandom(1 << 20) for _ in range(40)]
    replies: dict[int, bytes] = {}
    started = threading.Barrier(len(payloads), timeout=scaled(30))

    def session(port: int, index: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(30)) as conn:
            started.wait()  # every session open at once
            # Send and receive at once: a 1 MiB echo does not fit in the buffers.
            sender = partial(send_and_close, conn, payloads[index])
            with in_background([sender], 30, name=f"test-sender-{index}"):
                replies[index] = recv_all(conn)

    with ThreadedServer(echo) as server:
        listen = free_port()
        # -t as long as the test may take: 120 threads on a loaded machine can
        # leave an echo thread unscheduled for longer than socat's 0.5 s after
        # the relayed EOF, and then the relay (as socat) rightly ends the
        # session and its echo is cut short. Sessions end at the echo's EOF.
        args = ["-t", str(scaled(60)), f"TCP-LISTEN:{listen},fork", path.tcp(server.port)]
        with relay_listening(args, listen):
            run_threads([partial(session, listen, i) for i in range(len(payloads))], timeout=60)
        assert server.connections == len(payloads)
    assert sorted(replies) == list(range(len(payloads)))
    for index, payload in enumerate(payloads):
        reply = replies[index]
        if reply != payload:
            how = "a cut-short echo" if payload.startswith(reply) else "other bytes"
            raise AssertionError(f"session {index} got {how}: {len(reply)} of {len(payload)} bytes")


def test_bursts_and_small_messages_on_one_connection_keep_every_byte(path: RelayPath) -> None:
    """Reads grow to megabytes in a burst and shrink back after it: bytes stay in order."""
    bursts = [os.urandom(12 << 20), os.urandom(9 << 20)]
    chats = [b"ping %d\n" % i for i in range(20)]
    received = bytearray()

    def reader(conn: socket.socket, wanted: int) -> None:
        while len(received) < wanted:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            received.extend(chunk)

    total = sum(map(len, bursts)) + sum(map(len, chats))
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork", path.tcp(server.port)]
        with (
            relay_listening(args, listen),
            socket.create_connection(("127.0.0.1", listen), timeout=scaled(30)) as conn,
            in_background([partial(reader, conn, total)], 60, name="test-reader"),
        ):
            conn.sendall(bursts[0])
            for chat in chats:  # small messages between bursts, each echoed alone
                conn.sendall(chat)
                time.sleep(0.01)
            conn.sendall(bursts[1])
    assert bytes(received) == bursts[0] + b"".join(chats) + bursts[1]


def test_running_out_of_descriptors_delays_sessions_not_fails_them(both: RelayPath) -> None:
    """With ``ulimit -n 40``, sessions beyond the limit wait in the backlog, as with socat.

    The general path once ended the whole relay with a traceback here (accept failing with
    EMFILE inside the task group of sessions), then both paths failed the sessions beyond
    the limit (the fast path reset them); now a peer is accepted once its session fits.
    """
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork", both.tcp(server.port)]
        with RelayProcess(args, open_files_limit=40) as relay:
            wait_for_port(listen)
            held: list[socket.socket] = []
            try:
                for _ in range(30):  # two descriptors per session: more than the limit
                    conn = socket.create_connection(("127.0.0.1", listen), timeout=scaled(10))
                    held.append(conn)
                    conn.sendall(b"x")
                # In order: each session that ends lets the next waiting peer in.
                for conn in held:
                    assert conn.recv(1) == b"x"
                    conn.close()
            finally:
                for conn in held:
                    conn.close()
            assert exchange(listen, b"after") == b"after"
            assert relay.stop() == 128 + signal.SIGTERM
    assert log_lines(relay.stderr_text, "E") == []
    # Not asserted: that the "open files limit (40) reached" warning comes. One CI
    # run (2026-12-06) served all 30 late, as above, without printing it, and local
    # runs always print it; why is open (issue 12's note). But once at most: it was
    # said again at every session that let the next peer in.
    assert relay.stderr_text.count("open files limit") <= 1, relay.stderr_text
    assert "Traceback" not in relay.stderr_text


# -- 6. upstream refuses ----------------------------------------------------------------


def test_refused_upstream_fails_only_its_session(path: RelayPath) -> None:
    closed = free_port()
    listen = free_port()
    metrics_port = free_port()
    args = ["--metrics", f"127.0.0.1:{metrics_port}", f"TCP-LISTEN:{listen},fork", path.tcp(closed)]
    with relay_listening(args, listen) as relay:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn:
                conn.shutdown(socket.SHUT_WR)  # nothing unread: a close, not a reset
                assert closed_by_peer(conn)
        with ThreadedServer(echo, address=("127.0.0.1", closed)):
            assert exchange(listen, b"now it works") == b"now it works"
        counters = settled_metrics(metrics_port)
    assert counters["relay_sessions_total"] == 4
    assert counters["relay_session_errors_total"] == 3
    assert counters["relay_sessions_active"] == 0
    assert relay.proc.returncode == 128 + signal.SIGTERM
    errors = log_lines(relay.stderr_text, "E")
    wording = re.compile(rf"^connect\(\d+, AF=2 127\.0\.0\.1:{closed}, 16\): Connection refused$")
    assert len(errors) == 3, relay.stderr_text
    assert all(wording.match(error) for error in errors), errors
    assert "Traceback" not in relay.stderr_text


# -- 7. timeouts --------------------------------------------------------------------


def test_idle_timeout_ends_an_idle_fork_session(path: RelayPath) -> None:
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = ["-T", "0.3", f"TCP-LISTEN:{listen},fork", path.tcp(server.port)]
        with relay_listening(args, listen) as relay:
            with socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as idle:
                began = time.monotonic()
                assert closed_by_peer(idle)  # the relay closed it, not the 10 s timeout
                elapsed = time.monotonic() - began
            assert 0.2 <= elapsed < scaled(3), elapsed
            assert relay.proc.poll() is None, "the listener must outlive the session"
            assert exchange(listen, b"still listening") == b"still listening"
    assert "Traceback" not in relay.stderr_text


def test_idle_timeout_counts_from_the_last_transfer(path: RelayPath) -> None:
    # A message every 0.15 s for over twice -T: the session outlives -T while it is
    # used, and ends once it is not.
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = ["-T", "0.5", f"TCP-LISTEN:{listen},fork", path.tcp(server.port)]
        with (
            relay_listening(args, listen),
            socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn,
        ):
            began = time.monotonic()
            for number in range(8):
                message = b"message %d" % number
                conn.sendall(message)
                assert recv_exactly(conn, len(message)) == message, f"after {number} messages"
                time.sleep(0.15)
            used_for = time.monotonic() - began
            last = time.monotonic()
            assert closed_by_peer(conn)
            idle_for = time.monotonic() - last
    assert used_for > 1.0, used_for  # twice -T: the session would have ended on the way
    assert 0.3 <= idle_for < scaled(3), idle_for


def test_close_timeout_ends_a_session_whose_upstream_never_answers(path: RelayPath) -> None:
    release = threading.Event()
    upstream_saw_eof = threading.Event()

    def silent(conn: socket.socket) -> None:
        recv_all(conn)  # until the relayed EOF; never answers, never closes
        upstream_saw_eof.set()
        release.wait(scaled(10))

    with ThreadedServer(silent) as server:
        listen = free_port()
        args = ["-t", "0.2", f"TCP-LISTEN:{listen},fork", path.tcp(server.port)]
        try:
            with (
                relay_listening(args, listen) as relay,
                socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn,
            ):
                conn.sendall(b"hello")
                conn.shutdown(socket.SHUT_WR)
                began = time.monotonic()
                assert closed_by_peer(conn)
                elapsed = time.monotonic() - began
                assert upstream_saw_eof.wait(scaled(5))
                assert elapsed < scaled(3), elapsed
                assert relay.proc.poll() is None
        finally:
            release.set()
    assert "Traceback" not in relay.stderr_text


# -- 8. range -------------------------------------------------------------------------


def test_range_refuses_a_peer_before_any_upstream_connection(path: RelayPath) -> None:
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork,range=127.0.0.2/32", path.tcp(server.port)]
        with relay_listening(args, listen) as relay:
            with socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn:
                client_port = conn.getsockname()[1]
                conn.sendall(b"let me in")
                assert closed_by_peer(conn)
            assert server.connections == 0
            # A peer inside the range is relayed by the same listener.
            with socket.create_connection(
                ("127.0.0.1", listen), timeout=scaled(10), source_address=("127.0.0.2", 0)
            ) as allowed:
                allowed.sendall(b"in range")
                allowed.shutdown(socket.SHUT_WR)
                assert recv_all(allowed) == b"in range"
            assert server.connections == 1
    warnings = log_lines(relay.stderr_text, "W")
    refusal = f"refusing connection from AF=2 127.0.0.1:{client_port} due to range option"
    assert refusal in warnings, relay.stderr_text
    assert log_lines(relay.stderr_text, "E") == []


# -- 9. metrics -----------------------------------------------------------------------


def test_metrics_count_fast_path_sessions_and_bytes(path: RelayPath) -> None:
    requests = [b"a" * 1000, b"b" * 20_000, b"c" * 300_000]

    def answer(conn: socket.socket) -> None:
        request = recv_all(conn)
        conn.sendall(request[::-1] + b"!")  # one byte more than asked: the directions differ
        conn.shutdown(socket.SHUT_WR)

    metrics_port = free_port()
    with ThreadedServer(answer) as server:
        listen = free_port()
        args = [
            "--metrics",
            f"127.0.0.1:{metrics_port}",
            f"TCP-LISTEN:{listen},fork",
            path.tcp(server.port),
        ]
        with relay_listening(args, listen):
            assert scrape(metrics_port)["relay_sessions_total"] == 0
            for request in requests:
                assert exchange(listen, request) == request[::-1] + b"!"
            counters = settled_metrics(metrics_port)
    assert counters["relay_sessions_total"] == 3
    assert counters["relay_sessions_active"] == 0
    assert counters["relay_session_errors_total"] == 0
    assert counters['relay_bytes_total{direction="left-to-right"}'] == sum(map(len, requests))
    assert counters['relay_bytes_total{direction="right-to-left"}'] == sum(
        len(request) + 1 for request in requests
    )


# -- 10. SIGTERM --------------------------------------------------------------------


def test_sigterm_without_grace_period_exits_143_and_closes_open_sessions(
    path: RelayPath,
) -> None:
    """``--grace-period 0``: socat's SIGTERM, at once (test_data_in_flight has the graceful one)."""
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = ["--grace-period", "0", f"TCP-LISTEN:{listen},fork", path.tcp(server.port)]
        with relay_listening(args, listen) as relay, held_open(listen, 3) as conns:
            assert relay.stop(signal.SIGTERM) == 128 + signal.SIGTERM
            for conn in conns:
                assert closed_by_peer(conn)
    assert "Traceback" not in relay.stderr_text
    assert log_lines(relay.stderr_text, "W") == [f"exiting on signal {int(signal.SIGTERM)}"]
    assert log_lines(relay.stderr_text, "E") == []


# -- 11. socat's notices --------------------------------------------------------------


def test_notice_lines_of_a_session(both: RelayPath) -> None:
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = ["-d", "-d", f"TCP-LISTEN:{listen},fork", both.tcp(server.port)]
        with (
            relay_listening(args, listen) as relay,
            socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn,
        ):
            client_port = conn.getsockname()[1]
            conn.sendall(b"hi")
            conn.shutdown(socket.SHUT_WR)
            assert recv_all(conn) == b"hi"
    notices = log_lines(relay.stderr_text, "N")
    expected = [
        rf"^accepting connection from AF=2 127\.0\.0\.1:{client_port} "
        rf"on AF=2 127\.0\.0\.1:{listen}$",
        rf"^opening connection to AF=2 127\.0\.0\.1:{server.port}$",
        r"^successfully connected from local address AF=2 127\.0\.0\.1:\d+$",
        r"^starting data transfer loop with FDs \[(\d+),\1\] and \[(\d+),\2\]$",
        r"^socket 1 \(fd \d+\) is at EOF$",
    ]
    positions = []
    for pattern in expected:
        found = [index for index, line in enumerate(notices) if re.match(pattern, line)]
        assert len(found) == 1, f"{pattern!r} in {notices}"
        positions.append(found[0])
    assert positions == sorted(positions), notices
    start = re.match(r"^starting data transfer loop with FDs \[(\d+),", notices[positions[3]])
    assert start is not None
    client_fd = start.group(1)
    assert notices[positions[4]] == f"socket 1 (fd {client_fd}) is at EOF"
    assert f"listening on AF=2 0.0.0.0:{listen}" in notices


# -- 12. UNIX upstream ------------------------------------------------------------------


def test_unix_connect_upstream(both: RelayPath, tmp_path: Path) -> None:
    socket_path = str(tmp_path / "upstream.sock")
    payload = os.urandom(2 << 20)
    with ThreadedServer(echo, family=socket.AF_UNIX, address=socket_path):
        wait_for_path(socket_path)
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork", f"UNIX-CONNECT:{socket_path}"]
        with relay_listening(args, listen):
            replies: list[bytes] = []

            def client() -> None:
                replies.append(echo_round_trip(listen, payload))

            run_threads([client, client], timeout=60)  # two sessions at once
            assert exchange(listen, b"small") == b"small"
    assert replies == [payload, payload]
