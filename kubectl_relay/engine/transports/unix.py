"""UNIX domain stream sockets: ``UNIX-CONNECT``, ``-CLIENT``, ``-LISTEN``, and ``ABSTRACT-*``.

socat's rules (socat.1, xio-unix.c) that we follow:

- ``UNIX-LISTEN`` refuses to start when the path exists (``"/tmp/sock" exists``)
  unless ``unlink-early`` removes it first, and removes the socket file when
  it closes ("the named socket is removed when the address is closed", option
  ``unlink-close``, on by default). We only remove the file if it is still the
  one we created, so a second relay that took over the path keeps its socket.
- ``mode``/``perm`` change the socket file's permissions after ``bind``;
  ``umask`` applies only while the address is opened (socat 1.8: "the
  original umask is restored afterwards").
- ``UNIX-CLIENT`` tries a stream connection, then ``SOCK_SEQPACKET``, then a
  datagram socket, as socat does for a socket of unknown type.
- Unnamed peers are shown and exported as ``<anon>``.
- ``ABSTRACT-CONNECT``, ``-CLIENT`` and ``-LISTEN`` (and ``ABSTRACT-SENDTO``,
  ``-RECV``, ``-RECVFROM`` in ``datagrams``): socat.1 "do not address file
  system based sockets but an alternate unixdomain address space. To achieve
  this the socket address strings are prefixed with "\\0" internally." So
  nothing is created, checked, chmod'ed or removed on disk, and ``bind=`` on
  such an address names an abstract socket too (as socat's xio-unix.c).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger, peer_notices
from ..options import Options
from .base import Listener, OpenContext, Stream
from .sockets import SocketStream, format_sockaddr, unix_path_text
from .tcp import (
    SocketListener,
    address_text,
    bind_socket,
    expect_params,
    listen_socket,
    new_socket,
    sockaddr_length,
    strerror,
)

#: How socat names a socket without a path (an unbound client).
ANONYMOUS = "<anon>"


def is_abstract(address: Address) -> bool:
    """Whether ``address`` names a socket in Linux's abstract namespace (``ABSTRACT-*``)."""
    return address.keyword.startswith("ABSTRACT-")


def socket_name(address: Address, name: str) -> str:
    """The socket path of ``name`` for ``address``: an abstract one starts with a NUL byte."""
    return "\0" + name if is_abstract(address) else name


def unlink_early(path: str, options: Options, text: str) -> None:
    """``unlink-early``: remove ``path`` before it is created or bound (gone already is fine)."""
    if not options.flag("unlink-early"):
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OpenError(text, f'unlink("{path}"): {strerror(exc)}') from exc


def mode_option(options: Options, text: str, *names: str) -> int | None:
    """The first of ``names`` present, as permission bits.

    socat reads ``perm``/``mode``/``umask`` in octal; an integer value is
    taken as already converted, a string is read as octal.
    """
    for name in names:
        value = options.get(name)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        try:
            return int(str(value), 8)
        except ValueError:
            raise OpenError(text, f'{name}="{value}": not an octal mode') from None
    return None



class UnixSocketStream(SocketStream):
    """A connected UNIX socket that may own a bound path to remove on close."""

    def __init__(
        self, sock: socket.socket, *, env: dict[str, str] | None = None, unlink: str | None = None
    ) -> None:
        super().__init__(sock, env=env)
        self._unlink = unlink

    async def aclose(self) -> None:
        await super().aclose()
        if self._unlink is not None:
            path, self._unlink = self._unlink, None
            remove_path(path)


def remove_path(path: str, identity: tuple[int, int] | None = None) -> None:
    """``unlink`` a socket file we created; socat warns when that fails.

    With ``identity`` (device, inode) the file is only removed while it is
    still the one we bound.
    """
    try:
        if identity is not None:
            info = os.lstat(path)
            if (info.st_dev, info.st_ino) != identity:
                return
        os.unlink(path)
    except FileNotFoundError:
        # socat 1.8: "removing a non existing file does ... no longer log a warning".
        pass
    except OSError as exc:
        logger.warning('unlink("%s"): %s', path, strerror(exc))


async def connect(address: Address, ctx: OpenContext) -> Stream:
    """Open ``UNIX-CONNECT:<path>`` or ``UNIX-CLIENT:<path>`` (or their ``ABSTRACT-`` forms)."""
    text = address_text(address)
    (name,) = expect_params(address, 1, non_empty=True)
    path = socket_name(address, name)
    options = address.options
    shown = format_sockaddr(socket.AF_UNIX, path)
    logger.log(NOTICE, "opening connection to %s", shown)
    client = address.keyword in ("UNIX-CLIENT", "ABSTRACT-CLIENT")
    kinds = (socket.SOCK_STREAM, socket.SOCK_SEQPACKET, socket.SOCK_DGRAM)
    for kind in kinds if client else kinds[:1]:
        sock = new_socket(socket.AF_UNIX, kind, 0, text)
        bound: str | None = None
        try:
            bound = _bind_client(sock, address, text)
            await _connect_path(sock, path, options.seconds("connect-timeout"), text)
        except OSError as exc:
            sock.close()
            if bound is not None:
                remove_path(bound)
            if client and exc.errno == errno.EPROTOTYPE and kind != socket.SOCK_DGRAM:
                continue  # the server socket has another type: try the next one
            if client:
                raise OpenError(text, f"{address.keyword}: {name}: {strerror(exc)}") from exc
            # socat's own wording for this call leaves the descriptor out
            # (xio-unix.c: Msg3(level, "connect(, %s, %d): %s", ...)).
            length = sockaddr_length(socket.AF_UNIX, path)
            raise OpenError(text, f"connect(, {shown}, {length}): {strerror(exc)}") from exc
        except BaseException:
            sock.close()
            if bound is not None:
                remove_path(bound)
            raise
        local = sock.getsockname() or ANONYMOUS
        logger.log(
            NOTICE,
            "successfully connected from local address %s",
            format_sockaddr(socket.AF_UNIX, local),
        )
        unlink = bound if options.flag("unlink-close", True) else None
        stream = UnixSocketStream(sock, unlink=unlink)
        stream.datagram = kind == socket.SOCK_DGRAM
        return stream
    raise AssertionError("unreachable: the datagram attempt returns or raises")


