"""Generic sockets: ``SOCKET-CONNECT``, ``SOCKET-LISTEN``, ``SOCKET-SENDTO``, ``SOCKET-RECV``,
``SOCKET-RECVFROM`` and ``SOCKET-DATAGRAM``.

socat's man page: the socket parameters (domain, type, protocol) "have to be
specified by int numbers"; the address "must be the data representation of a
sockaddr structure without sa_family and (BSD) sa_len components", written in
socat's "dalan" notation (``bind=`` too):

- ``x`` "Following is an even number of hex digits, stored as sequence of
  bytes" (``x7f000001``);
- ``"`` "a string that is used with the common conversions \\n \\r \\t \\f \\b
  \\a \\e \\0; the string must be closed with '"'. [...] No implicit \\0 is
  appended";
- ``'`` a single character with the same conversions;
- ``i``/``I``, ``l``/``L``, ``s``/``S``, ``b``/``B``: a (signed/unsigned)
  int, long, short or byte in host byte order.

The engine's sockets are Python's, which take addresses of known families
only: IPv4 (2), IPv6 (10) and UNIX (1, a path; a leading NUL is Linux's
abstract namespace). Other families are refused with a message that says so.
``range`` is not offered on these addresses (socat reads it as dalan data).
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger
from ..numbers import strtol
from ..options import Options
from .base import Listener, OpenContext, Stream
from .datagrams import DatagramRecvfromListener, DatagramStream, SockAddr
from .sockets import SocketStream, format_sockaddr
from .tcp import (
    SocketListener,
    address_text,
    apply_socket_options,
    bind_socket,
    listen_socket,
    new_socket,
    set_int_option,
    strerror,
)

_C_ESCAPES = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "f": "\f",
    "b": "\b",
    "a": "\a",
    "e": "\033",
    "0": "\0",
}
#: dalan number types: letter -> struct format (native size, host byte order).
_NUMBERS = {"i": "i", "I": "I", "l": "l", "L": "L", "s": "h", "S": "H", "b": "b", "B": "B"}
_DECIMAL = re.compile(r"[+-]?[0-9]+")
#: Socket options the generic addresses set before bind.
_EARLY_OPTIONS = ("reuseaddr", "reuseport", "rcvbuf", "sndbuf", "keepalive", "broadcast")


def parse_data(text: str, where: str) -> bytes:
    """Bytes from socat's dalan notation; raises ``OpenError`` naming what is wrong."""
    out = bytearray()
    index = 0
    while index < len(text):
        kind = text[index]
        index += 1
        if kind in " \t\r\n":
            continue
        if kind == "x":
            digits = re.match(r"[0-9a-fA-F]*", text[index:])
            assert digits is not None
            if len(digits.group()) % 2:
                raise OpenError(where, f'dalan "{text}": odd number of hexadecimal digits')
            out += bytes.fromhex(digits.group())
            index += len(digits.group())
        elif kind in ('"', "'"):
            closing = text.find(kind, index)
            while (
                closing > 0 and text[closing - 1] == "\\" and text[closing - 2 : closing] != "\\\\"
            ):
                closing = text.find(kind, closing + 1)
            if closing < 0:
                raise OpenError(where, f'dalan "{text}": unterminated string')
            chars = re.sub(
                r"\\(.)", lambda m: _C_ESCAPES.get(m.group(1), m.group(1)), text[index:closing]
            )
            if kind == "'" and len(chars) != 1:
                raise OpenError(where, f'dalan "{text}": a character item holds one character')
            out += chars.encode("latin-1")
            index = closing + 1
        elif kind in _NUMBERS:
            number = _DECIMAL.match(text, index)
            if number is None:
                raise OpenError(where, f'dalan "{text}": a number must follow "{kind}"')
            try:
                out += struct.pack(_NUMBERS[kind], int(number.group()))
            except struct.error:
                raise OpenError(
                    where, f'dalan "{text}": {number.group()} does not fit "{kind}"'
                ) from None
            index = number.end()
        else:
            raise OpenError(
                where,
                f'dalan "{text}": unknown type "{kind}", accepted: x (hex bytes), " (string), '
                "' (character), i I l L s S b B (numbers)",
            )
    return bytes(out)


def to_sockaddr(family: int, data: bytes, where: str) -> SockAddr:
    """A socket address in Python's form from the sockaddr bytes after ``sa_family``."""
    if family == socket.AF_INET and len(data) >= 6:
        port, host = struct.unpack_from("!H4s", data)
        return socket.inet_ntop(socket.AF_INET, host), port
    if family == socket.AF_INET6 and len(data) >= 22:
        port, flowinfo, host = struct.unpack_from("!HI16s", data)
        scope = struct.unpack_from("I", data, 22)[0] if len(data) >= 26 else 0
        return socket.inet_ntop(socket.AF_INET6, host), port, flowinfo, scope
    if family == socket.AF_UNIX:
        # A path ends at its first NUL; a leading NUL is an abstract name (all of it counts).
        return data if data.startswith(b"\0") else data.split(b"\0", 1)[0].decode()
    raise OpenError(
        where,
        f"socket address of family {family} with {len(data)} bytes: not usable here "
        f"(accepted: family {socket.AF_UNIX} with a path, {socket.AF_INET} with at least "
        f"6 bytes, {socket.AF_INET6} with at least 22)",
    )


