"""``ACCEPT-FD:<fdnum>``: accept connections on a listening socket the relay inherited.

socat's man page: "Expects a listening socket in <fdnum> and accepts one or
(with option fork) more connections. This address type is useful under
systemd control with "inetd mode"." The socket may be TCP (IPv4 or IPv6,
with ``range``, ``sourceport`` and ``lowport`` checks as for ``TCP-LISTEN``)
or UNIX; its file, if any, is not ours to remove. The descriptor is marked
close-on-exec, so that EXEC and SYSTEM children do not hold it.
"""

from __future__ import annotations

import os
import socket

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger
from ..numbers import strtol
from .base import Listener, OpenContext
from .tcp import TcpListener, address_text, strerror
from .unix import UnixListener


def _descriptor(text: str, written: str) -> int:
    """The descriptor number, read like C ``strtoul(..., 0)``, whole or not at all."""
    number, rest = strtol(written)
    if number is None or rest:
        raise OpenError(text, f'error in FD number "{written}"')
    return number


#: Peer checks that only IP sockets can make.
_IP_PEER_CHECKS = ("range", "sourceport", "lowport")


async def accept_fd(address: Address, ctx: OpenContext) -> Listener:
    """Take over the listening socket in descriptor ``<fdnum>``."""
    text = address_text(address)
    (written,) = address.params
    fd = _descriptor(text, written)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise OpenError(text, f"getsockname(fd={fd}, ...): {strerror(exc)}") from exc
    try:
        os.set_inheritable(fd, False)
        logger.log(
            NOTICE, "using file descriptor %d accepting a connection for reading and writing", fd
        )
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return TcpListener(sock, text, address.options)
        if sock.family == socket.AF_UNIX:
            for name in _IP_PEER_CHECKS:
                if name in address.options:
                    raise OpenError(
                        text, f'option "{name}" checks IP peers; descriptor {fd} is a UNIX socket'
                    )
            path = sock.getsockname()
            # No identity: the socket file belongs to whoever made the socket.
            return UnixListener(sock, text, address.options, str(path or ""), None)
        raise OpenError(text, f"ACCEPT-FD: descriptor {fd} is a socket of family {sock.family}")
    except BaseException:
        sock.detach()  # not ours to close when we refuse it
        raise
