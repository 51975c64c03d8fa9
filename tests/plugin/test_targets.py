"""TARGET and --listen parsing: tables of valid input -> value and invalid input -> message."""

from __future__ import annotations

import pytest

from kubectl_relay.plugin.errors import TargetSyntaxError
from kubectl_relay.plugin.targets import Kind, ListenAddress, Target, parse_listen, parse_target

VALID = [
    ("svc/web:80", Target(Kind.SERVICE, "web", 80), "svc/web:80"),
    ("service/web:http", Target(Kind.SERVICE, "web", "http"), "svc/web:http"),
    ("services/web:8443", Target(Kind.SERVICE, "web", 8443), "svc/web:8443"),
    ("SVC/web:80", Target(Kind.SERVICE, "web", 80), "svc/web:80"),
    ("po/db-0:5432", Target(Kind.POD, "db-0", 5432), "pod/db-0:5432"),
    ("pod/api.v2:grpc", Target(Kind.POD, "api.v2", "grpc"), "pod/api.v2:grpc"),
    ("deploy/api:8080", Target(Kind.DEPLOYMENT, "api", 8080), "deploy/api:8080"),
    (
        "deployment.apps/api:metrics",
        Target(Kind.DEPLOYMENT, "api", "metrics"),
        "deploy/api:metrics",
    ),
    ("service:80", Target(Kind.HOST, "service", 80), "service:80"),
    (
        "web.prod.svc.cluster.local:443",
        Target(Kind.HOST, "web.prod.svc.cluster.local", 443),
        "web.prod.svc.cluster.local:443",
    ),
    (
        "mydb.database.windows.net:1433",
        Target(Kind.HOST, "mydb.database.windows.net", 1433),
        "mydb.database.windows.net:1433",
    ),
    ("10.0.0.10:53", Target(Kind.HOST, "10.0.0.10", 53), "10.0.0.10:53"),
    ("[fd00::10]:53", Target(Kind.HOST, "fd00::10", 53), "[fd00::10]:53"),
]


@pytest.mark.parametrize(("text", "target", "canonical"), VALID)
def test_valid_targets(text: str, target: Target, canonical: str) -> None:
    assert parse_target(text) == target
    assert str(target) == canonical
    assert parse_target(canonical) == target


INVALID = [
    ("job/x:80", 'unknown kind "job"'),
    ("svc/web", "the port is missing"),
    ("web", "the port is missing"),
    (":80", "the name before the port is missing"),
    ("svc/Web:80", '"Web" is not a valid object name'),
    ("svc/web:0", "port 0 is out of range (1-65535)"),
    ("svc/web:70000", "port 70000 is out of range (1-65535)"),
    ("svc/web:-x", '"-x" is neither a port number nor a port name'),
    ("svc/web:way-too-long-port-name", "is neither a port number nor a port name"),
    ("web:http", '"http" is not a port number (named ports need svc/, pod/ or deploy/)'),
    ("fd00::1:53", "write an IPv6 address in brackets"),
    ("[nope]:53", '"[nope]" is not an IPv6 address'),
    ("bad_host:80", '"bad_host" is not a host name or IP address'),
]


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_targets(text: str, reason: str) -> None:
    with pytest.raises(TargetSyntaxError) as caught:
        parse_target(text)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f'"{text}": ')
    assert str(caught.value).endswith(
        "; accepted: svc/NAME:PORT, pod/NAME:PORT, deploy/NAME:PORT or HOST:PORT"
    )
    assert caught.value.exit_code == 2


LISTENS = [
    ("8080", ListenAddress("127.0.0.1", 8080)),
    ("0", ListenAddress("127.0.0.1", 0)),
    ("0.0.0.0:8080", ListenAddress("0.0.0.0", 8080)),
    ("[::1]:8080", ListenAddress("::1", 8080)),
    ("localhost:9000", ListenAddress("localhost", 9000)),
]


@pytest.mark.parametrize(("text", "listen"), LISTENS)
def test_valid_listen_addresses(text: str, listen: ListenAddress) -> None:
    assert parse_listen(text) == listen


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http", '"http" is not a port number'),
        ("70000", '"70000" is not a port number'),
        ("::1:80", "write an IPv6 address in brackets"),
        ("[x]:80", '"x" is not an IPv6 address'),
        (":80", "write an IPv6 address in brackets"),
    ],
)
def test_invalid_listen_addresses(text: str, reason: str) -> None:
    with pytest.raises(TargetSyntaxError, match=reason):
        parse_listen(text)
