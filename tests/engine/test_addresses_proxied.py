"""Parsing the addresses that reach their target through a proxy: SOCKS4/4A/5 and PROXY.

Kept apart from ``test_addresses.py`` so that the rows of these kinds are in
one place; the rules are the same (socat's wording, canonical text that
parses back).
"""

from __future__ import annotations

import pytest

from kubectl_relay.engine.addresses import Address, address_kind, parse_address
from kubectl_relay.engine.errors import AddressError, OptionError
from kubectl_relay.engine.options import Options

PARSED = [
    ("SOCKS4:proxy:target:80", Address("SOCKS4", ("proxy", "target", "80"))),
    ("socks:proxy:target:80", Address("SOCKS4", ("proxy", "target", "80"))),
    (
        "SOCKS4A:[::1]:db.internal:5432,socksport=1081,socksuser=ops",
        Address(
            "SOCKS4A",
            ("::1", "db.internal", "5432"),
            Options({"socksport": "1081", "socksuser": "ops"}),
        ),
    ),
    # socat 1.8: SOCKS5-CONNECT:<socks-server>[:<socks-port>]:<target-host>:<target-port>
    (
        "SOCKS5-CONNECT:localhost:1055:[2001:db8::1]:80",
        Address("SOCKS5-CONNECT", ("localhost", "1055", "2001:db8::1", "80")),
    ),
    (
        "SOCKS5:[::1]:target:80,socksport=1055",
        Address("SOCKS5-CONNECT", ("::1", "target", "80"), Options({"socksport": "1055"})),
    ),
    (
        "PROXY:proxy.corp:api.example.com:443,proxyport=3128,proxyauth=u:p,resolve",
        Address(
            "PROXY",
            ("proxy.corp", "api.example.com", "443"),
            Options({"proxyport": "3128", "proxy-authorization": "u:p", "proxy-resolve": True}),
        ),
    ),
    (
        "PROXY-CONNECT:p:h:1,ignorecr,http-version=1.1,proxyauthfile=/run/secret",
        Address(
            "PROXY",
            ("p", "h", "1"),
            Options(
                {
                    "ignorecr": True,
                    "http-version": "1.1",
                    "proxy-authorization-file": "/run/secret",
                }
            ),
        ),
    ),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parse(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


CANONICAL = [
    ("socks5:h:1055:t:80", "SOCKS5-CONNECT:h:1055:t:80"),
    ("SOCKS5:[::1]:[::2]:80", "SOCKS5-CONNECT:[::1]:[::2]:80"),
    ("socks5-connect:h:t:80,socksport=1", "SOCKS5-CONNECT:h:t:80,socksport=1"),
    ("SOCKS:h:t:80,sourceport=1000", "SOCKS4:h:t:80,sourceport=1000"),
    ("socks5-bind:[::1]:1080:[::]:0", "SOCKS5-LISTEN:[::1]:1080:[::]:0"),
    ("proxy-connect:p:[::1]:22,proxyauth=a:b", "PROXY:p:[::1]:22,proxy-authorization=a:b"),
    ("PROXY:p:h:1,resolve,connect-timeout=2,fork", "PROXY:p:h:1,proxy-resolve,connect-timeout=2,fork"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_canonical_text_parses_back(text: str, canonical: str) -> None:
    parsed = parse_address(text)
    assert str(parsed) == canonical
    assert parse_address(canonical) == parsed


def test_help_syntax_is_socats() -> None:
    syntax = {
        name: kind.syntax
        for name in ("SOCKS4", "SOCKS4A", "SOCKS5-CONNECT", "SOCKS5-LISTEN", "PROXY")
        if (kind := address_kind(name)) is not None
    }
    assert syntax == {
        "SOCKS4": ":<socks-server>:<host>:<port>",
        "SOCKS4A": ":<socks-server>:<host>:<port>",
        "SOCKS5-CONNECT": ":<socks-server>[:<socks-port>]:<target-host>:<target-port>",
        "SOCKS5-LISTEN": ":<socks-server>[:<socks-port>]:<listen-host>:<listen-port>",
        "PROXY": ":<proxy-server>:<host>:<port>",
    }


INVALID = [
    ("SOCKS5:h:80",
     "SOCKS5: wrong number of parameters (2 instead of 4): usage: "
     "SOCKS5:<socks-server>[:<socks-port>]:<target-host>:<target-port>"),
    ("SOCKS5-CONNECT:a:b:c:d:e",
     "SOCKS5-CONNECT: wrong number of parameters (5 instead of 4): usage: "
     "SOCKS5-CONNECT:<socks-server>[:<socks-port>]:<target-host>:<target-port>"),
    ("SOCKS4:h:80",
     "SOCKS4: wrong number of parameters (2 instead of 3): usage: "
     "SOCKS4:<socks-server>:<host>:<port>"),
    ("PROXY:p:h:1:2",
     "PROXY: wrong number of parameters (4 instead of 3): usage: "
     "PROXY:<proxy-server>:<host>:<port>"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_wrong_number_of_parameters(text: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "option"),
    [
        ("TCP:h:1,socksport=1080", "socksport"),
        ("PROXY:p:h:1,socksuser=x", "socksuser"),
        ("SOCKS4:s:h:1,proxyport=8080", "proxyport"),
        ("SOCKS5:s:h:1,cert=x", "cert"),
    ],
)
def test_options_of_other_groups_are_refused(text: str, option: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_address(text)
    assert str(caught.value) == (
        f'parseopts_table(): option "{option}" not supported with this address type'
    )
