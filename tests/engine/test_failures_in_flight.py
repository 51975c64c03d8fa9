"""Data in flight when a session cannot go on: delivered if it can be, else said and reset.

Issue 12: an error on one direction once dropped what the relay held for
the other (up to 1 MiB on the fast path, a whole block on the general
path), and the client saw a clean end of stream; ``-T`` never ended a
session whose peer took nothing. Each test runs a real relay process
between real loopback sockets; the figures compared (bytes the relay read
for the client against bytes the client got) do not depend on the machine's
speed.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time

import pytest

from tests.conftest import scaled
from tests.engine.test_data_in_flight import VARIANTS, Variant, logged
from tests.support import ThreadedServer, free_port, relay_listening


@pytest.fixture(params=VARIANTS, ids=lambda variant: variant.name)
def variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Variant:
    """The fast path, the general path, and a ``-v`` run (general, traced)."""
    chosen: Variant = request.param
    monkeypatch.setenv("RELAY_FAST_PATH", "1" if chosen.path.fast else "0")
    return chosen

# -- -T with a peer that never reads -----------------------------------------------------

#: The most a flooding upstream sends (bounded; far more than every buffer on the way).
FLOOD_CHUNKS = 4096
FLOOD_CHUNK = 64 * 1024


def test_idle_timeout_ends_a_session_whose_peer_takes_nothing(variant: Variant) -> None:
    """socat's ``-T``: "nothing has happened for <timeout> seconds". A full write buffer is no
    activity: the session ends, says what it dropped, and resets the peers."""
    stopped = threading.Event()  # the upstream's send failed: the relay ended the session

    def flood(conn: socket.socket) -> None:
        conn.recv(64)
        try:
            for _ in range(FLOOD_CHUNKS):
                conn.sendall(b"y" * FLOOD_CHUNK)
        except OSError:
            stopped.set()

    with ThreadedServer(flood) as server:
        listen = free_port()
        args = [*variant.options, "-T", "1", f"TCP-LISTEN:{listen},fork,reuseaddr",
                variant.path.tcp(server.port)]
        with relay_listening(args, listen) as relay, socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            client.settimeout(scaled(30))
            client.connect(("127.0.0.1", listen))
            client.sendall(b"GET /endless\n")  # and never read
            assert stopped.wait(scaled(30)), "the session outlived -T with a peer taking nothing"
            reset = False
            try:
                while client.recv(1 << 20):
                    pass
            except ConnectionResetError:
                reset = True
    assert reset, f"bytes were dropped, yet the client saw a clean end:\n{relay.stderr_text}"
    errors = logged(relay.stderr_text, "E")
    assert len(errors) == 1, relay.stderr_text
    assert re.fullmatch(
        r"\d+ bytes for socket 1 \(fd \d+\) not delivered: nothing written for 1s", errors[0]
    ), errors
    assert "Traceback" not in relay.stderr_text


# -- an error on one direction ---------------------------------------------------------

REPLY_SIZE = 32 << 20
#: The client reads this much before the upstream resets: by then the relay
#: holds a good part of the reply for it (the client reads slowly).
READ_BEFORE_RESET = 256 * 1024
READ_RATE = 2 << 20
TRANSFERRED = re.compile(r"transferred (\d+) bytes from (\d+) to (\d+)")
FDS = re.compile(r"starting data transfer loop with FDs \[(\d+),\d+\] and \[(\d+),\d+\]")


def relayed_to_client(stderr: str) -> int:
    """Bytes the relay read from its upstream for the client (``-d -d -d`` block lines)."""
    found = FDS.search(stderr)
    assert found, stderr
    client_fd, upstream_fd = found.groups()
    return sum(
        int(count)
        for count, source, sink in TRANSFERRED.findall(stderr)
        if (source, sink) == (upstream_fd, client_fd)
    )


@pytest.mark.serial  # beside a busy worker its client once saw the reset before the data
def test_an_upstream_reset_still_delivers_what_was_read_for_the_client(variant: Variant) -> None:
    """The upstream resets mid-reply while the client still sends: every byte the relay had
    read for the client reaches it, and the failure is one ``E`` line."""
    payload = os.urandom(REPLY_SIZE)
    reset_now, reset_done = threading.Event(), threading.Event()

    def upstream(conn: socket.socket) -> None:
        if not conn.recv(64):
            return  # a probe
        try:
            for start in range(0, len(payload), 64 * 1024):
                if reset_now.is_set():
                    break
                conn.sendall(payload[start : start + 64 * 1024])
        except OSError:
            return
        reset_now.wait(scaled(30))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        reset_done.set()

    received = bytearray()
    with ThreadedServer(upstream) as server:
        listen = free_port()
        args = [*variant.options, "-d", "-d", "-d", f"TCP-LISTEN:{listen},fork,reuseaddr",
                variant.path.tcp(server.port)]
        with relay_listening(args, listen) as relay, socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            client.settimeout(scaled(30))
            client.connect(("127.0.0.1", listen))
            client.sendall(b"GET /big\n")
            trickle = threading.Thread(
                target=keep_sending, args=(client, reset_done), name="test-trickle"
            )
            trickle.start()
            try:
                began = time.monotonic()
                while data := client.recv(64 * 1024):
                    received += data
                    if len(received) >= READ_BEFORE_RESET:
                        reset_now.set()
                    ahead = len(received) / READ_RATE - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
            finally:
                reset_now.set()
                trickle.join(scaled(30))
            relay.stop()
    assert reset_done.is_set()
    relayed = relayed_to_client(relay.stderr_text)
    assert len(received) < len(payload), "the reply was whole: the reset came too late"
    assert (len(received), bytes(received)) == (relayed, payload[:relayed])
    # One failure, and at most what the client sent after it, said as lost on the way up.
    errors = logged(relay.stderr_text, "E")
    failures = [line for line in errors if "Connection reset by peer" in line]
    assert len(failures) == 1, relay.stderr_text
    assert re.fullmatch(r"(read|write)\(\d+, \d+\): Connection reset by peer", failures[0])
    for line in set(errors) - set(failures):
        assert re.fullmatch(
            r"\d+ bytes for socket 2 \(fd \d+\) not delivered: the transfer failed", line
        ), errors
    assert "Traceback" not in relay.stderr_text


def keep_sending(conn: socket.socket, reset_done: threading.Event) -> None:
    """Send a byte now and then until a few after the upstream's reset (the relay's writes to
    the upstream then fail), or until the relay closes the connection."""
    after = 0
    while after < 5:
        if reset_done.is_set():
            after += 1
        try:
            conn.send(b".")
        except OSError:
            return
        time.sleep(0.02)
