"""A session that ends while the kernel still sends its reply: the reply is not lost.

The relay hands a reply to the client socket's kernel send queue (on loopback
it grows to megabytes) faster than a slow client reads it. Once the session
ends, closing that socket while the client still sends made Linux answer with
a reset, and the reset discarded the whole queue: the client saw a clean end
after a fraction of the reply. The relay now half-closes, reads and drops
what comes, and closes once the client has taken everything, or resets it
with an ``E`` line if it takes nothing for the bound (``transfer.Lingering``);
a TLS side lingers the same way. Each test runs a real relay process between
real loopback sockets; what is compared (bytes sent against bytes received)
does not depend on speed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import scaled
from tests.engine.test_data_in_flight import VARIANTS, Variant, logged
from tests.support import RelayProcess, ThreadedServer, free_port, relay_listening


@pytest.fixture(params=VARIANTS, ids=lambda variant: variant.name)
def variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Variant:
    """The fast path, the general path, and a ``-v`` run (general, traced)."""
    chosen: Variant = request.param
    monkeypatch.setenv("RELAY_FAST_PATH", "1" if chosen.path.fast else "0")
    return chosen


#: Less than the relay's kernel queue takes (about 4 MiB on loopback), so the
#: relay hands all of it over and its session ends while most is still queued.
REPLY_SIZE = 3 << 20
READ_RATE = 2 << 20
CLOSE_TIMEOUT = "0.25"


def ending_upstream(payload: bytes, ended: threading.Event) -> ThreadedServer:
    """Sends ``payload`` and its EOF, then waits for the relay to close: the session's end."""

    def handle(conn: socket.socket) -> None:
        if not conn.recv(64):
            return  # a probe
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(scaled(30))
        while conn.recv(64 * 1024):
            pass
        ended.set()

    return ThreadedServer(handle)


@contextlib.contextmanager
def requested(
    variant: Variant, upstream: int, *options: str
) -> Iterator[tuple[RelayProcess, socket.socket]]:
    """A relay (``-t 0.25``) to ``upstream``, and a client with a small window that asked."""
    listen = free_port()
    args = [*variant.options, *options, "-t", CLOSE_TIMEOUT,
            f"TCP-LISTEN:{listen},fork,reuseaddr", variant.path.tcp(upstream)]
    with relay_listening(args, listen) as relay, socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.settimeout(scaled(30))
        client.connect(("127.0.0.1", listen))
        client.sendall(b"GET /big\n")
        yield relay, client


def trickle(conn: socket.socket, stop: threading.Event) -> None:
    """Send a byte every 20 ms (at most 500) until ``stop`` or the connection is gone."""
    for _ in range(500):
        if stop.is_set():
            return
        try:
            conn.send(b".")
        except OSError:
            return
        time.sleep(0.02)


def test_a_slow_client_that_sends_after_the_end_gets_the_whole_reply(variant: Variant) -> None:
    """The session ends by ``-t`` with megabytes still queued for the client, which then sends:
    every byte arrives, and what the client sent is said as dropped."""
    payload = os.urandom(REPLY_SIZE)
    ended, done = threading.Event(), threading.Event()
    received = bytearray()
    with (
        ending_upstream(payload, ended) as server,
        requested(variant, server.port) as (relay, client),
    ):
        sender = threading.Thread(target=trickle, args=(client, done), name="test-trickle")
        began = time.monotonic()
        try:
            while data := client.recv(64 * 1024):
                received += data
                if ended.is_set() and sender.ident is None:
                    sender.start()  # the session has ended: send into its close
                ahead = len(received) / READ_RATE - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
        finally:
            done.set()
            if sender.is_alive():
                sender.join(scaled(30))
        assert sender.ident is not None, "the session had not ended before the reply did"
        relay.stop()
    assert len(received) == len(payload), f"{len(received)} of {len(payload)} bytes arrived"
    assert bytes(received) == payload
    for line in logged(relay.stderr_text, "E"):
        assert re.fullmatch(
            r"\d+ bytes for socket 2 \(fd \d+\) not delivered: the session had ended", line
        ), relay.stderr_text
    assert "Traceback" not in relay.stderr_text


def test_a_client_that_reads_nothing_is_reset_after_the_bound(variant: Variant) -> None:
    """A peer that takes nothing of what is queued after the end: the session still ends (after
    the bound, 5 s), with one ``E`` line naming the bytes left, and the client sees a reset."""
    payload = os.urandom(1 << 20)
    ended = threading.Event()
    with (
        ending_upstream(payload, ended) as server,
        requested(variant, server.port) as (relay, client),
    ):
        assert ended.wait(scaled(30)), "the session did not end"
        # Nothing read yet; wait for the relay to give up (a reset), bounded.
        reset = False
        deadline = time.monotonic() + scaled(30)
        while not reset and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                client.send(b".")
            except OSError:
                reset = True
        relay.stop()
    assert reset, f"the client was never reset:\n{relay.stderr_text}"
    errors = logged(relay.stderr_text, "E")
    left = [line for line in errors if "while closing" in line]
    assert len(left) == 1, relay.stderr_text
    found = re.fullmatch(
        r"(\d+) bytes for socket 1 \(fd \d+\) not delivered: nothing taken for 5s while closing",
        left[0],
    )
    assert found, left
    assert 0 < int(found.group(1)) <= len(payload)
    for line in set(errors) - set(left):
        assert re.fullmatch(
            r"\d+ bytes for socket 2 \(fd \d+\) not delivered: the session had ended", line
        ), relay.stderr_text
    assert "Traceback" not in relay.stderr_text


