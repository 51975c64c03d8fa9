"""socat's ``-v``/``-x`` data traces and ``-r``/``-R`` raw dumps, byte for byte as socat 1.8.1.

Every transferred block gets a header line (socat.c ``xioprintblockheader``)::

    > 2026/11/24 10:00:00.123456  length=6 from=0 to=5

``>`` is data from address 1 to address 2, ``<`` the reverse; ``from``/``to``
are the offsets of the block's first and last byte in its direction's stream.
The timestamp ends in a space and ``length`` follows another one, hence the
two spaces. socat 1.7.4 and 1.8.0 printed the microseconds as nine digits
("000123456"); 1.8.1 fixed that (CHANGES: "Socat with options -v or -x showed
incorrect timestamps (microseconds in decimal position of nanoseconds)"), so
we print six.

The data follows the header (socat.c ``xiotransfer``):

``-v``
    The bytes as text: printable ASCII as is, tab and newline as is, ``\\a``
    ``\\b`` ``\\v`` ``\\f`` ``\\r`` and backslash as two-character escapes,
    every other byte (control, DEL, anything >= 0x80, so UTF-8 too) as ``.``.
    Nothing is added at the end: a block that does not end in a newline runs
    into the next header, as in socat.
``-x``
    One line: `` %02x`` for each byte, then a newline.
``-v -x``
    Rows of at most 16 bytes, a row also ending after a newline byte: the hex
    column padded to 16 cells, two spaces, the bytes as ASCII (newline and
    unprintable bytes as ``.``, no escapes), newline; after the block ``--``.

``-r FILE``/``-R FILE`` append the raw bytes flowing left to right / right to
left to FILE (man page: "Dumps the raw (binary) data flowing from left to
right address to the given file"). socat opens the files when its transfer
loop starts, in each forked child; ``TraceOutput`` opens them once per run.

Performance: socat writes its trace with a stdio call per byte. Here each
block is formatted with whole-buffer operations (``bytes.translate``,
``bytes.replace``, ``binascii.hexlify``, strided slice assignment) instead of
a loop per byte, and written with one system call. A 64 KiB block costs about
0.05-0.1 ms with ``-v``, 0.1-0.2 ms with ``-x`` and 0.5-1.3 ms with ``-v -x``
(the most for text with short lines); socat 1.7.4 takes about 40 ms with
``-v`` and 85 ms with ``-v -x`` (measured with its trace going to a pipe).
"""

from __future__ import annotations

import binascii
import os
import re
import select
import time
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat

from .errors import OpenError
from .log import SESSION_ID, Clock, current_progname, logger, variable_prefix

# typing is not imported at run time: cli imports this module for -V too.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Direction = Literal[">", "<"]


@dataclass(frozen=True)
class TraceSettings:
    """The trace options of one run."""

    verbose: bool = False  # -v
    hex: bool = False  # -x
    raw_left: str | None = None  # -r FILE
    raw_right: str | None = None  # -R FILE
    #: ``--trace-session-ids`` (a relay extension): headers end in `` session=N``.
    session_ids: bool = False

    @property
    def enabled(self) -> bool:
        """Whether any trace or dump is wanted (else the transfer loop skips tracing)."""
        return self.verbose or self.hex or self.raw_left is not None or self.raw_right is not None


# -v: bytes shown as themselves (printable ASCII, tab, newline, and the six
# escaped below, which are replaced after translation); everything else is ".".
_KEPT = {*range(0x20, 0x7F), *b"\t\n\a\b\v\f\r"}
_TEXT_TABLE = bytes(b if b in _KEPT else 0x2E for b in range(256))
# Backslash first: the later replacements insert backslashes of their own.
_ESCAPES = (
    (b"\\", b"\\\\"),
    (b"\a", b"\\a"),
    (b"\b", b"\\b"),
    (b"\v", b"\\v"),
    (b"\f", b"\\f"),
    (b"\r", b"\\r"),
)

