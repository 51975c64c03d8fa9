"""The address grammar under fuzzing: no text makes it fail other than with a message.

Two properties, checked with hypothesis on generated text (bounded: a few
hundred examples each, a generous deadline per example):

- any text either parses or raises the engine's own ``AddressError`` or
  ``OptionError`` (never ``ValueError``, ``RecursionError``...);
- what parses has a canonical ``str()`` that parses back to the same address.

The generators lean towards the grammar's special characters (quotes,
brackets, ``\\``, ``:``, ``,``, ``=``, ``!``), real keywords and option names,
where the lexer's corner cases are.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubectl_relay.engine.addresses import ADDRESS_KINDS, AddressSpec, parse_address
from kubectl_relay.engine.errors import AddressError, OptionError
from kubectl_relay.engine.options import OPTIONS
from tests.conftest import scaled

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=scaled(2)),
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow],
)

KEYWORDS = sorted({name for kind in ADDRESS_KINDS for name in (kind.keyword, *kind.aliases)})
OPTION_NAMES = sorted({name for spec in OPTIONS for name in (spec.name, *spec.aliases)})
#: Characters the lexer treats specially, plus a few ordinary and non-ASCII ones.
SPECIAL = ":,=!'\"()[]{}\\ \t\n0x1a/.-²é"
#: Keywords with parameters that the parser itself reads (FD numbers, hosts).
COMMON = ["FD", "OPEN", "TCP", "TCP-LISTEN", "UDP-LISTEN", "EXEC", "STDIO"]

pieces = (
    st.text(alphabet=SPECIAL, max_size=12)
    | st.text(alphabet="!\\a", max_size=5)
    | st.text(max_size=6)
)
values = st.one_of(
    pieces,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["nan", "inf", "-1", "0x10", "010", "1e999", "[" * 100]),
    # Past Python's 4,300-digit limit of int(): a ValueError unless handled.
    st.integers(min_value=4290, max_value=4400).map(lambda digits: "9" * digits),
)
options = st.tuples(st.sampled_from(OPTION_NAMES), st.none() | values).map(
    lambda pair: pair[0] if pair[1] is None else f"{pair[0]}={pair[1]}"
)
single_addresses = st.builds(
    lambda keyword, params, opts: ":".join([keyword, *params]) + "".join("," + o for o in opts),
    st.sampled_from(COMMON) | st.sampled_from(KEYWORDS) | pieces,
    st.lists(values, max_size=3),
    st.lists(options, max_size=3),
)
addresses = single_addresses | st.builds(
    lambda a, b: f"{a}!!{b}", single_addresses, single_addresses
)


def parse_or_none(text: str) -> AddressSpec | None:
    """The parsed address, or None when the grammar refused it with its own error."""
    try:
        return parse_address(text)
    except (AddressError, OptionError):
        return None


@FUZZ
@given(st.text(max_size=40) | st.text(alphabet=SPECIAL, max_size=40) | addresses)
def test_any_text_parses_or_is_refused_with_a_message(text: str) -> None:
    parse_or_none(text)  # any other exception fails the test


@FUZZ
@given(addresses)
def test_canonical_text_parses_back_to_the_same_address(text: str) -> None:
    address = parse_or_none(text)
    if address is None:
        return
    canonical = str(address)
    assert parse_address(canonical) == address, canonical
    assert str(parse_address(canonical)) == canonical


def test_deep_nesting_is_refused_with_a_message() -> None:
    """497 nested brackets used to exhaust Python's stack (RecursionError)."""
    text = "TCP:" + "[" * 497 + "]" * 497 + ":1"
    try:
        parse_address(text)
    except AddressError as exc:
        assert "nested more than" in str(exc)
    else:
        raise AssertionError("497 nested brackets were accepted")


def test_trailing_exclamation_mark_round_trips() -> None:
    r"""``OPEN:/tmp/x\!!!STDOUT`` printed as ``OPEN:/tmp/x!!!STDOUT``, another address."""
    address = parse_address("OPEN:/tmp/x\\!!!STDOUT")
    assert parse_address(str(address)) == address
