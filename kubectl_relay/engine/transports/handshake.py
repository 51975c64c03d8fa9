"""What the SOCKS and HTTP CONNECT clients share: reach the proxy, then talk to it.

Both open a TCP connection to a proxy server with the address's socket and IP
options, speak a short request/answer dialogue on it, and then hand the very
same connection to the transfer loop. The answer must be read exactly: a byte
read past its end would belong to the target's data.

socat runs the dialogue at "level" W without retry options and at N with them
(the attempt is then retried, and only the last failure is an error); we do
the same with ``dialogue_level``.
"""

from __future__ import annotations

import logging
import socket

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE
from ..numbers import strtol
from . import tcp
from .base import OpenContext
from .sockets import SocketStream


class DialogueError(OpenError):
    """The SOCKS or HTTP proxy server refused the request or broke the dialogue."""


def dialogue_level(address: Address) -> int:
    """The log level of a failed dialogue step: N when retries follow, else W."""
    options = address.options
    retrying = options.flag("forever") or bool(options.integer("retry", 0))
    return NOTICE if retrying else logging.WARNING


def parse_port(port: str, text: str) -> int:
    """A TCP port as socat's ``parseport`` reads it: a C number or a service name.

    Digits first means a number (``strtoul(..., 0)``: ``0x50`` and ``0120``
    are both 80); anything else is looked up as a TCP service.
    """
    if port[:1].isdigit():
        number, extra = strtol(port)
        assert number is not None  # a leading digit is a number
        if extra:
            raise OpenError(
                text,
                f'parseport("{port}", {socket.IPPROTO_TCP}): extra trailing data "{extra}"',
            )
        if number > 0xFFFF:
            raise OpenError(text, f'port "{port}" is out of range, accepted: 0 to 65535')
        return number
    try:
        return socket.getservbyname(port, "tcp")
    except OSError:
        raise OpenError(text, f'cannot resolve service "{port}/{socket.IPPROTO_TCP}"') from None


async def connect_to_server(
    address: Address, host: str, port: str, ctx: OpenContext
) -> SocketStream:
    """A TCP connection to the proxy ``host:port`` with the address's own options.

    The socket options (``bind``, ``sourceport``, ``connect-timeout``,
    ``nodelay``, ``pf``...) apply to this connection, as in socat, where the
    proxy addresses open their socket with the TCP client code.
    """
    stream = await tcp.connect(Address("TCP", (host, port), address.options), ctx)
    assert isinstance(stream, SocketStream)
    return stream


async def read_exactly(stream: SocketStream, count: int) -> bytes | None:
    """``count`` bytes from the proxy, or None at EOF before they all came."""
    buffer = bytearray(count)
    view = memoryview(buffer)
    received = 0
    while received < count:
        got = await stream.read_into(view[received:])
        if got == 0:
            return None
        received += got
    return bytes(buffer)
