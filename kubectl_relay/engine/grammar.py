"""socat's lexical rules for address text, as a pure tokenizer.

An address is ``KEYWORD[:param[:param...]][,option[=value][,...]]`` and two of
them joined by ``!!`` form a dual address (read from the first, write to the
second). This module only splits the text; ``addresses`` and ``options`` give
the pieces their meaning.

The rules follow socat's man page ("ADDRESS SPECIFICATIONS"):

    "If one of the characters ( { [ ' is found, the corresponding closing
    character - ) } ] ' - is looked for; they may also be nested. Within these
    constructs, socats special characters and strings : , !! are not handled
    specially. All those characters and strings can be escaped with \\ or
    within \"\""

and socat's lexer in detail:

- ``'...'`` quotes hard: nothing inside is special except ``\\``.
- ``"..."`` quotes softly: brackets and the other quote still nest inside.
- The outermost quotes are dropped; quotes inside brackets or inside another
  quote are kept, as are the brackets themselves (``TCP:[::1]:80`` gives the
  parameter ``[::1]``; ``addresses`` strips the brackets from host names).
- ``\\`` takes the next character literally; ``\\n \\r \\t \\0 \\a \\b \\f \\v``
  stand for control characters (socat lexes addresses with C escapes on); a
  trailing lone ``\\`` is dropped.
- Empty options are skipped (``TCP:h:1,,fork``).

A quote or bracket that is never closed is an error, reported with socat's
wording and the offset of the opening character.
"""

from __future__ import annotations

from .errors import AddressError, shorten
from .records import Record

# ``typing`` takes milliseconds to import, and parsing the first address is all
# a TCP listener waits for at start-up (``cli``): mypy reads this name as
# typing's own, and the annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

#: Separates the reading and the writing part of a dual address.
DUAL_SEPARATOR = "!!"
#: What ends a keyword or a parameter.
PARAM_ENDS = (DUAL_SEPARATOR, ",", ":")
#: What ends an option name.
OPTION_NAME_ENDS = (DUAL_SEPARATOR, ",", "=")
#: What ends an option value (``:`` is literal there: ``range=10.0.0.0:255.0.0.0``).
OPTION_VALUE_ENDS = (DUAL_SEPARATOR, ",")

#: How deep brackets and quotes may nest. The lexer recurses once per level;
#: no real address nests more than a few, and a bound keeps hostile text
#: from exhausting Python's stack (a RecursionError instead of a message).
MAX_NESTING = 64

_HARD_QUOTE = "'"
_SOFT_QUOTE = '"'
_NESTS = {"(": ")", "[": "]", "{": "}"}
_C_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_CONTROL_ESCAPES = {value: "\\" + key for key, value in _C_ESCAPES.items() if key != "0"}


class RawOption(Record):
    """One ``name[=value]`` as written, unquoted but not yet interpreted.

    ``value`` is ``None`` when there is no ``=``. ``position`` is the offset
    of the name in the whole text; ``source`` is the text from there to the
    end of the argument, which socat quotes in its option value messages.
    """

    __slots__ = ("name", "position", "source", "value")
    name: Final[str]
    value: Final[str | None]
    position: Final[int]
    source: Final[str]

    def __init__(self, name: str, value: str | None, position: int, source: str) -> None:
        self.name = name
        self.value = value
        self.position = position
        self.source = source


class RawAddress(Record):
    """One single address split into keyword, parameters and options.

    ``position`` is the offset of the keyword in the whole text and ``source``
    the text from there to the end of the argument (socat's messages about an
    address quote that).
    """

    __slots__ = ("keyword", "options", "params", "position", "source")
    keyword: Final[str]
    params: Final[tuple[str, ...]]
    options: Final[tuple[RawOption, ...]]
    position: Final[int]
    source: Final[str]

    def __init__(self, keyword: str, params: tuple[str, ...], options: tuple[RawOption, ...],
                 position: int, source: str) -> None:
        self.keyword = keyword
        self.params = params
        self.options = options
        self.position = position
        self.source = source


def tokenize(text: str) -> tuple[RawAddress, ...]:
    """Split address text into one single address, or two for ``A!!B``.

    Raises ``AddressError`` for an unclosed quote or bracket and for a third
    part (``A!!B!!C``).
    """
    lexer = _Lexer(text)
    first = lexer.single()
    if not lexer.at(DUAL_SEPARATOR):
        return (first,)
    lexer.pos += len(DUAL_SEPARATOR)
    second = lexer.single()
    if lexer.at(DUAL_SEPARATOR):
        # socat silently ignores what follows the second part; a user who
        # wrote it meant something, so say so instead.
        raise AddressError(
            text,
            f'too many "{DUAL_SEPARATOR}" in address "{text}": a dual address has exactly '
            f"two parts, <reading-address>{DUAL_SEPARATOR}<writing-address>",
            lexer.pos,
        )
    return (first, second)


