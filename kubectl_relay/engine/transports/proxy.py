"""``PROXY:<proxy-server>:<host>:<port>``: a TCP connection through an HTTP proxy's CONNECT.

socat's man page: "Connects to an HTTP proxy server on port 8080 using TCP/IP
version 4 or 6 depending on address specification, name resolution, or option
pf, and sends a CONNECT request for hostname:port. If the proxy grants access
and succeeds to connect to the target, data transfer between socat and the
target can start." The options of its HTTP group:

- ``proxyport=<TCP service>`` "Overrides the default HTTP proxy port 8080".
- ``proxy-authorization=<username>:<password>`` (``proxyauth``) "Provide
  "basic" authentication to the proxy server"; ``proxy-authorization-file``
  reads the same from a file ("Only one of options proxy-authorization and
  proxy-authorization-file allowed").
- ``resolve`` (``proxy-resolve``): resolve the target here and send the
  IPv4 address in the request (the name when it does not resolve).
- ``http-version=<string>`` "Changes the default "1.0" that is sent to the
  server in the initial HTTP request".
- ``ignorecr``: accept answer lines that end in a bare NL.

The answer is read one byte at a time up to the empty line that ends its
header, so that no byte of the target's data is taken with it. A status other
than 200 ends the attempt with socat's message, ``CONNECT <host>:<port>:
<reason phrase>``; socat 1.8.0 logs it as a warning and exits with 255, we
log it as an error and exit 1 (see ``socks.py``).
"""

from __future__ import annotations

import base64
import ipaddress
import socket

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger
from . import tcp
from .base import OpenContext, Stream
from .handshake import (
    DialogueError,
    connect_to_server,
    dialogue_level,
    parse_port,
    read_exactly,
)
from .sockets import SocketStream

#: socat's default proxy port (xio-proxy.c PROXYPORT).
DEFAULT_PROXY_PORT = "8080"
#: The longest answer header socat reads before it gives up (its BUFLEN).
MAX_ANSWER = 2048


async def connect(address: Address, ctx: OpenContext) -> Stream:
    """Open ``PROXY``: connect to the proxy, send CONNECT, read the answer up to its end."""
    text = tcp.address_text(address)
    server, host, port = address.params
    options = address.options
    proxy_port = options.text("proxyport") or DEFAULT_PROXY_PORT
    credentials = _credentials(address)
    target_port = parse_port(port, text)
    logger.log(
        NOTICE, "opening connection to %s:%s via proxy %s:%s", host, port, server, proxy_port
    )
    target = await _target(host, options.flag("proxy-resolve"), text)
    logger.log(NOTICE, "opening connection to proxy %s:%s", server, proxy_port)
    try:
        stream = await connect_to_server(address, server, proxy_port, ctx)
    except OpenError as exc:
        cause = exc.__cause__
        if not isinstance(cause, OSError) or cause.errno is None:
            raise
        logger.log(dialogue_level(address), "%s", exc.reason)
        raise OpenError(
            text, f"{address.keyword}:{server}:...,proxyport={proxy_port}: {tcp.strerror(cause)}"
        ) from cause
    try:
        request = f"CONNECT {target}:{target_port}"
        version = options.text("http-version") or "1.0"
        await _send(stream, f"{request} HTTP/{version}\r\n", address)
        if credentials is not None:
            encoded = base64.b64encode(credentials).decode("ascii")
            await _send(stream, f"Proxy-authorization: Basic {encoded}\r\n", address)
        await _send(stream, "\r\n", address)
        await _read_answer(stream, request, options.flag("ignorecr"), address)
    except BaseException:
        await stream.aclose()
        raise
    logger.log(
        NOTICE,
        "successfully connected to %s:%d via proxy %s:%s",
        target,
        target_port,
        server,
        proxy_port,
    )
    return stream


def _credentials(address: Address) -> bytes | None:
    """``user:password`` from ``proxy-authorization`` or ``proxy-authorization-file``."""
    text = tcp.address_text(address)
    inline = address.options.text("proxy-authorization")
    path = address.options.text("proxy-authorization-file")
    if path is None:
        return None if inline is None else inline.encode()
    if inline is not None:
        raise OpenError(
            text, "Only one of options proxy-authorization and proxy-authorization-file allowed"
        )
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise OpenError(text, f'open("{path}", O_RDONLY): {tcp.strerror(exc)}') from exc


async def _target(host: str, resolve: bool, text: str) -> str:
    """The host as the CONNECT line names it.

    With ``resolve`` socat sends the IPv4 address (and the name if it does
    not resolve); an IPv6 address goes in brackets, as in a URL.
    """
    if resolve:
        try:
            resolved = await tcp.resolve(host, None, socket.AF_INET, 0, text)
        except OpenError as exc:
            logger.info("%s", exc.reason)
        else:
            return str(resolved[0][1][0])
    try:
        is_ipv6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_ipv6 = False
    return f"[{host}]" if is_ipv6 else host


async def _send(stream: SocketStream, line: str, address: Address) -> None:
    logger.info('sending "%s"', _printable(line.encode()))
    data = line.encode()
    try:
        await stream.write(memoryview(data))
    except OSError as exc:
        raise DialogueError(
            tcp.address_text(address),
            f"write({stream.fileno()}, {len(data)}): {tcp.strerror(exc)}",
        ) from exc


async def _read_answer(
    stream: SocketStream, request: str, ignore_cr: bool, address: Address
) -> None:
    """Read the status line and the header lines; fail unless the status is 200."""
    text = tcp.address_text(address)
    status_line = True
    line = bytearray()
    total = 0
    while True:
        try:
            byte = await read_exactly(stream, 1)
        except OSError as exc:
            raise DialogueError(text, f"read({stream.fileno()}, 1): {tcp.strerror(exc)}") from exc
        if byte is None:
            raise DialogueError(text, "proxy_connect: connection closed by proxy")
        total += 1
        if total > MAX_ANSWER:
            raise DialogueError(text, f"proxy answer exceeds {MAX_ANSWER} bytes, aborting")
        line += byte
        if not line.endswith(b"\n") or (not ignore_cr and not line.endswith(b"\r\n")):
            continue
        content = line.rstrip(b"\r\n") if ignore_cr else line[:-2]
        if status_line:
            logger.info('proxy_connect: received answer "%s"', _printable(bytes(line)))
            _check_status(bytes(content), request, text)
            status_line = False
        elif not content:
            return
        else:
            logger.info('proxy_connect: received header "%s"', _printable(bytes(line)))
        line.clear()


def _check_status(line: bytes, request: str, text: str) -> None:
    """``HTTP/1.x 200 ...`` passes; anything else is socat's error for this answer."""
    shown = _printable(line)
    if not line.startswith((b"HTTP/1.0 ", b"HTTP/1.1 ")):
        raise DialogueError(text, f'proxy: invalid answer "{shown}"')
    status = line[9:].lstrip(b" ")
    if not status.startswith(b"200"):
        reason = _printable(status[3:].lstrip(b" "))
        raise DialogueError(text, f"{request}: {reason}")


def _printable(data: bytes) -> str:
    """Bytes as socat's sanitizer shows them: ``\\r``, ``\\n`` and other controls escaped."""
    out = []
    for byte in data:
        char = chr(byte)
        if char == "\r":
            out.append("\\r")
        elif char == "\n":
            out.append("\\n")
        elif char == "\\":
            out.append("\\\\")
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)
