"""``PROXY-SERVER`` against real clients: curl, socat 1.8's SOCKS and PROXY addresses, raw sockets.

Each test runs a relay (``TCP-LISTEN,fork PROXY-SERVER`` with a
deny list), and a second one behind ``frame=len16``, as ``kubectl relay
proxy`` runs it. The destinations are loopback servers of the test.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator

import pytest

from kubectl_relay.engine.frames import FrameDecoder, encode
from tests.conftest import RELAY, SOCAT, requires_socat, scaled
from tests.support import (
    RelayProcess,
    ThreadedServer,
    echo,
    free_port,
    log_lines,
    recv_all,
    recv_exactly,
    relay_listening,
    run_relay,
    wait_for_output,
)

CURL = shutil.which("curl")
requires_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

#: What the module's relay refuses: a network (nothing listens there) and a name pattern.
DENIED_NETWORK = "127.0.0.2/32"
DENIED_NAMES = "*.forbidden.test"
PAYLOAD = b"through the proxy server\n" * 2000


def http_origin(conn: socket.socket) -> None:
    """A tiny origin server: answers each request with the request head it received."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            return
        head += chunk
    body = head.split(b"\r\n\r\n")[0] + b"\n"
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


@pytest.fixture
def origin() -> Iterator[ThreadedServer]:
    with ThreadedServer(http_origin) as server:
        yield server


@pytest.fixture
def echo_server() -> Iterator[ThreadedServer]:
    with ThreadedServer(echo) as server:
        yield server


@pytest.fixture
def proxy() -> Iterator[tuple[int, RelayProcess]]:
    port = free_port()
    args = [
        "-d", "-d", "--deny-connect", f"{DENIED_NETWORK},{DENIED_NAMES}",
        f"TCP4-LISTEN:{port},fork,reuseaddr", "PROXY-SERVER",
    ]
    with relay_listening(args, port) as relay:
        yield port, relay


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return subprocess.run(
        [CURL, "-sS", "--max-time", str(scaled(10)), *args],
        capture_output=True,
        timeout=scaled(20),
        check=False,
    )


def notices(relay: RelayProcess, wanted: str) -> list[str]:
    """The relay's N lines so far that contain ``wanted`` (waiting until one does)."""
    _, stderr = wait_for_output(relay, lambda _out, err: wanted in err)
    return [line for line in log_lines(stderr, "N") if wanted in line]


