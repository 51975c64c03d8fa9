"""UDP addresses: ``UDP``, ``UDP-LISTEN``, ``UDP-RECVFROM``, ``UDP-SENDTO``, ``UDP-RECV`` (4/6 too).

Every stream here is a datagram stream: one ``read_into`` returns one datagram
and one ``write`` sends one, so the transfer loop keeps packet boundaries.

socat's man page, which this module follows:

- ``UDP:<host>:<port>`` "Connects to <port> [UDP service] on <host> ... no real
  connection is established; data has to be sent for `connecting' to the
  server, and no end-of-file condition can be transported."
- ``UDP-LISTEN:<port>`` "Waits for a UDP/IP packet arriving on <port> ... and
  `connects' back to sender." socat forks a child per sender, connected to it.
  Here one socket is shared: the listener hands each packet to the session of
  its sender and replies leave by ``sendto`` from the same socket and port.
- ``UDP-RECVFROM:<port>`` "receives one packet from an unspecified peer and may
  send one or more answer packets to that peer ... with fork option where each
  arriving packet - from arbitrary peers - is handled by its own sub process."
- ``UDP-SENDTO:<host>:<port>`` "sends packets to and receives packets from that
  peer socket only."
- ``range``/``sourceport``: "socat refuses the connection attempt, issues a
  warning, and keeps listening/receiving"; the packet is dropped.
- End of file: socat 1.8 sends an empty datagram when it shuts down the write
  side of ``UDP`` and ``UDP-LISTEN`` (``shut-none`` turns that off) and reads an
  empty datagram on them as EOF; ``UDP-RECVFROM``/``UDP-SENDTO`` "ignore empty
  (zero size payload) packets ... so it survives port scans" unless
  ``null-eof``, and send an empty packet on shutdown only with ``shut-null``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import socket
from collections.abc import Mapping
from ipaddress import ip_address

from .. import destinations
from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger, peer_notices
from ..options import Options
from . import tcp
from .base import Listener, OpenContext, ReadinessWatch, Stream
from .datagrams import DatagramStream
from .sockets import format_sockaddr
from .sockopt import CONNECTION_FORMS, apply_setsockopt
from .tcp import (
    address_text,
    apply_socket_options,
    bind_socket,
    in_ranges,
    ip_env,
    new_socket,
    set_int_option,
    split_bind,
    strerror,
    strip_brackets,
)

#: Largest UDP payload; the receive buffer of a listener is this big.
MAX_DATAGRAM = 65535
#: Bytes that may wait in one sender's queue before its datagrams are dropped
#: (the kernel does the same when a socket's receive buffer is full).
PEER_QUEUE_BYTES = 1 << 20
#: New senders that may wait for ``accept()`` (while ``max-children`` sessions
#: run, for instance) before datagrams from further new senders are dropped.
MAX_WAITING_PEERS = 128
#: Datagrams read per wake-up of a listener, so one busy socket cannot starve the loop.
READ_BATCH = 64

SockAddr = tuple[object, ...]

_KEYWORD_FAMILIES = {
    **dict.fromkeys(("UDP4", "UDP4-LISTEN", "UDP4-RECVFROM", "UDP4-SENDTO"), socket.AF_INET),
    **dict.fromkeys(("UDP6", "UDP6-LISTEN", "UDP6-RECVFROM", "UDP6-SENDTO"), socket.AF_INET6),
    "UDP4-RECV": socket.AF_INET,
    "UDP6-RECV": socket.AF_INET6,
    "UDP4-DATAGRAM": socket.AF_INET,
    "UDP6-DATAGRAM": socket.AF_INET6,
}
#: Socket options an address may set on its UDP socket (before bind).
_SOCKET_OPTIONS = ("reuseaddr", "reuseport", "rcvbuf", "sndbuf", "tos", "ttl")


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _copy(data: bytes, buffer: memoryview) -> int:
    """One datagram into the reader's buffer (cut to its size, as recv would)."""
    count = min(len(data), len(buffer))
    buffer[:count] = data[:count]
    return count


