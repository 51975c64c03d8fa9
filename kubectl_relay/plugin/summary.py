"""``--summary``: one line per HTTP request and its response, or per connection (no I/O).

The local side of a tunnel sees every byte of every connection exactly (the
relay's ``-v`` trace turns unprintable bytes into dots), so the summary is
made from what the plugin itself sent and received: ``HttpSplitter`` cuts
one direction of an HTTP/1.x connection into messages, by the rules of RFC
9112 section 6 ("Message Body Length"): no body for a response to HEAD, for
1xx, 204 and 304; else ``Transfer-Encoding: chunked``, else
``Content-Length``, else (responses only) until the connection closes; a
request without either has no body. ``ConnectionSummary`` pairs requests
with responses, in order, and falls back to one line for the whole
connection when the client does not speak HTTP/1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Side = Literal["request", "response"]

_REQUEST_LINE = re.compile(rb"([A-Z][A-Z-]*) (\S+) HTTP/1\.[01]")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: (.*))?")
#: A head longer than this is not HTTP as far as the summary goes.
MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Message:
    """One HTTP message: its start line's fields, its size on the wire, when it began and ended."""

    method: str = ""
    target: str = ""
    status: int = 0
    reason: str = ""
    size: int = 0
    began: float = 0.0
    ended: float = 0.0


@dataclass
class HttpSplitter:
    """Cuts one direction of an HTTP/1.x connection into messages as bytes arrive.

    ``failed`` once the bytes are not HTTP/1 (the summary then counts bytes only).
    """

    side: Side
    #: Methods of the requests answered next (a response to HEAD has no body).
    methods: list[str] = field(default_factory=list)
    failed: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _head: Message | None = None
    _body_left: int = 0  # bytes of a Content-Length body (or of the current chunk) to come
    _chunked: bool = False
    _in_trailers: bool = False
    _until_close: bool = False
    _size: int = 0
    _began: float = 0.0

    def feed(self, data: bytes, now: float) -> list[Message]:
        """Add bytes seen at ``now``; the messages they complete."""
        if self.failed:
            return []
        self._buffer += data
        done: list[Message] = []
        while not self.failed:
            message = self._step(now)
            if message is None:
                break
            done.append(message)
        return done

    def close(self, now: float) -> list[Message]:
        """The connection ended: a response delimited by its end is complete."""
        if self._head is not None and self._until_close and not self.failed:
            self._size += len(self._buffer)
            self._buffer.clear()
            return [self._finish(now)]
        return []

    def _step(self, now: float) -> Message | None:
        if self._head is None:
            return self._read_head(now)
        if self._until_close:
            self._size += len(self._buffer)
            self._buffer.clear()
            return None
        if self._chunked:
            return self._read_chunks(now)
        take = min(self._body_left, len(self._buffer))
        del self._buffer[:take]
        self._size += take
        self._body_left -= take
        return self._finish(now) if self._body_left == 0 else None

    def _read_head(self, now: float) -> Message | None:
        if not self._buffer:
            return None
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD or not self._plausible():
                self.failed = True
            return None
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        del self._buffer[: end + 4]
        self._size, self._began = end + 4, now
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if self.side == "request":
            match = _REQUEST_LINE.fullmatch(lines[0])
            if match is None:
                self.failed = True
                return None
            self._head = Message(method=match.group(1).decode(), target=match.group(2).decode())
            self.methods.append(self._head.method)
            no_body = False
        else:
            match = _STATUS_LINE.fullmatch(lines[0])
            if match is None:
                self.failed = True
                return None
            status = int(match.group(1))
            reason = (match.group(2) or b"").decode(errors="replace")
            self._head = Message(status=status, reason=reason)
            method = self.methods[0] if self.methods else ""
            if status >= 200 and self.methods:
                self.methods.pop(0)
            no_body = method == "HEAD" or status < 200 or status in (204, 304)
        self._chunked = not no_body and b"chunked" in headers.get(b"transfer-encoding", b"")
        length = headers.get(b"content-length")
        self._body_left = 0
        self._until_close = False
        if no_body or self._chunked:
            pass
        elif length is not None and length.isdigit():
            self._body_left = int(length)
        elif self.side == "response":
            self._until_close = True
        if not self._chunked and not self._until_close and self._body_left == 0:
            return self._finish(now)
        return self._step(now)

    def _plausible(self) -> bool:
        """Whether an unfinished head may still become HTTP/1 (else give up at once)."""
        first = bytes(self._buffer[:16])
        if self.side == "request":
            return re.match(rb"[A-Z-]{0,15}( |$)", first) is not None
        return b"HTTP/1."[: len(first)] == first[:7]

    def _read_chunks(self, now: float) -> Message | None:
        # Chunks: "SIZE[;ext]\r\n" DATA "\r\n" ...; "0\r\n", trailers, "\r\n".
        while True:
            if self._body_left:
                take = min(self._body_left, len(self._buffer))
                del self._buffer[:take]
                self._size += take
                self._body_left -= take
                if self._body_left:
                    return None
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                return None
            line = bytes(self._buffer[:line_end])
            if self._in_trailers:
                del self._buffer[: line_end + 2]
                self._size += line_end + 2
                if not line:
                    return self._finish(now)
                continue
            if not line:  # the CRLF after a chunk's data
                del self._buffer[:2]
                self._size += 2
                continue
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                self.failed = True
                return None
            del self._buffer[: line_end + 2]
            self._size += line_end + 2
            if size == 0:
                self._in_trailers = True
            self._body_left = size

    def _finish(self, now: float) -> Message:
        assert self._head is not None
        head = self._head
        message = Message(
            head.method, head.target, head.status, head.reason, self._size, self._began, now
        )
        self._head = None
        self._chunked = self._in_trailers = self._until_close = False
        self._size = 0
        return message


