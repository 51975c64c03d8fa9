"""Terminal options on a terminal the relay was given or opened, put back when it ends.

``relay -,raw,echo=0 TCP:host:22`` and ``OPEN:/dev/ttyS0,raw`` are socat
command lines people paste; the terminal here is a real pseudo terminal made
by the test (``os.openpty``), which stands in for the user's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import RELAY, SOCAT, scaled
from tests.engine.transports import read_terminal
from tests.support import log_lines, run_relay

PROGRAMS = [pytest.param(RELAY, id="relay")]
if SOCAT is not None:
    PROGRAMS.append(pytest.param([SOCAT], id="socat"))


@contextmanager
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo terminal: (master, slave), closed afterwards."""
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def lflag(fd: int) -> int:
    return int(termios.tcgetattr(fd)[3])


def wait_until(predicate: object, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + scaled(10)
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@contextmanager
def relaying(argv: list[str], slave: int, **popen: Any) -> Iterator[None]:
    """Run ``argv`` until SIGTERM; then the terminal ``slave`` must be as it was before."""
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, **popen)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=scaled(10))
    assert termios.tcgetattr(slave) == before, stderr.decode()


@pytest.mark.parametrize("program", PROGRAMS)
def test_stdio_raw_noecho_is_set_while_relaying_and_put_back(program: list[str]) -> None:
    with terminal() as (master, slave):
        assert lflag(slave) & termios.ECHO and lflag(slave) & termios.ICANON
        with relaying([*program, "-,raw,echo=0", "PIPE"], slave, stdin=slave, stdout=slave):
            wait_until(lambda: not lflag(slave) & (termios.ECHO | termios.ICANON), "never raw")
            # Raw: no line editing, no echo by the terminal; PIPE sends the bytes back.
            os.write(master, b"ab\x7fc")
            assert read_terminal(master, 4) == b"ab\x7fc"


def test_open_of_a_terminal_device_takes_its_options_and_puts_them_back() -> None:
    with terminal() as (master, slave):
        path = os.ttyname(slave)
        with relaying([*RELAY, f"OPEN:{path},raw,echo=0,ispeed=9600", "PIPE"], slave):
            wait_until(lambda: termios.tcgetattr(slave)[4] == termios.B9600, "never set")
            assert not lflag(slave) & termios.ECHO
            os.write(master, b"xyz")
            assert read_terminal(master, 3) == b"xyz"


@pytest.mark.parametrize("address", ["STDIO,echo=0", "-,raw", "STDIN,icanon=0"])
def test_terminal_options_on_a_pipe_are_one_error(address: str) -> None:
    """socat: ``E tcgetattr(0, ...): Inappropriate ioctl for device``, exit 1."""
    result = run_relay([address, "PIPE"], input=b"data\n")
    assert result.returncode == 1
    errors = log_lines(result.stderr.decode(), "E")
    assert errors == ["tcgetattr(0, ...): Inappropriate ioctl for device"], result.stderr


def test_terminal_options_on_a_regular_file_are_one_error(tmp_path: object) -> None:
    path = f"{tmp_path}/file"
    with open(path, "w") as file:
        file.write("x")
    result = run_relay(["-u", f"OPEN:{path},raw", "/dev/null"])
    assert result.returncode == 1
    errors = log_lines(result.stderr.decode(), "E")
    assert len(errors) == 1 and "Inappropriate ioctl for device" in errors[0], result.stderr
