"""UNIX datagram sockets and socket pairs: ``UNIX-SENDTO``, ``UNIX-RECV``, ``UNIX-RECVFROM``...

... and ``SOCKETPAIR``; ``DatagramStream`` also serves ``UDP-RECV`` (``udp.py``).
socat's man page:

- ``UNIX-SENDTO:<filename>`` "Communicates with the specified peer socket
  [...] assuming it is a unixdomain datagram socket. It sends packets to and
  receives packets from that peer socket only. Please note that it might be
  necessary to bind the local socket to an address".
- ``UNIX-RECV:<filename>`` "Creates a unixdomain datagram socket. Receives
  packets from multiple unspecified peers and merges the data. No replies are
  possible, this is a read-only address".
- ``UNIX-RECVFROM:<filename>`` "Receives one packet and may send one or more
  answer packets to that peer. This mode is particularly useful with fork
  option where each arriving packet - from arbitrary peers - is handled by its
  own sub process." Here, as for ``UDP-RECVFROM``, each packet is a session.
- ``SOCKETPAIR`` "Creates a socketpair and uses it for reading and writing.
  It works as an echo, because everything written to it appears immediately
  as read data. The default socket type is datagram, so it keeps packet
  boundaries." (``socktype=1`` makes it a stream.)

``ABSTRACT-SENDTO``, ``ABSTRACT-RECV`` and ``ABSTRACT-RECVFROM`` are the same
on Linux's abstract socket names (see ``unix``): no file on disk.

The socket files of ``UNIX-RECV`` and ``UNIX-RECVFROM`` (and of a ``bind=``
path) are removed when the address closes, if they are still ours, as for
``UNIX-LISTEN``. Empty datagrams are skipped unless ``null-eof`` (an empty
datagram is then end of file), as socat does for its RECV addresses.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger
from .base import Listener, OpenContext, ReadinessWatch, Stream
from .sockets import format_sockaddr, unix_path_text
from .tcp import address_text, bind_socket, new_socket, strerror
from .unix import ANONYMOUS, is_abstract, remove_path, socket_name, unlink_early

#: A socket address in Python's form: (host, port...) for IP, a path (str or bytes) for UNIX.
SockAddr = tuple[object, ...] | str | bytes
#: Largest datagram a read takes.
MAX_DATAGRAM = 65535


class DatagramStream(Stream):
    """A datagram socket as a stream: one read is one datagram, one write one datagram.

    ``peer`` is where writes go (None: a read-only address); ``accepts``
    decides which senders' datagrams are read (the others are dropped);
    ``owned`` is a socket file removed on close (device and inode of ours).
    """

    datagram = True

    def __init__(
        self,
        sock: socket.socket,
        *,
        label: str,
        peer: SockAddr | None = None,
        accepts: Callable[[object], bool] | None = None,
        null_eof: bool = False,
        owned: tuple[str, tuple[int, int]] | None = None,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.label = label
        self.peer = peer
        self.writable = peer is not None
        self.env = {}
        self._fd = sock.fileno()
        self._accepts = accepts
        self._null_eof = null_eof
        self._owned = owned
        self._closed = False
        self._readable = ReadinessWatch(self._fd)
        self._writable = ReadinessWatch(self._fd, writable=True)

    async def read_into(self, buffer: memoryview) -> int:
        while True:
            try:
                count, sender = self.sock.recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                await self._readable.wait()
                continue
            except OSError as exc:
                raise OpenError(
                    self.label, f"recvfrom({self._fd}, {len(buffer)}): {strerror(exc)}"
                ) from exc
            if self._accepts is not None and not self._accepts(sender):
                continue
            if logger.isEnabledFor(NOTICE):
                where = format_sockaddr(self.sock.family, sender or ANONYMOUS)
                logger.log(NOTICE, "received packet with %d bytes from %s", count, where)
            if count or self._null_eof:
                return count

    async def write(self, data: memoryview) -> None:
        assert self.peer is not None, "a read-only datagram address is never written"
        while True:
            try:
                self.sock.sendto(data, self.peer)
                return
            except (BlockingIOError, InterruptedError):
                await self._writable.wait()
            except OSError as exc:
                raise OpenError(
                    self.label, f"sendto({self._fd}, {len(data)}): {strerror(exc)}"
                ) from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readable.close()
        self._writable.close()
        self.sock.close()
        if self._owned is not None:
            remove_path(*self._owned)


class _PairStream(Stream):
    """``SOCKETPAIR``: writes go into one end, reads come out of the other."""

    def __init__(self, inlet: socket.socket, outlet: socket.socket, datagram: bool) -> None:
        for sock in (inlet, outlet):
            sock.setblocking(False)
        self.inlet, self.outlet = inlet, outlet
        self.datagram = datagram
        self.label = "socketpair"
        self.env = {}
        self._readable = ReadinessWatch(outlet.fileno())
        self._writable = ReadinessWatch(inlet.fileno(), writable=True)
        self._closed = False

    async def read_into(self, buffer: memoryview) -> int:
        while True:
            try:
                return self.outlet.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                await self._readable.wait()

    async def write(self, data: memoryview) -> None:
        while data:
            try:
                sent = self.inlet.send(data)
            except (BlockingIOError, InterruptedError):
                await self._writable.wait()
                continue
            data = data[len(data) if self.datagram else sent :]

    async def shutdown_write(self) -> None:
        # A stream pair passes the EOF on; a datagram pair has none to pass.
        if not self.datagram:
            with contextlib.suppress(OSError):
                self.inlet.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._readable.close()
            self._writable.close()
            self.inlet.close()
            self.outlet.close()


async def socketpair(address: Address, ctx: OpenContext) -> Stream:
    """Open ``SOCKETPAIR``: an echo through a pair of connected UNIX sockets."""
    text = address_text(address)
    kind = address.options.integer("type", socket.SOCK_DGRAM)
    assert kind is not None
    try:
        inlet, outlet = socket.socketpair(socket.AF_UNIX, kind, 0)
    except OSError as exc:
        raise OpenError(
            text, f"socketpair({socket.AF_UNIX}, {kind}, 0, ...): {strerror(exc)}"
        ) from exc
    logger.info("socketpair({%d,%d})", outlet.fileno(), inlet.fileno())
    logger.log(NOTICE, "writing to and reading from unnamed socketpair")
    return _PairStream(inlet, outlet, datagram=kind != socket.SOCK_STREAM)


def _bound_socket(
    address: Address, name: str | None
) -> tuple[socket.socket, tuple[str, tuple[int, int]] | None]:
    """A UNIX datagram socket bound to ``name`` (if any), and the file to remove on close."""
    text = address_text(address)
    options = address.options
    sock = new_socket(socket.AF_UNIX, socket.SOCK_DGRAM, 0, text)
    owned = None
    try:
        if name is not None and is_abstract(address):
            bind_socket(sock, socket_name(address, name), text)
        elif name is not None:
            unlink_early(name, options, text)
            bind_socket(sock, name, text)
            info = os.lstat(name)
            if options.flag("unlink-close", True):
                owned = (name, (info.st_dev, info.st_ino))
            mode = options.integer("mode")
            if mode is not None:
                os.chmod(name, mode)
    except OSError as exc:
        sock.close()
        raise OpenError(text, f'"{name}": {strerror(exc)}') from exc
    except BaseException:
        sock.close()
        raise
    return sock, owned


def _same_path(sender: object, path: str) -> bool:
    # recvfrom() names an abstract sender in bytes, a file system one in text.
    return isinstance(sender, str | bytes) and os.fsencode(sender) == os.fsencode(path)


def _path(address: Address) -> str:
    (path,) = address.params
    if not path:
        raise OpenError(address_text(address), f"{address.keyword}: empty socket path")
    return path


async def unix_sendto(address: Address, ctx: OpenContext) -> Stream:
    """Open ``UNIX-SENDTO:<filename>``: send to that datagram socket, hear only from it."""
    peer = socket_name(address, _path(address))
    sock, owned = _bound_socket(address, address.options.text("bind"))
    logger.log(NOTICE, "sending to %s", format_sockaddr(socket.AF_UNIX, peer))
    return DatagramStream(
        sock,
        label=format_sockaddr(socket.AF_UNIX, peer),
        peer=peer,
        accepts=lambda sender: _same_path(sender, peer),
        null_eof=address.options.flag("null-eof"),
        owned=owned,
    )


async def unix_recv(address: Address, ctx: OpenContext) -> Stream:
    """Open ``UNIX-RECV:<filename>``: read datagrams from anybody, reply to nobody."""
    path = socket_name(address, _path(address))
    sock, owned = _bound_socket(address, _path(address))
    label = format_sockaddr(socket.AF_UNIX, path)
    logger.log(NOTICE, "receiving on %s", label)
    return DatagramStream(sock, label=label, null_eof=address.options.flag("null-eof"), owned=owned)


class _OneDatagram(Stream):
    """One received datagram, then end of file; writes answer its sender."""

    datagram = True

    def __init__(self, owner: DatagramRecvfromListener, data: bytes, sender: SockAddr) -> None:
        self.owner, self._data, self.sender = owner, data, sender
        family = owner.sock.family
        self.label = format_sockaddr(family, sender or ANONYMOUS)
        self.writable = bool(sender)  # an unbound UNIX sender cannot be answered
        self.env = {}
        if family == socket.AF_UNIX:
            peer = ANONYMOUS
            if isinstance(sender, str | bytes) and sender:
                peer = unix_path_text(sender)
            self.env = {"SOCAT_PEERADDR": peer, "SOCAT_SOCKADDR": owner.path}
        self._closed = False

    async def read_into(self, buffer: memoryview) -> int:
        data, self._data = self._data, b""
        count = min(len(data), len(buffer))
        buffer[:count] = data[:count]
        return count

    async def write(self, data: memoryview) -> None:
        await self.owner.replies.write_to(data, self.sender)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.owner.release()


class _Replies:
    """Sends answers from the listening socket (one writer waits at a time)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._writable = ReadinessWatch(sock.fileno(), writable=True)

    async def write_to(self, data: memoryview, peer: SockAddr) -> None:
        while True:
            try:
                self.sock.sendto(data, peer)
                return
            except (BlockingIOError, InterruptedError):
                await self._writable.wait()
            except OSError as exc:
                raise OpenError(
                    str(peer), f"sendto({self.sock.fileno()}, {len(data)}): {strerror(exc)}"
                ) from exc

    def close(self) -> None:
        self._writable.close()


