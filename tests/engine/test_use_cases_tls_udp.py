"""The TLS and UDP command lines of USE-CASES.md section 1, run as users run them.

As in test_use_cases.py: the command lines as written, host names pointed at
servers on 127.0.0.1 and fixed ports replaced by free ones. Certificates are
made for the test (trustme). socat's OPENSSL-LISTEN verifies clients by
default (``verify=1``) against the default trust store; the tests point
OpenSSL's default store at their CA with ``SSL_CERT_FILE``, as a deployment
that trusts an internal CA would.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import RELAY, scaled
from tests.support import (
    RelayProcess,
    ThreadedServer,
    echo,
    exchange,
    free_port,
    recv_all,
    relay_listening,
    tls_exchange,
    wait_for_port,
)

PAYLOAD = os.urandom(100_000) + b"\r\nend\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """server.pem (certificate and key in one file, as socat users keep it), client.pem, ca.pem."""
    folder = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client.example")
    paths = {"server": folder / "server.pem", "client": folder / "client.pem", "ca": folder / "ca.pem"}
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return paths


@pytest.fixture
def trusting_ca(pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Relay processes started by the test trust the test CA by default."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))


def client_context(pki: dict[str, Path], *, with_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if with_cert:
        context.load_cert_chain(str(pki["client"]))
    return context


class TLSEchoServer:
    """A TLS echo server on 127.0.0.1 (the "secure service" behind a relay)."""

    def __init__(self, pki: dict[str, Path]) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(pki["server"]))
        self.server = ThreadedServer(self._handle)

    def _handle(self, conn: socket.socket) -> None:
        with self.context.wrap_socket(conn, server_side=True) as tls:
            while data := tls.recv(65536):
                tls.sendall(data)

    def __enter__(self) -> TLSEchoServer:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    @property
    def port(self) -> int:
        return self.server.port


def test_tls_server_to_the_terminal(pki: dict[str, Path], trusting_ca: None) -> None:
    # relay OPENSSL-LISTEN:443,cert=server.pem,fork -
    listen = free_port()
    # -t 0.5, socat's default: stdin stays open, so the session ends by it once the client has.
    relay = RelayProcess(["-t", "0.5", f"OPENSSL-LISTEN:{listen},cert={pki['server']},fork", "-"])
    with relay:
        wait_for_port(listen)
        relay.proc.stdin.write(b"hello over tls\n")  # type: ignore[union-attr]
        relay.proc.stdin.flush()  # type: ignore[union-attr]
        assert tls_exchange(listen, b"from client\n", client_context(pki))[:15] == b"hello over tls\n"
    assert b"from client\n" in relay.stdout_bytes


def test_tls_server_refuses_clients_without_a_certificate(pki: dict[str, Path], trusting_ca: None) -> None:
    """verify=1 is socat's default on OPENSSL-LISTEN too: no client certificate, no session."""
    listen = free_port()
    with relay_listening([f"OPENSSL-LISTEN:{listen},cert={pki['server']},fork", "PIPE"], listen) as relay:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            tls_exchange(listen, b"x", client_context(pki, with_cert=False))
        assert tls_exchange(listen, b"still serving", client_context(pki)) == b"still serving"
    assert "peer did not return a certificate" in relay.stderr_text


@pytest.mark.parametrize("traced", [False, True])
def test_tls_termination(pki: dict[str, Path], trusting_ca: None, traced: bool) -> None:
    # relay OPENSSL-LISTEN:8443,cert=/certs/server.pem,fork TCP:secure-service:443
    # relay -v OPENSSL-LISTEN:8443,cert=server.pem,fork TCP:container:443
    with ThreadedServer(echo) as service:
        listen = free_port()
        args = [f"OPENSSL-LISTEN:{listen},cert={pki['server']},fork", f"TCP:localhost:{service.port}"]
        with relay_listening(["-v", *args] if traced else args, listen) as relay:
            for _ in range(2):
                assert tls_exchange(listen, PAYLOAD, client_context(pki)) == PAYLOAD
    if traced:
        assert "length=" in relay.stderr_text and "end" in relay.stderr_text