def lex(text: str, ends: tuple[str, ...]) -> tuple[str, int]:
    """Read one token of ``text`` up to the first unprotected string of ``ends``.

    Returns the unquoted token and the offset where it stopped. Raises
    ``AddressError`` for an unclosed quote or bracket.
    """
    lexer = _Lexer(text)
    token = lexer.token(ends)
    return token, lexer.pos


def quote(value: str, ends: tuple[str, ...]) -> str:
    """Write ``value`` so that ``lex`` reads it back whole and unchanged.

    Plain text stays as it is (``/tmp/socket``, ``[::1]``); anything else is
    put in hard quotes with ``\\`` before ``\\`` and ``'``, and common control
    characters written as C escapes so that the text stays on one line.
    """
    # A trailing "!" would join the "!" of a following "!!" (``/tmp/x!`` then
    # ``!!STDOUT`` reads back as ``/tmp/x`` and ``!STDOUT``): quote it.
    if value.isprintable() and not value.endswith("!"):
        try:
            if lex(value, ends) == (value, len(value)):
                return value
        except AddressError:
            pass
    escaped = "".join(_escape(char) for char in value)
    return f"{_HARD_QUOTE}{escaped}{_HARD_QUOTE}"


def _escape(char: str) -> str:
    if char in ("\\", _HARD_QUOTE):
        return "\\" + char
    return _CONTROL_ESCAPES.get(char, char)


class _Lexer:
    """A cursor over the text with socat's nesting rules."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.start = 0  # where the current single address began
        self.depth = 0  # brackets and quotes open around the cursor

    def at(self, pattern: str) -> bool:
        return self.text.startswith(pattern, self.pos)

    def single(self) -> RawAddress:
        self.start = self.pos
        keyword = self.token(PARAM_ENDS)
        params: list[str] = []
        while self.at(":"):
            self.pos += 1
            params.append(self.token(PARAM_ENDS))
        options: list[RawOption] = []
        while self.at(","):
            self.pos += 1
            # socat skips empty options: "TCP:h:1,,fork" and a trailing ",".
            if self.pos == len(self.text) or self.at(",") or self.at(DUAL_SEPARATOR):
                continue
            begin = self.pos
            name = self.token(OPTION_NAME_ENDS)
            value = None
            if self.at("="):
                self.pos += 1
                value = self.token(OPTION_VALUE_ENDS)
            options.append(RawOption(name, value, begin, self.text[begin:]))
        return RawAddress(
            keyword, tuple(params), tuple(options), self.start, self.text[self.start :]
        )

    def token(self, ends: tuple[str, ...]) -> str:
        """The text up to one of ``ends`` at this level, outer quotes dropped."""
        return self._scan(ends, outermost=True, nesting=True)

    def _scan(self, ends: tuple[str, ...], *, outermost: bool, nesting: bool) -> str:
        out: list[str] = []
        text = self.text
        while self.pos < len(text) and not text.startswith(ends, self.pos):
            char = text[self.pos]
            if nesting and char == _HARD_QUOTE:
                # Hard quotes: no nesting inside, only backslash escapes.
                inner = self._enclosed(_HARD_QUOTE, nesting=False)
                out.append(inner if outermost else _HARD_QUOTE + inner + _HARD_QUOTE)
            elif nesting and char == _SOFT_QUOTE:
                inner = self._enclosed(_SOFT_QUOTE, nesting=True)
                out.append(inner if outermost else _SOFT_QUOTE + inner + _SOFT_QUOTE)
            elif nesting and char in _NESTS:
                # Brackets stay in the token; only their content is protected.
                closer = _NESTS[char]
                out.append(char + self._enclosed(closer, nesting=True) + closer)
            elif char == "\\":
                self.pos += 1
                if self.pos < len(text):
                    escaped = text[self.pos]
                    out.append(_C_ESCAPES.get(escaped, escaped))
                    self.pos += 1
            else:
                out.append(char)
                self.pos += 1
        return "".join(out)

    def _enclosed(self, closer: str, *, nesting: bool) -> str:
        opener = self.pos
        if self.depth >= MAX_NESTING:
            raise AddressError(
                self.text,
                f"brackets and quotes nested more than {MAX_NESTING} deep "
                f'in address "{shorten(self.text[self.start :])}"',
                opener,
            )
        self.depth += 1
        self.pos += 1
        inner = self._scan((closer,), outermost=False, nesting=nesting)
        if self.pos >= len(self.text):
            raise AddressError(
                self.text,
                f'unexpected end of address "{shorten(self.text[self.start :], 200)}"',
                opener,
            )
        self.pos += len(closer)
        self.depth -= 1
        return inner
