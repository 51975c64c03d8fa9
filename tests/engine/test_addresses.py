"""Addresses: the kind table, ``parse_address``, canonical ``str()`` and errors."""

from __future__ import annotations

import importlib
import ipaddress

import pytest

from kubectl_relay.engine.addresses import (
    ADDRESS_KINDS,
    Address,
    AddressSpec,
    DualAddress,
    address_kind,
    is_listening,
    parse_address,
)
from kubectl_relay.engine.errors import AddressError, OptionError
from kubectl_relay.engine.options import Options

#: Every command line of USE-CASES.md section 1 (and the in-cluster ones of
#: section 2), as the two address arguments the relay receives, with the
#: canonical spelling each one must print as.
USE_CASES = [
    ("TCP-LISTEN:8080,fork", "TCP-LISTEN:8080,fork", "-", "STDIO"),
    ("-", "STDIO", "TCP:localhost:8080", "TCP:localhost:8080"),
    ("UDP-LISTEN:514,fork", "UDP-LISTEN:514,fork", "-", "STDIO"),
    ("UNIX-LISTEN:/tmp/socket,fork", "UNIX-LISTEN:/tmp/socket,fork", "-", "STDIO"),
    ("OPENSSL-LISTEN:443,cert=server.pem,fork", "OPENSSL-LISTEN:443,cert=server.pem,fork",
     "-", "STDIO"),
    ("TCP-LISTEN:8080,fork", "TCP-LISTEN:8080,fork",
     "TCP:target-host:80", "TCP:target-host:80"),
    ("PIPE:/tmp/pipe", "PIPE:/tmp/pipe", "-", "STDIO"),
    ("TCP-LISTEN:8080,fork", "TCP-LISTEN:8080,fork", "TCP:service:80", "TCP:service:80"),
    ("OPENSSL-LISTEN:8443,cert=/certs/server.pem,fork",
     "OPENSSL-LISTEN:8443,cert=/certs/server.pem,fork",
     "TCP:secure-service:443", "TCP:secure-service:443"),
    ("TCP-LISTEN:1433,fork,reuseaddr", "TCP-LISTEN:1433,fork,reuseaddr",
     "OPENSSL:myserver.database.windows.net:1433,verify=0",
     "OPENSSL:myserver.database.windows.net:1433,verify=0"),
    ("TCP-LISTEN:10000,fork,reuseaddr", "TCP-LISTEN:10000,fork,reuseaddr",
     "OPENSSL:myaccount.blob.core.windows.net:443,verify=0",
     "OPENSSL:myaccount.blob.core.windows.net:443,verify=0"),
    ("TCP-LISTEN:6380,fork", "TCP-LISTEN:6380,fork",
     "OPENSSL:mycache.redis.cache.windows.net:6380,verify=0",
     "OPENSSL:mycache.redis.cache.windows.net:6380,verify=0"),
    ("TCP-LISTEN:9000,fork,reuseaddr", "TCP-LISTEN:9000,fork,reuseaddr",
     "TCP:container2:80", "TCP:container2:80"),
    ("OPENSSL-LISTEN:8443,cert=server.pem,fork", "OPENSSL-LISTEN:8443,cert=server.pem,fork",
     "TCP:container:443", "TCP:container:443"),
    ("-", "STDIO", "OPENSSL:localhost:8443,verify=0", "OPENSSL:localhost:8443,verify=0"),
    ("TCP-LISTEN:8080,fork", "TCP-LISTEN:8080,fork",
     "TCP:api.example.com:80", "TCP:api.example.com:80"),
    ("OPENSSL-LISTEN:8443,cert=server.pem,fork", "OPENSSL-LISTEN:8443,cert=server.pem,fork",
     "OPENSSL:api.example.com:443,verify=0", "OPENSSL:api.example.com:443,verify=0"),
    ("UDP-LISTEN:514,fork", "UDP-LISTEN:514,fork", "TCP:logserver:514", "TCP:logserver:514"),
    ("TCP-LISTEN:80,fork,reuseaddr", "TCP-LISTEN:80,fork,reuseaddr",
     "TCP:target:80,keepalive", "TCP:target:80,keepalive"),
    ("TCP-LISTEN:80,fork,reuseaddr,max-children=10", "TCP-LISTEN:80,fork,reuseaddr,max-children=10",
     "TCP:target:80", "TCP:target:80"),
    ("TCP-LISTEN:8080,fork,retry=10", "TCP-LISTEN:8080,fork,retry=10",
     "TCP:target:80,forever", "TCP:target:80,forever"),
    ("TCP-LISTEN:8080,fork", "TCP-LISTEN:8080,fork",
     "TCP:target:80,connect-timeout=5", "TCP:target:80,connect-timeout=5"),
    ("TCP-LISTEN:8080,fork", "TCP-LISTEN:8080,fork", "TCP:target:80", "TCP:target:80"),
    ("TCP-LISTEN:8443,fork,reuseaddr", "TCP-LISTEN:8443,fork,reuseaddr",
     "TCP:myapp.example.net:443", "TCP:myapp.example.net:443"),
    ("TCP-LISTEN:8080,fork", "TCP-LISTEN:8080,fork",
     "TCP:problem-service:80", "TCP:problem-service:80"),
    ("TCP-LISTEN:15000,fork", "TCP-LISTEN:15000,fork",
     "TCP:localhost:15000", "TCP:localhost:15000"),
]  # fmt: skip


