"""``children-shutup``: what a forked session logs is logged lower, as by socat 1.8.0.3's children."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import SOCAT, requires_socat, scaled
from tests.support import RelayProcess, free_port, log_lines, wait_for_output, wait_for_path


def served_once(option: str, tmp_path: Path) -> str:
    """The log of ``relay -dddd UNIX-LISTEN:S,fork<option> TCP:<closed port>`` after one peer."""
    assert SOCAT is not None
    path = str(tmp_path / "server.sock")
    closed = free_port()  # nothing listens there: each session's connect is refused
    args = ["-dddd", f"UNIX-LISTEN:{path},fork{option}", f"TCP4:127.0.0.1:{closed}"]
    with RelayProcess(args) as relay:
        wait_for_path(path)
        subprocess.run([SOCAT, "-u", "/dev/null", f"UNIX-CONNECT:{path}"],
                       capture_output=True, timeout=scaled(20), check=False)
        wait_for_output(relay, lambda _, err: "accepting connection" in err)
        # SIGTERM stops a listener gracefully: the session ends before the relay does.
        assert relay.stop() == 143
    return relay.stderr_text


@requires_socat
@pytest.mark.parametrize(
    ("option", "level"),
    [
        ("", "E"),  # without the option: the session's error is an error
        (",children-shutup", "W"),  # one level lower, as socat's "errors are logged as warnings"
        (",children-shutup=2", "N"),
        (",child-shutup=4", "D"),
        (",children-shutup=5", None),  # below debug: dropped (the listener's notices stay)
    ],
)
def test_a_sessions_error_is_logged_lower(option: str, level: str | None, tmp_path: Path) -> None:
    log = served_once(option, tmp_path)
    refused = {
        letter for letter in "DINWEF"
        for message in log_lines(log, letter) if "Connection refused" in message
    }
    assert refused == ({level} if level else set()), log
    assert any(line.startswith("listening on") for line in log_lines(log, "N")), log


def test_the_option_is_listed_for_socats_test_suite() -> None:
    # test.sh runs its CHILDREN_SHUTUP test only when -hhh lists the option.
    from tests.support import run_relay  # noqa: PLC0415

    listed = run_relay(["-hhh"]).stdout.decode()
    assert "children-shutup" in listed
