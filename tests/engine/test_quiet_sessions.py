"""``--quiet-sessions`` and ``--quiet-accepts``: ``-d -d`` without the notices per connection.

With ``--quiet-sessions`` a fork listener logs its accepts, its sessions no
notices; with ``--quiet-accepts`` the listener says ``listening on`` once and
nothing per accepted peer. Relay extensions for busy listeners whose log is
shipped somewhere (a relay pod's crosses the container runtime, the kubelet
and the API server to ``kubectl relay``): their warnings and errors are
still logged, at their level.
"""

from __future__ import annotations

import contextvars
import logging
import socket

import pytest

from kubectl_relay.engine import log
from tests.conftest import scaled
from tests.support import (
    ThreadedServer,
    echo,
    exchange,
    free_port,
    log_lines,
    relay_listening,
    wait_for_output,
)

#: What a session says at ``-d -d`` in socat's words, on either path.
SESSION_NOTICES = ("opening connection to", "successfully connected from", "starting data transfer",
                   "is at EOF")

#: The fast path (``bridge``) and the general path (``readbytes`` is per-block work).
PATHS = {
    "fast path": lambda port: f"TCP4-LISTEN:{port},fork,reuseaddr",
    "general path": lambda port: f"TCP4-LISTEN:{port},fork,reuseaddr,readbytes=1000000",
}


def served(first: str, port: int, upstream: int, *quiet: str, echoed: bool = True,
           logged: str = "accepting connection") -> str:
    """The ``-d -d`` log of a relay from ``first`` to ``upstream`` after two exchanges.

    ``logged``: what the log says twice once both exchanges were accepted.
    """
    with relay_listening(["-d", "-d", *quiet, first, f"TCP4:127.0.0.1:{upstream}"], port) as relay:
        for n in range(2):
            try:
                reply = exchange(port, b"ping %d" % n)
            except OSError:  # reset: ECONNRESET, or ENOTCONN if it came before our shutdown
                reply = b""
            assert reply == (b"ping %d" % n if echoed else b""), relay.stderr_text
        # Both exchanges accepted (the readiness probe's connection may be too).
        wait_for_output(relay, lambda _, err: err.count(logged) >= 2)
        assert relay.stop() == 143  # SIGTERM: the sessions end before the relay does
    return relay.stderr_text


@pytest.mark.parametrize("path", list(PATHS))
def test_sessions_say_nothing_but_the_listener_says_each_accept(path: str) -> None:
    port = free_port()
    with ThreadedServer(echo) as server:
        loud = served(PATHS[path](port), port, server.port)
        port = free_port()
        quiet = served(PATHS[path](port), port, server.port, "--quiet-sessions")
    for notice in SESSION_NOTICES:
        assert any(notice in line for line in log_lines(loud, "N")), (notice, loud)
        assert not any(notice in line for line in log_lines(quiet, "N")), (notice, quiet)
    # The listener's own notices stay: one accept per connection, and
    # "listening on" each time it listens again.
    accepts = [line for line in log_lines(quiet, "N") if line.startswith("accepting connection")]
    assert len(accepts) >= 2, quiet
    assert any(line.startswith("listening on") for line in log_lines(quiet, "N")), quiet


@pytest.mark.parametrize("path", list(PATHS))
def test_a_quiet_sessions_error_is_still_an_error(path: str) -> None:
    port, closed = free_port(), free_port()  # nothing listens on closed: the connect is refused
    stderr = served(PATHS[path](port), port, closed, "--quiet-sessions", echoed=False)
    refused = [line for line in log_lines(stderr, "E") if "Connection refused" in line]
    assert refused, stderr
    assert not any(notice in line for line in log_lines(stderr, "N") for notice in SESSION_NOTICES)


