"""How a session reads: small messages one at a time, bursts in growing blocks, ``-b`` as a bound.

The fast path reads small messages through the event loop's own buffer and
switches to its own growing buffers for a burst, then back (``ends.py``); the
general path always reads into its own. ``-d -d -d`` says each block relayed,
so the block sizes show what each path read, through real relay processes.
"""

from __future__ import annotations

import os
import re
import socket
import time
from functools import partial

from kubectl_relay.engine.ends import SMALL_READ_MAX
from tests.conftest import scaled
from tests.engine.test_bridge import RelayPath, both  # noqa: F401 - the fixture
from tests.support import ThreadedServer, echo, free_port, log_lines, recv_all, relay_listening

BLOCK = re.compile(r"^transferred (\d+) bytes from (\d+) to (\d+)$")


def client_blocks(stderr: str) -> list[int]:
    """The sizes of the blocks read from the client (the first side a session logs)."""
    blocks = [match.groups() for line in log_lines(stderr, "I") if (match := BLOCK.match(line))]
    assert blocks, stderr
    client_fd = blocks[0][1]
    return [int(size) for size, read_from, _ in blocks if read_from == client_fd]


def sink(received: list[int], conn: socket.socket) -> None:
    """Upstream: count what arrives, then close."""
    while data := conn.recv(1 << 20):
        received.append(len(data))


def test_a_b_below_the_loops_read_bounds_every_read(both: RelayPath) -> None:  # noqa: F811
    payload = os.urandom(300_000)
    received: list[int] = []
    with ThreadedServer(partial(sink, received)) as server:
        listen = free_port()
        args = ["-d", "-d", "-d", "-b", "1000", f"TCP-LISTEN:{listen},fork",
                both.tcp(server.port)]
        with (
            relay_listening(args, listen) as relay,
            socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn,
        ):
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            recv_all(conn)
    sizes = client_blocks(relay.stderr_text)
    assert sum(sizes) == len(payload) == sum(received)
    assert max(sizes) == 1000  # full blocks, none larger


def test_a_burst_reads_in_large_blocks_and_small_messages_after_it_one_by_one(
    both: RelayPath,  # noqa: F811
) -> None:
    burst = os.urandom(24 << 20)
    chats = [b"ping %d\n" % i for i in range(10)]
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = ["-d", "-d", "-d", f"TCP-LISTEN:{listen},fork", both.tcp(server.port)]
        with (
            relay_listening(args, listen) as relay,
            socket.create_connection(("127.0.0.1", listen), timeout=scaled(30)) as conn,
        ):
            echoed = bytearray()

            def take(count: int) -> None:
                while len(echoed) < count:
                    chunk = conn.recv(1 << 20)
                    assert chunk, "the relay closed early"
                    echoed.extend(chunk)

            conn.sendall(burst[: 8 << 20])
            take(8 << 20)  # the first block's wait lets the kernel pile up the rest
            conn.sendall(burst[8 << 20 :])
            take(len(burst))
            for chat in chats:  # each alone: sent, echoed, then the next
                conn.sendall(chat)
                take(len(echoed) + len(chat))
                time.sleep(0.01)
    assert bytes(echoed) == burst + b"".join(chats)
    sizes = client_blocks(relay.stderr_text)
    assert sum(sizes) == len(burst) + sum(map(len, chats))
    # Larger than the event loop ever reads into its own buffer: our buffers, grown.
    assert max(sizes[: -len(chats)]) > SMALL_READ_MAX, sizes
    assert sizes[-len(chats) :] == [len(chat) for chat in chats]
