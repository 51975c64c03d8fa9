"""VSOCK-LISTEN and VSOCK-CONNECT on the kernel's virtio sockets.

A session from one process of the machine to another needs the kernel's
``vsock_loopback`` transport (context id 1). Where the kernel has it, the
round trip runs; where it has not (a container without the module), the
tests check what can be checked on real sockets: the listener really holds
its port, and a connection attempt fails with socat's wording.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.conftest import RELAY, scaled
from tests.support import RelayProcess, log_lines, run_relay, wait_for_output

AF_VSOCK = getattr(socket, "AF_VSOCK", 40)
VMADDR_CID_ANY = 0xFFFFFFFF
VMADDR_CID_LOCAL = 1


def vsock_available() -> bool:
    try:
        socket.socket(AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


def vsock_loopback() -> bool:
    """Whether a process here can connect to another one over context id 1."""
    if not vsock_available():
        return False
    with socket.socket(AF_VSOCK, socket.SOCK_STREAM) as server:
        server.bind((VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.socket(AF_VSOCK, socket.SOCK_STREAM) as client:
            client.settimeout(1)
            try:
                client.connect((VMADDR_CID_LOCAL, port))
            except OSError:
                return False
    return True


needs_vsock = pytest.mark.skipif(not vsock_available(), reason="the kernel has no AF_VSOCK")
HAS_LOOPBACK = vsock_loopback()


def free_vsock_port() -> int:
    with socket.socket(AF_VSOCK, socket.SOCK_STREAM) as probe:
        probe.bind((VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        port: int = probe.getsockname()[1]
        return port


def wait_for_log(relay: RelayProcess, text: str) -> None:
    wait_for_output(relay, lambda _, stderr: text in stderr)


@needs_vsock
def test_listen_holds_its_port() -> None:
    port = free_vsock_port()
    with RelayProcess(["-d", "-d", f"VSOCK-LISTEN:{port}", "-"]) as relay:
        wait_for_log(relay, f"listening on AF=40 cid:{VMADDR_CID_ANY} port:{port}")
        other = socket.socket(AF_VSOCK, socket.SOCK_STREAM)
        with other, pytest.raises(OSError, match="Address already in use"):
            other.bind((VMADDR_CID_ANY, port))
        relay.stop()
    assert any(line.startswith("VSOCK CID=") for line in log_lines(relay.stderr_text, "N"))


@needs_vsock
@pytest.mark.skipif(HAS_LOOPBACK, reason="vsock_loopback is there: the round trip test runs")
def test_connect_without_a_transport_fails_with_an_error() -> None:
    port = free_vsock_port()
    result = run_relay(["-", f"VSOCK-CONNECT:{VMADDR_CID_LOCAL}:{port},connect-timeout=0.5"])
    assert result.returncode == 1
    [error] = log_lines(result.stderr.decode(), "E")
    assert f"AF=40 cid:1 port:{port}" in error


@pytest.mark.skipif(not HAS_LOOPBACK, reason="no vsock_loopback transport in this kernel")
def test_round_trip_over_loopback() -> None:
    port = free_vsock_port()
    with RelayProcess(["-d", "-d", f"VSOCK-LISTEN:{port},fork", "SYSTEM:tr a-z A-Z"]) as relay:
        wait_for_log(relay, f"listening on AF=40 cid:{VMADDR_CID_ANY} port:{port}")
        deadline = time.monotonic() + scaled(10)
        while True:
            result = subprocess.run(
                [*RELAY, "-", f"VSOCK-CONNECT:1:{port}"],
                input=b"over vsock\n",
                capture_output=True,
                timeout=scaled(10),
                check=False,
            )
            if result.returncode == 0 or time.monotonic() > deadline:
                break
        relay.stop()
    assert result.stdout == b"OVER VSOCK\n"


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ("VSOCK-CONNECT:x:1", 'sockaddr_vm - garbage in cid: "x"'),
        ("VSOCK:2:80a", 'sockaddr_vm - garbage in port: "a"'),
        ("VSOCK-L:0x", 'sockaddr_vm - garbage in port: "x"'),
    ],
)
def test_numbers_as_socat_reads_them(address: str, error: str) -> None:
    result = run_relay([address, "-"] if "-L" in address else ["-", address])
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [error]