class DatagramRecvfromListener(Listener):
    """``UNIX-RECVFROM``, ``SOCKET-RECVFROM``: each ``accept()`` is the next datagram, from anybody.

    The socket lives while the listener or a session of it is open (without
    ``fork`` the session outlives the listener, which it answers through).
    """

    def __init__(
        self, address: Address, sock: socket.socket, owned: tuple[str, tuple[int, int]] | None
    ) -> None:
        sock.setblocking(False)
        self.address, self.sock = address, sock
        local = sock.getsockname()
        self.path = unix_path_text(local) if isinstance(local, str | bytes) else ""
        self.label = format_sockaddr(sock.family, local)
        self.replies = _Replies(sock)
        self._owned = owned
        self._users = 1
        self._readable = ReadinessWatch(sock.fileno())
        self._buffer = bytearray(MAX_DATAGRAM)
        self._null_eof = address.options.flag("null-eof")
        self._closed = False

    async def accept(self) -> Stream:
        while True:
            if self._closed:
                raise OpenError(address_text(self.address), "listener is closed")
            try:
                count, sender = self.sock.recvfrom_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                await self._readable.wait()
                continue
            except OSError as exc:
                logger.info("recvfrom(%d): %s", self.sock.fileno(), strerror(exc))
                continue
            where = format_sockaddr(self.sock.family, sender or ANONYMOUS)
            logger.log(NOTICE, "received packet with %d bytes from %s", count, where)
            if count == 0 and not self._null_eof:
                continue
            self._users += 1
            return _OneDatagram(self, bytes(self._buffer[:count]), sender)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._readable.close()
            await self.release()

    async def release(self) -> None:
        """Drop one user of the socket; the last one closes it and removes its file."""
        self._users -= 1
        if self._users == 0:
            self.replies.close()
            self.sock.close()
            if self._owned is not None:
                remove_path(*self._owned)


async def unix_recvfrom(address: Address, ctx: OpenContext) -> Listener:
    """Bind ``UNIX-RECVFROM:<filename>``; ``accept()`` yields one session per datagram."""
    sock, owned = _bound_socket(address, _path(address))
    listener = DatagramRecvfromListener(address, sock, owned)
    logger.log(NOTICE, "receiving on %s", listener.label)
    return listener