def _bind_client(sock: socket.socket, address: Address, text: str) -> str | None:
    """``bind=<path>`` on a client socket; returns the file created, if any."""
    name = address.options.text("bind")
    if name is None:
        return None
    bind_socket(sock, socket_name(address, name), text)
    return None if is_abstract(address) else name


async def _connect_path(sock: socket.socket, path: str, timeout: float | None, text: str) -> None:
    """Connect without blocking the loop.

    A non-blocking UNIX connect fails with ``EAGAIN`` while the server's
    accept queue is full, and waiting for writability does not tell when to
    try again (asyncio's ``sock_connect`` would wrongly report success), so
    we retry with a growing pause, as a blocking connect would wait.
    """
    sock.setblocking(False)
    pause = 0.001
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    sock.connect(path)
                    return
                except (BlockingIOError, InterruptedError):
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.05)
    except TimeoutError:
        shown = format_sockaddr(socket.AF_UNIX, path)
        raise OpenError(text, f"connecting to {shown}: Connection timed out") from None


class UnixListener(SocketListener):
    """``UNIX-LISTEN``: accepts on a socket file and removes it on close."""

    def __init__(
        self,
        sock: socket.socket,
        text: str,
        options: Options,
        path: str,
        identity: tuple[int, int] | None,
    ) -> None:
        super().__init__(sock, text, options)
        self.path = path
        self.label = format_sockaddr(socket.AF_UNIX, path)
        self._identity = identity

    def _admit(self, conn: socket.socket) -> Stream | None:
        try:
            peer = conn.getpeername() or ANONYMOUS
        except OSError:
            peer = ANONYMOUS
        if peer_notices():
            logger.log(
                NOTICE,
                "accepting connection from %s on %s",
                format_sockaddr(socket.AF_UNIX, peer),
                self.label,
            )
        env = {"SOCAT_PEERADDR": unix_path_text(peer), "SOCAT_SOCKADDR": unix_path_text(self.path)}
        return SocketStream(conn, env=env)

    async def aclose(self) -> None:
        await super().aclose()
        if self._identity is not None:
            identity, self._identity = self._identity, None
            remove_path(self.path, identity)


async def listen(address: Address, ctx: OpenContext) -> Listener:
    """Open ``UNIX-LISTEN:<path>`` or ``ABSTRACT-LISTEN:<name>``: bind and listen now."""
    text = address_text(address)
    (name,) = expect_params(address, 1, non_empty=True)
    options = address.options
    if "bind" in options:
        # The path is the socket's own address; socat refuses a second one.
        raise OpenError(
            text, f"{address.keyword}:{name}: binds implicitly, bind option not allowed"
        )
    if is_abstract(address):
        sock = new_socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, text)
        try:
            bind_socket(sock, socket_name(address, name), text)
            listen_socket(sock, options, text)
        except BaseException:
            sock.close()
            raise
        return UnixListener(sock, text, options, socket_name(address, name), None)
    path = name
    unlink_early(path, options, text)
    if not options.flag("unlink-early") and os.path.lexists(path):
        raise OpenError(text, f'"{path}" exists')
    umask = mode_option(options, text, "umask")
    perm = mode_option(options, text, "perm", "mode")
    sock = new_socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, text)
    identity: tuple[int, int] | None = None
    try:
        previous = os.umask(umask) if umask is not None else None
        try:
            bind_socket(sock, path, text)
        finally:
            if previous is not None:
                os.umask(previous)
        # A failed bind() creates no file; from here on the file is ours.
        try:
            info = os.lstat(path)
        except OSError as exc:
            raise OpenError(text, f'lstat("{path}"): {strerror(exc)}') from exc
        identity = (info.st_dev, info.st_ino)
        if perm is not None:
            try:
                os.chmod(path, perm)
            except OSError as exc:
                raise OpenError(text, f'chmod("{path}", 0{perm:o}): {strerror(exc)}') from exc
        listen_socket(sock, options, text)
        keep = identity if options.flag("unlink-close", True) else None
        return UnixListener(sock, text, options, path, keep)
    except BaseException:
        sock.close()
        if identity is not None:
            remove_path(path, identity)
        raise
