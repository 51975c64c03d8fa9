"""SOCKS clients: ``SOCKS4``, ``SOCKS4A``, ``SOCKS5-CONNECT`` and ``SOCKS5-LISTEN``.

socat's man page:

- ``SOCKS4:<socks-server>:<host>:<port>`` "Connects via <socks-server> to
  <host> [IPv4 address] on <port> [TCP service], using socks version 4
  protocol": the target is resolved here, to IPv4.
- ``SOCKS4A:<socks-server>:<host>:<port>`` "like SOCKS4, but uses socks
  protocol version 4a, thus leaving host name resolution to the socks server."
- ``SOCKS5-LISTEN:<socks-server>[:<socks-port>]:<listen-host>:<listen-port>``
  asks the server to listen (the BIND command) and carries the one
  connection it accepts; the server may pick another port than the one asked
  for, so the address it listens on is logged (a line socat lacks).
- ``SOCKS5-CONNECT:<socks-server>[:<socks-port>]:<target-host>:<target-port>``
  "using socks version 5 protocol over TCP. Currently no authentication
  mechanism is provided." (socat 1.8 offers the "no authentication" method
  only; so do we.) An IP address as target is sent as one, anything else as a
  name for the server to resolve.
- ``socksport=<tcp service>`` "Overrides the default "socks" service or port
  1080"; for SOCKS5 it also overrides a ``<socks-port>`` parameter.
  ``socksuser=<user>`` "Sends the <user> in the username field to the socks
  server. Default is the actual user name ($LOGNAME or $USER)" (socat falls
  back to "anonymous").

The log lines are socat 1.8's, its spelling included ("vis socks5 server").
One deliberate difference: socat 1.8.0 reports a request the server refuses
as a warning only and exits with status 255; we log it as the error it is and
exit 1, as socat 1.7 did.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct

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
from .sockets import SocketStream, format_sockaddr
from .tcp import strerror

#: socat's fallback when the "socks" service is unknown (xio-socks.c SOCKSPORT).
DEFAULT_SOCKS_PORT = "1080"

SOCKS4_VERSION = 4
SOCKS4_CONNECT = 1
#: SOCKS4 reply codes (CD) and socat's message for each refusal.
SOCKS4_GRANTED = 90
SOCKS4_REFUSALS = {
    91: "socks: connect request rejected or failed",
    92: "socks: ident refused by client",
    93: "socks: ident failed",
}
#: The length of a SOCKS4 reply (VN, CD, DSTPORT, DSTIP).
SOCKS4_REPLY_SIZE = 8

SOCKS5_VERSION = 5
SOCKS5_NO_AUTHENTICATION = 0
SOCKS5_NO_ACCEPTABLE_METHOD = 0xFF
SOCKS5_CONNECT, SOCKS5_BIND = 1, 2
SOCKS5_IPV4, SOCKS5_DOMAIN, SOCKS5_IPV6 = 1, 3, 4
#: RFC 1928's reply codes, in socat's words.
SOCKS5_REPLIES = {
    0: "succeeded",
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}
#: The bytes of a SOCKS5 reply after its first five, by address type.
_SOCKS5_REPLY_REST = {SOCKS5_IPV4: 10 - 5, SOCKS5_IPV6: 22 - 5}


def socks_port(address: Address, written: str | None = None) -> str:
    """``socksport=``, else the ``<socks-port>`` parameter, else the "socks" service, else 1080."""
    option = address.options.text("socksport")
    if option is not None:
        return option
    if written is not None:
        return written
    try:
        return str(socket.getservbyname("socks", "tcp"))
    except OSError:
        logger.debug('cannot resolve service "socks/tcp", using %s', DEFAULT_SOCKS_PORT)
        return DEFAULT_SOCKS_PORT


def socks_user(address: Address) -> str:
    """``socksuser=``, else ``$LOGNAME``, else ``$USER``, else "anonymous" (as socat)."""
    user = address.options.text("socksuser")
    if user is not None:
        return user
    return os.environ.get("LOGNAME") or os.environ.get("USER") or "anonymous"


async def connect4(address: Address, ctx: OpenContext) -> Stream:
    """Open ``SOCKS4`` or ``SOCKS4A``: connect to the server, send the request, check the reply."""
    text = tcp.address_text(address)
    server, host, port = address.params
    socks4a = address.keyword == "SOCKS4A"
    server_port = socks_port(address)
    user = socks_user(address)
    target_port = parse_port(port, text)
    logger.log(
        NOTICE,
        'opening connection to %s:%d via socks4 server %s:%s as user "%s"',
        host,
        target_port,
        server,
        server_port,
        user,
    )
    if socks4a:
        # 0.0.0.x with x != 0 tells the server that a name follows the user.
        destination = bytes((0, 0, 0, 1))
    else:
        # socat resolves the target before it connects to the server, "this
        # may avoid unnecessary connects and timeouts".
        resolved = await tcp.resolve(host, None, socket.AF_INET, 0, text)
        destination = socket.inet_aton(str(resolved[0][1][0]))
    request = struct.pack("!BBH4s", SOCKS4_VERSION, SOCKS4_CONNECT, target_port, destination)
    request += os.fsencode(user) + b"\0"
    if socks4a:
        request += host.encode() + b"\0"
    logger.log(NOTICE, "opening connection to sockd %s:%s", server, server_port)
    stream = await _connect_server(
        address, server, server_port, ctx, f"{address.keyword}:{server}:...,socksport={server_port}"
    )
    try:
        if logger.isEnabledFor(logging.INFO):
            name = f" DESTNAME={host}" if socks4a else ""
            logger.info(
                "sending socks4%s request VN=%d DC=%d DSTPORT=%d DSTIP=%s USERID=%s%s",
                "a" if socks4a else "",
                SOCKS4_VERSION,
                SOCKS4_CONNECT,
                target_port,
                socket.inet_ntoa(destination),
                user,
                name,
            )
        await _send(stream, request, address)
        logger.info("waiting for socks reply")
        reply = await _receive(
            stream,
            SOCKS4_REPLY_SIZE,
            address,
            "read(): EOF during read of socks reply, peer might not be a socks4 server",
        )
        version, code, reply_port, reply_ip = struct.unpack("!BBH4s", reply)
        logger.info(
            "received socks reply VN=%d CD=%d DSTPORT=%d DSTIP=%s",
            version,
            code,
            reply_port,
            socket.inet_ntoa(reply_ip),
        )
        if version != 0:
            logger.warning("socks: reply code version is not 0 (%d)", version)
        if code in SOCKS4_REFUSALS:
            raise DialogueError(text, SOCKS4_REFUSALS[code])
        if code == SOCKS4_GRANTED:
            logger.log(NOTICE, "successfully connected via socks4")
        else:
            # socat goes on with the connection after an unknown code.
            logger.log(dialogue_level(address), "socks: undefined status %d", code)
    except BaseException:
        await stream.aclose()
        raise
    logger.log(
        NOTICE,
        "successfully connected to %s:%s via sockd %s:%s",
        host,
        port,
        server,
        server_port,
    )
    return stream


async def connect5(address: Address, ctx: OpenContext) -> Stream:
    """Open ``SOCKS5-CONNECT`` or ``SOCKS5-LISTEN``: greet, request CONNECT or BIND, check.

    ``SOCKS5-LISTEN`` (socat: "Connects to <socks-server> using socks version
    5 protocol over TCP and makes it listen for incoming connections on
    <listen-port>, binding to <listen-host>") returns once the server
    reports the peer that connected there.
    """
    text = tcp.address_text(address)
    if len(address.params) == 4:
        server, written_port, host, port = address.params
    else:
        (server, host, port), written_port = address.params, None
    server_port = socks_port(address, written_port)
    command = SOCKS5_BIND if address.keyword == "SOCKS5-LISTEN" else SOCKS5_CONNECT
    request = _socks5_request_bytes(command, host, parse_port(port, text), text)
    # "vis": socat 1.8's own spelling of this line.
    logger.log(
        NOTICE,
        "opening connection to %s:%s vis socks5 server %s:%s",
        host,
        port,
        server,
        server_port,
    )
    logger.log(NOTICE, "opening connection to socks5 server %s:%s", server, server_port)
    stream = await _connect_server(
        address, server, server_port, ctx, f"{address.keyword}:{server}:{server_port}:..."
    )
    try:
        await _socks5_greet(stream, address, f"{address.keyword}:{server}:{server_port}")
        await _socks5_request(stream, request, address)
    except BaseException:
        await stream.aclose()
        raise
    logger.log(
        NOTICE,
        "successfully connected to %s:%s via socks5 server %s:%s",
        host,
        port,
        server,
        server_port,
    )
    return stream


def _socks5_request_bytes(command: int, host: str, port: int, text: str) -> bytes:
    """The CONNECT or BIND request: an IPv4 or IPv6 address as such, anything else as a name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode()
        if len(name) > 255:
            raise OpenError(text, "target hostname too long (>255 bytes), aborting") from None
        target = bytes((SOCKS5_DOMAIN, len(name))) + name
    else:
        kind = SOCKS5_IPV4 if ip.version == 4 else SOCKS5_IPV6
        target = bytes((kind,)) + ip.packed
    if port == 0 and command == SOCKS5_CONNECT:
        raise OpenError(text, "target port 0 is not a port a SOCKS5 server connects to")
    return bytes((SOCKS5_VERSION, command, 0)) + target + struct.pack("!H", port)


async def _socks5_greet(stream: SocketStream, address: Address, where: str) -> None:
    """Offer "no authentication" and check that the server takes it."""
    logger.info("sending socks5 client hello version=%d nmethods=%d", SOCKS5_VERSION, 1)
    await _send(stream, bytes((SOCKS5_VERSION, 1, SOCKS5_NO_AUTHENTICATION)), address)
    logger.info("waiting for socks5 reply")
    hello = await _receive(
        stream,
        2,
        address,
        "read(): EOF during read of SOCKS5 server hello, peer might not be a SOCKS5 server",
        failed=f"{where}: Connection failed",
    )
    version, method = hello
    logger.info("received SOCKS5 server hello version=%d method=%d", version, method)
    reason = None
    if version != SOCKS5_VERSION:
        reason = (
            f"SOCKS5 Server Hello version was {version}, not the expected {SOCKS5_VERSION}, "
            "peer might not be a SOCKS5 server"
        )
    elif method == SOCKS5_NO_ACCEPTABLE_METHOD:
        reason = (
            "SOCKS5 authentication negotiation failed - "
            "client & server have no common supported methods"
        )
    elif method != SOCKS5_NO_AUTHENTICATION:
        reason = f"SOCKS5 server requested unsupported auth method ({method})"
    if reason is not None:
        # socat: the step's own message, then "E <address>: Connection failed".
        logger.log(dialogue_level(address), "%s", reason)
        raise DialogueError(tcp.address_text(address), f"{where}: Connection failed")


async def _socks5_request(stream: SocketStream, request: bytes, address: Address) -> None:
    """Send the CONNECT or BIND request and read the reply (two for BIND), no byte more."""
    logger.info(
        "sending socks5 request version=%d command=%d reserved=%d address_type=%d",
        request[0],
        request[1],
        request[2],
        request[3],
    )
    await _send(stream, request, address)
    version, code, kind, bound = await _socks5_reply(stream, address)
    logger.info("received SOCKS5 reply version=%d reply=%d address_type=%d", version, code, kind)
    if version != SOCKS5_VERSION:
        raise DialogueError(
            tcp.address_text(address),
            f"SOCKS5 reply version was {version}, not the expected {SOCKS5_VERSION}, "
            "peer might not be a SOCKS5 server",
        )
    if code == 0 and request[1] == SOCKS5_BIND:
        # socat 1.8: "For BIND, we read two replies". Where the server listens
        # is not in socat's log; the peer needs it, so we add a line.
        logger.log(NOTICE, "listening on remote host, waiting for connection")
        logger.log(NOTICE, "the SOCKS5 server listens on %s", bound)
        version, code, kind, bound = await _socks5_reply(stream, address)
        logger.log(NOTICE, "received connection on remote host")
        logger.info(
            "received second SOCKS5 reply version=%d reply=%d address_type=%d", version, code, kind
        )
    if code != 0:
        meaning = SOCKS5_REPLIES.get(code, "unknown error")
        raise DialogueError(tcp.address_text(address), f"SOCKS5 server error {code}: {meaning}")


async def _socks5_reply(stream: SocketStream, address: Address) -> tuple[int, int, int, str]:
    """One reply: version, code, address type and the address it carries, as text."""
    eof = "read(): EOF during read of SOCKS5 reply"
    logger.info("reading SOCKS5 reply")
    head = await _receive(stream, 5, address, eof)
    version, code, _, kind, first = head
    if kind == SOCKS5_DOMAIN:
        rest = first + 2  # the fifth byte was the name's length
    elif kind in _SOCKS5_REPLY_REST:
        rest = _SOCKS5_REPLY_REST[kind]
    else:
        raise DialogueError(
            tcp.address_text(address), f"invalid SOCKS5 reply address type ({kind})"
        )
    logger.info("reading SOCKS5 reply")
    tail = await _receive(stream, rest, address, eof)
    data, port = (head[4:] + tail)[:-2], struct.unpack("!H", tail[-2:])[0]
    if kind == SOCKS5_IPV4:
        bound = format_sockaddr(socket.AF_INET, (socket.inet_ntoa(data), port))
    elif kind == SOCKS5_IPV6:
        bound = format_sockaddr(socket.AF_INET6, (socket.inet_ntop(socket.AF_INET6, data), port))
    else:
        bound = f"{data[1:].decode(errors='replace')}:{port}"
    return version, code, kind, bound


async def _connect_server(
    address: Address, server: str, port: str, ctx: OpenContext, where: str
) -> SocketStream:
    """Connect to the SOCKS server; a failure reads ``W connect(...)`` then ``E <where>: <why>``."""
    try:
        return await connect_to_server(address, server, port, ctx)
    except OpenError as exc:
        cause = exc.__cause__
        if not isinstance(cause, OSError) or cause.errno is None:
            raise
        logger.log(dialogue_level(address), "%s", exc.reason)
        raise OpenError(tcp.address_text(address), f"{where}: {strerror(cause)}") from cause


async def _send(stream: SocketStream, data: bytes, address: Address) -> None:
    try:
        await stream.write(memoryview(data))
    except OSError as exc:
        raise DialogueError(
            tcp.address_text(address), f"write({stream.fileno()}, {len(data)}): {strerror(exc)}"
        ) from exc


async def _receive(
    stream: SocketStream, count: int, address: Address, eof: str, *, failed: str | None = None
) -> bytes:
    """Exactly ``count`` bytes of the answer; ``eof`` is socat's message for an early end.

    ``failed``: socat reports this step's failure as a warning plus this error.
    """
    text = tcp.address_text(address)
    try:
        data = await read_exactly(stream, count)
    except OSError as exc:
        reason = f"read({stream.fileno()}, {count}): {strerror(exc)}"
        if failed is not None:
            logger.log(dialogue_level(address), "%s", reason)
            reason = failed
        raise DialogueError(text, reason) from exc
    if data is None:
        if failed is not None:
            logger.log(dialogue_level(address), "%s", eof)
            raise DialogueError(text, failed)
        raise DialogueError(text, eof)
    return data
