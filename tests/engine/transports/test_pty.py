"""PTY: a real pseudo terminal, used from the slave side as a program would (and by socat)."""

from __future__ import annotations

import os
import subprocess
import termios
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import RELAY, SOCAT, requires_socat, scaled
from tests.engine.transports import read_terminal
from tests.support import RelayProcess, log_lines, run_relay, wait_for_path

T = TypeVar("T")

PROGRAMS = [pytest.param(RELAY, id="relay")]
if SOCAT is not None:
    # The same command lines with socat, to show that the behaviour is socat's.
    PROGRAMS.append(pytest.param([SOCAT], id="socat"))


@contextmanager
def pty_relay(
    program: Sequence[str], args: Sequence[str], link: Path
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([*program, *args], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_path(str(link))
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=scaled(10))


def open_slave(link: Path) -> int:
    return os.open(link, os.O_RDWR | os.O_NOCTTY)


def settled_terminal(link: Path, probe: Callable[[list[Any]], T], wanted: T) -> T:
    """``probe`` of the slave's tcgetattr(), once it gives ``wanted`` or after a bounded wait.

    The relay (and socat) makes the link before it sets the terminal: allow it a moment.
    """
    fd = open_slave(link)
    try:
        deadline = time.monotonic() + scaled(5)
        while True:
            found = probe(termios.tcgetattr(fd))
            if found == wanted or time.monotonic() > deadline:
                return found
            time.sleep(0.02)
    finally:
        os.close(fd)


@pytest.mark.parametrize("program", PROGRAMS)
def test_rawer_terminal_passes_bytes_unchanged(program: list[str], tmp_path: Path) -> None:
    link = tmp_path / "tty"
    with pty_relay(program, [f"PTY,link={link},rawer", "SYSTEM:cat"], link) as proc:
        # One process after the other: closing the slave does not end the session.
        for turn in range(2):
            fd = open_slave(link)
            try:
                payload = bytes(range(256)) + b"\n\r\x03\x04"  # ^C and ^D are data here
                os.write(fd, payload)
                assert read_terminal(fd, len(payload)) == payload, f"turn {turn}"
                attributes = termios.tcgetattr(fd)
                assert not attributes[3] & (termios.ECHO | termios.ICANON)  # rawer
            finally:
                os.close(fd)
        assert proc.poll() is None
    assert not link.exists()


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize(
    ("options", "echo", "icanon"),
    [
        ("", True, True),
        (",echo=0", False, True),
        (",raw,echo=0", False, False),
        (",cfmakeraw", False, False),
        (",icanon=0,echo=0", False, False),
    ],
)
def test_terminal_flags(
    program: list[str], options: str, echo: bool, icanon: bool, tmp_path: Path
) -> None:
    link = tmp_path / "tty"
    with pty_relay(program, [f"PTY,link={link}{options}", "SYSTEM:cat"], link):
        flags = settled_terminal(
            link,
            lambda attributes: (
                bool(attributes[3] & termios.ECHO),
                bool(attributes[3] & termios.ICANON),
            ),
            (echo, icanon),
        )
    assert flags == (echo, icanon)


@pytest.mark.parametrize(
    ("option", "word", "bit", "wanted"),
    [
        ("opost=0", 1, termios.OPOST, False),
        ("onlcr=0", 1, termios.ONLCR, False),
        ("icrnl=0", 0, termios.ICRNL, False),
        ("ixoff", 0, termios.IXOFF, True),
        ("echoctl=0", 3, termios.ECHOCTL, False),
        ("crtscts", 2, termios.CRTSCTS, True),
    ],
)
def test_socats_terminal_flags_set_their_bit(
    option: str, word: int, bit: int, wanted: bool, tmp_path: Path
) -> None:
    link = tmp_path / "tty"
    with pty_relay(RELAY, [f"PTY,link={link},{option}", "SYSTEM:cat"], link):
        found = settled_terminal(link, lambda attributes: bool(attributes[word] & bit), wanted)
    assert found == wanted


@pytest.mark.parametrize("option", ["ispeed=9600", "ospeed=9600", "ospeed=300,ispeed=9600"])
def test_line_speed_is_a_baud_rate(option: str, tmp_path: Path) -> None:
    """Linux keeps one speed for both directions: either option sets it, the last one wins."""
    link = tmp_path / "tty"
    with pty_relay(RELAY, [f"PTY,link={link},{option}", "SYSTEM:cat"], link):
        speeds = settled_terminal(link, lambda attributes: attributes[4:6], [termios.B9600] * 2)
    assert speeds == [termios.B9600, termios.B9600]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        # socat 1.8's wording for the first two (its test.sh checks them).
        ("ispeed=b19200", 'parseopts(): missing numerical value of option "ispeed=b19200"'),
        (
            "ospeed=19200B",
            'parseopts(): trailing garbage in numerical arg of option "ospeed=19200B"',
        ),
        ("ispeed=12345", "ispeed=12345: not a baud rate; accepted: 0, 50, 75, 110,"),
    ],
)
def test_a_bad_line_speed_is_one_error(option: str, message: str) -> None:
    result = run_relay(["-", f"PTY,{option}"])
    assert result.returncode == 1
    errors = log_lines(result.stderr.decode(), "E")
    assert len(errors) == 1 and message in errors[0], result.stderr.decode()