@requires_curl
@pytest.mark.parametrize(
    ("option", "host", "protocol"),
    [
        (["--socks5-hostname"], "localhost", "SOCKS5"),
        (["--socks5"], "127.0.0.1", "SOCKS5"),
        (["--socks4a"], "localhost", "SOCKS4a"),
        (["--socks4"], "127.0.0.1", "SOCKS4"),
        (["-p", "-x"], "localhost", "HTTP CONNECT"),
    ],
)
def test_curl_through_every_protocol(
    proxy: tuple[int, RelayProcess],
    origin: ThreadedServer,
    option: list[str],
    host: str,
    protocol: str,
) -> None:
    port, relay = proxy
    scheme = "http://" if option[-1] == "-x" else ""
    path = protocol.replace(" ", "-")
    result = curl(*option, f"{scheme}127.0.0.1:{port}", f"http://{host}:{origin.port}/{path}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"GET /{path} HTTP/1.1\r\n".encode())
    destination = f"{host}:{origin.port}"
    assert notices(relay, f"{protocol} request from AF=2 127.0.0.1:")
    assert any(destination in line for line in notices(relay, f"{protocol} request"))


@requires_curl
def test_absolute_form_request_is_sent_on_in_origin_form(
    proxy: tuple[int, RelayProcess], origin: ThreadedServer
) -> None:
    port, relay = proxy
    result = curl(
        "-x", f"http://127.0.0.1:{port}", "-H", "Proxy-Connection: keep-alive",
        f"http://localhost:{origin.port}/page?q=1",
    )
    assert result.returncode == 0, result.stderr
    seen = result.stdout.decode().replace("\r\n", "\n").splitlines()
    assert seen[0] == "GET /page?q=1 HTTP/1.1"
    assert f"Host: localhost:{origin.port}" in seen
    assert "Connection: close" in seen
    assert not any(line.lower().startswith("proxy-connection") for line in seen)
    assert notices(relay, "HTTP GET request from AF=2 127.0.0.1:")


@requires_socat
@pytest.mark.parametrize(
    "template",
    [
        "SOCKS5-CONNECT:127.0.0.1:{proxy}:localhost:{target}",
        "SOCKS4A:127.0.0.1:localhost:{target},socksport={proxy}",
        "SOCKS4:127.0.0.1:127.0.0.1:{target},socksport={proxy}",
        "PROXY:127.0.0.1:localhost:{target},proxyport={proxy}",
    ],
)
@pytest.mark.parametrize("client", ["socat", "relay"])
def test_socat_and_relay_clients_with_half_close(
    proxy: tuple[int, RelayProcess], echo_server: ThreadedServer, template: str, client: str
) -> None:
    """The whole payload comes back: the client's EOF reaches the echo server through the proxy,
    and the echo server's EOF comes back after the data."""
    port, _ = proxy
    address = template.format(proxy=port, target=echo_server.port)
    command = [SOCAT] if client == "socat" else RELAY
    assert command[0] is not None
    result = subprocess.run(
        [*command, "-t", str(scaled(5)), "-", address],
        input=PAYLOAD,
        capture_output=True,
        timeout=scaled(20),
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == PAYLOAD


def socks5_request(port: int, request: bytes) -> tuple[bytes, socket.socket]:
    """Greet with "no authentication", send ``request``; the reply's head and the socket."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    conn.sendall(b"\x05\x01\x00")
    assert conn.recv(2) == b"\x05\x00"
    conn.sendall(request)
    return recv_exactly(conn, 10), conn


def name_request(name: str, port: int) -> bytes:
    return b"\x05\x01\x00\x03" + bytes((len(name),)) + name.encode() + struct.pack("!H", port)


@pytest.mark.parametrize(
    ("host", "refusal"),
    [
        ("db.forbidden.test", f"connecting to db.forbidden.test: denied by --deny-connect {DENIED_NAMES}"),
        ("127.0.0.2", f"connecting to 127.0.0.2: denied by --deny-connect {DENIED_NETWORK}"),
    ],
)
def test_refused_destination_gets_each_protocols_refusal(
    proxy: tuple[int, RelayProcess], host: str, refusal: str
) -> None:
    port, relay = proxy
    target = free_port()
    if host[0].isdigit():
        request = b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack("!H", target)
    else:
        request = name_request(host, target)
    reply, conn = socks5_request(port, request)
    with conn:
        assert reply[:2] == b"\x05\x02"  # connection not allowed by ruleset
        assert recv_all(conn) == b""
    # SOCKS4a: "request rejected or failed".
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
        if host[0].isdigit():
            conn.sendall(struct.pack("!BBH4s", 4, 1, target, socket.inet_aton(host)) + b"me\0")
        else:
            conn.sendall(struct.pack("!BBH", 4, 1, target) + b"\0\0\0\x01me\0" + host.encode() + b"\0")
        assert recv_all(conn)[:2] == b"\x00\x5b"
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
        conn.sendall(f"CONNECT {host}:{target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answer = recv_all(conn).decode()
    assert answer.startswith("HTTP/1.1 403 Forbidden\r\n")
    assert answer.endswith(f"403 Forbidden: {refusal}\n")
    _, stderr = wait_for_output(relay, lambda _out, err: err.count(refusal) >= 3)
    assert log_lines(stderr, "E").count(refusal) == 3


@requires_curl
def test_curl_fails_on_a_refused_destination(proxy: tuple[int, RelayProcess]) -> None:
    port, _ = proxy
    result = curl("--socks5-hostname", f"127.0.0.1:{port}", "http://web.forbidden.test/")
    assert result.returncode != 0
    assert b"SOCKS5 connection to web.forbidden.test" in result.stderr


def test_connection_refused_is_socks5_reply_5(proxy: tuple[int, RelayProcess]) -> None:
    port, relay = proxy
    closed = free_port()
    reply, conn = socks5_request(port, name_request("localhost", closed))
    with conn:
        assert reply[:2] == b"\x05\x05"
    assert any("Connection refused" in line for line in log_lines(
        wait_for_output(relay, lambda _o, err: f":{closed}, 16): Connection refused" in err)[1],
        "E",
    ))


@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (b"\x16\x03\x01\x00\xa5\x01", "proxy request starts with byte 0x16, which is no proxy"),
        (b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", 'HTTP GET "/index.html" is not for a proxy'),
        (b"\x05\x01\x02", "SOCKS5 client offers the methods [2], none of them 0"),
        (b"\x05\x01\x00\x05\x03\x00\x01\x7f\x00\x00\x01\x00\x50", "SOCKS5 command 3 to 127.0.0.1:80 is not supported"),
        (b"hello\n\r\n", 'HTTP request line "hello" is not METHOD TARGET HTTP/1.x'),
    ],
)
def test_bad_handshake_is_one_error_line(
    proxy: tuple[int, RelayProcess], request_bytes: bytes, message: str
) -> None:
    port, relay = proxy
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
        conn.sendall(request_bytes)
        conn.shutdown(socket.SHUT_WR)
        recv_all(conn)
    _, stderr = wait_for_output(relay, lambda _out, err: message in err)
    assert len([line for line in log_lines(stderr, "E") if message in line]) == 1
    assert "Traceback" not in stderr


@pytest.mark.parametrize("end", [b"\r\n", b"\n"])
def test_http_connect_by_hand(
    proxy: tuple[int, RelayProcess], echo_server: ThreadedServer, end: bytes
) -> None:
    """Lines ending in CRLF or a bare LF (RFC 9112 allows it), and data sent before the answer."""
    port, _ = proxy
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
        head = b"CONNECT localhost:%d HTTP/1.0" % echo_server.port + end + b"X-A: b" + end + end
        conn.sendall(head + b"early")
        conn.shutdown(socket.SHUT_WR)
        answer = recv_all(conn)
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\nearly"


def test_client_that_leaves_mid_request(proxy: tuple[int, RelayProcess]) -> None:
    port, relay = proxy
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
        conn.sendall(b"\x05\x01\x00")
        assert conn.recv(2) == b"\x05\x00"
        conn.sendall(b"\x05\x01\x00\x03\x20abc")  # a name of 32 bytes, 3 of them sent
    message = "proxy client closed the connection during the SOCKS5 request"
    _, stderr = wait_for_output(relay, lambda _out, err: message in err)
    assert "Traceback" not in stderr


def test_framed_first_address(echo_server: ThreadedServer) -> None:
    """``kubectl relay proxy``'s relay: the request comes in frames, early data keeps its order."""
    port = free_port()
    args = ["-d", "-d", f"TCP4-LISTEN:{port},fork,reuseaddr,frame=len16", "PROXY-SERVER"]
    with relay_listening(args, port) as relay, socket.create_connection(
        ("127.0.0.1", port), timeout=scaled(10)
    ) as conn:
        decoder = FrameDecoder()
        frames: list[bytes] = []

        def next_frame() -> bytes:
            while not frames:
                chunk = conn.recv(65536)
                assert chunk, "the relay closed the connection"
                frames.extend(decoder.feed(chunk))
            return frames.pop(0)

        conn.sendall(encode(b"\x05\x01\x00"))
        assert next_frame() == b"\x05\x00"
        # The request and the first data in one frame, as a hurried client sends them.
        conn.sendall(encode(name_request("localhost", echo_server.port) + b"early "))
        assert next_frame()[:2] == b"\x05\x00"
        conn.sendall(encode(b"late") + b"\0\0")  # data, then the end frame (half-close)
        received = b""
        while (frame := next_frame()) != b"":
            received += frame
        assert received == b"early late"
    assert "N proxy: SOCKS5 request from AF=2 127.0.0.1:" in relay.stderr_text
    assert f"to localhost:{echo_server.port}" in relay.stderr_text


def test_proxy_server_must_be_the_second_address() -> None:
    result = run_relay(["PROXY-SERVER", "-"])
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [
        "PROXY-SERVER answers the peer of the first address: use it as the second address "
        "(relay TCP-LISTEN:1080,fork PROXY-SERVER)"
    ]