def _failed(label: str, call: str, fd: int, size: int, exc: OSError) -> OpenError:
    return OpenError(label, f"{call}({fd}, {size}): {strerror(exc)}")


def _family(address: Address, ctx: OpenContext) -> int:
    """``pf`` first, then the keyword's 4/6, then ``-4``/``-6`` (as for TCP)."""
    if "pf" in address.options:
        return tcp.family_of(address, ctx)
    return _KEYWORD_FAMILIES.get(address.keyword, ctx.family)


async def _resolve(
    address: Address, host: str | None, port: str, family: int
) -> tuple[int, SockAddr]:
    # Resolve a service name for UDP ("syslog" is 514/udp only), then the host.
    if not port.isdigit():
        try:
            port = str(socket.getservbyname(port, "udp"))
        except OSError:
            raise OpenError(address_text(address), f'unknown service "{port}"') from None
    flags = tcp.resolver_flags(address.options, socket.AI_PASSIVE if host is None else 0)
    infos = await tcp.resolve(host, port, family, flags, address_text(address))
    return infos[0]


def _new_socket(address: Address, family: int) -> socket.socket:
    text = address_text(address)
    sock = new_socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP, text)
    try:
        sock.setblocking(False)
        apply_socket_options(sock, address.options, _SOCKET_OPTIONS, text)
        apply_setsockopt(sock, address.options, CONNECTION_FORMS, text)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_host(address: Address) -> tuple[str | None, str | None]:
    """Option ``bind=<host>[:<port>]``."""
    bind = address.options.text("bind")
    try:
        return split_bind(bind) if bind else (None, None)
    except ValueError:
        raise OpenError(address_text(address), f'bind="{bind}": not a valid address') from None


def _same_peer(a: SockAddr, b: SockAddr) -> bool:
    try:
        return a[1] == b[1] and ip_address(str(a[0])) == ip_address(str(b[0]))
    except ValueError:
        return a[:2] == b[:2]


class _PeerFilter:
    """The checks of ``range``, ``sourceport`` and ``lowport`` on a passive address."""

    def __init__(self, options: Options) -> None:
        self.networks = options.networks("range")
        self.sourceport = options.integer("sourceport")
        self.lowport = options.flag("lowport")

    def permits(self, family: int, peer: SockAddr) -> bool:
        """Whether ``peer`` may talk to this address; a refusal is logged as socat does."""
        reason = None
        if self.networks and not in_ranges(str(peer[0]), self.networks):
            reason = "range option"
        elif self.sourceport is not None and peer[1] != self.sourceport:
            reason = "wrong sourceport"
        elif self.lowport and self.sourceport is None and peer[1] not in range(1024):
            reason = "lowport option"
        if reason is not None:
            peer_text = format_sockaddr(family, peer)
            logger.warning("refusing connection from %s due to %s", peer_text, reason)
        return reason is None


