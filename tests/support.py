"""Real peers for engine tests: relay subprocesses and small loopback servers.

Everything here stops by itself: servers are context managers that join their
threads, and relay processes are terminated (then killed) on exit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import random
import re
import resource
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import TracebackType

from kubectl_relay.engine.muxing import Channel, MuxConnection, StreamsCarrier
from tests.conftest import RELAY, scaled

#: The ports ``free_port`` hands out: below the kernel's ephemeral range (32768 and up by
#: default), from which every connect() takes a source port, so that a port free a moment
#: ago is not some client's by the time a relay binds it (under load, a test's listener
#: was once refused so); below Kubernetes' NodePorts (30000-32767), which kube-proxy
#: intercepts while the local cluster runs; above socat's test suite's (20000 and up, 700
#: per shard: ``tests/socat_suite``).
TEST_PORTS = range(26000, 30000)
#: The last ports ``free_port`` handed out, which it does not hand out again: a test that
#: asks for two before it binds either could get one port twice (a relay's --metrics
#: port and its listener were once the same, and the second bind failed).
_RECENT_PORTS: collections.deque[int] = collections.deque(maxlen=500)


def free_port(family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> int:
    """A port of ``TEST_PORTS`` that was free a moment ago on loopback (and not handed out
    among the last few hundred)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    for _ in range(1000):
        port = random.choice(TEST_PORTS)
        if port in _RECENT_PORTS:
            continue
        with socket.socket(family, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue  # in use, or in TIME_WAIT: another one
            _RECENT_PORTS.append(port)
            return port
    raise RuntimeError(f"no free port among {TEST_PORTS}")


def is_listening(port: int, protocol: str = "tcp") -> bool:
    """Whether a socket listens (TCP) or is bound (UDP) on ``port``, from /proc/net.

    Reading the kernel's table instead of connecting keeps the probe from
    being accepted as a session by a relay that accepts only one peer.
    """
    wanted_state = "0A" if protocol == "tcp" else "07"  # TCP_LISTEN / TCP_CLOSE (bound UDP)
    for table in (f"/proc/net/{protocol}", f"/proc/net/{protocol}6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == wanted_state:
                return True
    return False


def wait_for_port(port: int, protocol: str = "tcp", timeout: float = 10.0) -> None:
    """Wait until something listens on ``port``."""
    deadline = time.monotonic() + scaled(timeout)
    while not is_listening(port, protocol):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {protocol} port {port}")
        time.sleep(0.02)


def wait_for_path(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)


#: The ``-t`` of every relay these helpers start without one. socat's default, 0.5 s, ends a
#: session that has seen one EOF as soon as the other side says nothing for that long, and on
#: a loaded machine a peer that is still echoing (a thread here, cat, socat) sometimes does:
#: the reply then came back short (R35: 49,152 of 200,000 bytes). Tests of ``-t`` itself pass
#: it (test_relay_behaviour.py's half-close and close-timeout tests).
PATIENT_CLOSE_TIMEOUT = "10"


def patient(args: Sequence[str]) -> list[str]:
    """``args`` with ``-t`` set to ``PATIENT_CLOSE_TIMEOUT`` unless they set it."""
    if any(arg.startswith("-t") for arg in args):
        return list(args)
    return ["-t", PATIENT_CLOSE_TIMEOUT, *args]


class RelayProcess:
    """``relay ARGS`` as a user runs it: a pipe on stdin, stdout and stderr kept in files.

    Without ``-t`` in ``args`` it gets ``PATIENT_CLOSE_TIMEOUT``, unless ``as_given``
    (a command under test, whose ``-t`` or lack of one is the point).

    Files rather than pipes for the output: nobody reads a pipe while the
    test runs, and a ``-v`` trace would fill it and stall the relay.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        stdin: int | None = subprocess.PIPE,
        open_files_limit: int | tuple[int, int] | None = None,
        as_given: bool = False,
    ) -> None:
        self.args = list(args) if as_given else patient(args)
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115 - closed by wait()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by wait()
        for sink in (self._stdout, self._stderr):
            # The relay's writes share this file offset with our reads (wait_for_output
            # seeks to 0 and reads while it runs): without O_APPEND a line it wrote
            # between our seek and our read landed at offset 0, over its first lines.
            fcntl.fcntl(sink, fcntl.F_SETFL, fcntl.fcntl(sink, fcntl.F_GETFL) | os.O_APPEND)

        def limit_open_files() -> None:  # in the child, before exec (``ulimit -n``)
            if isinstance(open_files_limit, int):
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files_limit, open_files_limit))
            elif open_files_limit is not None:  # (soft, hard): ``ulimit -Sn`` under a hard limit
                resource.setrlimit(resource.RLIMIT_NOFILE, open_files_limit)

        self.proc = subprocess.Popen(
            [*RELAY, *self.args],
            stdin=stdin,
            stdout=self._stdout,
            stderr=self._stderr,
            preexec_fn=limit_open_files if open_files_limit is not None else None,  # noqa: PLW1509
        )
        self.stderr_text = ""
        self.stdout_bytes = b""
        self._collected = False

    def __enter__(self) -> RelayProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the relay if it still runs; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait()

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the relay to end, then collect what it wrote."""
        if self._collected:
            return self.proc.returncode
        try:
            self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self._collected = True
        for sink in (self._stdout, self._stderr):
            sink.seek(0)
        self.stdout_bytes = self._stdout.read()
        self.stderr_text = self._stderr.read().decode(errors="replace")
        self._stdout.close()
        self._stderr.close()
        return self.proc.returncode


def run_relay(
    args: Sequence[str], *, input: bytes = b"", timeout: float = 10.0
) -> subprocess.CompletedProcess[bytes]:
    """Run ``relay ARGS`` to completion with ``input`` on stdin (``-t``: see ``patient``)."""
    return subprocess.run(
        [*RELAY, *patient(args)], input=input, capture_output=True, timeout=scaled(timeout), check=False
    )


class ThreadedServer:
    """A loopback TCP/UNIX/UDP server running ``handler(conn)`` per connection in threads."""

    def __init__(
        self,
        handler: Callable[[socket.socket], None],
        *,
        family: int = socket.AF_INET,
        kind: int = socket.SOCK_STREAM,
        address: str | tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.handler = handler
        self.kind = kind
        self.sock = socket.socket(family, kind)
        self.sock.bind(address)
        if kind == socket.SOCK_STREAM:
            self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._serve, name="test-server")
        self.connections = 0

    @property
    def port(self) -> int:
        port: int = self.address[1]
        return port

    def __enter__(self) -> ThreadedServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._acceptor.join()
        for thread in self._threads:
            thread.join(timeout=scaled(5))
        self.sock.close()

    def _serve(self) -> None:
        if self.kind != socket.SOCK_STREAM:
            while not self._stop.is_set():
                self.handler(self.sock)
            return
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._handle, args=(conn,), name="test-conn")
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(scaled(10))
            with contextlib.suppress(OSError):
                self.handler(conn)


def echo(conn: socket.socket) -> None:
    """Echo everything back, then half-close after the peer's EOF."""
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def late_reply(conn: socket.socket) -> None:
    """Read to EOF, then answer: the server's side of a half-close from the client."""
    received = b""
    while data := conn.recv(65536):
        received += data
    conn.sendall(b"got " + str(len(received)).encode())


def udp_echo(sock: socket.socket) -> None:
    """Echo one datagram back to its sender (times out quietly)."""
    with contextlib.suppress(TimeoutError):
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)


