"""The tokenizer: socat's quoting, nesting, escaping and splitting rules."""

from __future__ import annotations

import pytest

from kubectl_relay.engine.errors import AddressError
from kubectl_relay.engine.grammar import (
    OPTION_VALUE_ENDS,
    PARAM_ENDS,
    RawAddress,
    lex,
    quote,
    tokenize,
)

Shape = tuple[str, tuple[str, ...], tuple[tuple[str, str | None], ...]]


def shape(raw: RawAddress) -> Shape:
    """Keyword, parameters and (name, value) pairs, without positions."""
    return raw.keyword, raw.params, tuple((o.name, o.value) for o in raw.options)


SINGLE = [
    # Plain structure.
    ("STDIO", ("STDIO", (), ())),
    ("-", ("-", (), ())),
    ("TCP:localhost:8080", ("TCP", ("localhost", "8080"), ())),
    ("TCP-LISTEN:8080,fork", ("TCP-LISTEN", ("8080",), (("fork", None),))),
    ("tcp-l:80,Fork=1", ("tcp-l", ("80",), (("Fork", "1"),))),
    ("PIPE", ("PIPE", (), ())),
    ("/tmp/file,append", ("/tmp/file", (), (("append", None),))),
    ("TCP::80", ("TCP", ("", "80"), ())),
    # Empty options are skipped, as socat does.
    ("TCP:h:1,,fork", ("TCP", ("h", "1"), (("fork", None),))),
    ("TCP:h:1,fork,", ("TCP", ("h", "1"), (("fork", None),))),
    ("TCP:h:1,,,", ("TCP", ("h", "1"), ())),
    # Values: ':' and '=' are literal, ',' ends.
    (
        "TCP-L:1,range=10.0.0.0:255.0.0.0,bind=1.2.3.4:5",
        ("TCP-L", ("1",), (("range", "10.0.0.0:255.0.0.0"), ("bind", "1.2.3.4:5"))),
    ),
    ("X,a=b=c", ("X", (), (("a", "b=c"),))),
    ("X,cert=", ("X", (), (("cert", ""),))),
    # Brackets nest and stay in the text.
    ("TCP:[::1]:80", ("TCP", ("[::1]", "80"), ())),
    ("X:(a:b,c)", ("X", ("(a:b,c)",), ())),
    ("X:{a:[b:(c)]}:d", ("X", ("{a:[b:(c)]}", "d"), ())),
    ("X,range=[::1]/128", ("X", (), (("range", "[::1]/128"),))),
    # Hard quotes: dropped outermost, nothing special inside but '\'.
    ("EXEC:'ls -l:a,b!!c'", ("EXEC", ("ls -l:a,b!!c",), ())),
    ("X:'a(b'", ("X", ("a(b",), ())),
    ("X:'a\\'b'", ("X", ("a'b",), ())),
    ("X:a'b:c'd", ("X", ("ab:cd",), ())),
    # Soft quotes: dropped outermost; nested quotes and brackets kept inside.
    ('X:"a:b"', ("X", ("a:b",), ())),
    ("X:\"a'b:c'd\"", ("X", ("a'b:c'd",), ())),
    ('X:"(a:b)"', ("X", ("(a:b)",), ())),
    # Quotes inside brackets are kept.
    ("X:[a'b:c']", ("X", ("[a'b:c']",), ())),
    # Backslash escapes, with C escapes.
    ("X:a\\:b\\,c", ("X", ("a:b,c",), ())),
    ("X:a\\!!b", ("X", ("a!!b",), ())),
    ("X:a\\nb\\tc\\rd", ("X", ("a\nb\tc\rd",), ())),
    ("X:a\\\\b", ("X", ("a\\b",), ())),
    ("X:a\\qb", ("X", ("aqb",), ())),
    ("X:ab\\", ("X", ("ab",), ())),
    ("X:[a\\]b]", ("X", ("[a]b]",), ())),
    # Quoted option names and values.
    ("X,\"fork\",'bind'='a,b'", ("X", (), (("fork", None), ("bind", "a,b")))),
    ("SYSTEM:'echo a,b',pipes", ("SYSTEM", ("echo a,b",), (("pipes", None),))),
]


