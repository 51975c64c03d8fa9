"""-v/-x traces and -r/-R dumps: golden bytes, a per-byte reference, and real socat."""

from __future__ import annotations

import array
import calendar
import os
import random
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kubectl_relay.engine.errors import OpenError
from kubectl_relay.engine.log import SESSION_ID
from kubectl_relay.engine.trace import (
    TraceOutput,
    TraceSettings,
    expand_dump_name,
    format_hex,
    format_rows,
    format_text,
)
from tests.conftest import SOCAT, requires_socat, scaled
from tests.support import RelayProcess, ThreadedServer, free_port, wait_for_port

if TYPE_CHECKING:
    from kubectl_relay.engine.trace import Direction  # a type only (trace avoids typing)

NOON_NS = calendar.timegm((2026, 11, 24, 10, 0, 0)) * 1_000_000_000 + 123_456_789
STAMP = "2026/11/24 10:00:00.123456"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def traced(
    settings: TraceSettings,
    blocks: Sequence[tuple[Direction, bytes | memoryview]],
    *,
    sessions: int = 1,
) -> bytes:
    """Everything a TraceOutput writes for ``blocks`` (repeated in each session)."""
    read_end, write_end = os.pipe()
    try:
        output = TraceOutput(settings, write_end, clock=lambda: NOON_NS)
        for _ in range(sessions):
            tracer = output.session()
            for direction, data in blocks:
                tracer.record(direction, data)
        output.close()
        os.close(write_end)
        write_end = -1
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


# -- per-byte reference implementations, written from the format description --------


def reference_text(data: bytes) -> bytes:
    escapes = {0x07: b"\\a", 0x08: b"\\b", 0x0B: b"\\v", 0x0C: b"\\f", 0x0D: b"\\r", 0x5C: b"\\\\"}
    out = bytearray()
    for byte in data:
        if byte in escapes:
            out += escapes[byte]
        elif byte in (0x09, 0x0A) or 0x20 <= byte <= 0x7E:
            out.append(byte)
        else:
            out += b"."
    return bytes(out)


def reference_hex(data: bytes) -> bytes:
    return b"".join(b" %02x" % byte for byte in data) + b"\n"


def reference_rows(data: bytes) -> bytes:
    out = bytearray()
    start = 0
    while start < len(data):
        row = data[start : start + 16]
        if b"\n" in row:
            row = row[: row.index(b"\n") + 1]
        out += b"".join(b" %02x" % byte for byte in row)
        out += b"   " * (16 - len(row)) + b"  "
        out += bytes(byte if 0x20 <= byte <= 0x7E else 0x2E for byte in row) + b"\n"
        start += len(row)
    return bytes(out) + b"--\n"


# -- headers and offsets ---------------------------------------------------------------


def test_header_golden() -> None:
    assert traced(TraceSettings(hex=True), [(">", b"hello\n")]) == (
        f"> {STAMP}  length=6 from=0 to=5\n 68 65 6c 6c 6f 0a\n".encode()
    )


def test_offsets_count_per_direction_and_restart_per_session() -> None:
    blocks: list[tuple[Direction, bytes]] = [
        (">", b"abc"),
        ("<", b"0123456789"),
        (">", b"de"),
        ("<", b"x"),
    ]
    session = (
        f"> {STAMP}  length=3 from=0 to=2\n 61 62 63\n"
        f"< {STAMP}  length=10 from=0 to=9\n 30 31 32 33 34 35 36 37 38 39\n"
        f"> {STAMP}  length=2 from=3 to=4\n 64 65\n"
        f"< {STAMP}  length=1 from=10 to=10\n 78\n"
    ).encode()
    assert traced(TraceSettings(hex=True), blocks, sessions=2) == session * 2


def test_empty_blocks_are_not_traced() -> None:
    assert traced(TraceSettings(verbose=True, hex=True), [(">", b""), ("<", b"")]) == b""


def test_microseconds_are_six_digits_and_cut() -> None:
    # socat 1.8.1 fixed 1.7.4/1.8.0's nine-digit "000123456"; we print six.
    read_end, write_end = os.pipe()
    try:
        stamps = iter([NOON_NS - 123_456_789 + 999_999_999, NOON_NS - 123_456_789 + 1_000])
        output = TraceOutput(TraceSettings(hex=True), write_end, clock=lambda: next(stamps))
        tracer = output.session()
        tracer.record(">", b"a")
        tracer.record(">", b"b")
        assert os.read(read_end, 4096) == (
            b"> 2026/11/24 10:00:00.999999  length=1 from=0 to=0\n 61\n"
            b"> 2026/11/24 10:00:00.000001  length=1 from=1 to=1\n 62\n"
        )
    finally:
        os.close(read_end)
        os.close(write_end)


# -- -v text -----------------------------------------------------------------------------

