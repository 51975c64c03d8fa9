"""ACCEPT-FD: the relay accepts on a listening socket it inherited, as under systemd."""

from __future__ import annotations

import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import RELAY, scaled
from tests.support import log_lines, patient, recv_all, run_relay

PAYLOAD = b"through an inherited socket\n" * 200


@contextmanager
def relay_on(listener: socket.socket, args: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``relay ARGS`` with ``listener`` as an inherited descriptor; stopped on exit."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [*RELAY, *patient(args)], pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL, stderr=stderr
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=scaled(10))


def talk(connect: socket.socket, address: object, payload: bytes) -> bytes:
    with connect:
        connect.settimeout(scaled(10))
        connect.connect(address)
        connect.sendall(payload)
        connect.shutdown(socket.SHUT_WR)
        return recv_all(connect)


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_tcp_socket_with_fork(family: int, host: str) -> None:
    try:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} here")
    with listener:
        listener.listen(16)
        address = listener.getsockname()
        with relay_on(listener, [f"ACCEPT-FD:{listener.fileno()},fork", "SYSTEM:tr a-z A-Z"]):
            for _ in range(3):
                client = socket.socket(family, socket.SOCK_STREAM)
                assert talk(client, address, PAYLOAD) == PAYLOAD.upper()


def test_unix_socket_once_without_fork(tmp_path: Path) -> None:
    path = str(tmp_path / "systemd.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(4)
        with relay_on(listener, [f"ACCEPT:{listener.fileno()}", "SYSTEM:cat"]) as proc:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            assert talk(client, path, PAYLOAD) == PAYLOAD
            assert proc.wait(timeout=scaled(10)) == 0
    # The socket file belongs to whoever made the socket: the relay leaves it.
    assert Path(path).exists()


def test_range_applies_to_an_inherited_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        address = listener.getsockname()
        fd = listener.fileno()
        with relay_on(listener, [f"ACCEPT-FD:{fd},fork,range=127.0.0.2/32", "SYSTEM:cat"]):
            refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            assert talk(refused, address, b"not from .2") == b""
            allowed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            allowed.bind(("127.0.0.2", 0))
            assert talk(allowed, address, b"from .2") == b"from .2"


@pytest.mark.parametrize(
    ("fd", "error"),
    [
        ("x", 'error in FD number "x"'),
        ("0", "getsockname(fd=0, ...): Socket operation on non-socket"),
    ],
)
def test_not_a_socket(fd: str, error: str) -> None:
    result = run_relay([f"ACCEPT-FD:{fd}", "-"])
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [error]


def test_ip_peer_checks_on_a_unix_socket_are_refused(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / "s"))
        listener.listen(1)
        with relay_on(listener, [f"ACCEPT-FD:{listener.fileno()},range=127.0.0.1/8", "-"]) as proc:
            assert proc.wait(timeout=scaled(10)) == 1
