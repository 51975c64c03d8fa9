"""``PROXY-SERVER``: the server side of SOCKS5, SOCKS4/4a and HTTP proxying (a relay extension).

socat has the client side only (``SOCKS4``, ``SOCKS4A``, ``SOCKS5-CONNECT``,
``PROXY``). ``PROXY-SERVER`` is a *second* address: it reads the request from
the peer of the first address, checks the destination, connects to it, answers
the peer, and hands the connection to the transfer loop like any ``TCP``
address::

    relay TCP-LISTEN:1080,fork,reuseaddr PROXY-SERVER

Why a second address and not a listening one: the first address stays any
address (``TCP-LISTEN``, ``UNIX-LISTEN``, ``OPENSSL-LISTEN`` for a TLS-wrapped
proxy, ``STDIO`` under inetd, the framed ``TCP-LISTEN`` behind
``kubectl relay proxy``'s port-forward), with its ``fork``, ``range`` and
``max-children``, and the session is an ordinary session afterwards: traced,
counted, half-closed and cut like any other. The address's options are those
of the ``TCP`` connection it makes (``connect-timeout``, ``bind``, ``pf``...).

One address speaks every protocol, told apart by the request's first byte:

- 5: SOCKS5 (RFC 1928), the "no authentication" method only, CONNECT only;
  BIND and UDP ASSOCIATE get reply 7 ("command not supported");
- 4: SOCKS4 CONNECT, and SOCKS4a when the address is ``0.0.0.x`` (x != 0)
  and a name follows the user id;
- a letter: HTTP, ``CONNECT host:port`` and the absolute form of any other
  method (``GET http://host/path``), which is sent on to the origin server
  in origin form with ``Connection: close`` (one request per connection).

Names are resolved where the relay runs (in a relay pod: the cluster's DNS).
The destination goes through ``--deny-connect``/``--allow-connect``
(``destinations.py``) by name before the lookup and by address after it; a
refused one gets the protocol's refusal (SOCKS5 reply 2, SOCKS4 91, HTTP
403) and its ``E`` line. Each request is a notice (``-d -d``) naming the
destination, so a ``kubectl relay proxy`` trace shows where each connection
went. A request that is neither protocol, is malformed, or does not come
within ``HANDSHAKE_SECONDS`` ends the session with one ``E`` line.

Bytes the client sent after its request (before the answer, which the
protocols allow) are written to the destination first, in order.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
import struct
from dataclasses import dataclass

from ..addresses import Address
from ..errors import DestinationRefused, OpenError, shorten
from ..log import NOTICE, logger
from . import tcp
from .base import OpenContext, Stream
from .sockets import SocketStream
from .socks import (
    SOCKS4_CONNECT,
    SOCKS4_GRANTED,
    SOCKS4_VERSION,
    SOCKS5_CONNECT,
    SOCKS5_DOMAIN,
    SOCKS5_IPV4,
    SOCKS5_IPV6,
    SOCKS5_NO_ACCEPTABLE_METHOD,
    SOCKS5_NO_AUTHENTICATION,
    SOCKS5_VERSION,
)

#: How long a client may take to send its whole request.
HANDSHAKE_SECONDS = 30.0
#: The longest HTTP request head (request line and headers) read.
MAX_HTTP_HEAD = 16 * 1024
#: The empty line that ends an HTTP head (RFC 9112 2.2: a bare LF may end a line too).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
#: The end of SOCKS4's user id and SOCKS4a's host name.
_NUL = re.compile(b"\0")
#: SOCKS4's "request rejected or failed" (the one refusal a SOCKS4 server sends).
SOCKS4_REJECTED = 91
#: SOCKS5 reply codes this server sends, by meaning.
SOCKS5_FAILURE, SOCKS5_NOT_ALLOWED, SOCKS5_NETWORK_UNREACHABLE = 1, 2, 3
SOCKS5_HOST_UNREACHABLE, SOCKS5_CONNECTION_REFUSED = 4, 5
SOCKS5_COMMAND_NOT_SUPPORTED, SOCKS5_ADDRESS_NOT_SUPPORTED = 7, 8
#: The SOCKS5 reply for a failed connect, by errno.
_SOCKS5_BY_ERRNO = {
    errno.ECONNREFUSED: SOCKS5_CONNECTION_REFUSED,
    errno.ENETUNREACH: SOCKS5_NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: SOCKS5_HOST_UNREACHABLE,
    errno.ETIMEDOUT: SOCKS5_HOST_UNREACHABLE,
}
_READ_SIZE = 64 * 1024  # one frame of frame=len16 whole
_ACCEPTED = "SOCKS5 CONNECT, SOCKS4/4a CONNECT, HTTP CONNECT or an absolute-form HTTP request"


@dataclass(frozen=True)
class Request:
    """What the client asked for: the protocol's name, the destination, and what it needs sent."""

    protocol: str
    host: str
    port: int
    #: Bytes for the destination before the client's own (a rewritten HTTP request head).
    forward: bytes = b""


