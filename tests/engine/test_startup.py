"""What relay imports at start-up: only what the command line needs.

Start-up time is most of what a short relay costs, and socat's own test
suite gives a program a few tenths of a second to start: ``-V`` and usage
errors must not load the event loop, and a run must import only the
transports of its two addresses. Checked in a fresh interpreter, on the
modules it ends up with (no timing).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import scaled

PROBE = """
import json, sys
from kubectl_relay.engine.cli import main
status = main(sys.argv[1:])
sys.stderr.flush()
print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stdout)
"""


def imported_by(*argv: str) -> tuple[int, set[str]]:
    """The exit status of ``relay ARGV`` and every module it imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True, text=True, timeout=scaled(30), check=False,
        stdin=subprocess.DEVNULL,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer["status"], set(answer["modules"])


@pytest.mark.parametrize(
    "argv",
    [
        ["-V"],
        ["-d", "-d", "-V"],
        ["-Z", "-", "-"],  # an unknown option: one E line, no event loop
        ["STDIO"],  # one address only
    ],
)
def test_answers_without_the_event_loop(argv: list[str]) -> None:
    status, modules = imported_by(*argv)
    assert status == (0 if "-V" in argv else 1)
    assert not {"asyncio", "ssl", "kubectl_relay.engine.session"} & modules
    assert not any(name.startswith("kubectl_relay.engine.transports.") for name in modules)


def test_version_loads_no_logging_and_no_dataclasses() -> None:
    # -V only prints: the log, the parser's dataclasses and sockets are all unused.
    status, modules = imported_by("-V")
    assert status == 0
    assert not {"logging", "dataclasses", "socket", "kubectl_relay.engine.log"} & modules


def test_a_run_imports_only_the_transports_it_uses() -> None:
    status, modules = imported_by("-u", "/dev/null", "/dev/null")
    assert status == 0
    transports = {
        name.rpartition(".")[2]
        for name in modules
        if name.startswith("kubectl_relay.engine.transports.")
    }
    assert "files" in transports
    assert not {"tls", "x509", "socks", "proxy", "vsock", "generic", "udp"} & transports
    assert "ctypes" not in modules  # a terminal's (pty) only


def test_a_run_imports_its_transports_before_it_listens() -> None:
    # The first peer must not wait for an import: address 2 is loaded up front.
    status, modules = imported_by("-u", "UNIX-LISTEN:/nonexistent/dir/socket", "OPENSSL:localhost:1")
    assert status == 1  # the listener cannot bind; by then both transports are loaded
    assert {"kubectl_relay.engine.transports.unix", "kubectl_relay.engine.transports.tls"} <= modules


BIND_PROBE = """
import json, sys
from kubectl_relay.engine.cli import main
binds = []

def note_binds(event, args):
    if event == "socket.bind":
        loaded = ("asyncio", "ssl", "logging", "typing", "dataclasses")
        binds.append(sorted(name for name in loaded if name in sys.modules))

sys.addaudithook(note_binds)
status = main(sys.argv[1:])
print(json.dumps({"status": status, "binds": binds}))
"""


@pytest.mark.parametrize(
    "address",
    [
        "TCP4-LISTEN:0,bind=127.0.0.1,accept-timeout=0.1",
        "TCP-LISTEN:0,reuseaddr,backlog=7,accept-timeout=0.1",
    ],
)
def test_a_tcp_listener_listens_before_the_event_loop_loads(address: str) -> None:
    # Peers wait in the backlog meanwhile; the one socket bound is the one served.
    done = subprocess.run(
        [sys.executable, "-c", BIND_PROBE, address, "/dev/null"],
        capture_output=True, text=True, timeout=scaled(30), check=False,
        stdin=subprocess.DEVNULL,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["status"] == 0, done.stderr  # accept-timeout: a warning, then exit 0
    assert answer["binds"] == [[]], done.stderr
    assert "accept: Connection timed out" in done.stderr


def test_a_listener_that_needs_a_name_lookup_waits_for_the_event_loop() -> None:
    # Resolving a name here would block before the loop: the transport binds it.
    done = subprocess.run(
        [sys.executable, "-c", BIND_PROBE, "TCP4-LISTEN:0,bind=localhost,accept-timeout=0.1",
         "/dev/null"],
        capture_output=True, text=True, timeout=scaled(30), check=False,
        stdin=subprocess.DEVNULL,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["status"] == 0, done.stderr
    assert len(answer["binds"]) == 1 and "asyncio" in answer["binds"][0], done.stderr