def test_a_stop_that_cuts_a_lingering_session_names_the_bytes_still_queued(
    variant: Variant,
) -> None:
    """A graceful stop's grace period runs out while an ended session waits for a client that
    reads nothing: the cut's reset discards the kernel's queue, so its line is the ``E`` form
    with those bytes, not "no bytes held"."""
    payload = os.urandom(1 << 20)
    ended = threading.Event()
    with (
        ending_upstream(payload, ended) as server,
        requested(variant, server.port, "--grace-period", "0.5") as (relay, _client),
    ):
        assert ended.wait(scaled(30)), "the session did not end"
        status = relay.stop()
        assert status == 128 + signal.SIGTERM, relay.stderr_text
    cut = [line for level in ("E", "W") for line in logged(relay.stderr_text, level)
           if "cut after" in line]
    assert len(cut) == 1, relay.stderr_text
    found = re.fullmatch(r"session with AF=2 127\.0\.0\.1:\d+ cut after the 0\.5s grace "
                         r"period: up to (\d+) bytes not delivered", cut[0])
    assert found, relay.stderr_text
    assert 0 < int(found.group(1)) <= len(payload)
    assert cut[0] in logged(relay.stderr_text, "E")
    assert "Traceback" not in relay.stderr_text


# -- TLS: the relay's TLS side lingers as a plain TCP one does --------------------------------

#: Slower than the TLS close's own bounded wait for the peer's end (2 s) would cover.
TLS_READ_RATE = 1 << 20


def slow_tls_client(port: int, ended: threading.Event) -> tuple[bytes, int]:
    """Ask over TLS, read the reply at ``TLS_READ_RATE`` through a 64 KiB window and, once the
    session has ended, send a byte every 20 ms meanwhile. What arrived, and the bytes sent after.

    One thread drives TLS over memory buffers: an SSL object is not for two threads at once.
    """
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(scaled(30))
        sock.connect(("127.0.0.1", port))

        def take() -> bool:
            sock.sendall(outgoing.read())
            data = sock.recv(64 * 1024)
            if data:
                incoming.write(data)
            else:
                incoming.write_eof()
            return bool(data)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                assert take(), "the relay closed during the handshake"
        tls.write(b"GET /big\n")
        sock.sendall(outgoing.read())
        received, sent_after, next_send = bytearray(), 0, 0.0
        began = time.monotonic()
        while True:
            try:
                chunk = tls.read(64 * 1024)
            except ssl.SSLWantReadError:
                try:
                    take()
                except ConnectionResetError:
                    break  # what the reset discarded is missing from the reply
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not chunk:
                break
            received += chunk
            if ended.is_set() and sent_after < 500 and time.monotonic() >= next_send:
                tls.write(b".")
                sock.sendall(outgoing.read())
                sent_after, next_send = sent_after + 1, time.monotonic() + 0.02
            ahead = len(received) / TLS_READ_RATE - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
    return bytes(received), sent_after


def test_a_slow_tls_client_that_sends_after_the_end_gets_the_whole_reply(
    server_pem: Path,
) -> None:
    """``OPENSSL-LISTEN`` in front: the session ends by ``-t`` while megabytes of records are
    still queued for the client, which reads them for longer than the TLS close's own wait
    and sends meanwhile. Every byte arrives."""
    payload = os.urandom(REPLY_SIZE)
    ended = threading.Event()
    listen = free_port()
    with ending_upstream(payload, ended) as server:
        args = ["-t", CLOSE_TIMEOUT,
                f"OPENSSL-LISTEN:{listen},fork,reuseaddr,cert={server_pem},verify=0",
                f"TCP:127.0.0.1:{server.port}"]
        with relay_listening(args, listen) as relay:
            received, sent_after = slow_tls_client(listen, ended)
            relay.stop()
    assert sent_after, "the session had not ended before the reply did"
    assert len(received) == len(payload), f"{len(received)} of {len(payload)} bytes arrived"
    assert received == payload
    for line in logged(relay.stderr_text, "E"):
        assert re.fullmatch(
            r"\d+ bytes for socket 2 \(fd \d+\) not delivered: the session had ended", line
        ), relay.stderr_text
    assert "Traceback" not in relay.stderr_text