@pytest.mark.parametrize(("text", "expected"), SINGLE)
def test_single_address(text: str, expected: Shape) -> None:
    (raw,) = tokenize(text)
    assert shape(raw) == expected


DUAL = [
    ("STDIN!!STDOUT", ("STDIN", (), ()), ("STDOUT", (), ())),
    (
        "TCP:a:1,fork!!OPEN:/x,creat",
        ("TCP", ("a", "1"), (("fork", None),)),
        ("OPEN", ("/x",), (("creat", None),)),
    ),
    ("-!!-", ("-", (), ()), ("-", (), ())),
    ("A,x=1!!B", ("A", (), (("x", "1"),)), ("B", (), ())),
    ("A:'x!!y'!!B", ("A", ("x!!y",), ()), ("B", (), ())),
    ("A!!", ("A", (), ()), ("", (), ())),
]


@pytest.mark.parametrize(("text", "reader", "writer"), DUAL)
def test_dual_address(text: str, reader: Shape, writer: Shape) -> None:
    first, second = tokenize(text)
    assert (shape(first), shape(second)) == (reader, writer)


def test_positions_and_sources() -> None:
    first, second = tokenize("TCP:h:1,fork,bind=x!!OPEN:/f,creat")
    assert (first.position, first.source) == (0, "TCP:h:1,fork,bind=x!!OPEN:/f,creat")
    assert [(o.position, o.source) for o in first.options] == [
        (8, "fork,bind=x!!OPEN:/f,creat"),
        (13, "bind=x!!OPEN:/f,creat"),
    ]
    assert (second.position, second.source) == (21, "OPEN:/f,creat")
    assert [(o.position, o.source) for o in second.options] == [(29, "creat")]


INVALID = [
    ('TCP:"a:1', 'unexpected end of address "TCP:"a:1"', 4),
    ("TCP:'a:1", 'unexpected end of address "TCP:\'a:1"', 4),
    ("TCP:(a:1", 'unexpected end of address "TCP:(a:1"', 4),
    ("TCP:a:[1", 'unexpected end of address "TCP:a:[1"', 6),
    ("X:{a", 'unexpected end of address "X:{a"', 2),
    ('X:"a\'b"', 'unexpected end of address "X:"a\'b""', 4),
    ("X,bind='a", 'unexpected end of address "X,bind=\'a"', 7),
    ("'TCP", 'unexpected end of address "\'TCP"', 0),
    ("A!!B:(x", 'unexpected end of address "B:(x"', 5),
    (
        "A!!B!!C",
        'too many "!!" in address "A!!B!!C": a dual address has exactly two parts, '
        "<reading-address>!!<writing-address>",
        4,
    ),
]


@pytest.mark.parametrize(("text", "message", "position"), INVALID)
def test_invalid(text: str, message: str, position: int) -> None:
    with pytest.raises(AddressError) as caught:
        tokenize(text)
    assert (str(caught.value), caught.value.position, caught.value.text) == (
        message,
        position,
        text,
    )


QUOTED = [
    ("8080", PARAM_ENDS, "8080"),
    ("/tmp/socket", PARAM_ENDS, "/tmp/socket"),
    ("[::1]", PARAM_ENDS, "[::1]"),
    ("", PARAM_ENDS, ""),
    ("a:b", PARAM_ENDS, "'a:b'"),
    ("a:b", OPTION_VALUE_ENDS, "a:b"),
    ("a,b", OPTION_VALUE_ENDS, "'a,b'"),
    ("x!!y", OPTION_VALUE_ENDS, "'x!!y'"),
    ("it's", PARAM_ENDS, "'it\\'s'"),
    ("a\\b", PARAM_ENDS, "'a\\\\b'"),
    ("(a", PARAM_ENDS, "'(a'"),
    ("line\nnext\ttab", PARAM_ENDS, "'line\\nnext\\ttab'"),
    ('say "hi"', PARAM_ENDS, "'say \"hi\"'"),
]


@pytest.mark.parametrize(("value", "ends", "expected"), QUOTED)
def test_quote(value: str, ends: tuple[str, ...], expected: str) -> None:
    assert quote(value, ends) == expected
    assert lex(expected, ends) == (value, len(expected))


def test_lex_stops_at_end_pattern() -> None:
    assert lex("a'b:c':d", PARAM_ENDS) == ("ab:c", 6)
