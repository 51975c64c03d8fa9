"""Real proxy servers for the SOCKS and PROXY tests: Debian's ``danted`` and ``tinyproxy``.

Each runs in the foreground on a loopback port with a configuration file the
test writes, and is stopped (then killed) on exit. ``./dev setup`` installs
both packages.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import SOCAT, scaled
from tests.support import PATIENT_CLOSE_TIMEOUT, free_port, run_relay, wait_for_port

DANTED = shutil.which("danted") or (
    "/usr/sbin/danted" if os.path.exists("/usr/sbin/danted") else None
)
TINYPROXY = shutil.which("tinyproxy")

requires_danted = pytest.mark.skipif(
    DANTED is None and not os.environ.get("CI"),
    reason="Debian's dante-server is not installed (./dev setup installs it)",
)
requires_tinyproxy = pytest.mark.skipif(
    TINYPROXY is None and not os.environ.get("CI"),
    reason="Debian's tinyproxy is not installed (./dev setup installs it)",
)


def greet(conn: socket.socket) -> None:
    """A target that speaks first: its greeting must arrive right after the proxy's answer."""
    conn.sendall(b"hello from the target\n")
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(4096):
        pass


@contextmanager
def _server(command: Sequence[str], port: int, log: Path) -> Iterator[int]:
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(port)
        except TimeoutError:
            raise AssertionError(f"{command[0]} never listened:\n{log.read_text()}") from None
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=scaled(5))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def dante(
    directory: Path,
    *,
    blocked_port: int | None = None,
    socks_method: str = "none",
) -> Iterator[int]:
    """``danted`` on 127.0.0.1: connects anywhere on loopback but to ``blocked_port``.

    ``socks_method`` is dante's ``socksmethod`` (``none``, or ``username`` to
    offer nothing a client without credentials can take). Yields the port.
    """
    assert DANTED is not None
    port = free_port()
    rules = []
    if blocked_port is not None:
        rules.append(
            f"socks block {{\n  from: 0.0.0.0/0 to: 127.0.0.0/8 port = {blocked_port}\n"
            "  log: error\n}\n"
        )
    rules.append("socks pass {\n  from: 127.0.0.0/8 to: 127.0.0.0/8\n  log: connect\n}\n")
    # Only root may switch users; as anybody else dante runs as that user.
    users = "user.privileged: root\nuser.unprivileged: nobody\n" if os.geteuid() == 0 else ""
    config = directory / "danted.conf"
    config.write_text(
        "logoutput: stderr\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: 127.0.0.1\n"
        "clientmethod: none\n"
        f"socksmethod: {socks_method}\n"
        f"{users}"
        "client pass {\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n}\n" + "".join(rules)
    )
    command = [DANTED, "-f", str(config), "-N", "1", "-p", str(directory / "danted.pid")]
    with _server(command, port, directory / "danted.log") as ready:
        yield ready


@contextmanager
def tinyproxy(
    directory: Path, *, allowed_port: int, credentials: tuple[str, str] | None = None
) -> Iterator[int]:
    """``tinyproxy`` on 127.0.0.1 that CONNECTs only to ``allowed_port``.

    With ``credentials`` it asks for basic authentication. Yields the port.
    """
    assert TINYPROXY is not None
    port = free_port()
    auth = f"BasicAuth {credentials[0]} {credentials[1]}\n" if credentials else ""
    config = directory / "tinyproxy.conf"
    config.write_text(
        f"Port {port}\n"
        "Listen 127.0.0.1\n"
        "Timeout 60\n"
        "LogLevel Info\n"
        "MaxClients 20\n"
        "Allow 127.0.0.1\n"
        f"ConnectPort {allowed_port}\n"
        "DisableViaHeader Yes\n"
        f"{auth}"
    )
    with _server([TINYPROXY, "-d", "-c", str(config)], port, directory / "tinyproxy.log") as ready:
        yield ready


def socks4a_handler(conn: socket.socket) -> None:
    """One SOCKS4A session, written from the protocol: dante implements SOCKS4 only.

    Reads ``VN CD DSTPORT DSTIP USERID\\0`` and, for a DSTIP of 0.0.0.x
    (x != 0), the host name after the user; connects to loopback targets
    only (reply 90, else 91) and then copies bytes both ways until both ends
    have closed. The user names seen are appended to ``SOCKS4A_USERS``.
    """
    head = _recv_exactly(conn, 8)
    version, command, port, ip = struct.unpack("!BBH4s", head)
    user = _recv_until_nul(conn)
    host = socket.inet_ntoa(ip)
    if ip[:3] == b"\0\0\0" and ip[3] != 0:
        host = _recv_until_nul(conn)
    SOCKS4A_USERS.append(user)
    try:
        target_ip = socket.gethostbyname(host)
        if version != 4 or command != 1 or not target_ip.startswith("127."):
            raise OSError("refused")
        target = socket.create_connection((target_ip, port), timeout=scaled(10))
    except OSError:
        conn.sendall(struct.pack("!BBH4s", 0, 91, 0, b"\0\0\0\0"))
        return
    with target:
        conn.sendall(struct.pack("!BBH4s", 0, 90, port, socket.inet_aton(target_ip)))
        _copy_both_ways(conn, target)


SOCKS4A_USERS: list[str] = []


def _recv_exactly(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise OSError("client left during the request")
        data += chunk
    return data


def _recv_until_nul(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\0"):
        data += _recv_exactly(conn, 1)
    return data[:-1].decode()


def _copy_both_ways(a: socket.socket, b: socket.socket) -> None:
    """Copy until both directions saw EOF, passing each EOF on as a half-close."""
    open_ends = {a: b, b: a}
    with selectors.DefaultSelector() as selector:
        for sock in open_ends:
            selector.register(sock, selectors.EVENT_READ)
        while open_ends:
            events = selector.select(timeout=scaled(10))
            if not events:
                return  # a stuck test: give up rather than hang
            for key, _ in events:
                source = key.fileobj
                assert isinstance(source, socket.socket)
                data = source.recv(65536)
                sink = open_ends[source]
                if data:
                    sink.sendall(data)
                    continue
                sink.shutdown(socket.SHUT_WR)
                selector.unregister(source)
                del open_ends[source]


def same_as_socat(address: str, data: bytes, *, refused: bool = False) -> None:
    """``relay - ADDRESS`` and ``socat - ADDRESS`` relay alike and log the same lines.

    ``refused``: the proxy refuses the request. relay says so as socat 1.7
    did, an ``E`` line and exit status 1; socat 1.8.0.3 logs the same text as
    a ``W`` line and exits 255 (a deliberate difference, in ``relay -h``).
    """
    assert SOCAT is not None
    ours = run_relay(["-", address], input=data)
    theirs = subprocess.run(
        [SOCAT, "-t", PATIENT_CLOSE_TIMEOUT, "-", address],
        input=data, capture_output=True, timeout=scaled(10), check=False,
    )
    ours_logged = [line.split("] ", 1)[1] for line in ours.stderr.decode().splitlines()]
    theirs_logged = [line.split("] ", 1)[1] for line in theirs.stderr.decode().splitlines()]
    if refused:
        assert theirs.returncode == 255 and all(line.startswith("W ") for line in theirs_logged)
        theirs_logged = ["E " + line[2:] for line in theirs_logged]
        theirs = subprocess.CompletedProcess(theirs.args, 1, theirs.stdout, theirs.stderr)
    assert (ours.returncode, ours.stdout, ours_logged) == (
        theirs.returncode,
        theirs.stdout,
        theirs_logged,
    ), f"relay: {ours!r}\nsocat: {theirs!r}"