class _SharedSocket:
    """A bound UDP socket used by a listener and by every stream it handed out.

    The socket is closed when the listener and all its streams are closed
    (without ``fork`` the session closes the listener right after accepting,
    while its one stream still sends and receives through the socket).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.sockname: SockAddr = sock.getsockname()
        self.label = format_sockaddr(sock.family, self.sockname)
        self.users = 1
        # Only one task may wait for writability of a descriptor at a time
        # (a second add_writer would replace the first one's callback).
        self._write_turn = asyncio.Lock()
        self._writable = ReadinessWatch(self.fd, writable=True)

    def release(self) -> None:
        """Drop one user; close the socket after the last one."""
        self.users -= 1
        if self.users == 0:
            self._writable.close()
            self.sock.close()

    def local_env(self, peer: SockAddr) -> dict[str, str]:
        """``SOCAT_SOCKADDR``/``SOCAT_SOCKPORT``: the concrete local address towards ``peer``."""
        local = self.sockname
        if ip_address(str(local[0]).split("%", maxsplit=1)[0]).is_unspecified:
            # Bound to the wildcard: ask the routing table which address the
            # kernel answers from, as socat's connected child socket would show.
            probe = socket.socket(self.family, socket.SOCK_DGRAM)
            with probe, contextlib.suppress(OSError):
                probe.connect(peer)
                local = (probe.getsockname()[0], local[1])
        return ip_env("SOCK", self.family, local)

    async def sendto(self, data: memoryview | bytes, peer: SockAddr, label: str) -> None:
        """Send one datagram to ``peer``."""
        while True:
            try:
                self.sock.sendto(data, peer)
                return
            except (BlockingIOError, InterruptedError):
                async with self._write_turn:
                    await self._writable.wait()
            except OSError as exc:
                raise _failed(label, "sendto", self.fd, len(data), exc) from None


class ClientStream(Stream):
    """``UDP:<host>:<port>`` (a connected socket) or ``UDP-SENDTO`` (unconnected).

    A connected socket only hears its peer (the kernel filters) and reads an
    empty datagram as EOF; ``UDP-SENDTO`` drops packets from anybody else and
    ignores empty ones unless ``null-eof``. ``fileno()`` stays None for every
    datagram stream: a zero-copy path would merge datagrams.
    """

    datagram = True

    def __init__(
        self, sock: socket.socket, peer: SockAddr, *, connected: bool, options: Options
    ) -> None:
        self.sock, self.peer, self._fd = sock, peer, sock.fileno()
        self._connected = connected
        self._null_eof = options.flag("null-eof")
        # socat 1.8 shuts a UDP "connection" down with an empty packet (shut-null);
        # UDP-SENDTO does that only when asked.
        self._shut_null = not options.flag("shut-none") if connected else options.flag("shut-null")
        self._closed = False
        self._readable = ReadinessWatch(self._fd)
        self._writable = ReadinessWatch(self._fd, writable=True)
        self.label = format_sockaddr(sock.family, peer)
        self.env = {}

    async def read_into(self, buffer: memoryview) -> int:
        while True:
            try:
                if self._connected:
                    return self.sock.recv_into(buffer)
                count, sender = self.sock.recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                await self._readable.wait()
                continue
            except OSError as exc:
                raise _failed(self.label, "read", self._fd, len(buffer), exc) from None
            if not _same_peer(sender, self.peer):
                logger.info("recvfrom(): wrong peer address, ignoring packet")
                continue
            if logger.isEnabledFor(NOTICE):
                where = format_sockaddr(self.sock.family, sender)
                logger.log(NOTICE, "received packet with %d bytes from %s", count, where)
            if count or self._null_eof:
                return count

    async def write(self, data: memoryview) -> None:
        while True:
            try:
                if self._connected:
                    self.sock.send(data)
                else:
                    self.sock.sendto(data, self.peer)
                return
            except (BlockingIOError, InterruptedError):
                await self._writable.wait()
            except OSError as exc:
                raise _failed(self.label, "write", self._fd, len(data), exc) from None

    async def shutdown_write(self) -> None:
        if self._shut_null and not self._closed:
            with contextlib.suppress(OSError):  # socat ignores a failing EOF packet too
                self.sock.sendto(b"", self.peer)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._readable.close()
            self._writable.close()
            self.sock.close()


class _ServedStream(Stream):
    """A peer of a listening socket: replies leave by ``sendto`` from the shared socket."""

    datagram = True

    def __init__(self, shared: _SharedSocket, peer: SockAddr, shut_null: bool) -> None:
        self.shared, self.peer = shared, peer
        self.label = format_sockaddr(shared.family, peer)
        self.env = ip_env("PEER", shared.family, peer)
        self._shut_null = shut_null
        self.closed = False

    async def write(self, data: memoryview) -> None:
        await self.shared.sendto(data, self.peer, self.label)

    async def shutdown_write(self) -> None:
        if self._shut_null and not self.closed:
            with contextlib.suppress(OSError):
                self.shared.sock.sendto(b"", self.peer)


class _PeerStream(_ServedStream):
    """One sender of a ``UDP-LISTEN`` socket: the listener queues its datagrams here."""

    def __init__(self, listener: UDPListener, peer: SockAddr, env: Mapping[str, str]) -> None:
        super().__init__(listener.shared, peer, listener.shut_null)
        self.listener = listener
        self.env = dict(env)
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued, self._dropping, self._eof = 0, False, False
        self._waiter: asyncio.Future[None] | None = None

    def deliver(self, data: bytes) -> None:
        """Queue one datagram from the peer (called by the listener's reader)."""
        if self._queued + len(data) > PEER_QUEUE_BYTES:
            if not self._dropping:
                self._dropping = True
                logger.warning("receive queue of %s is full, dropping datagrams", self.label)
            return
        self._dropping = False
        self._queue.append(data)
        self._queued += len(data)
        _wake(self._waiter)

    async def read_into(self, buffer: memoryview) -> int:
        while not self._queue:
            if self._eof or self.closed:
                return 0
            # Cancellation (the transfer loop's -T) just leaves this wait.
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._queue.popleft()
        self._queued -= len(data)
        if not data:
            self._eof = True  # socat 1.8: an empty datagram is the peer's EOF
        return _copy(data, buffer)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.clear()
            _wake(self._waiter)
            self.listener.forget(self)


class UDPListener(Listener):
    """``UDP-LISTEN``: one socket, one session per sender, demultiplexed by sender address.

    A sender's first datagram creates its session; later datagrams go to it
    while it lives; after it is closed the next datagram starts a new one.
    Without ``fork`` only the first sender gets a session (socat connects its
    socket to that sender, so the kernel drops everybody else's packets).
    """

    def __init__(self, address: Address, shared: _SharedSocket, fork: bool) -> None:
        self.address, self.shared, self.label, self.fork = address, shared, shared.label, fork
        self.filter = _PeerFilter(address.options)
        self.shut_null = not address.options.flag("shut-none")
        self._sessions: dict[tuple[object, ...], _PeerStream] = {}
        self._ready: collections.deque[_PeerStream] = collections.deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._started = self._full = False
        self._closed = False
        self._buffer = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buffer)
        asyncio.get_running_loop().add_reader(shared.fd, self._on_readable)

    async def accept(self) -> Stream:
        while not self._ready:
            if self._closed:
                raise OpenError(address_text(self.address), "listener is closed")
            self._accept_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._accept_waiter
            finally:
                self._accept_waiter = None
        stream = self._ready.popleft()
        self.shared.users += 1
        return stream

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        _wake(self._accept_waiter)
        # Senders that were never accepted have no session to end them.
        while self._ready:
            waiting = self._ready.popleft()
            waiting.closed = True
            self._sessions.pop(waiting.peer[:2], None)
        self.forget()

    def forget(self, stream: _PeerStream | None = None) -> None:
        """A session (or the listener itself) ended: drop it, stop reading after the last."""
        if stream is not None and self._sessions.get(stream.peer[:2]) is stream:
            del self._sessions[stream.peer[:2]]
        if self.shared.users == 1:
            asyncio.get_running_loop().remove_reader(self.shared.fd)
        self.shared.release()

    def _on_readable(self) -> None:
        for _ in range(READ_BATCH):
            try:
                count, peer = self.shared.sock.recvfrom_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Unconnected UDP sockets may report an ICMP error of an earlier send.
                logger.info("recvfrom(%d): %s", self.shared.fd, exc.strerror)
                continue
            data = bytes(self._view[:count])
            session = self._sessions.get(peer[:2])
            if session is not None:
                session.deliver(data)
            else:
                self._new_sender(peer, data)

    def _new_sender(self, peer: SockAddr, data: bytes) -> None:
        family = self.shared.family
        where = format_sockaddr(family, peer)
        # Without fork socat's socket is connected to its one peer, so the
        # kernel drops everybody else; empty packets (port scans) start nothing.
        if self._closed or (not self.fork and self._started) or not data:
            logger.debug("ignoring datagram from %s", where)
            return
        if len(self._ready) >= MAX_WAITING_PEERS:
            if not self._full:
                self._full = True
                logger.warning("too many new peers wait, dropping datagrams from %s", where)
            return
        self._full = False
        if peer_notices():
            logger.log(NOTICE, "accepting UDP connection from %s", where)
        if not self.filter.permits(family, peer):
            logger.log(NOTICE, "forbidding UDP connection from %s", where)
            return
        logger.info("permitting UDP connection from %s", where)
        env = {**ip_env("PEER", family, peer), **self.shared.local_env(peer)}
        session = _PeerStream(self, peer, env)
        session.deliver(data)
        self._sessions[peer[:2]] = session
        self._ready.append(session)
        self._started = True
        _wake(self._accept_waiter)


