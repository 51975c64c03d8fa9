"""The option table, value conversion and socat's option error messages."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from kubectl_relay.engine.errors import OptionError
from kubectl_relay.engine.grammar import tokenize
from kubectl_relay.engine.options import (
    OPTIONS,
    Group,
    Options,
    OptionSpec,
    OptionValue,
    ValueKind,
    format_option,
    lookup_option,
    parse_network,
    parse_options,
)

#: Every group, so that these tests are about values, not about groups.
ALL_GROUPS = Group(sum(member.value for member in Group))


@dataclass(frozen=True)
class Target:
    """A stand-in address kind for ``parse_options``."""

    keyword: str = "TEST"
    groups: Group = ALL_GROUPS


def parse(options: str, groups: Group = ALL_GROUPS) -> Options:
    """Parse ``options`` (``fork,backlog=5``) as the options of one address."""
    (raw,) = tokenize("TEST," + options)
    return parse_options(raw.options, Target(groups=groups))


VALID: list[tuple[str, dict[str, OptionValue]]] = [
    # Flags: bare, 1, 0, any number, C syntax.
    ("fork", {"fork": True}),
    ("fork=1", {"fork": True}),
    ("fork=0", {"fork": False}),
    ("fork=2", {"fork": True}),
    ("fork=0x0", {"fork": False}),
    ("FORK", {"fork": True}),
    ("verify=0", {"verify": False}),
    # Flags where an empty value means "off" (socat 1.8 "reuseaddr=").
    ("reuseaddr", {"reuseaddr": True}),
    ("reuseaddr=", {"reuseaddr": False}),
    ("so-reuseaddr=0", {"reuseaddr": False}),
    ("reuseport", {"reuseport": True}),
    # Constants.
    ("crnl", {"crnl": True}),
    ("crlf", {"crnl": True}),
    ("cr", {"cr": True}),
    # Integers: decimal, hex, octal, bare (1, as socat), bounds.
    ("backlog=5", {"backlog": 5}),
    ("backlog=0x10", {"backlog": 16}),
    ("backlog=010", {"backlog": 8}),
    ("backlog=0", {"backlog": 0}),
    ("backlog", {"backlog": 1}),
    ("max-children=10", {"max-children": 10}),
    ("maxchildren=+3", {"max-children": 3}),
    ("retry=10", {"retry": 10}),
    ("retry=4294967295", {"retry": 4294967295}),
    ("rcvbuf=65536", {"rcvbuf": 65536}),
    ("so-sndbuf=1024", {"sndbuf": 1024}),
    ("keepidle=60,tcp-keepintvl=10,keepcnt=3", {"keepidle": 60, "keepintvl": 10, "keepcnt": 3}),
    ("mss=1400", {"mss": 1400}),
    ("ttl=255,tos=0x10", {"ttl": 255, "tos": 16}),
    ("sourceport=65535", {"sourceport": 65535}),
    ("sp=0", {"sourceport": 0}),
    ("readbytes=1", {"readbytes": 1}),
    ("bytes=100", {"readbytes": 100}),
    # Seconds.
    ("connect-timeout=5", {"connect-timeout": 5.0}),
    ("connect-timeout=0.5", {"connect-timeout": 0.5}),
    ("connect-timeout=.25", {"connect-timeout": 0.25}),
    ("connect-timeout=1e1", {"connect-timeout": 10.0}),
    ("accept-timeout=0", {"accept-timeout": 0.0}),
    ("listen-timeout=3", {"accept-timeout": 3.0}),
    ("interval=2.5", {"interval": 2.5}),
    ("intervall=1", {"interval": 1.0}),
    # Modes are octal, with or without the leading 0.
    ("mode=0600", {"mode": 0o600}),
    ("perm=600", {"mode": 0o600}),
    ("umask=022", {"umask": 0o22}),
    ("perm-early=0", {"perm-early": 0}),
    ("mode=07777", {"mode": 0o7777}),
    # Text.
    ("cert=server.pem", {"cert": "server.pem"}),
    ("certificate=/certs/server.pem", {"cert": "/certs/server.pem"}),
    (
        "openssl-key=k.pem,cafile=ca.pem,capath=/etc/ssl",
        {
            "key": "k.pem",
            "cafile": "ca.pem",
            "capath": "/etc/ssl",
        },
    ),
    ("cn=example.com", {"commonname": "example.com"}),
    ("snihost=api.example.com,no-sni=0", {"snihost": "api.example.com", "no-sni": False}),
    ("nosni", {"no-sni": True}),
    (
        "min-version=TLS1.2,max-proto-version=TLS1.3",
        {
            "min-proto-version": "TLS1.2",
            "max-proto-version": "TLS1.3",
        },
    ),
    ("ciphers=HIGH:!aNULL", {"cipher": "HIGH:!aNULL"}),
    ("bind=127.0.0.1:5555", {"bind": "127.0.0.1:5555"}),
    ("bind=[::1]:80", {"bind": "[::1]:80"}),
    ("bind=", {"bind": ""}),
    ("pf=ip6", {"pf": "ip6"}),
    ("protocol-family=ip4", {"pf": "ip4"}),
    ("path=/usr/bin", {"path": "/usr/bin"}),
    # Process, file and socket flags.
    ("pipes,stderr,nofork=0,login", {"pipes": True, "stderr": True, "nofork": False, "dash": True}),
    ("ignoreeof,setsid", {"ignoreeof": True, "setsid": True}),
    ("creat,excl,trunc,append", {"creat": True, "excl": True, "trunc": True, "append": True}),
    ("create,o-append=0", {"creat": True, "append": False}),
    ("rdonly,wronly=0,rdwr=0", {"rdonly": True, "wronly": False, "rdwr": False}),
    ("unlink-early,unlink-close=0", {"unlink-early": True, "unlink-close": False}),
    ("keepalive,nodelay,broadcast", {"keepalive": True, "nodelay": True, "broadcast": True}),
    ("v6only=0", {"ipv6-v6only": False}),
    ("forever,lowport", {"forever": True, "lowport": True}),
    # A repeated option keeps its last value; ranges add up.
    ("fork=0,fork", {"fork": True}),
    ("backlog=1,backlog=2", {"backlog": 2}),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid(text: str, expected: dict[str, OptionValue]) -> None:
    assert dict(parse(text)) == expected


def test_order_is_kept() -> None:
    assert list(parse("reuseaddr,fork,backlog=5,sp=1")) == [
        "reuseaddr",
        "fork",
        "backlog",
        "sourceport",
    ]


RANGES = [
    ("127.0.0.1/8", ["127.0.0.0/8"]),
    ("10.0.0.0/8", ["10.0.0.0/8"]),
    ("10.0.0.0:255.0.0.0", ["10.0.0.0/8"]),
    ("192.168.1.7:255.255.255.255", ["192.168.1.7/32"]),
    ("[::1]/128", ["::1/128"]),
    ("[fe80::1]/10", ["fe80::/10"]),
    ("::1/128", ["::1/128"]),
]


@pytest.mark.parametrize(("text", "expected"), RANGES)
def test_range(text: str, expected: list[str]) -> None:
    networks = parse("range=" + text).networks("range")
    assert networks == tuple(ipaddress.ip_network(n) for n in expected)


def test_a_range_may_name_a_host() -> None:
    # As socat resolves it: its test suite passes range=localhost:255.255.255.255.
    assert parse_network("localhost:255.255.255.255") == ipaddress.ip_network("127.0.0.1/32")
    assert parse_network("localhost/8") == ipaddress.ip_network("127.0.0.0/8")


def test_ranges_add_up() -> None:
    networks = parse("range=10.0.0.0/8,fork,range=[::1]/128").networks("range")
    assert networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    "text",
    [
        "x",
        "127.0.0.1",
        "10.0.0.0/33",
        "[::1]",
        "[::1]/129",
        "10.0.0.0:255.0.255.0",
        "[10.0.0.1]/8",
        "no-such-host.invalid:255.0.0.0",
        "bad;name:255.0.0.0",
        "",
    ],
)
def test_parse_network_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_network(text)


INVALID = [
    # socat 1.8.1's own messages (xioopts.c parseopts_table, Strtoul).
    ("foo", 'parseopts_table(): unknown option "foo"'),
    ("fork,Foo=1", 'parseopts_table(): unknown option "Foo"'),
    ("=5", 'parseopts_table(): unknown option ""'),
    ("fork=x", 'parseopts(): missing numerical value of option "fork=x"'),
    ("fork=", 'parseopts(): missing numerical value of option "fork="'),
    ("reuseaddr=x", 'parseopts(): missing numerical value of option "reuseaddr=x"'),
    ("rcvbuf=10x", 'parseopts(): trailing garbage in numerical arg of option "rcvbuf=10x"'),
    (
        "rcvbuf=10x,fork",
        'parseopts(): trailing garbage in numerical arg of option "rcvbuf=10x,fork"',
    ),
    ("rcvbuf=1k", 'parseopts(): trailing garbage in numerical arg of option "rcvbuf=1k"'),
    ("rcvbuf=,fork", 'parseopts(): missing numerical value of option "rcvbuf=,fork"'),
    ("backlog=08", 'parseopts(): trailing garbage in numerical arg of option "backlog=08"'),
    ("backlog=0x", 'parseopts(): trailing garbage in numerical arg of option "backlog=0x"'),
    ("backlog=5 ", 'parseopts(): trailing garbage in numerical arg of option "backlog=5 "'),
    ("mode=9", 'parseopts(): missing numerical value of option "mode=9"'),
    ("mode=0o600", 'parseopts(): trailing garbage in numerical arg of option "mode=0o600"'),
    ("connect-timeout=x", 'parseopts(): missing numerical value of option "connect-timeout=x"'),
    (
        "connect-timeout=1x",
        'parseopts(): trailing garbage in numerical arg of option "connect-timeout=1x"',
    ),
    ("connect-timeout", 'option "connect-timeout": value required'),
    ("cert,fork", 'option "cert,fork": value required'),
    ("bind", 'option "bind": value required'),
    ("mode", 'option "mode": value required'),
    ("range", 'option "range": value required'),
    ("crnl=1", 'no value permitted for option "crnl"'),
    ("crlf=", 'no value permitted for option "crnl"'),
    # Our own range checks: what was wrong, what is accepted.
    ("sp=70000", 'option "sp": value 70000 is out of range, accepted: 0 to 65535'),
    ("sourceport=-1", 'option "sourceport": value -1 is out of range, accepted: 0 to 65535'),
    ("retry=-1", 'option "retry": value -1 is out of range, accepted: 0 to 4294967295'),
    ("backlog=-5", 'option "backlog": value -5 is out of range, accepted: 0 to 2147483647'),
    (
        "max-children=2147483648",
        'option "max-children": value 2147483648 is out of range, accepted: 0 to 2147483647',
    ),
    ("ttl=256", 'option "ttl": value 256 is out of range, accepted: 0 to 255'),
    (
        "readbytes=0",
        'option "readbytes": value 0 is out of range, accepted: 1 to 9223372036854775807',
    ),
    ("mode=010000", 'option "mode": value 010000 is out of range, accepted: 0 to 07777'),
    (
        "connect-timeout=-1",
        'option "connect-timeout": value -1 is out of range, accepted: a number of seconds >= 0',
    ),
    (
        "range=x",
        'option "range": "x" is not an address range, accepted: '
        "<ip4-address>/<bits>, <ip4-address>:<mask> or [<ip6-address>]/<bits>",
    ),
    (
        "range=127.0.0.1",
        'option "range": "127.0.0.1" is not an address range, accepted: '
        "<ip4-address>/<bits>, <ip4-address>:<mask> or [<ip6-address>]/<bits>",
    ),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse(text)
    assert str(caught.value) == message
    assert caught.value.address == "TEST"


GROUPS = [
    # (option, groups of the address, accepted?)
    ("fork", Group.FD | Group.CHILD, True),
    ("fork", Group.FD | Group.SOCKET, False),
    ("cert=x", Group.FD | Group.SOCKET | Group.TCP, False),
    ("cert=x", Group.OPENSSL, True),
    ("mode=0600", Group.FD, True),
    ("mode=0600", Group.NAMED, True),
    ("mode=0600", Group.SOCKET, False),
    ("sourceport=1", Group.UDP, True),
    ("sourceport=1", Group.UNIX, False),
    ("ipv6-v6only", Group.IP4, False),
    ("ipv6-v6only", Group.IP6, True),
    # Data-level, process and general options fit every address.
    ("crnl", Group.FD, True),
    ("ignoreeof", Group.FD, True),
    ("readbytes=1", Group.FD, True),
    ("setsid", Group.FD, True),
    ("umask=022", Group.FD, True),
]


@pytest.mark.parametrize(("text", "groups", "accepted"), GROUPS)
def test_groups(text: str, groups: Group, accepted: bool) -> None:
    if accepted:
        parse(text, groups)
        return
    name = text.partition("=")[0]
    with pytest.raises(OptionError) as caught:
        parse(text, groups)
    assert str(caught.value) == (
        f'parseopts_table(): option "{name}" not supported with this address type'
    )
    assert (caught.value.option, caught.value.address) == (name, "TEST")


FORMATTED: list[tuple[str, OptionValue, str]] = [
    ("fork", True, "fork"),
    ("fork", False, "fork=0"),
    ("reuseaddr", False, "reuseaddr=0"),
    ("crnl", True, "crnl"),
    ("backlog", 5, "backlog=5"),
    ("connect-timeout", 5.0, "connect-timeout=5"),
    ("connect-timeout", 0.5, "connect-timeout=0.5"),
    ("mode", 0o600, "mode=0600"),
    ("mode", 0, "mode=0"),
    ("cert", "/certs/server.pem", "cert=/certs/server.pem"),
    ("bind", "[::1]:80", "bind=[::1]:80"),
    ("bind", "", "bind="),
    ("cipher", "a,b", "cipher='a,b'"),
    ("range", (ipaddress.IPv4Network("10.0.0.0/8"),), "range=10.0.0.0/8"),
    (
        "range",
        (ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv6Network("::1/128")),
        "range=10.0.0.0/8,range=[::1]/128",
    ),
]


@pytest.mark.parametrize(("name", "value", "expected"), FORMATTED)
def test_format_option(name: str, value: OptionValue, expected: str) -> None:
    assert format_option(name, value) == expected
    assert dict(parse(expected)) == {name: value}


def test_typed_getters() -> None:
    options = parse("fork,backlog=5,connect-timeout=2,cert=c.pem,range=10.0.0.0/8")
    assert options.flag("fork") is True
    assert options.flag("reuseaddr") is False
    assert options.integer("backlog") == 5
    assert options.integer("max-children") is None
    assert options.seconds("connect-timeout") == 2.0
    assert options.text("cert") == "c.pem"
    assert options.networks("range") == (ipaddress.IPv4Network("10.0.0.0/8"),)


def test_parsed_options_are_read_only() -> None:
    options = parse("fork")
    with pytest.raises(TypeError):
        options.by_name["fork"] = False  # type: ignore[index]


def test_table_names_are_unique_and_lower_case() -> None:
    names = [name for spec in OPTIONS for name in (spec.name, *spec.aliases)]
    assert len(names) == len(set(names))
    assert all(name == name.lower() and name.strip() == name for name in names)


@pytest.mark.parametrize("spec", OPTIONS, ids=lambda spec: spec.name)
def test_every_option_is_found_by_every_name(spec: OptionSpec) -> None:
    for name in (spec.name, *spec.aliases):
        assert lookup_option(name.upper()) is spec


@pytest.mark.parametrize("kind", list(ValueKind))
def test_every_value_kind_is_used(kind: ValueKind) -> None:
    assert any(spec.kind is kind for spec in OPTIONS)
