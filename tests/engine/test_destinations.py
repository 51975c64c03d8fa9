"""``--deny-connect`` / ``--allow-connect``: checked on the resolved address, in every connector."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from kubectl_relay.engine.cli import parse_command_line
from kubectl_relay.engine.destinations import ConnectPolicy
from kubectl_relay.engine.errors import UsageError
from tests.conftest import scaled
from tests.support import (
    ThreadedServer,
    echo,
    free_port,
    log_lines,
    recv_all,
    relay_listening,
    run_relay,
    udp_echo,
)


def networks(*texts: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


def test_options_collect_networks() -> None:
    line = parse_command_line(
        ["--deny-connect", "169.254.0.0/16,::1", "--deny-connect=127.0.0.0/8",
         "--allow-connect", "10.0.0.0/8", "-", "-"]
    )
    assert line.connect_policy == ConnectPolicy(
        denied=networks("169.254.0.0/16", "::1/128", "127.0.0.0/8"),
        allowed=networks("10.0.0.0/8"),
    )
    assert parse_command_line(["-", "-"]).connect_policy is None  # connect anywhere


@pytest.mark.parametrize("bad", ["10.0.0.300", "10.0.0.0/33", "metadata/8", "a..b", "web:80"])
def test_bad_network_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_command_line(["--deny-connect", f"169.254.0.0/16,{bad}", "-", "-"])
    assert str(caught.value) == (
        f'option "--deny-connect": "{bad}" is not a network or a host name pattern; expected '
        "CIDRs such as 169.254.0.0/16 or fd00::/8, or names such as "
        "*.kube-system.svc.cluster.local, separated by commas"
    )


def test_options_collect_name_patterns() -> None:
    line = parse_command_line(
        ["--deny-connect", "Metadata.Google.Internal.,*.kube-system.*",
         "--allow-connect", "*.shop.svc.cluster.local", "-", "-"]
    )
    assert line.connect_policy == ConnectPolicy(
        denied_names=("metadata.google.internal", "*.kube-system.*"),
        allowed_names=("*.shop.svc.cluster.local",),
    )


LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize(
    ("policy", "name", "expected"),
    [
        # A denied name is refused whatever it resolves to.
        (ConnectPolicy(denied_names=("*.kube-system.*",)), "kube-dns.kube-system.svc",
         "denied by --deny-connect *.kube-system.*"),
        (ConnectPolicy(denied_names=("*.kube-system.*",)), "KUBE-DNS.Kube-System.svc.",
         "denied by --deny-connect *.kube-system.*"),
        (ConnectPolicy(denied_names=("*.kube-system.*",)), "web.shop.svc", None),
        # Allowed: by name or by network, either is enough.
        (ConnectPolicy(allowed_names=("*.shop.svc",)), "web.shop.svc", None),
        (ConnectPolicy(allowed_names=("*.shop.svc",)), "web.other.svc",
         "not in any --allow-connect network or name"),
        (ConnectPolicy(allowed_names=("*.shop.svc",)), None,
         "not in any --allow-connect network or name"),
        (ConnectPolicy(allowed=networks("127.0.0.0/8"), allowed_names=("*.shop.svc",)),
         "web.other.svc", None),
        # A denied network wins over an allowed name.
        (ConnectPolicy(denied=networks("127.0.0.0/8"), allowed_names=("*.shop.svc",)),
         "web.shop.svc", "denied by --deny-connect 127.0.0.0/8"),
    ],
)
def test_name_patterns(policy: ConnectPolicy, name: str | None, expected: str | None) -> None:
    assert policy.refusal(LOOPBACK, name) == expected


def test_denied_name_is_refused_before_it_resolves() -> None:
    result = run_relay(["--deny-connect", "*.invalid", "-", "TCP:no-such-host.invalid:80"])
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [
        "connecting to no-such-host.invalid: denied by --deny-connect *.invalid"
    ]


@pytest.mark.parametrize(
    ("mapped", "expected"),
    [("::ffff:127.0.0.1", "denied by --deny-connect 127.0.0.0/8"), ("::ffff:10.0.0.1", None)],
)
def test_mapped_addresses_count_as_ipv4(mapped: str, expected: str | None) -> None:
    policy = ConnectPolicy(denied=networks("127.0.0.0/8"))
    assert policy.refusal(ipaddress.ip_address(mapped)) == expected


@pytest.mark.parametrize("target", ["127.0.0.1", "localhost"])
def test_denied_after_resolution(target: str) -> None:
    """A name is checked on what it resolves to: localhost is 127.0.0.1 here."""
    with ThreadedServer(echo) as server:
        result = run_relay(
            ["--deny-connect", "127.0.0.0/8,::1", "-", f"TCP4:{target}:{server.port}"],
            input=b"secret",
        )
        assert server.connections == 0
    assert result.returncode == 1
    assert result.stdout == b""
    assert log_lines(result.stderr.decode(), "E") == [
        "connecting to 127.0.0.1: denied by --deny-connect 127.0.0.0/8"
    ]


def test_allow_list_refuses_what_it_does_not_hold() -> None:
    with ThreadedServer(echo) as server:
        result = run_relay(
            ["--allow-connect", "10.0.0.0/8", "-", f"TCP4:127.0.0.1:{server.port}"], input=b"x"
        )
        assert server.connections == 0
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [
        "connecting to 127.0.0.1: not in any --allow-connect network"
    ]


def test_allowed_address_relays() -> None:
    with ThreadedServer(echo) as server:
        result = run_relay(
            ["--deny-connect", "169.254.0.0/16", "--allow-connect", "127.0.0.0/8",
             "-", f"TCP:127.0.0.1:{server.port}"],
            input=b"hello",
        )
    assert (result.returncode, result.stdout) == (0, b"hello")


def test_udp_and_tls_are_checked_too() -> None:
    with ThreadedServer(udp_echo, kind=socket.SOCK_DGRAM) as server:
        udp = run_relay(["--deny-connect", "127.0.0.0/8", "-", f"UDP:127.0.0.1:{server.port}"])
    tls = run_relay(["--deny-connect", "127.0.0.0/8", "-", f"OPENSSL:127.0.0.1:{free_port()}"])
    for result in (udp, tls):
        assert result.returncode == 1
        assert log_lines(result.stderr.decode(), "E") == [
            "connecting to 127.0.0.1: denied by --deny-connect 127.0.0.0/8"
        ]


def test_forking_listener_refuses_each_session_and_keeps_serving() -> None:
    """The fast path (a forking TCP listener to an IP address) is checked as well."""
    listen = free_port()
    with ThreadedServer(echo) as server:
        args = ["--deny-connect", "127.0.0.1/32", f"TCP-LISTEN:{listen},fork,reuseaddr",
                f"TCP:127.0.0.1:{server.port}"]
        with relay_listening(args, listen) as relay:
            assert refused_exchange(listen) == b""
            assert refused_exchange(listen) == b""
            assert relay.proc.poll() is None
        assert server.connections == 0
    assert log_lines(relay.stderr_text, "E") == [
        "connecting to 127.0.0.1: denied by --deny-connect 127.0.0.1/32"
    ] * 2


def refused_exchange(port: int) -> bytes:
    """What a client gets from a relay that cannot open its second address: nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
        try:
            conn.sendall(b"x")
            return recv_all(conn)
        except ConnectionResetError:
            return b""