TEXT_CASES = [
    (b"hello\n", b"hello\n"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET / HTTP/1.1\\r\nHost: a\\r\n\\r\n"),
    (b"a\rb", b"a\\rb"),
    (b"\n", b"\n"),
    (b"\r", b"\\r"),
    (b"no newline", b"no newline"),
    (b"tab\there", b"tab\there"),
    (b"\a\b\v\f", b"\\a\\b\\v\\f"),
    (b"back\\slash", b"back\\\\slash"),
    (b"\\r literal", b"\\\\r literal"),
    (b"\x00\x01\x1b\x7f\x80\xff", b"......"),
    ("café €\n".encode(), b"caf.. ...\n"),
    (b"~ }", b"~ }"),
]


@pytest.mark.parametrize(("data", "expected"), TEXT_CASES)
def test_text_body(data: bytes, expected: bytes) -> None:
    assert format_text(data) == expected
    assert reference_text(data) == expected


def test_text_trace_runs_into_the_next_header() -> None:
    # socat adds nothing after a block: one without a newline ends where the next header starts.
    stream = traced(TraceSettings(verbose=True), [(">", b"abc"), ("<", b"ok\r\n"), (">", b"d\n")])
    assert stream == (
        f"> {STAMP}  length=3 from=0 to=2\n"
        f"abc< {STAMP}  length=4 from=0 to=3\n"
        f"ok\\r\n"
        f"> {STAMP}  length=2 from=3 to=4\n"
        f"d\n"
    ).encode()


# -- -x hex --------------------------------------------------------------------------------

HEX_CASES = [
    (b"ab\r\ncd\n\x00", b" 61 62 0d 0a 63 64 0a 00\n"),
    (b"\xff", b" ff\n"),
    (bytes(range(20)), b" " + b" ".join(b"%02x" % i for i in range(20)) + b"\n"),
]


@pytest.mark.parametrize(("data", "expected"), HEX_CASES)
def test_hex_body(data: bytes, expected: bytes) -> None:
    assert format_hex(data) == expected
    assert reference_hex(data) == expected


# -- -v -x rows ----------------------------------------------------------------------------

ROWS_CASES = [
    # Observed from real socat (-v -x): rows end after a newline, the hex column is
    # padded to 16 cells, newline and unprintable bytes show as "." in the ASCII column.
    (
        b"ab\r\ncd\n0123456789abcdefXYZ\n0123456789abcde\n\x00\x01\xff",
        b" 61 62 0d 0a                                      ab..\n"
        b" 63 64 0a                                         cd.\n"
        b" 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66  0123456789abcdef\n"
        b" 58 59 5a 0a                                      XYZ.\n"
        b" 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 0a  0123456789abcde.\n"
        b" 00 01 ff                                         ...\n"
        b"--\n",
    ),
    (b"\n", b" 0a" + b" " * 45 + b"  .\n--\n"),
    (b"\n\n", b" 0a" + b" " * 45 + b"  .\n" + b" 0a" + b" " * 45 + b"  .\n--\n"),
    (
        b"0123456789abcdef",
        b" 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66  0123456789abcdef\n--\n",
    ),
    (
        b"0123456789abcdefg",
        b" 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66  0123456789abcdef\n"
        b" 67" + b" " * 45 + b"  g\n--\n",
    ),
    (
        "é\\\t\r\n".encode(),
        b" c3 a9 5c 09 0d 0a" + b" " * 30 + b"  ..\\...\n--\n",
    ),
]


@pytest.mark.parametrize(("data", "expected"), ROWS_CASES)
def test_rows_body(data: bytes, expected: bytes) -> None:
    assert bytes(format_rows(data)) == expected
    assert reference_rows(data) == expected


def make_blocks() -> list[bytes]:
    """Blocks that take every path of format_rows: few and many rows, with and
    without newlines, with every byte value present (no free padding value) or not."""
    rng = random.Random(1808)
    every_byte = bytes(range(256))
    line = b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: example\r\n"
    blocks = [
        b"x",
        b"a" * 15 + b"\n",
        b"a" * 16 + b"\n",
        b"a" * 127,
        b"a" * 128,
        b"a" * 129,
        b"\n" * 40,
        every_byte,
        every_byte * 3 + b"tail",
        every_byte[::-1] + b"\n",
        (line * 200)[:8192],
        (line * 200)[:8191],
        b"\r\n" * 100,
    ]
    for size in (1, 2, 7, 17, 100, 127, 128, 129, 1000, 4096, 65536):
        blocks.append(rng.randbytes(size))
        # Text-like: short lines, no free padding problem.
        blocks.append(bytes(rng.choice(b"abc \t\r\n\x00") for _ in range(size)))
        # Every byte value present and many newlines: padding found by position.
        blocks.append(every_byte + bytes(rng.choice(b"ab\n\xff\x00") for _ in range(size)))
    return blocks


@pytest.mark.parametrize("data", make_blocks(), ids=lambda data: f"{len(data)}B")
def test_bodies_match_the_per_byte_reference(data: bytes) -> None:
    assert bytes(format_rows(data)) == reference_rows(data)
    assert format_text(data) == reference_text(data)
    assert format_hex(data) == reference_hex(data)


def test_rows_trace_stream() -> None:
    stream = traced(TraceSettings(verbose=True, hex=True), [(">", b"hi\n"), ("<", b"\x00")])
    assert stream == (
        f"> {STAMP}  length=3 from=0 to=2\n".encode()
        + b" 68 69 0a"
        + b" " * 39
        + b"  hi.\n--\n"
        + f"< {STAMP}  length=1 from=0 to=0\n".encode()
        + b" 00"
        + b" " * 45
        + b"  .\n--\n"
    )


# -- tracing only reads ------------------------------------------------------------------


def test_tracing_leaves_the_block_unchanged() -> None:
    buffer = bytearray(b"\r\n\\\x00abc" * 1000)
    before = bytes(buffer)
    traced(TraceSettings(verbose=True, hex=True), [(">", memoryview(buffer))])
    assert buffer == before


def test_memoryview_of_wider_items_counts_bytes() -> None:
    words = array.array("H", [0x4241, 0x0A43])  # b"ABC\n" on little-endian machines
    view = memoryview(words)
    stream = traced(TraceSettings(verbose=True), [(">", view)])
    assert stream.startswith(f"> {STAMP}  length=4 from=0 to=3\n".encode())
    assert stream.endswith(bytes(view.cast("B")).replace(b"\x0a", b"\n"))


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "enabled"),
    [
        (TraceSettings(), False),
        (TraceSettings(verbose=True), True),
        (TraceSettings(hex=True), True),
        (TraceSettings(raw_left="left.bin"), True),
        (TraceSettings(raw_right="right.bin"), True),
    ],
)
def test_enabled(settings: TraceSettings, enabled: bool) -> None:
    assert settings.enabled is enabled


