"""socat-format log lines: golden lines with a fixed clock, levels, destinations."""

from __future__ import annotations

import calendar
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_relay.engine import log
from kubectl_relay.engine.cli import default_progname
from kubectl_relay.engine.errors import UsageError
from kubectl_relay.engine.log import (
    DEBUG,
    ERROR,
    FATAL,
    INFO,
    NOTICE,
    WARNING,
    configure,
    level_from_d_count,
    level_from_d_number,
    level_letter,
    logger,
)

#: 2026/11/24 10:00:00 UTC plus 123456789 ns.
NOON_NS = calendar.timegm((2026, 11, 24, 10, 0, 0)) * 1_000_000_000 + 123_456_789
PID = os.getpid()


def fixed_clock(nanoseconds: int = NOON_NS) -> log.Clock:
    return lambda: nanoseconds


@pytest.fixture(autouse=True)
def utc_and_clean_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the golden timestamps; the logger is reset afterwards."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    log.reset()
    monkeypatch.undo()
    time.tzset()


# -- levels --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "level"),
    [(0, WARNING), (1, WARNING), (2, NOTICE), (3, INFO), (4, DEBUG), (9, DEBUG)],
)
def test_level_from_d_count(count: int, level: int) -> None:
    # socat 1.8.1 socat.c: each -d sets the level to 4 - count; warnings by default.
    assert level_from_d_count(count) == level


@pytest.mark.parametrize(
    ("number", "level"),
    [(-1, FATAL), (0, ERROR), (1, WARNING), (2, NOTICE), (3, INFO), (4, DEBUG)],
)
def test_level_from_d_number(number: int, level: int) -> None:
    assert level_from_d_number(number) == level


@pytest.mark.parametrize(
    ("levelno", "letter"),
    [
        (DEBUG, "D"),
        (INFO, "I"),
        (NOTICE, "N"),
        (WARNING, "W"),
        (ERROR, "E"),
        (FATAL, "F"),
        (5, "D"),
        (22, "I"),
        (35, "W"),
        (60, "F"),
    ],
)
def test_level_letter(levelno: int, letter: str) -> None:
    assert level_letter(levelno) == letter


@pytest.mark.parametrize(
    ("argv0", "progname"),
    [
        ("socat", "socat"),
        ("/usr/bin/socat", "socat"),
        ("./socat", "socat"),
        ("relay", "relay"),
        ("/usr/local/bin/relay", "relay"),
        ("/work/main/kubectl_relay/engine/__main__.py", "relay"),
        ("socat1", "relay"),
        ("/usr/bin/socat/x", "relay"),
        ("", "relay"),
    ],
)
def test_default_progname(argv0: str, progname: str) -> None:
    assert default_progname(argv0) == progname


# -- golden lines --------------------------------------------------------------------

PEERS = ("AF=2 127.0.0.1:5555", "AF=2 127.0.0.1:8080")


