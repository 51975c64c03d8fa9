"""``SHELL:<shell-command>``: the command runs under ``$SHELL`` (or ``shell=``), a real shell."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import RELAY, scaled
from tests.support import log_lines

BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def run(args: list[str], shell: str | None, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {key: value for key, value in os.environ.items() if key != "SHELL"}
    if shell is not None:
        env["SHELL"] = shell
    # stdin ends at once: with socat's default -t 0.5 the relay would stop waiting for the
    # command's output half a second later, which a loaded machine's bash start-up outlasted
    # (the echo lost, the shell killed by SIGPIPE). The command's own end ends the relay.
    return subprocess.run(
        [*RELAY, "-t", str(scaled(10)), *args], input=data, env=env, capture_output=True,
        timeout=scaled(20), check=False,
    )


@needs_bash
def test_runs_under_the_shell_of_shell_variable() -> None:
    assert BASH is not None
    # $0 is the shell's name, $SHELL is set for the child, BASH_VERSION proves bash.
    result = run(["-", 'SHELL:echo "$0 $SHELL ${BASH_VERSION:+bash}"'], BASH)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == f"bash {BASH} bash\n".encode()


@needs_bash
def test_shell_option_overrides_the_variable() -> None:
    assert BASH is not None
    result = run(["-", f'SHELL:echo "$0 $SHELL",shell={BASH}'], "/bin/sh")
    assert result.stdout == f"bash {BASH}\n".encode()


def test_data_both_ways() -> None:
    payload = b"line one\nline two\n" * 500
    result = run(["-", "SHELL:tr a-z A-Z"], "/bin/sh", payload)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == payload.upper()


@pytest.mark.parametrize(
    ("shell", "error"),
    [
        (None, "SHELL variable undefined"),
        ("bash", "SHELL \"bash\" variable does not specify a path (has no '/')"),
    ],
)
def test_no_usable_shell(shell: str | None, error: str) -> None:
    result = run(["-", "SHELL:true"], shell)
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [error]
