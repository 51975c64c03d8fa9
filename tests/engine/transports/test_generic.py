"""Generic SOCKET-* addresses: socat's dalan notation, and real sockets with socat as the peer."""

from __future__ import annotations

import socket
import struct
import subprocess
from pathlib import Path

import pytest

from kubectl_relay.engine.errors import OpenError
from kubectl_relay.engine.transports.generic import parse_data, to_sockaddr
from tests.conftest import SOCAT, requires_socat, scaled
from tests.engine.transports.test_datagrams import received
from tests.support import (
    RelayProcess,
    ThreadedServer,
    echo,
    exchange,
    free_port,
    log_lines,
    relay_listening,
    run_relay,
    wait_for_port,
)

PAYLOAD = b"through a generic socket\n" * 100


def inet(port: int, host: str = "127.0.0.1") -> str:
    """``x<port>x<address>``: a sockaddr_in after its family field, in dalan."""
    return f"x{port:04x}x{socket.inet_aton(host).hex()}x0000000000000000"


DATA = [
    ("x7f000001", b"\x7f\x00\x00\x01"),
    ("x0050 x7F000001", b"\x00\x50\x7f\x00\x00\x01"),
    ('"Hello world!\\n"', b"Hello world!\n"),
    ('"a\\0"', b"a\x00"),
    ("'A'", b"A"),
    ("i-1000", struct.pack("i", -1000)),
    ("S80B1", struct.pack("H", 80) + b"\x01"),
    ("", b""),
]


@pytest.mark.parametrize(("text", "data"), DATA)
def test_dalan(text: str, data: bytes) -> None:
    assert parse_data(text, "test") == data


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("x123", "odd number of hexadecimal digits"),
        ('"open', "unterminated string"),
        ("/tmp/sock", 'unknown type "/"'),
        ("B256", 'does not fit "B"'),
        ("i", 'a number must follow "i"'),
    ],
)
def test_dalan_errors(text: str, error: str) -> None:
    with pytest.raises(OpenError, match=error):
        parse_data(text, "test")


def test_socket_addresses() -> None:
    assert to_sockaddr(2, bytes.fromhex("0050 7f000001 0000000000000000"), "t") == ("127.0.0.1", 80)
    six = struct.pack("!HI16s", 443, 0, socket.inet_pton(socket.AF_INET6, "::1")) + bytes(4)
    assert to_sockaddr(10, six, "t") == ("::1", 443, 0, 0)
    assert to_sockaddr(1, b"/run/x.sock\0", "t") == "/run/x.sock"
    assert to_sockaddr(1, b"\0abstract", "t") == b"\0abstract"
    with pytest.raises(OpenError, match="family 2 with 4 bytes: not usable here"):
        to_sockaddr(2, b"\0\0\0\0", "t")
    with pytest.raises(OpenError, match="family 40 with"):
        to_sockaddr(40, b"\0" * 16, "t")


def test_socket_connect_tcp_with_bind() -> None:
    with ThreadedServer(echo) as server:
        address = f"SOCKET-CONNECT:2:6:{inet(server.port)},bind={inet(0, '127.0.0.2')}"
        result = run_relay(["-d", "-d", "-", address], input=PAYLOAD)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == PAYLOAD
    assert any(
        line.startswith("successfully connected from local address AF=2 127.0.0.2:")
        for line in log_lines(result.stderr.decode(), "N")
    )


def test_socket_connect_unix_path_as_a_string(tmp_path: Path) -> None:
    path = str(tmp_path / "server.sock")
    with ThreadedServer(echo, family=socket.AF_UNIX, address=path):
        # socat's own test writes the path as \"...\0\": a quote the lexer keeps.
        result = run_relay(["-", f'SOCKET-CONNECT:1:0:\\"{path}\\0\\"'], input=PAYLOAD)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == PAYLOAD


@requires_socat
def test_socket_listen_serves_socat() -> None:
    assert SOCAT is not None
    port = free_port()
    with relay_listening(
        [f"SOCKET-LISTEN:2:6:{inet(port)},reuseaddr,fork", "SYSTEM:tr a-z A-Z"], port
    ):
        for _ in range(2):
            answer = subprocess.run(
                [SOCAT, "-", f"TCP4:127.0.0.1:{port}"],
                input=b"hello\n",
                capture_output=True,
                timeout=scaled(10),
                check=True,
            )
            assert answer.stdout == b"HELLO\n"
        assert exchange(port, PAYLOAD) == PAYLOAD.upper()


@requires_socat
def test_socket_sendto_and_recvfrom_with_socat() -> None:
    assert SOCAT is not None
    # Our SOCKET-SENDTO against socat's UDP4-RECVFROM...
    port = free_port(kind=socket.SOCK_DGRAM)
    with subprocess.Popen([SOCAT, f"UDP4-RECVFROM:{port},fork", "SYSTEM:tr a-z A-Z"]) as peer:
        try:
            wait_for_port(port, "udp")
            result = run_relay(
                ["-t", "2", "-", f"SOCKET-SENDTO:2:2:17:{inet(port)}"], input=b"to\n"
            )
        finally:
            peer.terminate()
            peer.wait(timeout=scaled(5))
    assert result.stdout == b"TO\n", result.stderr.decode()
    # ...and our SOCKET-RECVFROM against socat's UDP4-SENDTO.
    port = free_port(kind=socket.SOCK_DGRAM)
    with RelayProcess([f"SOCKET-RECVFROM:2:2:17:{inet(port)},fork", "SYSTEM:tr a-z A-Z"]):
        wait_for_port(port, "udp")
        answer = subprocess.run(
            [SOCAT, "-t", "2", "-", f"UDP4-SENDTO:127.0.0.1:{port}"],
            input=b"from\n",
            capture_output=True,
            timeout=scaled(10),
            check=True,
        )
    assert answer.stdout == b"FROM\n"


@requires_socat
def test_socket_recv_merges_senders() -> None:
    assert SOCAT is not None
    port = free_port(kind=socket.SOCK_DGRAM)
    with RelayProcess(["-u", f"SOCKET-RECV:2:2:17:{inet(port)}", "-"]) as relay:
        wait_for_port(port, "udp")
        for word in (b"one\n", b"two\n"):
            subprocess.run(
                [SOCAT, "-u", "-", f"UDP4-SENDTO:127.0.0.1:{port}"],
                input=word,
                timeout=scaled(10),
                check=True,
            )
        assert received(relay, b"one\ntwo\n") == b"one\ntwo\n"


def test_socket_datagram_sends_there_and_hears_the_answer() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(scaled(10))
        port = server.getsockname()[1]
        with RelayProcess(["-t", "2", "-", f"SOCKET-DATAGRAM:2:2:17:{inet(port)}"]) as relay:
            assert relay.proc.stdin is not None
            relay.proc.stdin.write(b"ping\n")
            relay.proc.stdin.flush()
            data, sender = server.recvfrom(100)
            server.sendto(data.upper(), sender)
            relay.proc.stdin.close()
            assert relay.wait() == 0
    assert data == b"ping\n"
    assert relay.stdout_bytes == b"PING\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("SOCKET-CONNECT:x:6:x00", 'domain "x" is not a number'),
        ("SOCKET-CONNECT:2:6:x0050", "family 2 with 2 bytes: not usable here"),
        ("SOCKET-CONNECT:2:6:/tmp/sock", 'unknown type "/"'),
    ],
)
def test_bad_generic_addresses(text: str, error: str) -> None:
    result = run_relay(["-", text])
    assert result.returncode == 1
    [line] = log_lines(result.stderr.decode(), "E")
    assert error in line
