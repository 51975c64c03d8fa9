"""PROXY (HTTP CONNECT) through a real HTTP proxy (Debian's tinyproxy) on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import requires_socat, scaled
from tests.engine.transports.proxy_servers import (
    greet,
    requires_tinyproxy,
    same_as_socat,
    tinyproxy,
)
from tests.engine.transports.test_tcp import needs_ipv6
from tests.support import ThreadedServer, echo, free_port, log_lines, relay_listening, run_relay

pytestmark = requires_tinyproxy

PAYLOAD = b"through the HTTP proxy\n" * 1000
USER, PASSWORD = "ops", "s3cret"


@pytest.fixture
def open_proxy(tmp_path: Path, echo_server: ThreadedServer) -> Iterator[int]:
    with tinyproxy(tmp_path, allowed_port=echo_server.port) as port:
        yield port


@pytest.fixture
def closed_proxy(tmp_path: Path, echo_server: ThreadedServer) -> Iterator[int]:
    with tinyproxy(tmp_path, allowed_port=echo_server.port, credentials=(USER, PASSWORD)) as port:
        yield port


@pytest.mark.parametrize(
    "template",
    [
        "PROXY:127.0.0.1:127.0.0.1:{target},proxyport={proxy}",
        "PROXY-CONNECT:localhost:127.0.0.1:{target},proxyport={proxy}",
        "PROXY:127.0.0.1:localhost:{target},proxyport={proxy},resolve",
        "PROXY:127.0.0.1:127.0.0.1:{target},proxyport={proxy},http-version=1.1",
    ],
)
def test_bytes_both_ways_through_tinyproxy(
    template: str, open_proxy: int, echo_server: ThreadedServer
) -> None:
    address = template.format(proxy=open_proxy, target=echo_server.port)
    assert round_trip(address, PAYLOAD) == PAYLOAD


def round_trip(address: str, payload: bytes) -> bytes:
    """Send ``payload`` through ``relay TCP-LISTEN:... ADDRESS`` and read as much back
    (or, for an empty payload, all the target says until it closes).

    The client closes only after the echo came back: tinyproxy does not pass
    a half-close on, it ends the whole tunnel at the first EOF (socat
    through it loses the reply the same way).
    """
    listen = free_port()
    with relay_listening([f"TCP-LISTEN:{listen},bind=127.0.0.1", address], listen) as relay:
        with socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn:
            conn.sendall(payload)
            received = b""
            while len(received) < (len(payload) or 1 << 30):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
        assert relay.wait() == 0, relay.stderr_text
    return received


def test_log_lines_are_socats(open_proxy: int, echo_server: ThreadedServer) -> None:
    address = f"PROXY:127.0.0.1:localhost:{echo_server.port},proxyport={open_proxy},resolve"
    result = run_relay(["-d", "-d", "-d", "-", address], input=b"x")
    stderr = result.stderr.decode()
    notices, info = log_lines(stderr, "N"), log_lines(stderr, "I")
    port = echo_server.port
    assert f"opening connection to localhost:{port} via proxy 127.0.0.1:{open_proxy}" in notices
    assert f"opening connection to proxy 127.0.0.1:{open_proxy}" in notices
    # resolve: the request names the IPv4 address.
    assert f'sending "CONNECT 127.0.0.1:{port} HTTP/1.0\\r\\n"' in info
    assert 'sending "\\r\\n"' in info
    assert 'proxy_connect: received answer "HTTP/1.0 200 Connection established\\r\\n"' in info
    assert f"successfully connected to 127.0.0.1:{port} via proxy 127.0.0.1:{open_proxy}" in notices


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ("", "Proxy Authentication Required"),  # 407
        (f",proxyauth={USER}:wrong", "Unauthorized"),  # tinyproxy answers 401 to bad credentials
    ],
)
def test_refused_credentials_are_an_error_and_exit_1(
    options: str, reason: str, closed_proxy: int, echo_server: ThreadedServer
) -> None:
    address = f"PROXY:127.0.0.1:127.0.0.1:{echo_server.port},proxyport={closed_proxy}{options}"
    result = run_relay(["-", address], input=b"never sent")
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [
        f"CONNECT 127.0.0.1:{echo_server.port}: {reason}"
    ]
    assert result.stdout == b""


def test_credentials_inline_and_from_a_file(
    tmp_path: Path, closed_proxy: int, echo_server: ThreadedServer
) -> None:
    secret = tmp_path / "proxy-credentials"
    secret.write_text(f"{USER}:{PASSWORD}")
    base = f"PROXY:127.0.0.1:127.0.0.1:{echo_server.port},proxyport={closed_proxy}"
    for options in (f"proxyauth={USER}:{PASSWORD}", f"proxy-authorization-file={secret}"):
        assert round_trip(f"{base},{options}", PAYLOAD) == PAYLOAD
    both = run_relay(["-", f"{base},proxyauth=a:b,proxyauthfile={secret}"])
    assert both.returncode == 1
    assert log_lines(both.stderr.decode(), "E") == [
        "Only one of options proxy-authorization and proxy-authorization-file allowed"
    ]


def test_a_port_the_proxy_refuses(open_proxy: int) -> None:
    forbidden = free_port()
    result = run_relay(["-", f"PROXY:127.0.0.1:127.0.0.1:{forbidden},proxyport={open_proxy}"])
    assert result.returncode == 1
    [error] = log_lines(result.stderr.decode(), "E")
    assert error.startswith(f"CONNECT 127.0.0.1:{forbidden}: ")


def test_no_proxy_listening() -> None:
    closed = free_port()
    result = run_relay(["-", f"PROXY:127.0.0.1:127.0.0.1:80,proxyport={closed}"])
    stderr = result.stderr.decode()
    assert result.returncode == 1
    [warning] = log_lines(stderr, "W")
    assert warning.endswith(f"AF=2 127.0.0.1:{closed}, 16): Connection refused")
    assert log_lines(stderr, "E") == [f"PROXY:127.0.0.1:...,proxyport={closed}: Connection refused"]


def test_data_right_after_the_answer_is_kept(tmp_path: Path) -> None:
    with ThreadedServer(greet) as target, tinyproxy(tmp_path, allowed_port=target.port) as proxy:
        address = f"PROXY:127.0.0.1:127.0.0.1:{target.port},proxyport={proxy}"
        assert round_trip(address, b"") == b"hello from the target\n"


@requires_socat
def test_same_result_as_socat(closed_proxy: int, echo_server: ThreadedServer) -> None:
    # Refused: the same E line and exit status. (A granted tunnel is compared
    # through dante in test_socks.py: tinyproxy ends a tunnel at the client's
    # EOF, which makes what comes back first a race for socat and relay alike.)
    same_as_socat(
        f"PROXY:127.0.0.1:127.0.0.1:{echo_server.port},proxyport={closed_proxy}",
        b"x",
        refused=True,
    )


@needs_ipv6
def test_ipv6_target_goes_in_brackets(tmp_path: Path) -> None:
    target = ThreadedServer(echo, family=socket.AF_INET6, address=("::1", 0))
    with target, tinyproxy(tmp_path, allowed_port=target.port) as proxy:
        address = f"PROXY:127.0.0.1:[::1]:{target.port},proxyport={proxy}"
        assert round_trip(address, PAYLOAD) == PAYLOAD
        result = run_relay(["-d", "-d", "-d", "-", address], input=b"")
    assert f'sending "CONNECT [::1]:{target.port} HTTP/1.0\\r\\n"' in log_lines(
        result.stderr.decode(), "I"
    )