class _Refusal(OpenError):
    """The request cannot be served; ``answer`` is the protocol's refusal for the client."""

    def __init__(self, text: str, reason: str, answer: bytes) -> None:
        super().__init__(text, reason)
        self.answer = answer


class PeerReader:
    """Reads the request from the first address's peer, keeping what came after it."""

    def __init__(self, peer: Stream) -> None:
        self.peer = peer
        self.buffer = bytearray()
        self._scratch = memoryview(bytearray(_READ_SIZE))

    async def _more(self) -> bool:
        count = await self.peer.read_into(self._scratch)
        self.buffer += self._scratch[:count]
        return count > 0

    async def exactly(self, count: int, what: str, text: str) -> bytes:
        """``count`` bytes, or ``OpenError`` naming ``what`` at an early end."""
        while len(self.buffer) < count:
            if not await self._more():
                raise OpenError(text, f"proxy client closed the connection during {what}")
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def until(self, end: re.Pattern[bytes], limit: int, what: str, text: str) -> bytes:
        """The bytes up to and with the first match of ``end``, at most ``limit`` of them."""
        while True:
            found = end.search(self.buffer)
            if found is not None:
                return await self.exactly(found.end(), what, text)
            if len(self.buffer) >= limit:
                raise OpenError(text, f"proxy request: {what} longer than {limit} bytes")
            if not await self._more():
                raise OpenError(text, f"proxy client closed the connection during {what}")


async def serve(address: Address, ctx: OpenContext) -> Stream:
    """Read the peer's request, connect to its destination, answer; the connection."""
    text = str(address)
    peer = ctx.peer
    if peer is None:
        raise OpenError(
            text,
            "PROXY-SERVER answers the peer of the first address: use it as the second "
            "address (relay TCP-LISTEN:1080,fork PROXY-SERVER)",
        )
    reader = PeerReader(peer)
    try:
        async with asyncio.timeout(HANDSHAKE_SECONDS):
            request = await _read_request(reader, text)
    except TimeoutError:
        raise OpenError(
            text, f"proxy client sent no complete request within {HANDSHAKE_SECONDS:g} s"
        ) from None
    except _Refusal as refusal:
        await _answer(peer, refusal.answer)
        raise
    destination = _host_port(request.host, request.port)
    logger.log(NOTICE, "proxy: %s request from %s to %s", request.protocol, peer.label, destination)
    try:
        stream = await _connect(address, request, ctx, text)
    except OpenError as exc:
        await _answer(peer, _failure_answer(request.protocol, exc))
        raise
    try:
        await peer.write(memoryview(_success_answer(request.protocol, stream)))
        # The client's own bytes that came with its request keep their order.
        early = request.forward + bytes(reader.buffer)
        if early:
            await stream.write(memoryview(early))
    except BaseException:
        await stream.aclose()
        raise
    logger.log(NOTICE, "proxy: connected to %s for %s", destination, peer.label)
    return stream


async def _read_request(reader: PeerReader, text: str) -> Request:
    first = (await reader.exactly(1, "the request", text))[0]
    if first == SOCKS5_VERSION:
        return await _socks5_request(reader, text)
    if first == SOCKS4_VERSION:
        return await _socks4_request(reader, text)
    if 0x41 <= first <= 0x5A or 0x61 <= first <= 0x7A:
        return await _http_request(reader, bytes((first,)), text)
    raise OpenError(
        text,
        f"proxy request starts with byte 0x{first:02x}, which is no proxy protocol; "
        f"accepted: {_ACCEPTED}",
    )


# -- SOCKS5 --------------------------------------------------------------------------------------