class _OneShotStream(_ServedStream):
    """``UDP-RECVFROM``: one received datagram, then EOF; replies go back to its sender."""

    def __init__(self, owner: RecvfromListener, data: bytes, peer: SockAddr) -> None:
        super().__init__(owner.shared, peer, owner.address.options.flag("shut-null"))
        self._data = data

    async def read_into(self, buffer: memoryview) -> int:
        data, self._data = self._data, b""
        return _copy(data, buffer)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.shared.release()


class RecvfromListener(Listener):
    """``UDP-RECVFROM``: each ``accept()`` takes the next permitted datagram from any sender."""

    def __init__(self, address: Address, shared: _SharedSocket) -> None:
        self.address = address
        self.shared = shared
        self.label = shared.label
        self.filter = _PeerFilter(address.options)
        self.null_eof = address.options.flag("null-eof")
        self._readable = ReadinessWatch(shared.fd)
        self._buffer = bytearray(MAX_DATAGRAM)
        self._closed = False

    async def accept(self) -> Stream:
        family = self.shared.family
        while True:
            if self._closed:
                raise OpenError(address_text(self.address), "listener is closed")
            try:
                count, peer = self.shared.sock.recvfrom_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                await self._readable.wait()
                continue
            except OSError as exc:
                logger.info("recvfrom(%d): %s", self.shared.fd, exc.strerror)
                continue
            if not self.filter.permits(family, peer):
                continue
            where = format_sockaddr(family, peer)
            logger.log(NOTICE, "received packet with %d bytes from %s", count, where)
            if count == 0 and not self.null_eof:
                continue  # "ignore empty ... packets ... so it survives port scans"
            self.shared.users += 1
            return _OneShotStream(self, bytes(self._buffer[:count]), peer)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._readable.close()
            self.shared.release()


