"""socat's global options, and bad command lines: one E line, exit 1, no traceback."""

from __future__ import annotations

import socket

import pytest

from kubectl_relay.engine.cli import parse_command_line, rejoin_split_options
from kubectl_relay.engine.errors import UsageError
from tests.engine.test_relay_behaviour import log_lines
from tests.support import ThreadedServer, echo, exchange, free_port, relay_listening, run_relay


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["-t", "2", "-", "-"], "close_timeout", 2.0),
        (["-t2.5", "-", "-"], "close_timeout", 2.5),
        (["-T", "7", "-", "-"], "idle_timeout", 7.0),
        (["-b", "4096", "-", "-"], "block_size", 4096),
        (["-b8192", "-", "-"], "block_size", 8192),
        (["-u", "-", "-"], "unidirectional", "left-to-right"),
        (["-U", "-", "-"], "unidirectional", "right-to-left"),
        (["-d", "-d", "-", "-"], "d_count", 2),
        (["-ddd", "-", "-"], "d_count", 3),
        (["-d0", "-", "-"], "d_number", 0),
        (["-4", "-", "-"], "family", socket.AF_INET),
        (["-6", "-", "-"], "family", socket.AF_INET6),
        (["-lpmyrelay", "-", "-"], "progname", "myrelay"),
        (["-lp", "myrelay", "-", "-"], "progname", "myrelay"),
        (["-lu", "-", "-"], "log_microseconds", True),
        (["-lh", "-", "-"], "log_hostname", True),
        (["--metrics", "9090", "-", "-"], "metrics_address", ("0.0.0.0", 9090)),
        (["--metrics=127.0.0.1:9", "-", "-"], "metrics_address", ("127.0.0.1", 9)),
        (["-", "-"], "grace_period", 20.0),
        (["--grace-period", "0", "-", "-"], "grace_period", 0.0),
        (["--grace-period=2.5", "-", "-"], "grace_period", 2.5),
        (["-V"], "show_version", True),
        (["-hh"], "help_level", 2),
    ],
)
def test_global_options(argv: list[str], field: str, value: object) -> None:
    assert getattr(parse_command_line(argv), field) == value


def test_trace_options() -> None:
    line = parse_command_line(["-v", "-x", "-r", "left.bin", "-Rright.bin", "-", "-"])
    assert line.trace.verbose and line.trace.hex
    assert (line.trace.raw_left, line.trace.raw_right) == ("left.bin", "right.bin")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-Z", "-", "-"], 'unknown option "-Z"; use option "-h" for help'),
        (["-"], 'exactly 2 addresses required (there are 1); use option "-h" for help'),
        (["-", "-", "-"], 'exactly 2 addresses required (there are 3); use option "-h" for help'),
        (["-t"], 'option "-t" requires an argument; use option "-h" for help'),
        (["-t", "soon", "-", "-"],
         'option "-t": invalid timeout "soon", expected seconds from 0 to 2147483647 such as 5 or 0.5'),
        (["-b", "0", "-", "-"], 'option "-b": invalid size "0", expected a positive number'),
        (["--grace-period"], 'option "--grace-period" requires SECONDS; use option "-h" for help'),
        (["--grace-period=-1", "-", "-"],
         'option "--grace-period": invalid timeout "-1", expected seconds from 0 to 2147483647 '
         "such as 5 or 0.5"),
    ],
)
def test_bad_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_command_line(argv)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["FOO:1", "-"], 'unknown device/address "FOO"'),
        (["TCP:127.0.0.1", "-"], "TCP: wrong number of parameters (1 instead of 2): usage: TCP:<host>:<port>"),
        (["TCP:127.0.0.1:80,frok", "-"], 'parseopts_table(): unknown option "frok"'),
        (["-Q", "-", "-"], 'unknown option "-Q"; use option "-h" for help'),
        (["OPEN:/nonexistent/file", "-"], 'open("/nonexistent/file", 02, 0666): No such file or directory'),
        # socat opens its log while reading options: that error comes first.
        (["-lf", "/nonexistent/dir/log", "FOO:1", "-"],
         'cannot open log file "/nonexistent/dir/log": No such file or directory'),
        (["-lf", "/nonexistent/dir/log", "TCP4-LISTEN:0,bind=127.0.0.1", "-"],
         'cannot open log file "/nonexistent/dir/log": No such file or directory'),
        (["-lf", "/nonexistent/dir/log", "-V"],
         'cannot open log file "/nonexistent/dir/log": No such file or directory'),
    ],
)
def test_bad_input_is_one_error_line(argv: list[str], message: str) -> None:
    result = run_relay(argv)
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert log_lines(stderr, "E") == [message], stderr
    assert "Traceback" not in stderr
    assert result.stdout == b""


def test_yaml_split_address_is_joined_back() -> None:
    """command: [socat, -v, TCP-LISTEN:8080,fork, TCP:problem-service:80] in a pod manifest."""
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = ["-v", f"TCP-LISTEN:{listen}", "fork", f"TCP:127.0.0.1:{server.port}"]
        with relay_listening(args, listen) as relay:
            assert exchange(listen, b"one") == b"one"
            assert exchange(listen, b"two") == b"two"  # fork was applied
    warnings = log_lines(relay.stderr_text, "W")
    assert warnings[0] == (
        f'argument "fork" is not an address; joined to "TCP-LISTEN:{listen}" as its option '
        "(in a YAML flow sequence, quote addresses that contain commas)"
    )


@pytest.mark.parametrize(
    ("arguments", "joined"),
    [
        (["A:1", "B:2"], ["A:1", "B:2"]),
        (["TCP-LISTEN:1", "fork", "TCP:h:2"], ["TCP-LISTEN:1,fork", "TCP:h:2"]),
        (["TCP-LISTEN:1", "fork", "reuseaddr", "TCP:h:2", "keepalive"],
         ["TCP-LISTEN:1,fork,reuseaddr", "TCP:h:2,keepalive"]),
        (["TCP-LISTEN:1", "max-children=10", "TCP:h:2"], ["TCP-LISTEN:1,max-children=10", "TCP:h:2"]),
        (["TCP-LISTEN:1", "nonsense", "TCP:h:2"], ["TCP-LISTEN:1", "nonsense", "TCP:h:2"]),
        (["PIPE", "fork", "-"], ["PIPE,fork", "-"]),
    ],
)
def test_rejoin_split_options(arguments: list[str], joined: list[str]) -> None:
    assert rejoin_split_options(arguments) == joined