# -v -x: the ASCII column shows printable ASCII (C isprint() in the C locale,
# which socat never changes), everything else including newline as ".".
_ASCII_TABLE = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))
_ROW = 16  # bytes per row
_ROW_WIDTH = 3 * _ROW + 2 + _ROW + 1  # " xx" * 16, "  ", ASCII, "\n"
_ASCII_AT = 3 * _ROW + 2
_WORD = 8  # bytes per "Q" word in the row layout
# A chunk ends after a newline or at the end of the block.
_CHUNKS = re.compile(rb"[^\n]*\n|[^\n]+")
# Padding bytes to try, most often absent first (text has no NUL, no 0xff).
_PAD_CANDIDATES = (0x00, 0xFF, 0x80, 0xFE, 0x7F, 0x01, 0xC0, 0xF5)
_ONE_BYTE = [bytes([value]) for value in range(256)]
_PAD_CELLS = {value: b" %02x" % value for value in _PAD_CANDIDATES}
_PAD_ASCII_TABLES = {
    value: _ASCII_TABLE[:value] + b"\0" + _ASCII_TABLE[value + 1 :] for value in _PAD_CANDIDATES
}
_BLANKS = [b" " * (3 * (_ROW - count)) for count in range(_ROW)]
_NULS = [bytes(_ROW - count) for count in range(_ROW)]


def format_text(data: bytes) -> bytes:
    """The ``-v`` body of a block."""
    body = data.translate(_TEXT_TABLE)
    for byte, escape in _ESCAPES:
        body = body.replace(byte, escape)
    return body


def format_hex(data: bytes) -> bytes:
    """The ``-x`` body of a block: `` 41 42 0a`` and a newline."""
    return (" " + data.hex(" ") + "\n").encode("ascii")


def format_rows(data: bytes) -> bytearray:
    """The ``-v -x`` body of a block: 16-byte rows with an ASCII column, then ``--``."""
    body = _rows(data)
    body += b"--\n"
    return body


def _rows(data: bytes) -> bytearray:
    """The rows of the ``-v -x`` body, without the closing ``--``."""
    if not data:
        return bytearray()
    # Rows never cross a newline, so the block is cut into chunks that end
    # after one, and each chunk is padded to whole rows. The padded block is
    # then formatted at once: hex cells "xx " by hexlify, the ASCII column by
    # translation, and the rows laid out by _lay_out_rows. What the padding
    # put into the rows is then taken out again: hex cells become spaces (the
    # blank cells socat prints) and ASCII cells NUL (which the ASCII column
    # never holds otherwise), cut out at the end. When some byte value does
    # not occur in the block (text), it is the padding and both are done by
    # whole-buffer replacement and translation; otherwise the padding is
    # found by position, one fix per chunk (binary data has few newlines).
    # The padded block gets one byte more than whole rows, so that hexlify's
    # cells come out with the space after the last one; that byte is ignored.
    newlines = data.count(b"\n")
    single = newlines == 0 or (newlines == 1 and data[-1] == 0x0A)
    chunks = [data] if single else _CHUNKS.findall(data)
    widths = [(len(chunk) + _ROW - 1) & -_ROW for chunk in chunks]
    pad = next((value for value in _PAD_CANDIDATES if value not in data), None)
    fill = _ONE_BYTE[0 if pad is None else pad]
    if single:
        padded = data.ljust(widths[0] + 1, fill)
    else:
        widths[-1] += 1
        padded = b"".join(map(bytes.ljust, chunks, widths, repeat(fill)))
        widths[-1] -= 1
    rows = len(padded) // _ROW
    hex_grid = binascii.hexlify(padded, b" ")
    if pad is not None:
        hex_grid = hex_grid.replace(_PAD_CELLS[pad], b"   ")
        ascii_grid = padded.translate(_PAD_ASCII_TABLES[pad])
    else:
        ascii_grid = padded.translate(_ASCII_TABLE)
    out = _lay_out_rows(hex_grid, ascii_grid, rows)
    if len(padded) == len(data) + 1:
        return out  # no padding
    if pad is None:
        row = 0
        for chunk, width in zip(chunks, widths, strict=True):
            row += width // _ROW
            count = len(chunk) % _ROW
            if count:
                start = (row - 1) * _ROW_WIDTH
                out[start + 3 * count : start + 3 * _ROW] = _BLANKS[count]
                out[start + _ASCII_AT + count : start + _ROW_WIDTH - 1] = _NULS[count]
    return out.replace(b"\0", b"")