def _int_param(value: str, name: str, where: str) -> int:
    number, rest = strtol(value, signed=True)
    if number is None or rest:
        raise OpenError(where, f'{name} "{value}" is not a number')
    return number


def _socket(address: Address, kind: int | None) -> tuple[socket.socket, SockAddr]:
    """The address's socket, bound by ``bind=``, and the parsed socket address parameter."""
    where = address_text(address)
    params = list(address.params)
    domain = _int_param(params.pop(0), "domain", where)
    if kind is None:
        kind = _int_param(params.pop(0), "type", where)
    protocol = _int_param(params.pop(0), "protocol", where)
    target = to_sockaddr(domain, parse_data(params.pop(0), where), where)
    sock = new_socket(domain, kind, protocol, where)
    try:
        sock.setblocking(False)
        apply_socket_options(sock, address.options, _EARLY_OPTIONS, where)
        bind = address.options.text("bind")
        if bind is not None:
            bind_socket(sock, to_sockaddr(domain, parse_data(bind, where), where), where)
    except BaseException:
        sock.close()
        raise
    return sock, target


def _without_bind(address: Address) -> Address:
    """The address minus ``bind``: where the local address is the parameter, it is the bind."""
    kept = Options({name: value for name, value in address.options.items() if name != "bind"})
    return Address(address.keyword, address.params, kept)


async def connect(address: Address, ctx: OpenContext) -> Stream:
    """Open ``SOCKET-CONNECT:<domain>:<protocol>:<remote-address>`` (a stream socket)."""
    where = address_text(address)
    sock, target = _socket(address, socket.SOCK_STREAM)
    shown = format_sockaddr(sock.family, target)
    logger.log(NOTICE, "opening connection to %s", shown)
    try:
        async with asyncio.timeout(address.options.seconds("connect-timeout")):
            await asyncio.get_running_loop().sock_connect(sock, target)
    except TimeoutError:
        sock.close()
        raise OpenError(where, f"connecting to {shown}: Connection timed out") from None
    except OSError as exc:
        sock.close()
        raise OpenError(where, f"connect({sock.fileno()}, {shown}): {strerror(exc)}") from exc
    local = format_sockaddr(sock.family, sock.getsockname())
    logger.log(NOTICE, "successfully connected from local address %s", local)
    return SocketStream(sock)


async def listen(address: Address, ctx: OpenContext) -> Listener:
    """Open ``SOCKET-LISTEN:<domain>:<protocol>:<local-address>``: bind and listen now."""
    where = address_text(address)
    options = address.options
    sock, local = _socket(_without_bind(address), socket.SOCK_STREAM)
    try:
        bind_socket(sock, local, where)
        listen_socket(sock, options, where)
    except BaseException:
        sock.close()
        raise
    return SocketListener(sock, where, options)


async def sendto(address: Address, ctx: OpenContext) -> Stream:
    """Open ``SOCKET-SENDTO:<domain>:<type>:<protocol>:<remote-address>``: that peer only."""
    sock, target = _socket(address, None)
    label = format_sockaddr(sock.family, target)
    return DatagramStream(sock, label=label, peer=target, accepts=lambda sender: sender == target)


async def datagram(address: Address, ctx: OpenContext) -> Stream:
    """Open ``SOCKET-DATAGRAM:<domain>:<type>:<protocol>:<address>``: send there, hear anybody."""
    sock, target = _socket(address, None)
    if address.options.flag("broadcast"):
        set_int_option(sock, socket.SOL_SOCKET, socket.SO_BROADCAST, 1, address_text(address))
    return DatagramStream(sock, label=format_sockaddr(sock.family, target), peer=target)


def _bound_receiver(address: Address) -> socket.socket:
    where = address_text(address)
    sock, local = _socket(_without_bind(address), None)
    try:
        bind_socket(sock, local, where)
    except BaseException:
        sock.close()
        raise
    logger.log(NOTICE, "receiving on %s", format_sockaddr(sock.family, local))
    return sock


async def recv(address: Address, ctx: OpenContext) -> Stream:
    """Open ``SOCKET-RECV:<domain>:<type>:<protocol>:<local-address>``: read from anybody."""
    sock = _bound_receiver(address)
    return DatagramStream(sock, label=format_sockaddr(sock.family, sock.getsockname()))


async def recvfrom(address: Address, ctx: OpenContext) -> Listener:
    """Bind ``SOCKET-RECVFROM:...``; ``accept()`` yields one session per datagram."""
    sock = _bound_receiver(address)
    return DatagramRecvfromListener(address, sock, None)
