"""HTTP/1.1 message framing on asyncio streams, as much as the fault proxy needs.

Heads (a first line and headers) are parsed and written as they are: the
proxy forwards them nearly untouched. Bodies are delimited the three ways
HTTP/1.1 allows (RFC 9112 section 6): chunked, ``Content-Length``, or the end
of the connection; a chunked body is decoded and written again chunk by chunk,
so that the proxy chooses where chunks end (between two watch events).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

#: Longest request or response head (request line or status line plus headers).
MAX_HEAD = 64 * 1024
#: Bytes read at a time from a body.
PIECE = 64 * 1024


class FramingError(Exception):
    """A peer broke HTTP/1.1 framing; the message says how."""


@dataclass
class Head:
    """A request or response head: its first line and its headers, in order."""

    first: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def tokens(self, name: str) -> set[str]:
        """The comma-separated, lower-cased tokens of every ``name`` header."""
        name = name.lower()
        values = (v for k, v in self.headers if k.lower() == name)
        return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}

    def without(self, *names: str) -> list[tuple[str, str]]:
        lower = {n.lower() for n in names}
        return [(k, v) for k, v in self.headers if k.lower() not in lower]

    def encode(self) -> bytes:
        lines = [self.first, *(f"{k}: {v}" for k, v in self.headers), "", ""]
        return "\r\n".join(lines).encode("latin-1")


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next head, or None at a clean EOF before one starts."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise FramingError("the connection ended inside an HTTP head") from None
    except asyncio.LimitOverrunError:
        raise FramingError(f"an HTTP head longer than {MAX_HEAD} bytes") from None
    lines = raw.decode("latin-1").split("\r\n")
    while lines and not lines[0]:  # tolerated: empty lines before a request (RFC 9112 2.2)
        lines.pop(0)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise FramingError(f"a malformed header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    return Head(lines[0], headers)


def body_kind(head: Head) -> str | int:
    """``"chunked"``, a Content-Length, or ``"close"`` (the body ends with the connection)."""
    if "chunked" in head.tokens("transfer-encoding"):
        return "chunked"
    length = head.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise FramingError(f"a bad Content-Length: {length!r}")
        return int(length)
    return "close"


async def chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The pieces of a chunked body (at most ``PIECE`` bytes each), trailers skipped."""
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise FramingError(f"a bad chunk size: {size_text[:20]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailer fields: dropped
            return
        while size:
            piece = await reader.readexactly(min(size, PIECE))
            size -= len(piece)
            yield piece
        if await reader.readexactly(2) != b"\r\n":
            raise FramingError("a chunk not followed by CRLF")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


class Sink(Protocol):
    """Where a body goes: a ``StreamWriter``, or ``Discard``."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class Discard:
    """A sink that drops what it is given (the body of a request failed on purpose)."""

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


async def copy_body(kind: str | int, reader: asyncio.StreamReader, writer: Sink) -> None:
    """Copy a body of ``kind`` (see ``body_kind``), re-chunking a chunked one."""
    if kind == "chunked":
        async for piece in chunks(reader):
            writer.write(chunk(piece))
            await writer.drain()
        writer.write(LAST_CHUNK)
    elif kind == "close":
        while piece := await reader.read(PIECE):
            writer.write(piece)
            await writer.drain()
    else:
        assert isinstance(kind, int)
        left = kind
        while left:
            piece = await reader.readexactly(min(left, PIECE))
            left -= len(piece)
            writer.write(piece)
            await writer.drain()
    await writer.drain()