@pytest.mark.parametrize(
    "template",
    [
        "TCP-LISTEN:{listen},fork,reuseaddr OPENSSL:{host}:{port},verify=0",  # Azure SQL, Storage
        "TCP-LISTEN:{listen},fork OPENSSL:{host}:{port},verify=0",  # Azure Redis
    ],
)
def test_tls_origination(pki: dict[str, Path], template: str) -> None:
    with TLSEchoServer(pki) as service:
        listen = free_port()
        args = template.format(listen=listen, host="localhost", port=service.port).split()
        with relay_listening(args, listen):
            assert exchange(listen, PAYLOAD) == PAYLOAD


def test_tls_origination_verifies_by_default(pki: dict[str, Path]) -> None:
    """Without verify=0 the server's chain and name are checked: an untrusted CA is refused."""
    with TLSEchoServer(pki) as service:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen}", f"OPENSSL:localhost:{service.port}"]
        with relay_listening(args, listen) as relay:
            # No bytes sent: unread bytes would turn the relay's close into a reset.
            assert exchange(listen, b"") == b""
            assert relay.wait() == 1
    assert "certificate verify failed" in relay.stderr_text


def test_traced_tls_client(pki: dict[str, Path]) -> None:
    # relay -v - OPENSSL:localhost:8443,verify=0
    with TLSEchoServer(pki) as service:
        result = subprocess.run(
            [*RELAY, "-v", "-t", "2", "-", f"OPENSSL:localhost:{service.port},verify=0"],
            input=b"GET / HTTP/1.0\r\n\r\n",
            capture_output=True,
            timeout=scaled(20),
            check=False,
        )
    assert result.stdout == b"GET / HTTP/1.0\r\n\r\n"
    assert b"> " in result.stderr and b"GET / HTTP/1.0\\r" in result.stderr


def test_tls_to_tls_with_logging(pki: dict[str, Path], trusting_ca: None) -> None:
    # relay -v OPENSSL-LISTEN:8443,cert=server.pem,fork OPENSSL:api.example.com:443,verify=0
    with TLSEchoServer(pki) as service:
        listen = free_port()
        args = ["-v", f"OPENSSL-LISTEN:{listen},cert={pki['server']},fork",
                f"OPENSSL:localhost:{service.port},verify=0"]  # fmt: skip
        with relay_listening(args, listen) as relay:
            assert tls_exchange(listen, PAYLOAD, client_context(pki)) == PAYLOAD
    assert "length=" in relay.stderr_text


@pytest.fixture
def udp_client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(scaled(5))
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_udp_listener_to_the_terminal(udp_client: socket.socket) -> None:
    # relay UDP-LISTEN:514,fork -
    listen = free_port(kind=socket.SOCK_DGRAM)
    with RelayProcess([f"UDP-LISTEN:{listen},fork", "-"]) as relay:
        wait_for_port(listen, "udp")
        for line in (b"<13>first syslog line\n", b"<13>second\n"):
            udp_client.sendto(line, ("127.0.0.1", listen))
        threading.Event().wait(0.5)
    assert relay.stdout_bytes == b"<13>first syslog line\n<13>second\n"


def test_udp_to_tcp_conversion(udp_client: socket.socket) -> None:
    # relay UDP-LISTEN:514,fork TCP:logserver:514
    received: list[bytes] = []

    def logserver(conn: socket.socket) -> None:
        received.append(recv_all(conn))

    with ThreadedServer(logserver) as server:
        listen = free_port(kind=socket.SOCK_DGRAM)
        args = ["-T", "0.5", f"UDP-LISTEN:{listen},fork", f"TCP:localhost:{server.port}"]
        with relay_listening(args, listen, "udp"):
            udp_client.sendto(b"<13>one\n", ("127.0.0.1", listen))
            udp_client.sendto(b"<13>two\n", ("127.0.0.1", listen))
            threading.Event().wait(1.5)  # -T 0.5 ends the idle session: the TCP side sees EOF
    assert received == [b"<13>one\n<13>two\n"]