def _lay_out_rows(hex_grid: bytes, ascii_grid: bytes, rows: int) -> bytearray:
    """Interleave 48-byte hex areas and 16-byte ASCII areas into ``rows`` 67-byte rows.

    The grids may be longer than ``rows`` rows; the rest is ignored. A hex
    area holds 16 cells "xx " and goes one byte into the row, after the row's
    leading space; its last space is the first of the two before the ASCII
    column. Copying 8-byte words with strided slice assignment is much faster
    than working per row or per byte. Row ``r`` starts at byte ``67 * r``, so
    rows with the same ``r % 8`` share one alignment: for each such class, a
    view of the output shifted to that alignment, in 8-byte words, takes every
    67th word (8 rows further) from the hex and ASCII grids in one copy per
    word column.
    """
    out = bytearray(b" " * (_ROW_WIDTH - 1) + b"\n") * rows
    if rows < _WORD:
        for row in range(rows):
            start = row * _ROW_WIDTH
            out[start + 1 : start + 3 * _ROW + 1] = hex_grid[3 * _ROW * row : 3 * _ROW * (row + 1)]
            out[start + _ASCII_AT : start + _ASCII_AT + _ROW] = ascii_grid[
                _ROW * row : _ROW * (row + 1)
            ]
        return out
    hex_words = 3 * _ROW // _WORD
    ascii_words = _ROW // _WORD
    with (
        memoryview(out) as whole,
        memoryview(hex_grid)[: 3 * _ROW * rows].cast("Q") as hex_view,
        memoryview(ascii_grid)[: _ROW * rows].cast("Q") as ascii_view,
    ):
        for row_class in range(_WORD):
            for first, source, words in (
                (row_class * _ROW_WIDTH + 1, hex_view, hex_words),
                (row_class * _ROW_WIDTH + _ASCII_AT, ascii_view, ascii_words),
            ):
                shift = first % _WORD
                usable = (rows * _ROW_WIDTH - shift) // _WORD * _WORD
                with whole[shift : shift + usable].cast("Q") as target:
                    at = (first - shift) // _WORD
                    for word in range(words):
                        target[at + word :: _ROW_WIDTH] = source[
                            row_class * words + word :: _WORD * words
                        ]
    return out


def expand_dump_name(
    template: str,
    *,
    progname: str,
    nanoseconds: int,
    variables: Mapping[str, str] | None = None,
) -> str:
    """Expand the references socat allows in ``-r``/``-R`` file names.

    Man page: "The file name may contain references to environment variables
    and $$ (pid), $PROGNAME (see option -lp), $TIMESTAMP (uses format
    %Y%m%dT%H%M%S), and MICROS (microseconds of daytime)". ``$NAME`` and
    ``${NAME}`` name an environment variable (empty when unset); ``variables``
    are a session's own (``SOCAT_PEERADDR``...), which socat's forked child
    has in its environment.
    """
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    special = {
        "PROGNAME": progname,
        "TIMESTAMP": time.strftime("%Y%m%dT%H%M%S", time.localtime(seconds)),
        "MICROS": f"{rest // 1000:06d}",
    }

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return str(os.getpid())
        name = match.group(1) or match.group(2)
        if name in special:
            return special[name]
        if variables and name in variables:
            return variables[name]
        return os.environ.get(name, "")

    return re.sub(r"\$(?:\$|\{(\w+)\}|(\w+))", replace, template)