def test_children_shutup_lowers_first_then_quiet_drops_what_became_a_notice() -> None:
    port, closed = free_port(), free_port()
    first = f"TCP4-LISTEN:{port},fork,reuseaddr,children-shutup=2"
    stderr = served(first, port, closed, "--quiet-sessions", echoed=False)
    # Error - 2 = notice: dropped; the listener's notices are not the session's.
    assert not any("Connection refused" in line for line in stderr.splitlines()), stderr
    assert any(line.startswith("accepting connection") for line in log_lines(stderr, "N")), stderr


def test_a_quiet_session_makes_no_notice_records_but_still_its_warnings() -> None:
    """Off before any record is made (a mux pod's session would make six only to drop them)."""
    made: list[logging.LogRecord] = []
    previous_level = log.logger.level
    log.logger.setLevel(log.NOTICE)
    original = log.logger.makeRecord

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        record = original(*args, **kwargs)  # type: ignore[arg-type]
        made.append(record)
        return record

    def in_a_session() -> tuple[bool, bool]:
        log.quiet_session()
        log.logger.log(log.NOTICE, "opening connection to %s", "x")
        log.logger.warning("a warning")
        return log.logger.isEnabledFor(log.NOTICE), log.logger.isEnabledFor(log.WARNING)

    log.logger.makeRecord = counting  # type: ignore[method-assign]
    try:
        notices, warnings = contextvars.copy_context().run(in_a_session)
        assert (notices, warnings) == (False, True)
        assert [record.getMessage() for record in made] == ["a warning"]
        assert log.logger.isEnabledFor(log.NOTICE)  # the listener's context: notices on
    finally:
        del log.logger.makeRecord
        log.logger.setLevel(previous_level)


@pytest.mark.parametrize("path", list(PATHS))
def test_quiet_accepts_leave_one_listening_notice_and_the_sessions_own(path: str) -> None:
    port = free_port()
    with ThreadedServer(echo) as server:
        stderr = served(PATHS[path](port), port, server.port, "--quiet-accepts",
                        logged="starting data transfer")
    notices = log_lines(stderr, "N")
    assert [line for line in notices if line.startswith("listening on")] == [
        f"listening on AF=2 0.0.0.0:{port}"
    ], notices
    assert not any(line.startswith("accepting connection") for line in notices), notices
    # The sessions' notices are --quiet-sessions' business, not this option's.
    assert sum("starting data transfer" in line for line in notices) >= 2, notices


@pytest.mark.parametrize("path", list(PATHS))
def test_quiet_accepts_and_sessions_leave_the_listener_and_the_errors(path: str) -> None:
    port, closed = free_port(), free_port()  # nothing listens on closed: the connect is refused
    stderr = served(PATHS[path](port), port, closed, "--quiet-accepts", "--quiet-sessions",
                    echoed=False, logged="Connection refused")
    stopping = ("socat_signal", "exiting")  # the SIGTERM that ended the run
    assert [line for line in log_lines(stderr, "N") if not line.startswith(stopping)] == [
        f"listening on AF=2 0.0.0.0:{port}"
    ], stderr
    assert len([line for line in log_lines(stderr, "E") if "Connection refused" in line]) >= 2


def test_a_udp_listener_keeps_quiet_about_its_senders_too() -> None:
    """A syslog bridge's senders: ``UDP-LISTEN,fork`` with both options logs its listening
    notice and nothing per sender (it said ``accepting UDP connection`` for each)."""
    port = free_port()
    with ThreadedServer(echo) as server:
        argv = ["-d", "-d", "--quiet-accepts", "--quiet-sessions",
                f"UDP4-LISTEN:{port},fork", f"TCP4:127.0.0.1:{server.port}"]
        with relay_listening(argv, port, "udp") as relay:
            for n in range(2):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                    sender.settimeout(scaled(10))
                    sender.sendto(b"datagram %d" % n, ("127.0.0.1", port))
                    assert sender.recv(64) == b"datagram %d" % n
            assert relay.stop() == 143
    stopping = ("socat_signal", "exiting")
    assert [line for line in log_lines(relay.stderr_text, "N")
            if not line.startswith(stopping)] == [f"listening on UDP AF=2 0.0.0.0:{port}"], (
        relay.stderr_text)
