"""A relay the machine did not schedule for a moment still relays what came in time.

socat's ``-t`` ends a session once nothing was transferred for that long
after an EOF; socat waits in ``select()``, which reports a descriptor that
became ready over its timeout. An event loop may instead run its due timers
before it polls (uvloop does, every iteration): a relay process descheduled
in the middle of an iteration (a loaded machine) then saw its ``-t`` timer
expire before reading the reply that had reached its socket in time, and cut
the session: the client got a clean EOF without the reply. Under load this
made the forty-sessions test of ``test_bridge.py`` fail once, a truncated
echo reported as "got other bytes back".

Here the relay is stopped (``SIGSTOP``) at a moment it is busy with another
session's bulk transfer, not waiting in its poll, for longer than ``-t``,
while the upstream sends its reply; then it runs again. Before the fix this
lost the reply in about a third of the stops on the fast path.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kubectl_relay.engine.session import FAST_PATH_VARIABLE
from tests.conftest import scaled
from tests.support import free_port, recv_all, relay_listening

#: Stops that landed outside the relay's poll, each with a reply to deliver.
STOPS = 6
#: Sessions to try: a session that the relay ended before it was stopped (it
#: ran ``-t`` out while the test looked for a moment outside its poll: a
#: loaded machine) proves nothing and is not counted.
SESSIONS = 20
#: How often a stop may land in the poll before the test gives up (the relay
#: is busy with the bulk session, so most stops land outside it).
STOP_ATTEMPTS = 200
CLOSE_TIMEOUT = 0.5
#: Longer than ``-t``: the timer is due when the relay runs again.
STOPPED_FOR = CLOSE_TIMEOUT + 0.3
REPLY = b"the reply, sent while the relay was stopped\n" * 200


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _syscall(pid: int) -> str:
    """The system call ``pid`` is in (its number), or ``running`` (in user space)."""
    with open(f"/proc/{pid}/syscall") as f:
        return f.read().split()[0]


def _stop(pid: int) -> str:
    """SIGSTOP ``pid``, wait until it is stopped; the system call it stopped in."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + scaled(5)
    while _state(pid) != "T":
        assert time.monotonic() < deadline, f"process {pid} did not stop"
        time.sleep(0.001)
    return _syscall(pid)


def _stop_outside_poll(pid: int, poll_call: str) -> None:
    for _ in range(STOP_ATTEMPTS):
        if _stop(pid) != poll_call:
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.001)
    raise AssertionError(f"the relay was always in its poll ({STOP_ATTEMPTS} stops)")


def _ended(conn: socket.socket) -> bool:
    """Whether the relay already closed ``conn`` (its EOF or reset waits to be read)."""
    readable, _, _ = select.select([conn], [], [], 0)
    return bool(readable)


@contextmanager
def _bulk_session(listen: int, upstream: socket.socket) -> Iterator[None]:
    """A session pouring bytes through the relay, so that its loop is rarely idle."""
    done = threading.Event()
    with socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as client:
        far, _ = upstream.accept()
        with far:
            far.settimeout(scaled(10))

            def pour() -> None:
                block = b"x" * 65536
                while not done.is_set():
                    client.sendall(block)

            def drink() -> None:
                while not done.is_set() and far.recv(1 << 20):
                    pass

            threads = [threading.Thread(target=job, name=f"test-bulk-{job.__name__}")
                       for job in (pour, drink)]
            for thread in threads:
                thread.start()
            try:
                yield
            finally:
                done.set()
                for thread in threads:
                    thread.join(scaled(10))


@pytest.mark.parametrize("fast", ["1", "0"], ids=["fast", "general"])
def test_a_reply_that_came_in_time_is_relayed_after_the_relay_was_descheduled(
    fast: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAST_PATH_VARIABLE, fast)
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        upstream.settimeout(scaled(10))
        listen = free_port()
        args = ["-t", str(CLOSE_TIMEOUT), f"TCP-LISTEN:{listen},fork",
                f"TCP:127.0.0.1:{upstream.getsockname()[1]}"]
        with relay_listening(args, listen) as relay:
            pid = relay.proc.pid
            poll_call = _stop(pid)  # idle: waiting in its poll
            os.kill(pid, signal.SIGCONT)
            lost, stops = [], 0
            with _bulk_session(listen, upstream):
                for attempt in range(SESSIONS):
                    with socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as c:
                        far, _ = upstream.accept()
                        with far:
                            c.sendall(b"request")
                            c.shutdown(socket.SHUT_WR)
                            far.settimeout(scaled(10))
                            assert recv_all(far) == b"request"  # the relayed EOF: -t runs
                            _stop_outside_poll(pid, poll_call)
                            try:
                                if _ended(c):
                                    continue
                                stops += 1
                                far.sendall(REPLY)
                                far.shutdown(socket.SHUT_WR)
                                time.sleep(STOPPED_FOR)
                            finally:
                                os.kill(pid, signal.SIGCONT)
                            reply = recv_all(c)
                        if reply != REPLY:
                            lost.append((attempt, len(reply)))
                    if stops == STOPS:
                        break
    assert lost == [], f"(session, bytes of the reply received) for replies cut: {lost}"
    assert stops == STOPS, f"only {stops} of {SESSIONS} sessions were still open when stopped"
