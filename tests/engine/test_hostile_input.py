"""Hostile command lines against the real ``relay`` process: one E line, exit 1, no traceback.

Each input here once ended in a Python traceback, a hang, or was accepted and
broke every session later (issue 12, "Hostile input").
"""

from __future__ import annotations

import pytest

from tests.support import log_lines, run_relay

#: Past Python's 4,300-digit limit of int() (ValueError unless handled).
HUGE = "9" * 5000
#: Deeper than Python's recursion limit allows a recursive lexer (RecursionError).
NESTED = "[" * 497 + "]" * 497

HOSTILE = [
    pytest.param(["-b", HUGE, "-", "-"], "buffer size option (-b) to big", id="-b-huge"),
    pytest.param(["-b0x" + "f" * 5000, "-", "-"], "buffer size option (-b) to big", id="-b-hex"),
    pytest.param(
        ["-b", "100000000000", "UDP-LISTEN:0", "-"], "buffer size option (-b) to big", id="-b-udp"
    ),
    pytest.param(["-t", HUGE, "-", "-"], 'option "-t": invalid timeout', id="-t-huge"),
    pytest.param(["-T", HUGE, "-", "-"], 'option "-T": invalid timeout', id="-T-huge"),
    pytest.param(["-t", "nan", "-", "-"], 'option "-t": invalid timeout "nan"', id="-t-nan"),
    pytest.param(["-T", "nan", "-", "-"], 'option "-T": invalid timeout "nan"', id="-T-nan"),
    pytest.param(["-t", "inf", "-", "-"], 'option "-t": invalid timeout "inf"', id="-t-inf"),
    pytest.param(["-T", "-inf", "-", "-"], 'option "-T": invalid timeout "-inf"', id="-T-minf"),
    pytest.param(["-T", "-1", "-", "-"], 'option "-T": invalid timeout "-1"', id="-T-negative"),
    pytest.param(["-d²", "-", "-"], 'unknown option "-d²"', id="-d-superscript"),
    pytest.param(["--metrics=²", "-", "-"], 'invalid address "²"', id="metrics-superscript"),
    pytest.param(["--metrics", HUGE, "-", "-"], 'option "--metrics": invalid', id="metrics-huge"),
    pytest.param([f"FD:{HUGE}", "-"], "error in FD number", id="fd-huge"),
    pytest.param([HUGE, "-"], "error in FD number", id="bare-fd-huge"),
    pytest.param(["FD:3", "-"], "fcntl(3, F_GETFL): Bad file descriptor", id="fd-not-inherited"),
    pytest.param(
        [f"TCP-LISTEN:1,backlog={HUGE}", "-"], 'option "backlog": value of 5000', id="option-huge"
    ),
    pytest.param(
        [f"TCP:127.0.0.1:1,connect-timeout={HUGE}", "-"], "connect-timeout", id="seconds-huge"
    ),
    pytest.param([f"TCP:{NESTED}:1", "-"], "nested more than", id="nested-brackets"),
    pytest.param([f"OPEN:{NESTED}", "-"], "nested more than", id="nested-open"),
    pytest.param(["-", "OPEN:'" + "(" * 600], "unexpected end of address", id="unclosed-quote"),
]


@pytest.mark.parametrize(("argv", "expected"), HOSTILE)
def test_hostile_input_is_one_error_line(argv: list[str], expected: str) -> None:
    result = run_relay(argv)
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr
    assert result.returncode == 1, stderr
    errors = log_lines(stderr, "E")
    assert len(errors) == 1, stderr
    assert expected in errors[0]
    assert len(errors[0]) < 400  # the 5,000-digit argument is not echoed whole


def test_unwritable_log_file_is_said_once_and_the_relay_goes_on() -> None:
    """``-lf /dev/full``: socat ignores failed log writes; one E line here, never a traceback."""
    result = run_relay(["-d", "-d", "-d", "-lf", "/dev/full", "-", "-"], input=b"payload\n")
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0, stderr
    assert result.stdout == b"payload\n"
    assert "Traceback" not in stderr and "Logging error" not in stderr
    assert log_lines(stderr, "E") == ['cannot write to log file "/dev/full": No space left on device']


def test_inherited_descriptor_is_still_accepted() -> None:
    """Refusing relay's own descriptors keeps the inherited ones: ``FD:0`` and ``FD:1`` work."""
    result = run_relay(["FD:0", "FD:1"], input=b"through fds\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"through fds\n"