def test_announces_the_terminal(tmp_path: Path) -> None:
    link = tmp_path / "tty"
    with RelayProcess(["-d", "-d", f"PTY,link={link}", "SYSTEM:cat"]) as relay:
        wait_for_path(str(link))
        target = os.readlink(link)
        relay.stop()
    assert target.startswith("/dev/pts/")
    assert f"PTY is {target}" in log_lines(relay.stderr_text, "N")


@requires_socat
def test_socat_on_the_slave_side(tmp_path: Path) -> None:
    # socat opens the terminal like a serial line and talks through it.
    assert SOCAT is not None
    link = tmp_path / "tty"
    with pty_relay(RELAY, [f"PTY,link={link},rawer", "SYSTEM:cat"], link):
        result = subprocess.run(
            [SOCAT, "-t", "2", "-", f"GOPEN:{link},rawer"],
            input=b"over the serial line\n",
            capture_output=True,
            timeout=scaled(10),
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"over the serial line\n"


def test_link_that_exists(tmp_path: Path) -> None:
    link = tmp_path / "tty"
    link.write_text("")
    result = run_relay([f"PTY,link={link}", "SYSTEM:cat"])
    assert result.returncode == 1
    [error] = log_lines(result.stderr.decode(), "E")
    assert error.startswith('symlink("/dev/pts/') and error.endswith(f'", "{link}"): File exists')


@pytest.mark.parametrize("text", ["TCP:127.0.0.1:1,raw", "UDP:127.0.0.1:1,echo=0"])
def test_terminal_options_where_no_terminal_can_be_are_refused_not_ignored(text: str) -> None:
    result = run_relay([text, "PTY"])
    assert result.returncode == 1
    [error] = log_lines(result.stderr.decode(), "E")
    assert error.endswith("not supported with this address type")


@pytest.mark.parametrize("program", PROGRAMS)
def test_wait_slave_opens_the_other_address_only_after_the_slave(
    program: list[str], tmp_path: Path
) -> None:
    link, marker = tmp_path / "tty", tmp_path / "second-address-opened"
    args = [f"PTY,link={link},wait-slave,pty-interval=0.05", f"SYSTEM:touch {marker}; cat"]
    with pty_relay(program, args, link) as proc:
        # The relay waits for a slave: the second address is not opened yet.
        # (Bounded look; the positive check below is the real one.)
        time.sleep(0.3)
        assert not marker.exists()
        fd = open_slave(link)
        try:
            deadline = time.monotonic() + scaled(10)
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert marker.exists()
            os.write(fd, b"hello\n")
            assert read_terminal(fd, 6).startswith(b"hello")  # cat's answer, through the terminal
        finally:
            os.close(fd)
        # With wait-slave nobody else holds the slave: its closing ends the session (socat too).
        deadline = time.monotonic() + scaled(10)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() == 0
