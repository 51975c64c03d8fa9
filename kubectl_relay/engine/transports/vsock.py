"""``VSOCK-CONNECT:<cid>:<port>`` and ``VSOCK-LISTEN:<port>``: virtio sockets between VM and host.

socat's man page: "Establishes a VSOCK stream connection to the specified
<cid> and <port>" and "Listens on <port> and accepts a VSOCK connection"
(with ``bind=<cid>`` to listen on one context only). Numbers are read like C
``strtoul(..., 0)``. Both log the local context id (``VSOCK CID=<n>``, from
``/dev/vsock``) as socat does, and socket addresses as ``AF=40 cid:<n>
port:<n>``.

Sessions between processes of one machine need the kernel's
``vsock_loopback`` transport (context id 1); enclaves, KubeVirt and Firecracker
guests use the virtio or vhost transports.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger, peer_notices
from ..numbers import strtol
from .base import Listener, OpenContext, Stream, wait_writable
from .sockets import SocketStream, format_sockaddr
from .tcp import (
    SocketListener,
    address_text,
    apply_socket_options,
    bind_socket,
    listen_socket,
    new_socket,
    strerror,
)

#: Linux's ``IOCTL_VM_SOCKETS_GET_LOCAL_CID`` (``_IO(7, 0xb9)``).
IOCTL_VM_SOCKETS_GET_LOCAL_CID = 0x7B9
_LISTEN_OPTIONS = ("reuseaddr", "rcvbuf", "sndbuf", "keepalive")


def parse_number(text: str, what: str, where: str) -> int:
    """A cid or port, as socat's ``sockaddr_vm_parse`` reads it (``strtoul(..., 0)``)."""
    number, rest = strtol(text)
    if number is None or rest:
        raise OpenError(where, f'sockaddr_vm - garbage in {what}: "{rest}"')
    if number > 0xFFFFFFFF:
        raise OpenError(where, f'{what} "{text}" is out of range, accepted: 0 to 4294967295')
    return number


def log_local_cid() -> None:
    """``VSOCK CID=<n>``, or socat's warning when ``/dev/vsock`` cannot tell."""
    try:
        with open("/dev/vsock", "rb") as device:
            raw = fcntl.ioctl(device.fileno(), IOCTL_VM_SOCKETS_GET_LOCAL_CID, b"\0" * 4)
    except OSError as exc:
        logger.warning('open("/dev/vsock", ...): %s', strerror(exc))
        return
    logger.log(NOTICE, "VSOCK CID=%u", struct.unpack("I", raw)[0])


def _new_socket(address: Address) -> socket.socket:
    where = address_text(address)
    family = getattr(socket, "AF_VSOCK", 40)
    sock = new_socket(family, socket.SOCK_STREAM, 0, where)
    try:
        sock.setblocking(False)
        apply_socket_options(sock, address.options, _LISTEN_OPTIONS, where)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(address: Address, ctx: OpenContext) -> Stream:
    """Open ``VSOCK-CONNECT:<cid>:<port>``."""
    where = address_text(address)
    cid_text, port_text = address.params
    target = (parse_number(cid_text, "cid", where), parse_number(port_text, "port", where))
    log_local_cid()
    sock = _new_socket(address)
    shown = format_sockaddr(sock.family, target)
    try:
        bind = address.options.text("bind")
        if bind is not None:
            local_cid, _, local_port = bind.partition(":")
            local = (
                parse_number(local_cid, "cid", where),
                parse_number(local_port, "port", where) if local_port else 0xFFFFFFFF,
            )
            bind_socket(sock, local, where)
        logger.log(NOTICE, "opening connection to %s", shown)
        async with asyncio.timeout(address.options.seconds("connect-timeout")):
            await _connect(sock, target)
    except TimeoutError:
        sock.close()
        raise OpenError(where, f"connecting to {shown}: Connection timed out") from None
    except OSError as exc:
        sock.close()
        raise OpenError(where, f"connect({sock.fileno()}, {shown}, 16): {strerror(exc)}") from exc
    except BaseException:
        sock.close()
        raise
    local_text = format_sockaddr(sock.family, sock.getsockname())
    logger.log(NOTICE, "successfully connected from local address %s", local_text)
    return SocketStream(sock)


async def _connect(sock: socket.socket, target: tuple[int, int]) -> None:
    """A non-blocking connect by hand: uvloop's ``sock_connect`` resolves tuples as IP hosts."""
    code = sock.connect_ex(target)
    if code in (errno.EINPROGRESS, errno.EAGAIN):
        await wait_writable(sock.fileno())
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


class VsockListener(SocketListener):
    """``VSOCK-LISTEN``: logs each peer as socat does."""

    def _admit(self, conn: socket.socket) -> Stream | None:
        try:
            peer = format_sockaddr(conn.family, conn.getpeername())
        except OSError:
            peer = "?"
        if peer_notices():
            logger.log(NOTICE, "accepting connection from %s on %s", peer, self.label)
        return SocketStream(conn)


async def listen(address: Address, ctx: OpenContext) -> Listener:
    """Open ``VSOCK-LISTEN:<port>``: bind (any context, or ``bind=<cid>``) and listen now."""
    where = address_text(address)
    (port_text,) = address.params
    cid = 0xFFFFFFFF  # VMADDR_CID_ANY
    bind = address.options.text("bind")
    if bind is not None:
        cid = parse_number(bind.partition(":")[0], "cid", where)
    local = (cid, parse_number(port_text, "port", where))
    log_local_cid()
    sock = _new_socket(address)
    try:
        bind_socket(sock, local, where)
        listen_socket(sock, address.options, where)
        return VsockListener(sock, where, address.options)
    except BaseException:
        sock.close()
        raise