class TraceOutput:
    """The trace destinations of one process: the ``-v``/``-x`` descriptor and the dump files.

    ``fd`` (stderr by default) is not closed by ``close``; the ``-r``/``-R``
    files are opened here (appending, created with mode 0664 before the umask)
    and closed by ``close``. Raises ``OpenError`` when a dump file cannot be
    opened, with socat's message ``option -r "NAME": <reason>``.
    """

    def __init__(
        self,
        settings: TraceSettings,
        fd: int = 2,
        *,
        progname: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.fd = fd
        self.clock: Clock = clock or time.time_ns
        self._second = -1
        self._second_text = ""
        self._raw: dict[str, int] = {}
        self._progname = progname
        names = {">": ("-r", settings.raw_left), "<": ("-R", settings.raw_right)}
        # socat opens the dump files in each forked child, as its transfer
        # loop starts: names with references ($$, $TIMESTAMP, a session's
        # $SOCAT_PEERADDR...) are opened per session, the others once here.
        self._per_session = {
            direction: entry for direction, entry in names.items()
            if entry[1] is not None and "$" in entry[1]
        }
        fixed = {
            direction: entry for direction, entry in names.items()
            if entry[1] is not None and direction not in self._per_session
        }
        self._raw = self.open_dump_files(fixed, {})
        self._dumping = settings.verbose or settings.hex

    def open_dump_files(
        self, names: Mapping[str, tuple[str, str | None]], variables: Mapping[str, str]
    ) -> dict[str, int]:
        """Open ``direction -> (option, template)`` dump files; ``OpenError`` names a failure."""
        opened = self.clock() if names else 0  # one time for both
        raw: dict[str, int] = {}
        for direction, (option, template) in names.items():
            assert template is not None
            name = expand_dump_name(
                template,
                progname=self._progname or current_progname(),
                nanoseconds=opened,
                variables=variables,
            )
            try:
                raw[direction] = os.open(
                    name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o664
                )
            except OSError as exc:
                for fd in raw.values():
                    os.close(fd)
                raise OpenError(name, f'option {option} "{name}": {exc.strerror}') from exc
        return raw

    def session(self, env: Mapping[str, str] | None = None) -> Tracer:
        """A tracer for a new session; its offsets start at 0 in both directions.

        ``env`` holds the session's ``SOCAT_*`` variables, for dump file names.
        """
        session = SESSION_ID.get()
        if not self._per_session:
            return Tracer(self, {}, session)
        prefix = variable_prefix()
        variables = {prefix + key.removeprefix("SOCAT_"): text for key, text in (env or {}).items()}
        return Tracer(self, self.open_dump_files(self._per_session, variables), session)

    def close(self) -> None:
        """Close the dump files; safe to call twice."""
        raw, self._raw = self._raw, {}
        for fd in raw.values():
            os.close(fd)

    def emit(
        self,
        direction: Direction,
        offset: int,
        data: bytes | memoryview,
        session_raw: Mapping[str, int] | None = None,
        session: int | None = None,
    ) -> None:
        """Dump and trace one block at ``offset`` in its direction's stream.

        ``session``: the number a ``--trace-session-ids`` header ends with.
        """
        raw_fd = self._raw.get(direction)
        if session_raw and direction in session_raw:
            raw_fd = session_raw[direction]
        if raw_fd is not None:
            self._write_raw(direction, raw_fd, data)
        if not self._dumping:
            return
        block = data if isinstance(data, bytes) else bytes(data)
        header = self.header(direction, offset, len(block), session)
        settings = self.settings
        if settings.verbose and settings.hex:
            self._write_trace(header, _rows(block), b"--\n")
        elif settings.verbose:
            self._write_trace(header, format_text(block))
        else:
            self._write_trace(header, format_hex(block))

    def header(
        self, direction: Direction, offset: int, length: int, session: int | None = None
    ) -> bytes:
        """The header line of a block (`` session=N`` at its end for a numbered session)."""
        seconds, rest = divmod(self.clock(), 1_000_000_000)
        if seconds != self._second:
            self._second_text = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(seconds))
            self._second = seconds
        tag = "" if session is None else f" session={session}"
        return (
            f"{direction} {self._second_text}.{rest // 1000:06d}  "
            f"length={length} from={offset} to={offset + length - 1}{tag}\n"
        ).encode("ascii")

    def _write_raw(self, direction: Direction, fd: int, data: bytes | memoryview) -> None:
        # socat writes the dump once and warns about errors and short writes.
        option = "-r" if direction == ">" else "-R"
        try:
            written = os.write(fd, data)
        except OSError as exc:
            logger.warning("%s: write(%d, buff, %d): %s", option, fd, len(data), exc.strerror)
            return
        if written < len(data):
            logger.warning("%s: write(%d, buff, %d) -> %d", option, fd, len(data), written)

    def _write_trace(self, *parts: bytes | bytearray) -> None:
        # One system call per block; loop only if the descriptor takes part of it.
        try:
            written = os.writev(self.fd, parts)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # socat ignores errors writing its trace to stderr
        if written < sum(map(len, parts)):
            self._write_rest(b"".join(parts)[written:])

    def _write_rest(self, rest: bytes) -> None:
        while rest:
            try:
                rest = rest[os.write(self.fd, rest) :]
            except BlockingIOError:
                # stderr shared with a non-blocking descriptor: wait like a blocking write.
                select.select([], [self.fd], [])
            except OSError:
                return


class Tracer:
    """Traces the blocks of one session and counts each direction's offsets."""

    __slots__ = ("_offsets", "_output", "_raw", "_session")

    def __init__(self, output: TraceOutput, raw: dict[str, int], session: int | None) -> None:
        self._output = output
        self._offsets = {">": 0, "<": 0}
        #: This session's own dump files (names with references), if any.
        self._raw = raw
        self._session = session

    def close(self) -> None:
        """Close this session's own dump files; safe to call twice."""
        raw, self._raw = self._raw, {}
        for fd in raw.values():
            os.close(fd)

    def record(self, direction: Direction, data: bytes | memoryview) -> None:
        """Trace one transferred block; only reads ``data``. Empty blocks are not traced."""
        if isinstance(data, memoryview) and data.format != "B":
            data = data.cast("B")  # count bytes, not items
        length = len(data)
        if not length:
            return
        offset = self._offsets[direction]
        self._offsets[direction] = offset + length
        self._output.emit(direction, offset, data, self._raw, self._session)