@pytest.mark.parametrize(
    ("options", "clock_ns", "expected"),
    [
        (
            {},
            NOON_NS,
            f"2026/11/24 10:00:00 relay[{PID}] N accepting connection from "
            "AF=2 127.0.0.1:5555 on AF=2 127.0.0.1:8080\n",
        ),
        (
            {"microseconds": True},
            NOON_NS,
            f"2026/11/24 10:00:00.123456 relay[{PID}] N accepting connection from "
            "AF=2 127.0.0.1:5555 on AF=2 127.0.0.1:8080\n",
        ),
        (
            # Microseconds are cut, not rounded (socat: tv_nsec / 1000).
            {"microseconds": True},
            NOON_NS - 123_456_789 + 999_999_999,
            f"2026/11/24 10:00:00.999999 relay[{PID}] N accepting connection from "
            "AF=2 127.0.0.1:5555 on AF=2 127.0.0.1:8080\n",
        ),
        (
            {"microseconds": True},
            NOON_NS - 123_456_789 + 1_000,
            f"2026/11/24 10:00:00.000001 relay[{PID}] N accepting connection from "
            "AF=2 127.0.0.1:5555 on AF=2 127.0.0.1:8080\n",
        ),
        (
            {"hostname": True},
            NOON_NS,
            f"2026/11/24 10:00:00 node-a relay[{PID}] N accepting connection from "
            "AF=2 127.0.0.1:5555 on AF=2 127.0.0.1:8080\n",
        ),
        (
            {"hostname": True, "microseconds": True, "progname": "socat"},
            NOON_NS,
            f"2026/11/24 10:00:00.123456 node-a socat[{PID}] N accepting connection from "
            "AF=2 127.0.0.1:5555 on AF=2 127.0.0.1:8080\n",
        ),
    ],
)
def test_golden_line(
    options: dict[str, object],
    clock_ns: int,
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOSTNAME", "node-a")
    settings: dict[str, object] = {"level": NOTICE, "progname": "relay", **options}
    configure(clock=fixed_clock(clock_ns), **settings)  # type: ignore[arg-type]
    logger.log(NOTICE, "accepting connection from %s on %s", *PEERS)
    assert capsys.readouterr().err == expected


def test_every_level_letter(capsys: pytest.CaptureFixture[str]) -> None:
    configure(level=DEBUG, progname="relay", clock=fixed_clock())
    logger.debug("d")
    logger.info("i")
    logger.log(NOTICE, "n")
    logger.warning("w")
    logger.error("e")
    logger.critical("f")
    prefix = f"2026/11/24 10:00:00 relay[{PID}]"
    assert capsys.readouterr().err == "".join(
        f"{prefix} {letter} {letter.lower()}\n" for letter in "DINWEF"
    )


def test_hostname_from_uname_without_hostname_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Man page -lh: "HOSTNAME or the value retrieved with uname() if HOSTNAME is not set".
    monkeypatch.delenv("HOSTNAME", raising=False)
    configure(level=WARNING, progname="relay", hostname=True, clock=fixed_clock())
    logger.warning("w")
    assert capsys.readouterr().err == (
        f"2026/11/24 10:00:00 {os.uname().nodename} relay[{PID}] W w\n"
    )


def test_message_is_cut_at_socat_buffer_size(capsys: pytest.CaptureFixture[str]) -> None:
    configure(level=WARNING, progname="relay", clock=fixed_clock())
    logger.warning("%s", "x" * 1000)
    prefix = f"2026/11/24 10:00:00 relay[{PID}] W "
    assert capsys.readouterr().err == prefix + "x" * (512 - len(prefix)) + "\n"


def test_message_text_is_printed_as_is(capsys: pytest.CaptureFixture[str]) -> None:
    # socat prints its "running on ...\n" debug message with the newline, then its own.
    configure(level=DEBUG, progname="relay", clock=fixed_clock())
    logger.debug("running on %s version %s\n", "Linux", "#1")
    assert capsys.readouterr().err == (
        f"2026/11/24 10:00:00 relay[{PID}] D running on Linux version #1\n\n"
    )


# -- levels that are off cost nothing ------------------------------------------------


class Exploding:
    """An argument that fails the test if anybody formats it."""

    formatted = 0

    def __str__(self) -> str:
        Exploding.formatted += 1
        return "formatted"


def test_levels_below_the_threshold_are_not_formatted(capsys: pytest.CaptureFixture[str]) -> None:
    configure(level=WARNING, progname="relay", clock=fixed_clock())
    Exploding.formatted = 0
    logger.log(NOTICE, "peer %s", Exploding())
    logger.info("peer %s", Exploding())
    logger.debug("peer %s", Exploding())
    assert Exploding.formatted == 0
    assert not logger.isEnabledFor(NOTICE)
    assert logger.isEnabledFor(WARNING)
    logger.warning("peer %s", Exploding())
    assert Exploding.formatted == 1
    assert capsys.readouterr().err == f"2026/11/24 10:00:00 relay[{PID}] W peer formatted\n"


# -- configure is repeatable and replaces its setup ----------------------------------


def test_configure_again_replaces_the_setup(capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        configure(level=NOTICE, progname="relay", clock=fixed_clock())
    configure(level=INFO, progname="socat", microseconds=True, clock=fixed_clock())
    logger.info("once")
    assert capsys.readouterr().err == f"2026/11/24 10:00:00.123456 socat[{PID}] I once\n"
    assert len(logger.handlers) == 1
    assert log.current_progname() == "socat"


def test_engine_lines_do_not_reach_the_root_logger(caplog: pytest.LogCaptureFixture) -> None:
    configure(level=NOTICE, progname="relay", clock=fixed_clock())
    with caplog.at_level(logging.DEBUG):
        logger.warning("mine only")
    assert caplog.records == []


def test_reset_restores_propagation() -> None:
    configure(level=NOTICE, progname="socat", clock=fixed_clock())
    log.reset()
    assert logger.propagate
    assert logger.handlers == []
    assert logger.level == logging.NOTSET
    assert log.current_progname() == "relay"


# -- destinations ----------------------------------------------------------------------


def test_log_file_appends_and_stderr_stays_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "relay.log"
    path.write_text("earlier line\n")
    configure(level=NOTICE, progname="relay", file=str(path), clock=fixed_clock())
    logger.log(NOTICE, "to the file")
    log.reset()  # closes the file
    assert path.read_text() == (
        f"earlier line\n2026/11/24 10:00:00 relay[{PID}] N to the file\n"
    )
    assert capsys.readouterr().err == ""


def test_log_file_and_stderr_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "relay.log"
    configure(level=NOTICE, progname="relay", file=str(path), stderr=True, clock=fixed_clock())
    logger.error("both")
    log.reset()
    line = f"2026/11/24 10:00:00 relay[{PID}] E both\n"
    assert path.read_text() == line
    assert capsys.readouterr().err == line


def test_unopenable_log_file_is_a_usage_error_and_keeps_the_old_setup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(level=NOTICE, progname="relay", clock=fixed_clock())
    missing = tmp_path / "no-such-dir" / "relay.log"
    with pytest.raises(UsageError) as caught:
        configure(level=DEBUG, progname="other", file=str(missing))
    assert str(caught.value) == f'cannot open log file "{missing}": No such file or directory'
    logger.log(NOTICE, "still here")
    logger.info("still filtered")
    assert capsys.readouterr().err == f"2026/11/24 10:00:00 relay[{PID}] N still here\n"


def test_unknown_syslog_facility_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as caught:
        configure(level=NOTICE, progname="relay", syslog_facility="bogus")
    assert str(caught.value) == 'unknown syslog facility "bogus"'


@pytest.fixture
def syslog_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for /dev/log."""
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setattr(log, "SYSLOG_SOCKET", str(path))
        yield sock


@pytest.mark.parametrize(
    ("facility", "level", "priority", "letter"),
    [
        ("", NOTICE, 3 * 8 + 5, "N"),  # "-ly": daemon, notice
        ("daemon", WARNING, 3 * 8 + 4, "W"),
        ("local3", NOTICE, 19 * 8 + 5, "N"),
        ("user", ERROR, 1 * 8 + 3, "E"),
        ("auth", FATAL, 4 * 8 + 2, "F"),  # socat maps fatal to LOG_CRIT
        ("local7", INFO, 23 * 8 + 6, "I"),
    ],
)
def test_syslog_datagram(
    syslog_socket: socket.socket,
    capsys: pytest.CaptureFixture[str],
    facility: str,
    level: int,
    priority: int,
    letter: str,
) -> None:
    configure(level=DEBUG, progname="socat", syslog_facility=facility, microseconds=True)
    logger.log(level, "accepting connection from %s on %s", *PEERS)
    datagram = syslog_socket.recv(4096)
    assert datagram == (
        f"<{priority}>socat[{PID}]: {letter} accepting connection from "
        "AF=2 127.0.0.1:5555 on AF=2 127.0.0.1:8080\x00"
    ).encode()
    assert capsys.readouterr().err == ""


def test_syslog_without_socket_falls_back_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log, "SYSLOG_SOCKET", str(tmp_path / "absent"))
    configure(level=NOTICE, progname="relay", syslog_facility="daemon", clock=fixed_clock())
    logger.log(NOTICE, "hello")
    prefix = f"2026/11/24 10:00:00 relay[{PID}]"
    assert capsys.readouterr().err == (
        f'{prefix} W syslog socket "{tmp_path / "absent"}" is not available, '
        "logging to stderr\n"
        f"{prefix} N hello\n"
    )


def test_syslog_facilities_are_syslog_h_numbers() -> None:
    """The table avoids importing logging.handlers at start-up; its numbers must still agree."""
    import logging.handlers  # noqa: PLC0415 - the comparison is the point

    for name, number in log.SYSLOG_FACILITIES.items():
        assert getattr(logging.handlers.SysLogHandler, f"LOG_{name.upper()}") == number, name