class PeakCounter:
    """An upstream handler that pauses, then echoes, noting the most connections held at once.

    The pause is long enough for a second session to overlap, were the relay
    to admit one beyond its ``max-children``.
    """

    def __init__(self, pause: float = 0.05) -> None:
        self.pause = pause
        self.active = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, conn: socket.socket) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.pause)
            while data := conn.recv(65536):
                conn.sendall(data)
        finally:
            # Counted out before the half-close: the relay cannot end this session
            # (and admit the next) before our EOF, but a loaded test process may run
            # this thread again only after the next session's handler has started.
            with self._lock:
                self.active -= 1
        conn.shutdown(socket.SHUT_WR)


def exchange_at_once(port: int, count: int) -> list[bytes]:
    """``count`` clients exchanging ``b"0"``, ``b"1"``... with ``port`` at once; the replies."""
    replies: list[bytes] = []
    threads = [
        threading.Thread(target=lambda i=i: replies.append(exchange(port, b"%d" % i)))
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=scaled(30))
    return replies


def exchange(
    port: int, payload: bytes, host: str = "127.0.0.1", timeout: float | None = None
) -> bytes:
    """Send ``payload``, half-close, and return everything received until EOF.

    ``timeout`` bounds each socket call (default: 10 s, scaled).
    """
    with socket.create_connection((host, port), timeout=timeout or scaled(10)) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        return recv_all(conn)