# -- -r / -R raw dumps -----------------------------------------------------------------


def test_raw_dumps_split_the_directions(tmp_path: Path) -> None:
    left, right = tmp_path / "left.bin", tmp_path / "right.bin"
    left.write_bytes(b"old:")  # socat appends to the dump files
    settings = TraceSettings(raw_left=str(left), raw_right=str(right))
    blocks: list[tuple[Direction, bytes]] = [
        (">", b"GET /\r\n"),
        ("<", b"\x00\xffHTTP"),
        (">", b"\n"),
        ("<", b"/1.0 200\r\n"),
    ]
    assert traced(settings, blocks, sessions=2) == b""  # no -v/-x: nothing on the trace fd
    assert left.read_bytes() == b"old:" + b"GET /\r\n\n" * 2
    assert right.read_bytes() == b"\x00\xffHTTP/1.0 200\r\n" * 2


def test_raw_dump_with_trace(tmp_path: Path) -> None:
    left = tmp_path / "left.bin"
    stream = traced(TraceSettings(verbose=True, raw_left=str(left)), [(">", b"a\r\n")])
    assert stream == f"> {STAMP}  length=3 from=0 to=2\na\\r\n".encode()
    assert left.read_bytes() == b"a\r\n"


def test_raw_dump_name_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUMPDIR", str(tmp_path))
    settings = TraceSettings(raw_left="$DUMPDIR/$PROGNAME-$TIMESTAMP.$MICROS.in")
    read_end, write_end = os.pipe()
    try:
        output = TraceOutput(settings, write_end, progname="socat", clock=lambda: NOON_NS)
        output.session().record(">", b"data")
        output.close()
        output.close()  # twice is fine
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (tmp_path / "socat-20261124T100000.123456.in").read_bytes() == b"data"