async def _client_socket(address: Address, ctx: OpenContext) -> tuple[socket.socket, SockAddr]:
    """The socket of ``UDP``/``UDP-SENDTO``, bound by ``bind``/``sourceport`` when given."""
    host, port = address.params
    destinations.check_name(strip_brackets(host), address_text(address))
    family, peer = await _resolve(address, host, port, _family(address, ctx))
    destinations.check(family, peer, address_text(address), strip_brackets(host))
    sock = _new_socket(address, family)
    try:
        local_host, local_port = _bind_host(address)
        sourceport = address.options.integer("sourceport")
        if local_host is not None or local_port is not None or sourceport is not None:
            port = str(sourceport) if sourceport is not None else local_port or "0"
            _, local = await _resolve(address, local_host, port, sock.family)
            bind_socket(sock, local, address_text(address))
    except BaseException:
        sock.close()
        raise
    return sock, peer


async def connect(address: Address, ctx: OpenContext) -> Stream:
    """Open ``UDP[4|6]:<host>:<port>`` as a connected datagram stream."""
    sock, peer = await _client_socket(address, ctx)
    logger.log(NOTICE, "opening connection to %s", format_sockaddr(sock.family, peer))
    try:
        sock.connect(peer)
    except OSError as exc:
        sock.close()
        where = format_sockaddr(sock.family, peer)
        raise OpenError(address_text(address), f"connect({where}): {strerror(exc)}") from None
    local = format_sockaddr(sock.family, sock.getsockname())
    logger.log(NOTICE, "successfully connected from local address %s", local)
    return ClientStream(sock, peer, connected=True, options=address.options)