@dataclass(frozen=True)
class Exchange:
    """One summary line: an HTTP request and its response, or a whole connection."""

    connection: int
    method: str
    target: str
    status: int
    reason: str
    sent: int
    received: int
    seconds: float

    @property
    def is_http(self) -> bool:
        """Whether this is a request/response pair (else a connection)."""
        return bool(self.method)


@dataclass
class ConnectionSummary:
    """Pairs the requests and responses of one connection; counts bytes if it is not HTTP."""

    connection: int
    peer: str
    opened: float
    requests: HttpSplitter = field(default_factory=lambda: HttpSplitter("request"))
    responses: HttpSplitter = field(default_factory=lambda: HttpSplitter("response"))
    sent: int = 0
    received: int = 0
    _asked: list[Message] = field(default_factory=list)
    _shown: int = 0

    def __post_init__(self) -> None:
        self.responses.methods = self.requests.methods  # HEAD responses have no body

    def sent_data(self, data: bytes, now: float) -> list[Exchange]:
        """Bytes from the client towards the target."""
        self.sent += len(data)
        self._asked += self.requests.feed(data, now)
        return []

    def received_data(self, data: bytes, now: float) -> list[Exchange]:
        """Bytes from the target back to the client; the exchanges they complete."""
        self.received += len(data)
        return self._pair(self.responses.feed(data, now))

    def closed(self, now: float) -> list[Exchange]:
        """The connection ended: the last lines (a connection's one line if it was not HTTP)."""
        lines = self._pair(self.responses.close(now))
        if self._shown == 0 and not lines and not self._asked:
            # Not HTTP (or nothing asked): one line for the connection.
            return [
                Exchange(self.connection, "", self.peer, 0, "", self.sent, self.received,
                         now - self.opened)
            ]
        for request in self._asked:
            lines.append(Exchange(self.connection, request.method, request.target, 0,
                                  "no response", request.size, 0, now - request.began))
        self._asked.clear()
        return lines

    def _pair(self, responses: list[Message]) -> list[Exchange]:
        lines = []
        for response in responses:
            if response.status < 200:
                continue  # 100 Continue: the final response follows
            request = self._asked.pop(0) if self._asked else Message(method="?", target="?")
            lines.append(
                Exchange(self.connection, request.method, request.target, response.status,
                         response.reason, request.size, response.size,
                         response.ended - (request.began or response.began))
            )
            self._shown += 1
        return lines
