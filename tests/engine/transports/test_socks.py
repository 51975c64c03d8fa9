"""SOCKS4, SOCKS4A and SOCKS5-CONNECT through a real SOCKS server (Debian's dante) on loopback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RELAY, requires_socat, scaled
from tests.engine.transports.proxy_servers import (
    SOCKS4A_USERS,
    dante,
    greet,
    requires_danted,
    same_as_socat,
    socks4a_handler,
)
from tests.support import (
    RelayProcess,
    ThreadedServer,
    exchange,
    free_port,
    log_lines,
    relay_listening,
    run_relay,
    wait_for_output,
)

pytestmark = requires_danted

PAYLOAD = b"through the socks server\n" * 1000


@pytest.fixture
def blocked_port() -> int:
    """A port the SOCKS server refuses to connect to."""
    return free_port()


@pytest.fixture
def socks_port(tmp_path: Path, blocked_port: int) -> Iterator[int]:
    with dante(tmp_path, blocked_port=blocked_port) as port:
        yield port


@pytest.mark.parametrize(
    "template",
    [
        "SOCKS5-CONNECT:127.0.0.1:{socks}:127.0.0.1:{target}",
        "SOCKS5:127.0.0.1:127.0.0.1:{target},socksport={socks}",
        # A name goes to the server as a name (address type 3).
        "SOCKS5-CONNECT:127.0.0.1:{socks}:localhost:{target}",
        # socksport overrides the <socks-port> parameter, as in socat.
        "SOCKS5-CONNECT:127.0.0.1:1:127.0.0.1:{target},socksport={socks}",
        "SOCKS4:127.0.0.1:127.0.0.1:{target},socksport={socks}",
        # SOCKS4 resolves the name here, SOCKS4A leaves it to the server.
        "SOCKS4:127.0.0.1:localhost:{target},socksport={socks}",
        "SOCKS:[127.0.0.1]:127.0.0.1:{target},socksport={socks}",
    ],
)
def test_bytes_both_ways_through_dante(
    template: str, socks_port: int, echo_server: ThreadedServer
) -> None:
    address = template.format(socks=socks_port, target=echo_server.port)
    result = run_relay(["-d", "-d", "-", address], input=PAYLOAD)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert result.stdout == PAYLOAD
    assert not log_lines(stderr, "E")


def test_socks5_log_lines_are_socat_18s(socks_port: int, echo_server: ThreadedServer) -> None:
    address = f"SOCKS5-CONNECT:127.0.0.1:{socks_port}:localhost:{echo_server.port}"
    result = run_relay(["-d", "-d", "-d", "-", address], input=b"x")
    info = log_lines(result.stderr.decode(), "I")
    notices = log_lines(result.stderr.decode(), "N")
    assert (
        f"opening connection to localhost:{echo_server.port} vis socks5 server "
        f"127.0.0.1:{socks_port}"
    ) in notices
    assert f"opening connection to socks5 server 127.0.0.1:{socks_port}" in notices
    assert (
        f"successfully connected to localhost:{echo_server.port} via socks5 server "
        f"127.0.0.1:{socks_port}"
    ) in notices
    assert "sending socks5 client hello version=5 nmethods=1" in info
    assert "received SOCKS5 server hello version=5 method=0" in info
    assert "sending socks5 request version=5 command=1 reserved=0 address_type=3" in info
    assert "received SOCKS5 reply version=5 reply=0 address_type=1" in info


@pytest.fixture
def socks4a_port() -> Iterator[int]:
    with ThreadedServer(socks4a_handler) as server:
        yield server.port


def test_socks4a_sends_the_name_and_the_user(
    socks4a_port: int, echo_server: ThreadedServer
) -> None:
    socks_port = socks4a_port
    address = f"SOCKS4A:127.0.0.1:localhost:{echo_server.port},socksport={socks_port},socksuser=ops"
    SOCKS4A_USERS.clear()
    result = run_relay(["-d", "-d", "-d", "-", address], input=PAYLOAD)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert result.stdout == PAYLOAD
    assert SOCKS4A_USERS == ["ops"]
    assert (
        f"opening connection to localhost:{echo_server.port} via socks4 server "
        f'127.0.0.1:{socks_port} as user "ops"'
    ) in log_lines(stderr, "N")
    assert (
        f"sending socks4a request VN=4 DC=1 DSTPORT={echo_server.port} DSTIP=0.0.0.1 "
        "USERID=ops DESTNAME=localhost"
    ) in log_lines(stderr, "I")
    assert "successfully connected via socks4" in log_lines(stderr, "N")


def test_socks_user_defaults_to_logname(socks_port: int, echo_server: ThreadedServer) -> None:
    address = f"SOCKS4:127.0.0.1:127.0.0.1:{echo_server.port},socksport={socks_port}"
    env = {**os.environ, "LOGNAME": "from-logname", "USER": "from-user"}
    result = subprocess.run(
        [*RELAY, "-d", "-d", "-", address],
        input=b"x",
        capture_output=True,
        env=env,
        timeout=scaled(10),
        check=False,
    )
    assert 'as user "from-logname"' in result.stderr.decode()


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("SOCKS5-CONNECT:127.0.0.1:{socks}:127.0.0.1:{blocked}",
         "SOCKS5 server error 2: connection not allowed by ruleset"),
        ("SOCKS5-CONNECT:127.0.0.1:{socks}:localhost:{blocked}",
         "SOCKS5 server error 2: connection not allowed by ruleset"),
        ("SOCKS4:127.0.0.1:127.0.0.1:{blocked},socksport={socks}",
         "socks: connect request rejected or failed"),
        # dante speaks SOCKS4 only and refuses 4A's 0.0.0.1 "address".
        ("SOCKS4A:127.0.0.1:localhost:{blocked},socksport={socks}",
         "socks: connect request rejected or failed"),
    ],
)  # fmt: skip
def test_a_refused_request_is_an_error_and_exit_1(
    template: str, error: str, socks_port: int, blocked_port: int
) -> None:
    address = template.format(socks=socks_port, blocked=blocked_port)
    result = run_relay(["-", address], input=b"never sent")
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [error]
    assert result.stdout == b""


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("SOCKS5-CONNECT:127.0.0.1:{closed}:127.0.0.1:80",
         "SOCKS5-CONNECT:127.0.0.1:{closed}:...: Connection refused"),
        ("SOCKS4:127.0.0.1:127.0.0.1:80,socksport={closed}",
         "SOCKS4:127.0.0.1:...,socksport={closed}: Connection refused"),
    ],
)  # fmt: skip
def test_no_socks_server(template: str, error: str) -> None:
    closed = free_port()
    result = run_relay(["-", template.format(closed=closed)])
    stderr = result.stderr.decode()
    assert result.returncode == 1
    [warning] = log_lines(stderr, "W")
    assert warning.startswith("connect(")
    assert warning.endswith(f"AF=2 127.0.0.1:{closed}, 16): Connection refused")
    assert log_lines(stderr, "E") == [error.format(closed=closed)]


def test_socks5_server_that_wants_a_password(tmp_path: Path) -> None:
    with dante(tmp_path, socks_method="username") as port:
        result = run_relay(["-", f"SOCKS5-CONNECT:127.0.0.1:{port}:127.0.0.1:80"])
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert (
        "SOCKS5 authentication negotiation failed - client & server have no common supported "
        "methods"
    ) in log_lines(stderr, "W")
    assert log_lines(stderr, "E") == [f"SOCKS5-CONNECT:127.0.0.1:{port}: Connection failed"]


def test_forwarding_many_clients_through_socks5(
    socks_port: int, echo_server: ThreadedServer
) -> None:
    # A Tailscale-style sidecar: a local port forwarded through a SOCKS5 proxy.
    listen = free_port()
    args = [
        f"TCP-LISTEN:{listen},fork,reuseaddr,bind=127.0.0.1",
        f"SOCKS5-CONNECT:127.0.0.1:{socks_port}:127.0.0.1:{echo_server.port}",
    ]
    with relay_listening(args, listen):
        for index in range(5):
            payload = f"client {index}\n".encode() * 100
            assert exchange(listen, payload) == payload


@requires_socat
def test_socks4_same_result_as_socat(
    socks_port: int, blocked_port: int, echo_server: ThreadedServer
) -> None:
    for target, data, refused in ((echo_server.port, PAYLOAD, False),
                                  (blocked_port, b"refused", True)):
        address = f"SOCKS4:127.0.0.1:localhost:{target},socksport={socks_port}"
        same_as_socat(address, data, refused=refused)


@requires_socat
def test_socks4a_same_result_as_socat(socks4a_port: int, echo_server: ThreadedServer) -> None:
    address = f"SOCKS4A:127.0.0.1:localhost:{echo_server.port},socksport={socks4a_port}"
    same_as_socat(address, PAYLOAD)


def test_data_right_after_the_reply_is_kept(socks_port: int) -> None:
    # The reply is read exactly: what the target sends at once is not lost.
    with ThreadedServer(greet) as greeting:
        address = f"SOCKS5-CONNECT:127.0.0.1:{socks_port}:127.0.0.1:{greeting.port}"
        result = run_relay(["-", address], input=b"")
    assert result.stdout == b"hello from the target\n"


def test_socks5_listen_carries_the_connection_the_server_accepts(socks_port: int) -> None:
    listen = free_port()
    args = ["-d", "-d", f"SOCKS5-LISTEN:127.0.0.1:{socks_port}:127.0.0.1:{listen}", "SYSTEM:cat"]
    with RelayProcess(args) as relay:
        bound = wait_for_notice(relay, "the SOCKS5 server listens on AF=2 ")
        port = int(bound.rsplit(":", 1)[1])
        assert exchange(port, PAYLOAD) == PAYLOAD
        assert relay.wait() == 0, relay.stderr_text
    notices = log_lines(relay.stderr_text, "N")
    assert "listening on remote host, waiting for connection" in notices
    assert "received connection on remote host" in notices


def wait_for_notice(relay: RelayProcess, start: str) -> str:
    """The first notice of the running relay that starts with ``start``."""
    _, stderr = wait_for_output(
        relay, lambda _, text: any(line.startswith(start) for line in log_lines(text, "N"))
    )
    return next(line for line in log_lines(stderr, "N") if line.startswith(start))