async def sendto(address: Address, ctx: OpenContext) -> Stream:
    """Open ``UDP[4|6]-SENDTO:<host>:<port>``."""
    sock, peer = await _client_socket(address, ctx)
    return ClientStream(sock, peer, connected=False, options=address.options)


async def _server_socket(address: Address, ctx: OpenContext) -> _SharedSocket:
    """The bound socket of ``UDP-LISTEN``/``UDP-RECVFROM``.

    The family follows the same rule as ``TCP-LISTEN`` (socat: "The IP
    version is 4 or the one specified with ... pf, -4, -6 or
    SOCAT_DEFAULT_LISTEN_IP"); ``SOCAT_DEFAULT_LISTEN_IP=0`` binds one
    dual-stack IPv6 socket, or IPv4 where the kernel has no IPv6.
    """
    (port,) = address.params
    text = address_text(address)
    host, _ = _bind_host(address)
    family = _family(address, ctx)
    dual_stack = False
    if family == socket.AF_UNSPEC and host is None:
        family, dual_stack = tcp.default_listen_family()
    for attempt in (socket.AF_INET6, socket.AF_INET) if dual_stack else (family,):
        local_family, local = await _resolve(address, host, port, attempt)
        try:
            sock = _new_socket(address, local_family)
        except OpenError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EAFNOSUPPORT:
                continue
            raise
        try:
            if dual_stack:
                set_int_option(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0, text)
            bind_socket(sock, local, text)
        except BaseException:
            sock.close()
            raise
        return _SharedSocket(sock)
    raise OpenError(text, "no IP version available")


async def listen(address: Address, ctx: OpenContext) -> Listener:
    """Bind ``UDP[4|6]-LISTEN:<port>``; ``accept()`` yields one stream per sender."""
    shared = await _server_socket(address, ctx)
    logger.log(NOTICE, "listening on UDP %s", shared.label)
    return UDPListener(address, shared, fork=address.options.flag("fork"))


async def recvfrom(address: Address, ctx: OpenContext) -> Listener:
    """Bind ``UDP[4|6]-RECVFROM:<port>``; ``accept()`` yields one stream per datagram."""
    shared = await _server_socket(address, ctx)
    logger.log(NOTICE, "receiving on %s", shared.label)
    return RecvfromListener(address, shared)


async def recv(address: Address, ctx: OpenContext) -> Stream:
    """Bind ``UDP[4|6]-RECV:<port>``: read datagrams from every permitted sender, answer none.

    socat: "It receives packets from multiple unspecified peers and merges
    the data. No replies are possible." ``range``/``sourceport`` drop the
    packets of other senders, with socat's warning.
    """
    shared = await _server_socket(address, ctx)
    logger.log(NOTICE, "receiving on %s", shared.label)
    peers = _PeerFilter(address.options)
    family = shared.family
    return DatagramStream(
        shared.sock,
        label=shared.label,
        accepts=lambda sender: peers.permits(family, sender),  # type: ignore[arg-type]
        null_eof=address.options.flag("null-eof"),
    )


async def datagram(address: Address, ctx: OpenContext) -> Stream:
    """Open ``UDP[4|6]-DATAGRAM:<address>:<port>``: send there, receive from any permitted peer.

    socat: "Sends outgoing data to the specified address which may in
    particular be a broadcast or multicast address. Packets arriving on the
    local socket are checked for the correct remote port only when option
    sourceport is used [...] and if their source addresses match range".
    """
    sock, peer = await _client_socket(address, ctx)
    text = address_text(address)
    try:
        if address.options.flag("broadcast"):
            set_int_option(sock, socket.SOL_SOCKET, socket.SO_BROADCAST, 1, text)
    except BaseException:
        sock.close()
        raise
    peers = _PeerFilter(address.options)
    family = sock.family
    return DatagramStream(
        sock,
        label=format_sockaddr(family, peer),
        peer=peer,
        accepts=lambda sender: peers.permits(family, sender),  # type: ignore[arg-type]
        null_eof=address.options.flag("null-eof"),
    )