@pytest.mark.parametrize(("first", "first_canonical", "second", "second_canonical"), USE_CASES)
def test_use_case_command_lines(
    first: str, first_canonical: str, second: str, second_canonical: str
) -> None:
    for text, canonical in ((first, first_canonical), (second, second_canonical)):
        parsed = parse_address(text)
        assert str(parsed) == canonical
        assert parse_address(str(parsed)) == parsed


PARSED: list[tuple[str, AddressSpec]] = [
    ("-", Address("STDIO")),
    ("stdio", Address("STDIO")),
    ("TCP:localhost:8080", Address("TCP", ("localhost", "8080"))),
    (
        "TCP-LISTEN:80,fork,reuseaddr,max-children=10",
        Address(
            "TCP-LISTEN",
            ("80",),
            Options({"fork": True, "reuseaddr": True, "max-children": 10}),
        ),
    ),
    (
        "OPENSSL:myserver.database.windows.net:1433,verify=0",
        Address("OPENSSL", ("myserver.database.windows.net", "1433"), Options({"verify": False})),
    ),
    (
        "TCP:target:80,connect-timeout=5",
        Address("TCP", ("target", "80"), Options({"connect-timeout": 5.0})),
    ),
    ("PIPE", Address("PIPE")),
    ("PIPE:/tmp/pipe", Address("PIPE", ("/tmp/pipe",))),
    # Host names lose their brackets.
    ("TCP:[::1]:80", Address("TCP", ("::1", "80"))),
    ("TCP6:[fe80::1%eth0]:80", Address("TCP6", ("fe80::1%eth0", "80"))),
    ("OPENSSL:[::1]:443", Address("OPENSSL", ("::1", "443"))),
    ("UDP-SENDTO:[::1]:53", Address("UDP-SENDTO", ("::1", "53"))),
    ("TCP:[127.0.0.1]:80", Address("TCP", ("127.0.0.1", "80"))),
    ("TCP:'[::1]':80", Address("TCP", ("::1", "80"))),
    # ... but only host names.
    ("UNIX-CONNECT:[x]", Address("UNIX-CONNECT", ("[x]",))),
    # Shorthands.
    ("3", Address("FD", ("3",))),
    ("10", Address("FD", ("10",))),
    ("FD:0x10", Address("FD", ("16",))),
    ("FD:010", Address("FD", ("8",))),
    ("/tmp/file", Address("GOPEN", ("/tmp/file",))),
    ("./file,append", Address("GOPEN", ("./file",), Options({"append": True}))),
    ("'/tmp/a b',creat", Address("GOPEN", ("/tmp/a b",), Options({"creat": True}))),
    # Quoted parameters.
    ("EXEC:'ls -l'", Address("EXEC", ("ls -l",))),
    ('SYSTEM:"echo a,b",pipes', Address("SYSTEM", ("echo a,b",), Options({"pipes": True}))),
    ("OPEN:/tmp/a\\:b,rdonly", Address("OPEN", ("/tmp/a:b",), Options({"rdonly": True}))),
    # Dual addresses.
    ("STDIN!!STDOUT", DualAddress(Address("STDIN"), Address("STDOUT"))),
    (
        "OPEN:/in,rdonly!!CREATE:/out",
        DualAddress(
            Address("OPEN", ("/in",), Options({"rdonly": True})), Address("CREATE", ("/out",))
        ),
    ),
    # Ranges.
    (
        "TCP-L:80,range=10.0.0.0:255.0.0.0",
        Address("TCP-LISTEN", ("80",), Options({"range": (ipaddress.IPv4Network("10.0.0.0/8"),)})),
    ),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parse(text: str, expected: AddressSpec) -> None:
    assert parse_address(text) == expected


ALIASES = [
    ("TCP", "TCP"),
    ("tcp-connect", "TCP"),
    ("INET", "TCP"),
    ("TCP4-CONNECT", "TCP4"),
    ("inet6", "TCP6"),
    ("TCP-L", "TCP-LISTEN"),
    ("tcp-l", "TCP-LISTEN"),
    ("Tcp-Listen", "TCP-LISTEN"),
    ("TCP4-L", "TCP4-LISTEN"),
    ("TCP6-L", "TCP6-LISTEN"),
    ("INET-LISTEN", "TCP-LISTEN"),
    ("INET4-L", "TCP4-LISTEN"),
    ("UNIX", "UNIX-CLIENT"),
    ("LOCAL", "UNIX-CONNECT"),
    ("UNIX-L", "UNIX-LISTEN"),
    ("ECHO", "PIPE"),
    ("FIFO", "PIPE"),
    ("FILE", "OPEN"),
    ("CREAT", "CREATE"),
    ("UDP-CONNECT", "UDP"),
    ("UDP4-CONNECT", "UDP4"),
    ("UDP-SEND", "UDP-SENDTO"),
    ("UDP6-SEND", "UDP6-SENDTO"),
    ("UDP-L", "UDP-LISTEN"),
    ("UDP4-L", "UDP4-LISTEN"),
    ("UDP6-L", "UDP6-LISTEN"),
    ("SSL", "OPENSSL"),
    ("OPENSSL-CONNECT", "OPENSSL"),
    ("SSL-L", "OPENSSL-LISTEN"),
    ("-", "STDIO"),
]


@pytest.mark.parametrize(("written", "canonical"), ALIASES)
def test_alias(written: str, canonical: str) -> None:
    kind = address_kind(written)
    assert kind is not None
    assert kind.keyword == canonical


CANONICAL = [
    ("tcp-l:8080,Fork,so-reuseaddr", "TCP-LISTEN:8080,fork,reuseaddr"),
    ("ssl:h:443,VERIFY=0,cn=x", "OPENSSL:h:443,verify=0,commonname=x"),
    ("TCP:h:1,,fork,", "TCP:h:1,fork"),
    ("TCP:[::1]:80", "TCP:[::1]:80"),
    ("TCP:'::1':80", "TCP:[::1]:80"),
    ("TCP:[127.0.0.1]:80", "TCP:127.0.0.1:80"),
    ("3", "FD:3"),
    ("/tmp/x,append", "GOPEN:/tmp/x,append"),
    ("OPEN:'/tmp/a b:c',creat,perm=600", "OPEN:'/tmp/a b:c',creat,mode=0600"),
    ("SYSTEM:echo\\,hi", "SYSTEM:'echo,hi'"),
    ('EXEC:"ls -l"', "EXEC:ls -l"),
    ("TCP-L:1,range=127.0.0.1/8,range=[::1]/128", "TCP-LISTEN:1,range=127.0.0.0/8,range=[::1]/128"),
    ("TCP:h:1,bind=[::1]:0,connect-timeout=.5", "TCP:h:1,bind=[::1]:0,connect-timeout=0.5"),
    ("TCP:h:1,sp=010", "TCP:h:1,sourceport=8"),
    ("stdin!!stdout", "STDIN!!STDOUT"),
    ("-!!OPEN:/x,creat", "STDIO!!OPEN:/x,creat"),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_canonical_text(text: str, canonical: str) -> None:
    parsed = parse_address(text)
    assert str(parsed) == canonical
    assert parse_address(canonical) == parsed


ROUND_TRIP = [
    Address("TCP", ("::1", "80")),
    Address("TCP", ("[odd]", "80")),
    Address("TCP", ("a'b", "80")),
    Address("OPEN", ("/tmp/it's here:now,ok",)),
    Address("OPEN", ("back\\slash",)),
    Address("EXEC", ("sh -c 'echo hi; echo \"there\"' (x)",)),
    Address("SYSTEM", ("printf 'a\\n' | tr a b!!",)),
    Address("UNIX-CONNECT", ("",)),
    Address("OPENSSL", ("h", "1"), Options({"cert": "a,b", "cipher": "HIGH:!aNULL"})),
    Address("OPENSSL", ("h", "1"), Options({"commonname": "x!!y", "snihost": "{"})),
    Address("TCP-LISTEN", ("1",), Options({"mode": 0o640, "backlog": 0, "fork": False})),
]


@pytest.mark.parametrize("address", ROUND_TRIP, ids=str)
def test_round_trip(address: Address) -> None:
    assert parse_address(str(address)) == address
    dual = DualAddress(address, Address("STDOUT"))
    assert parse_address(str(dual)) == dual


INVALID_ADDRESS = [
    # socat 1.8.1's wording (xioopen.c, xiohelp.c).
    ("FOO:1", 'unknown device/address "FOO"', 0),
    ("foo bar", 'unknown device/address "foo bar"', 0),
    ("", 'unknown device/address ""', 0),
    ("TCP:h:1!!", 'unknown device/address ""', 9),
    ("1x", 'unknown device/address "1x"', 0),
    (
        "TCP-LISTEN:8080:1",
        "TCP-LISTEN: wrong number of parameters (2 instead of 1): usage: TCP-LISTEN:<port>",
        0,
    ),
    ("tcp-l:1:2", "tcp-l: wrong number of parameters (2 instead of 1): usage: tcp-l:<port>", 0),
    (
        "TCP-LISTEN",
        "TCP-LISTEN: wrong number of parameters (0 instead of 1): usage: TCP-LISTEN:<port>",
        0,
    ),
    ("TCP:1", "TCP: wrong number of parameters (1 instead of 2): usage: TCP:<host>:<port>", 0),
    ("TCP:a:1:", "TCP: wrong number of parameters (3 instead of 2): usage: TCP:<host>:<port>", 0),
    ("PIPE:a:b", "PIPE: wrong number of parameters (2 instead of 1): usage: PIPE[:<filename>]", 0),
    ("stdio:x", "stdio: wrong number of parameters (1 instead of 0): usage: stdio", 0),
    ("-:x", "-: wrong number of parameters (1 instead of 0): usage: -", 0),
    ("3:x", "FD: wrong number of parameters (2 instead of 1): usage: FD:<num>", 0),
    ("/tmp/a:b", "GOPEN: wrong number of parameters (2 instead of 1): usage: GOPEN:<filename>", 0),
    (
        "STDIN!!EXEC",
        "EXEC: wrong number of parameters (0 instead of 1): usage: EXEC:<command-line>",
        7,
    ),
    ("FD:x", 'error in FD number "x"', 0),
    ("FD:-1", 'error in FD number "-1"', 0),
    ("FD:0x", 'error in FD number "0x"', 0),
    ('TCP:"a:1', 'unexpected end of address "TCP:"a:1"', 4),
    ("TCP:(a:1", 'unexpected end of address "TCP:(a:1"', 4),
    (
        "STDIO!!STDIO!!STDIO",
        'too many "!!" in address "STDIO!!STDIO!!STDIO": a dual address has exactly two parts, '
        "<reading-address>!!<writing-address>",
        12,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message", "position"), INVALID_ADDRESS)
def test_invalid_address(text: str, message: str, position: int) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert (str(caught.value), caught.value.position, caught.value.text) == (
        message,
        position,
        text,
    )


INVALID_OPTION = [
    ("TCP:h:1,foo", 'parseopts_table(): unknown option "foo"', "TCP"),
    ("TCP:h:1,cert=x", 'parseopts_table(): option "cert" not supported with this address type',
     "TCP"),
    ("-,fork", 'parseopts_table(): option "fork" not supported with this address type', "STDIO"),
    ("EXEC:ls,fork", 'parseopts_table(): option "fork" not supported with this address type',
     "EXEC"),
    ("UDP:h:1,retry=3", 'parseopts_table(): option "retry" not supported with this address type',
     "UDP"),
    ("TCP4:h:1,v6only", 'parseopts_table(): option "v6only" not supported with this address type',
     "TCP4"),
    ("TCP-L:1,unlink-early",
     'parseopts_table(): option "unlink-early" not supported with this address type', "TCP-LISTEN"),
    ("UNIX-L:/s,range=10.0.0.0/8",
     'parseopts_table(): option "range" not supported with this address type', "UNIX-LISTEN"),
    ("OPENSSL:h:1,cert,fork", 'option "cert,fork": value required', "OPENSSL"),
    ("TCP:h:1,rcvbuf=10x,fork",
     'parseopts(): trailing garbage in numerical arg of option "rcvbuf=10x,fork"', "TCP"),
    ("TCP-L:1,backlog=x!!STDOUT",
     'parseopts(): missing numerical value of option "backlog=x!!STDOUT"', "TCP-LISTEN"),
    ("STDIO,crnl=1", 'no value permitted for option "crnl"', "STDIO"),
    ("STDIN!!TCP:h:1,bogus", 'parseopts_table(): unknown option "bogus"', "TCP"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message", "keyword"), INVALID_OPTION)
def test_invalid_option(text: str, message: str, keyword: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_address(text)
    assert (str(caught.value), caught.value.address) == (message, keyword)


ACCEPTED = [
    "TCP-LISTEN:1,fork,reuseaddr,backlog=5,range=10.0.0.0/8,retry=3,keepalive,nodelay",
    "TCP:h:1,fork,retry=3,forever,interval=1,connect-timeout=2,bind=0.0.0.0:0,sp=1000",
    "OPENSSL-LISTEN:1,cert=c,key=k,cafile=a,verify=1,fork,range=[::1]/128,max-children=3",
    "OPENSSL:h:1,verify=0,cn=x,snihost=y,no-sni=0,min-version=TLS1.2,cipher=HIGH",
    "UDP-LISTEN:1,fork,range=10.0.0.0/8,sourceport=53,reuseaddr,ttl=9",
    "UDP-RECVFROM:1,fork,broadcast,bind=0.0.0.0",
    "UDP-SENDTO:h:1,broadcast,sp=9,pf=ip4",
    "UNIX-LISTEN:/s,fork,unlink-early,unlink-close=0,mode=0600,umask=022,backlog=1",
    "UNIX-CONNECT:/s,retry=2,bind=/c",
    "PIPE:/p,mode=0600,unlink-close=0",
    "OPEN:/f,creat,excl,trunc,append,rdonly,perm-early=0644",
    "CREATE:/f,mode=0600,unlink-early",
    "GOPEN:/f,append,keepalive",
    "EXEC:cat,pipes,stderr,nofork,path=/bin,login,pty",
    "SYSTEM:cat,pipes,setsid",
    "STDIO,crnl,ignoreeof,readbytes=10,cr",
    "FD:3,ignoreeof",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted_options(text: str) -> None:
    parsed = parse_address(text)
    assert isinstance(parsed, Address)
    assert parse_address(str(parsed)) == parsed


def test_kinds_match_the_transport_registry() -> None:
    # Imported here so that a broken transport fails this test only.
    transports = importlib.import_module("kubectl_relay.engine.transports")
    openers, listeners = set(transports.OPENERS), set(transports.LISTENERS)
    keywords = [kind.keyword for kind in ADDRESS_KINDS]
    assert len(keywords) == len(set(keywords))
    assert set(keywords) == openers | listeners
    assert {kind.keyword for kind in ADDRESS_KINDS if kind.listening} == listeners


def test_every_transport_function_exists() -> None:
    # The tables name functions as text, imported on first use: check them all here.
    transports = importlib.import_module("kubectl_relay.engine.transports")
    for table in (transports.OPENERS, transports.LISTENERS):
        for keyword in table:
            assert callable(table[keyword]), keyword


def test_names_are_unique() -> None:
    names = [name for kind in ADDRESS_KINDS for name in (kind.keyword, *kind.aliases)]
    assert len(names) == len(set(names))
    assert all(name == name.upper() for name in names)


LISTENING = [
    ("TCP-LISTEN:1", True),
    ("TCP6-L:1", True),
    ("UNIX-LISTEN:/s", True),
    ("UDP-LISTEN:1", True),
    ("UDP4-RECVFROM:1", True),
    ("OPENSSL-LISTEN:1", True),
    ("TCP:h:1", False),
    ("UDP-SENDTO:h:1", False),
    ("OPENSSL:h:1", False),
    ("STDIO", False),
    ("PIPE", False),
    ("EXEC:cat", False),
]


@pytest.mark.parametrize(("text", "listening"), LISTENING)
def test_is_listening(text: str, listening: bool) -> None:
    parsed = parse_address(text)
    assert isinstance(parsed, Address)
    assert is_listening(parsed) is listening


def test_unknown_keyword_is_not_listening() -> None:
    assert is_listening(Address("NOPE")) is False
    assert address_kind("NOPE") is None


def test_addresses_are_frozen() -> None:
    parsed = parse_address("TCP:h:1,fork")
    assert isinstance(parsed, Address)
    with pytest.raises(AttributeError):
        parsed.keyword = "UDP"  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.options.by_name["fork"] = False  # type: ignore[index]