async def _socks5_request(reader: PeerReader, text: str) -> Request:
    count = (await reader.exactly(1, "the SOCKS5 greeting", text))[0]
    methods = await reader.exactly(count, "the SOCKS5 greeting", text)
    if SOCKS5_NO_AUTHENTICATION not in methods:
        raise _Refusal(
            text,
            f"SOCKS5 client offers the methods {list(methods)}, none of them 0 "
            "(no authentication, the one method the relay accepts)",
            bytes((SOCKS5_VERSION, SOCKS5_NO_ACCEPTABLE_METHOD)),
        )
    await reader.peer.write(memoryview(bytes((SOCKS5_VERSION, SOCKS5_NO_AUTHENTICATION))))
    version, command, _, kind = await reader.exactly(4, "the SOCKS5 request", text)
    if version != SOCKS5_VERSION:
        raise OpenError(text, f"SOCKS5 request has version {version}, not {SOCKS5_VERSION}")
    if kind == SOCKS5_IPV4:
        host = socket.inet_ntoa(await reader.exactly(4, "the SOCKS5 request", text))
    elif kind == SOCKS5_IPV6:
        packed = await reader.exactly(16, "the SOCKS5 request", text)
        host = socket.inet_ntop(socket.AF_INET6, packed)
    elif kind == SOCKS5_DOMAIN:
        size = (await reader.exactly(1, "the SOCKS5 request", text))[0]
        host = _name(await reader.exactly(size, "the SOCKS5 request", text), text, "SOCKS5")
    else:
        raise _Refusal(
            text,
            f"SOCKS5 request has address type {kind}; accepted: 1 (IPv4), 3 (name), 4 (IPv6)",
            _socks5_reply(SOCKS5_ADDRESS_NOT_SUPPORTED),
        )
    (port,) = struct.unpack("!H", await reader.exactly(2, "the SOCKS5 request", text))
    if command != SOCKS5_CONNECT:
        raise _Refusal(
            text,
            f"SOCKS5 command {command} to {_host_port(host, port)} is not supported; "
            "accepted: 1 (CONNECT)",
            _socks5_reply(SOCKS5_COMMAND_NOT_SUPPORTED),
        )
    return Request("SOCKS5", host, port)


def _socks5_reply(code: int, bound: tuple[str, int] = ("0.0.0.0", 0)) -> bytes:
    ip = ipaddress.ip_address(bound[0])
    kind = SOCKS5_IPV4 if ip.version == 4 else SOCKS5_IPV6
    return bytes((SOCKS5_VERSION, code, 0, kind)) + ip.packed + struct.pack("!H", bound[1])


# -- SOCKS4 and 4a -------------------------------------------------------------------------------


async def _socks4_request(reader: PeerReader, text: str) -> Request:
    command, port, ip = struct.unpack("!BH4s", await reader.exactly(7, "the SOCKS4 request", text))
    await reader.until(_NUL, 256, "the SOCKS4 user id", text)
    host = socket.inet_ntoa(ip)
    protocol = "SOCKS4"
    if ip[:3] == b"\0\0\0" and ip[3]:
        # SOCKS4a: "0.0.0.x" with x nonzero, then the name after the user id.
        protocol = "SOCKS4a"
        host = _name(
            (await reader.until(_NUL, 256, "the SOCKS4a host name", text))[:-1], text, protocol
        )
    if command != SOCKS4_CONNECT:
        raise _Refusal(
            text,
            f"{protocol} command {command} to {_host_port(host, port)} is not supported; "
            "accepted: 1 (CONNECT)",
            _socks4_reply(SOCKS4_REJECTED),
        )
    return Request(protocol, host, port)


def _socks4_reply(code: int) -> bytes:
    return struct.pack("!BBH4s", 0, code, 0, bytes(4))


# -- HTTP ----------------------------------------------------------------------------------------


async def _http_request(reader: PeerReader, first: bytes, text: str) -> Request:
    head = first + await reader.until(_HEAD_END, MAX_HTTP_HEAD, "the HTTP request head", text)
    lines = head.decode("latin-1").split("\n")
    request_line = lines[0].rstrip("\r")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refusal(
            text,
            f'HTTP request line "{shorten(_escaped(request_line))}" is '
            f"not METHOD TARGET HTTP/1.x; accepted: {_ACCEPTED}",
            _http_answer(400, "Bad Request", "not an HTTP/1.x request line"),
        )
    method, target, version = parts
    if method == "CONNECT":
        host, port = _authority(target, None, text)
        return Request("HTTP CONNECT", host, port)
    if not target.lower().startswith("http://"):
        raise _Refusal(
            text,
            f'HTTP {method} "{shorten(target)}" is not for a proxy: accepted: CONNECT '
            "host:port, or an absolute http:// URL",
            _http_answer(400, "Bad Request", "a proxy request needs CONNECT or http://HOST/"),
        )
    rest = target[len("http://"):]
    authority, slash, path = rest.partition("/")
    host, port = _authority(authority, 80, text)
    headers = [
        line
        for line in (raw.rstrip("\r") for raw in lines[1:])
        if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP
    ]
    origin = f"/{path}" if slash else "/"
    forward = "\r\n".join([f"{method} {origin} {version}", *headers, "Connection: close", "", ""])
    return Request(f"HTTP {method}", host, port, forward.encode("latin-1"))