def tls_exchange(port: int, payload: bytes, context: ssl.SSLContext, host: str = "127.0.0.1",
                 server_hostname: str | None = "localhost") -> bytes:
    """Send ``payload`` over TLS and read back as many bytes (or until EOF).

    Python's TLS 1.3 cannot half-close portably, so the answer is read by size.
    """
    raw = socket.create_connection((host, port), timeout=scaled(10))
    with raw, context.wrap_socket(raw, server_hostname=server_hostname) as conn:
        conn.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def recv_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def recv_exactly(conn: socket.socket, count: int) -> bytes:
    """``count`` bytes from ``conn``, or fewer if it closed first."""
    data = b""
    while len(data) < count and (chunk := conn.recv(count - len(data))):
        data += chunk
    return data


@contextlib.contextmanager
def relay_listening(
    args: Sequence[str], port: int, protocol: str = "tcp"
) -> Iterator[RelayProcess]:
    """A relay process whose first address listens on ``port``, ready to accept."""
    with RelayProcess(args) as relay:
        try:
            wait_for_port(port, protocol)
        except TimeoutError:
            relay.stop()
            raise AssertionError(f"relay never listened; stderr:\n{relay.stderr_text}") from None
        yield relay


#: One socat-format log line: ``2026/11/24 05:06:40 relay[19280] W exiting on signal 15``.
LOG_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d relay\[\d+\] ([DINWEF]) (.*)$")


def log_lines(stderr: str, level: str) -> list[str]:
    """The messages of the socat-format log lines at ``level`` in ``stderr``."""
    found = []
    for line in stderr.splitlines():
        match = LOG_LINE.match(line)
        if match and match.group(1) == level:
            found.append(match.group(2))
    return found


def wait_for_output(
    relay: RelayProcess,
    predicate: Callable[[bytes, str], bool],
    timeout: float = 10.0,
) -> tuple[bytes, str]:
    """The relay's stdout and stderr so far, once ``predicate(stdout, stderr)`` holds.

    For relays that run on (listeners, receivers): what they wrote is read
    from their output files while they run. AssertionError after ``timeout``.
    """
    deadline = time.monotonic() + scaled(timeout)
    while True:
        relay._stdout.seek(0)
        relay._stderr.seek(0)
        stdout, stderr = relay._stdout.read(), relay._stderr.read().decode(errors="replace")
        if predicate(stdout, stderr):
            return stdout, stderr
        if time.monotonic() > deadline:
            raise AssertionError(f"the relay never got there; stdout {stdout!r}, stderr:\n{stderr}")
        time.sleep(0.05)


@contextlib.asynccontextmanager
async def mux_client(
    port: int, on_open: Callable[[Channel], None] | None = None
) -> AsyncIterator[MuxConnection]:
    """A mux connection to a relay's ``port`` from the connecting side, the plugin's.

    ``on_open`` gets the streams the relay opens (``MUX-LISTEN``); without
    it, the connection only opens streams (``MUX-ACCEPT``).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = MuxConnection(StreamsCarrier(reader, writer), listener=False, on_open=on_open)
    runner = asyncio.ensure_future(connection.run())
    try:
        yield connection
    finally:
        connection.close("the test is over")
        await runner


async def read_stream(channel: Channel) -> bytes:
    """Everything until a mux stream's end (its half-close); ``ConnectionResetError`` if reset."""
    received = b""
    async with asyncio.timeout(scaled(20)):
        while data := await channel.read():
            received += data
    return received


async def mux_exchange(connection: MuxConnection, payload: bytes, label: str = "") -> bytes:
    """Send ``payload`` on a new stream, half-close, read the whole reply."""
    channel = await connection.open(label)
    try:
        await channel.write(payload)
        await channel.end()
        return await read_stream(channel)
    finally:
        await channel.aclose()
