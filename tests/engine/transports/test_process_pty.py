"""EXEC/SYSTEM with option ``pty``: the child on a terminal, side by side with socat 1.8.0.3."""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import SOCAT, requires_socat, scaled
from tests.support import RELAY, log_lines

pytestmark = requires_socat


def both(*args: str, stdin: bytes = b"") -> dict[str, subprocess.CompletedProcess[bytes]]:
    """``relay -t 5 ARGS`` and ``socat -t 5 ARGS`` (1.8.0.3), each run to its end.

    Their children end by themselves, so -t only bounds how long a loaded
    machine may take to deliver the child's output after stdin's end.
    """
    assert SOCAT is not None
    return {
        name: subprocess.run([*command, "-t", "5", *args], input=stdin, capture_output=True,
                             timeout=scaled(30), check=False)
        for name, command in (("relay", RELAY), ("socat", [SOCAT]))
    }


def test_data_goes_through_the_terminal() -> None:
    payload = os.urandom(3000).replace(b"\n", b"").replace(b"\r", b"") + b"\n"
    command = f"EXEC:head -c {len(payload)},pty,raw,echo=0"
    for name, done in both("-", command, stdin=payload).items():
        assert (done.returncode, done.stdout) == (0, payload), (name, done.stderr)


def test_the_childs_stdin_is_a_terminal() -> None:
    for name, done in both("-", "EXEC:tty,pty,echo=0").items():
        assert done.returncode == 0, (name, done.stderr)
        assert re.fullmatch(rb"/dev/pts/\d+\r?\n", done.stdout), (name, done.stdout)
    # -u: the relay only reads from the child, whose stdin stays the relay's own.
    # socat 1.8.0.3 itself relays none of tty's output in about 1 run of 50, idle or
    # loaded (4 of 160 here; relay 0 of 160): it can take the child's exit for the
    # end before reading what the child left in the pty. So socat gets three tries,
    # the relay one.
    runs = both("-u", "EXEC:tty,pty", "-")
    for _ in range(2):
        if not runs["socat"].stdout:
            runs["socat"] = subprocess.run([SOCAT, "-t", "5", "-u", "EXEC:tty,pty", "-"],
                                           capture_output=True, timeout=scaled(30), check=False)
    for name, done in runs.items():
        assert done.stdout == b"not a tty\r\n", (name, done.stdout, done.stderr)


@pytest.mark.parametrize(("options", "answer"), [(",setsid,ctty", b"has-ctty"), ("", b"")])
def test_ctty_makes_it_the_controlling_terminal(options: str, answer: bytes) -> None:
    line = "exec 3</dev/tty 2>/dev/null && echo has-ctty"
    for name, done in both("-", f"SYSTEM:{line},pty,echo=0{options}").items():
        assert done.stdout.strip() == answer, (name, done.stdout, done.stderr)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("EXEC:cat,raw", 'option "raw" sets up a terminal: it needs option "pty" here'),
        ("EXEC:cat,setsid,ctty", 'option "tiocsctty" sets up a terminal: it needs option "pty"'),
        ("EXEC:cat,pty,nofork", 'options "pty" and "nofork" exclude each other'),
    ],
)
def test_refused_with_one_clear_line(address: str, message: str) -> None:
    done = subprocess.run([*RELAY, "-", address], capture_output=True, timeout=scaled(30),
                          check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    [error] = log_lines(done.stderr.decode(), "E")
    assert message in error


def wait_for_a_child(pid: int, program: str = "cat") -> None:
    """Wait (bounded) until process ``pid`` has a child running ``program`` and asleep, from
    /proc: past its exec and its terminal set-up, waiting for input (a child signalled
    earlier, while socat still set up the pty, read EIO instead of dying of the signal)."""
    deadline = time.monotonic() + scaled(15)
    while time.monotonic() < deadline:
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    name, rest = f.read().split(" (", 1)[1].rsplit(")", 1)
                state, parent = rest.split()[:2]
                if parent == str(pid) and name == program and state == "S":
                    return
            except (OSError, IndexError, ValueError):
                continue
        time.sleep(0.05)
    pytest.fail(f"process {pid} started no {program} waiting for input within {scaled(15):g} s")


# The numbers of the calls an event loop sleeps in: poll, select, epoll_wait, pselect6, ppoll,
# epoll_pwait, epoll_pwait2 on x86-64; arm64 has only the last four.
EVENT_WAITS = ({"72", "73", "22", "441"} if platform.machine() == "aarch64"
               else {"7", "23", "232", "270", "271", "281", "441"})


def wait_until_waiting_for_events(pid: int) -> None:
    """Wait (bounded) until process ``pid`` sleeps in poll/select/epoll: past its set-up.
    socat registers its signal passer in the parent after the fork (option phase PH_LATE),
    so a child can be asleep in ``cat`` while a signal would still end socat itself."""
    deadline = time.monotonic() + scaled(15)
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/syscall") as f:
                if f.read().split(" ", 1)[0] in EVENT_WAITS:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"process {pid} did not wait for events within {scaled(15):g} s")


@pytest.mark.parametrize("program", [pytest.param(RELAY, id="relay"),
                                     pytest.param([SOCAT or "socat"], id="socat")])
@pytest.mark.parametrize("address", ["EXEC:cat,pty,setsid,sigint", "EXEC:cat,pipes,sighup"])
def test_sigint_and_sighup_go_to_the_child_which_ends_the_session(
    program: list[str], address: str
) -> None:
    """socat: "Has socat pass signals of this type to the sub process"; its end ends the session."""
    if program[0] == "socat" and SOCAT is None:
        pytest.skip("socat 1.8.0.3 is not built")
    if program != RELAY and "pipes" in address:
        # socat passes SIGHUP on too, but with pipes it then waits for -T to end.
        pytest.skip("socat 1.8.0.3 runs on until -T after its piped child ended")
    signum = signal.SIGHUP if "sighup" in address else signal.SIGINT
    proc = subprocess.Popen([*program, "-lprelay", "-T", "20", "SOCKETPAIR", address],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Its child started (a fixed second was too short on a loaded machine: the
        # signal then ended the program before it had a child to pass it to).
        wait_for_a_child(proc.pid)
        wait_until_waiting_for_events(proc.pid)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=scaled(10))
    finally:
        proc.kill()
    text = stderr.decode()
    warnings = log_lines(text, "W")
    assert any(re.fullmatch(rf"waitpid\(\): child \d+ exited on signal {int(signum)}", line)
               for line in warnings), text
    assert "exiting on signal" not in text  # the relay itself went on until the child ended
