"""ABSTRACT-* addresses: Linux abstract UNIX sockets, against socat 1.8.0.3 on the other end.

Abstract names are shared by the whole network namespace, so every test
takes names of its own (its tmp_path, which also proves that nothing is
created in the file system under that name).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import SOCAT, requires_socat, scaled
from tests.support import (
    PATIENT_CLOSE_TIMEOUT,
    RelayProcess,
    log_lines,
    run_relay,
    wait_for_output,
)

pytestmark = requires_socat


def bound_abstract_names() -> set[str]:
    """The abstract UNIX socket names bound now (``@name`` in /proc/net/unix)."""
    with open("/proc/net/unix") as table:
        next(table)
        return {
            fields[-1][1:] for fields in map(str.split, table)
            if len(fields) > 7 and fields[-1].startswith("@")
        }


def wait_bound(name: str, process: subprocess.Popen[bytes] | RelayProcess) -> None:
    """Wait until something binds the abstract ``name``; fail if ``process`` ends first."""
    popen = process.proc if isinstance(process, RelayProcess) else process
    deadline = time.monotonic() + scaled(10)
    while name not in bound_abstract_names():
        assert popen.poll() is None, f"{popen.args} ended before binding {name}"
        assert time.monotonic() < deadline, f"nothing bound the abstract name {name}"
        time.sleep(0.02)


@contextmanager
def socat_serving(*args: str, bound: str) -> Iterator[subprocess.Popen[bytes]]:
    """socat 1.8.0.3 running ``args``, once it has bound the abstract name ``bound``."""
    assert SOCAT is not None
    server = subprocess.Popen([SOCAT, *args], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_bound(bound, server)
        yield server
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=scaled(10))


def names(tmp_path: Path, count: int) -> list[str]:
    return [str(tmp_path / f"socket{number}") for number in range(count)]


def test_relay_listens_and_socat_connects(tmp_path: Path) -> None:
    (name,) = names(tmp_path, 1)
    assert SOCAT is not None
    with RelayProcess(["-d", "-d", f"ABSTRACT-LISTEN:{name},fork", "PIPE"]) as relay:
        wait_bound(name, relay)
        assert not os.path.lexists(name)  # abstract: no file system entry
        for payload in (b"first peer\n", os.urandom(100_000)):
            done = subprocess.run(
                [SOCAT, "-t", PATIENT_CLOSE_TIMEOUT, "-", f"ABSTRACT-CONNECT:{name}"],
                input=payload,
                capture_output=True, timeout=scaled(20), check=False,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout == payload
    # socat's own wording, "\0" for the leading NUL.
    assert f'listening on AF=1 "\\0{name}"' in log_lines(relay.stderr_text, "N")


@pytest.mark.parametrize("keyword", ["ABSTRACT-CONNECT", "ABSTRACT-CLIENT"])
def test_relay_connects_to_socat(tmp_path: Path, keyword: str) -> None:
    (name,) = names(tmp_path, 1)
    payload = os.urandom(200_000)
    # -t 10 on both: stdin's EOF comes at once, and from then on a pause of over 0.5 s
    # (the default) in the echo ends the session, the relay's and the echoing socat's;
    # a loaded machine made one on each side (49,152 of 200,000 bytes back, then a
    # shorter echo in R35). The echo's own EOF ends both as soon as it is all back.
    with socat_serving("-t", "10", f"ABSTRACT-LISTEN:{name}", "PIPE", bound=name):
        done = run_relay(["-t", "10", "-", f"{keyword}:{name}"], input=payload, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload


def test_a_file_of_the_same_name_is_not_the_socket(tmp_path: Path) -> None:
    # A plain file where the name points in the file system does not matter.
    (name,) = names(tmp_path, 1)
    Path(name).touch()
    with socat_serving(f"ABSTRACT-LISTEN:{name}", "PIPE", bound=name):
        done = run_relay(["-", f"ABSTRACT-CONNECT:{name}"], input=b"through\n", timeout=20)
    assert (done.returncode, done.stdout) == (0, b"through\n"), done.stderr
    refused = run_relay(["-", f"UNIX-CONNECT:{name}"], input=b"x", timeout=20)
    assert refused.returncode == 1


def test_sendto_with_an_abstract_bind_hears_the_answer(tmp_path: Path) -> None:
    server, client = names(tmp_path, 2)
    with socat_serving(f"ABSTRACT-RECVFROM:{server}", "PIPE", bound=server):
        done = run_relay(
            ["-t", "1", "-", f"ABSTRACT-SENDTO:{server},bind={client}"],
            input=b"one datagram\n", timeout=20,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"one datagram\n"


def test_sendto_bound_to_its_own_peer_reads_its_datagram_back(tmp_path: Path) -> None:
    # socat's ABSTRACT_BIND test: the socket sends to the name it is bound to.
    (name,) = names(tmp_path, 1)
    done = run_relay(
        ["-t", "1", "-", f"ABSTRACT-SENDTO:{name},bind={name}"], input=b"loop\n", timeout=20
    )
    assert (done.returncode, done.stdout) == (0, b"loop\n"), done.stderr


def test_relay_recvfrom_answers_socat(tmp_path: Path) -> None:
    server, client = names(tmp_path, 2)
    assert SOCAT is not None
    with RelayProcess([f"ABSTRACT-RECVFROM:{server},fork", "PIPE"]) as relay:
        wait_bound(server, relay)
        done = subprocess.run(
            [SOCAT, "-t", "1", "-", f"ABSTRACT-SENDTO:{server},bind={client}"],
            input=b"ask\n", capture_output=True, timeout=scaled(20), check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"ask\n"


def test_recv_merges_what_senders_send(tmp_path: Path) -> None:
    (name,) = names(tmp_path, 1)
    assert SOCAT is not None
    with RelayProcess(["-u", f"ABSTRACT-RECV:{name}", "STDOUT"]) as relay:
        wait_bound(name, relay)
        for text in (b"first\n", b"second\n"):
            sent = subprocess.run(
                [SOCAT, "-u", "-", f"ABSTRACT-SENDTO:{name}"],
                input=text, capture_output=True, timeout=scaled(20), check=False,
            )
            assert sent.returncode == 0, sent.stderr
        wait_for_output(relay, lambda out, _: out == b"first\nsecond\n")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        # Not in the NAMED group: no file to unlink or to own.
        ("ABSTRACT-LISTEN:{name},unlink-early", 'option "unlink-early"'),
        ("ABSTRACT-RECV:{name},unlink-close", 'option "unlink-close"'),
        ("ABSTRACT-LISTEN:{name},bind={name}", "binds implicitly, bind option not allowed"),
    ],
)
def test_refused_like_socat(tmp_path: Path, address: str, message: str) -> None:
    (name,) = names(tmp_path, 1)
    text = address.format(name=name)
    assert SOCAT is not None
    theirs = subprocess.run(
        [SOCAT, "-u", text, "/dev/null"], capture_output=True, timeout=scaled(20), check=False,
        stdin=subprocess.DEVNULL,
    )
    ours = run_relay(["-u", text, "/dev/null"], timeout=20)
    assert theirs.returncode == ours.returncode == 1
    assert any(message in line for line in log_lines(ours.stderr.decode(), "E")), ours.stderr