#: Headers meant for the proxy, not sent on (RFC 9110 7.6.1, and the old Proxy-Connection).
_HOP_BY_HOP = frozenset(
    {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "upgrade"}
)


def _authority(text_: str, default_port: int | None, text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (port optional when ``default_port``)."""
    host, port_text = text_, ""
    if text_.startswith("["):
        host, _, after = text_[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
    elif text_.count(":") == 1:
        host, _, port_text = text_.partition(":")
    port = default_port if not port_text else (int(port_text) if port_text.isdigit() else -1)
    if not host or port is None or not 0 < port <= 0xFFFF:
        raise _Refusal(
            text,
            f'HTTP proxy target "{shorten(text_)}" is not host:port with a port 1 to 65535',
            _http_answer(400, "Bad Request", "the target must be host:port"),
        )
    return host, port


def _http_answer(status: int, phrase: str, why: str) -> bytes:
    body = f"{status} {phrase}: {why}\n".encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


# -- connecting and answering --------------------------------------------------------------------


def _name(data: bytes, text: str, protocol: str) -> str:
    try:
        name = data.decode("ascii")
    except UnicodeDecodeError:
        name = ""
    if not name or not name.isprintable():
        raise OpenError(text, f"{protocol} request has no host name (or one that is not ASCII)")
    return name


async def _connect(address: Address, request: Request, ctx: OpenContext, text: str) -> Stream:
    """The TCP connection to the destination, after the policy's name check."""
    target = Address("TCP", (request.host, str(request.port)), address.options)
    try:
        return await tcp.connect(target, ctx)  # checks the name, then each address
    except DestinationRefused as exc:
        raise DestinationRefused(text, exc.reason) from None
    except OpenError as exc:
        # The TCP address's wording, under this address's name.
        failure = OpenError(text, exc.reason)
        failure.__cause__ = exc.__cause__
        raise failure from exc.__cause__


def _failure_answer(protocol: str, exc: OpenError) -> bytes:
    refused = isinstance(exc, DestinationRefused)
    if protocol.startswith("SOCKS4"):
        return _socks4_reply(SOCKS4_REJECTED)
    cause = exc.__cause__
    if protocol == "SOCKS5":
        code = SOCKS5_NOT_ALLOWED if refused else SOCKS5_FAILURE
        if isinstance(cause, socket.gaierror):
            code = SOCKS5_HOST_UNREACHABLE
        elif isinstance(cause, OSError) and cause.errno in _SOCKS5_BY_ERRNO:
            code = _SOCKS5_BY_ERRNO[cause.errno]
        return _socks5_reply(code)
    if refused:
        return _http_answer(403, "Forbidden", exc.reason)
    timed_out = isinstance(cause, TimeoutError) or (
        isinstance(cause, OSError) and cause.errno == errno.ETIMEDOUT
    )
    if timed_out:
        return _http_answer(504, "Gateway Timeout", exc.reason)
    return _http_answer(502, "Bad Gateway", exc.reason)


def _success_answer(protocol: str, stream: Stream) -> bytes:
    if protocol.startswith("SOCKS4"):
        return struct.pack("!BBH4s", 0, SOCKS4_GRANTED, 0, bytes(4))
    if protocol == "SOCKS5":
        bound: tuple[str, int] = ("0.0.0.0", 0)
        if isinstance(stream, SocketStream):
            name = stream.sock.getsockname()
            bound = (str(name[0]).partition("%")[0], int(name[1]))
        return _socks5_reply(0, bound)
    if protocol == "HTTP CONNECT":
        return b"HTTP/1.1 200 Connection established\r\n\r\n"
    return b""  # a forwarded request: the origin server answers


async def _answer(peer: Stream, answer: bytes) -> None:
    """Send a refusal or failure; a client that already left is no further error."""
    try:
        await peer.write(memoryview(answer))
    except OSError as exc:
        logger.info("proxy: could not send the answer: %s", exc.strerror or exc)


def _escaped(line: str) -> str:
    """Hostile bytes shown as escapes, never raw in a log line."""
    return line.encode("unicode_escape").decode("ascii")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