def test_unopenable_raw_dump_is_an_open_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "dump"
    with pytest.raises(OpenError) as caught:
        TraceOutput(TraceSettings(raw_right=str(missing)))
    assert str(caught.value) == f'option -R "{missing}": No such file or directory'


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain.bin", "plain.bin"),
        ("/tmp/$PROGNAME.bin", "/tmp/relay.bin"),
        ("dump-$$", "dump-{pid}"),
        ("$TIMESTAMP", "20261124T100000"),
        ("t$MICROS", "t123456"),
        ("$HOME/x", "/home/test/x"),
        ("${HOME}x", "/home/testx"),
        ("$UNSET_VARIABLE_FOR_TEST/x", "/x"),
        ("a$$b$PROGNAME", "a{pid}brelay"),
    ],
)
def test_expand_dump_name(
    template: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/test")
    monkeypatch.delenv("UNSET_VARIABLE_FOR_TEST", raising=False)
    # The pid is filled in here, not in the test's id: pytest-xdist workers must
    # collect the same ids, and each has its own pid.
    expected = expected.format(pid=os.getpid())
    assert expand_dump_name(template, progname="relay", nanoseconds=NOON_NS) == expected


# -- against the real socat --------------------------------------------------------------

HEADER = re.compile(rb"> \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+  length=(\d+) from=(\d+) to=(\d+)\n")


@requires_socat
@pytest.mark.socat
@pytest.mark.parametrize("flags", [["-v"], ["-x"], ["-v", "-x"]])
def test_bodies_match_real_socat(flags: list[str]) -> None:
    data = bytes(range(256)) + "GET / HTTP/1.1\r\nHost: é\r\n\r\n\\x\a\b\v\f".encode() + b"z" * 40
    assert SOCAT is not None
    result = subprocess.run(
        [SOCAT, "-u", *flags, "STDIN", "OPEN:/dev/null"],
        input=data,
        capture_output=True,
        timeout=scaled(10),
        check=True,
    )
    # socat may read the input in more than one block: rebuild ours from its headers.
    # Timestamps differ (and socat 1.7.4 prints nine digits), so headers are compared
    # by their length/from/to fields only.
    expected = bytearray()
    settings = TraceSettings(verbose="-v" in flags, hex="-x" in flags)
    pieces = HEADER.split(result.stderr)
    assert pieces[0] == b""
    for index in range(1, len(pieces), 4):
        length, start, end = (int(field) for field in pieces[index : index + 3])
        block = data[start : end + 1]
        assert len(block) == length
        ours = traced(settings, [(">", block)])
        header_end = ours.index(b"\n") + 1
        assert ours[:header_end].endswith(b" length=%d from=0 to=%d\n" % (length, length - 1))
        assert ours[header_end:] == pieces[index + 3]
        expected += block
    assert bytes(expected) == data


# -- --trace-session-ids (a relay extension) ---------------------------------------------------


def test_session_ids_end_the_headers_of_a_numbered_session() -> None:
    settings = TraceSettings(verbose=True, session_ids=True)
    token = SESSION_ID.set(7)
    try:
        tagged = traced(settings, [(">", b"hi\n")])
    finally:
        SESSION_ID.reset(token)
    assert tagged == f"> {STAMP}  length=3 from=0 to=2 session=7\nhi\n".encode()
    # Without a number (the option off), the header is socat's.
    assert traced(settings, [(">", b"hi\n")]) == f"> {STAMP}  length=3 from=0 to=2\nhi\n".encode()


def test_a_forking_relay_numbers_its_sessions_in_trace_and_log() -> None:
    """The real engine: each accepted connection's blocks and errors carry its number."""

    def echo(conn: socket.socket) -> None:
        while data := conn.recv(100):
            conn.sendall(data)

    with ThreadedServer(echo) as server:
        port = free_port()
        listen = f"TCP-LISTEN:{port},fork,reuseaddr"
        with RelayProcess(
            ["-d", "-d", "-v", "--trace-session-ids", listen, f"TCP:127.0.0.1:{server.port}"],
            stdin=None,
        ) as relay:
            wait_for_port(port)
            for word in (b"one\n", b"two\n"):
                with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
                    conn.sendall(word)
                    assert conn.recv(100) == word
        relay.wait()
    trace = relay.stderr_text
    assert re.search(r"> \S+ \S+  length=4 from=0 to=3 session=1\none\n", trace), trace
    assert re.search(r"< \S+ \S+  length=4 from=0 to=3 session=2\ntwo\n", trace), trace

    refused = free_port()
    with RelayProcess(
        ["-d", "-d", "--trace-session-ids", f"TCP-LISTEN:{port},reuseaddr",
         f"TCP:127.0.0.1:{refused}"],
        stdin=None,
    ) as relay:
        wait_for_port(port)
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
            assert conn.recv(100) == b""
        relay.wait()
    assert re.search(r"relay\[\d+\] E session 1: connect\(.*Connection refused", relay.stderr_text)


def test_without_the_option_nothing_is_numbered() -> None:
    with ThreadedServer(lambda conn: conn.sendall(conn.recv(100))) as server:
        port = free_port()
        with RelayProcess(
            ["-d", "-d", "-v", f"TCP-LISTEN:{port},reuseaddr", f"TCP:127.0.0.1:{server.port}"],
            stdin=None,
        ) as relay:
            wait_for_port(port)
            with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as conn:
                conn.sendall(b"x\n")
                assert conn.recv(100) == b"x\n"
            relay.wait()
    assert "session" not in relay.stderr_text
    assert re.search(r"> \S+ \S+  length=2 from=0 to=1\nx\n", relay.stderr_text)
