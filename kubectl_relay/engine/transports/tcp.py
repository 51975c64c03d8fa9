"""TCP: ``TCP``/``TCP4``/``TCP6`` connect, ``TCP-LISTEN``/``TCP4-LISTEN``/``TCP6-LISTEN`` listen.

Also the parts every stream socket transport shares (``unix.py`` and the TLS
layer use them): socat-worded socket errors, the table of integer socket
options, and ``SocketListener``, socat's accept loop (``_xioopen_listen`` in
xio-listen.c) with ``accept-timeout``.

What socat 1.8.1 does and we do too:

- A client tries every address the name resolves to, in resolver order, until
  one connects ("TCP based client addresses now try all results of name
  resolution until a connection attempt succeeded", CHANGES 1.8.0.0).
- ``TCP-LISTEN`` without ``4``/``6``, ``pf``, ``-4``/``-6`` or ``bind`` listens
  on IPv6 ``[::]``, which takes IPv4 peers too ("passive Socat addresses
  default to IPv6 because it might support both versions").
- ``SO_REUSEADDR`` is on for TCP listeners unless ``reuseaddr=`` (empty) or
  ``reuseaddr=0`` is given ("Socket option SO_REUSEADDR is now automatically
  applied to TCP LISTEN addresses").
- ``SOCAT_PEERADDR``/``SOCAT_PEERPORT``/``SOCAT_SOCKADDR``/``SOCAT_SOCKPORT``
  describe accepted connections only; socat sets none for client addresses.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from typing import Any

from .. import destinations
from ..addresses import Address
from ..errors import AcceptTimeout, OpenError
from ..log import NOTICE, logger, peer_notices
from ..options import Network, Options
from .base import Listener, OpenContext, Stream, wait_readable
from .sockbind import (
    DEFAULT_BACKLOG,
    EARLY_OPTIONS,
    SOCKET_OPTIONS,
    address_family,
    address_text,
    apply_socket_options,
    bind_option,
    bind_socket,
    default_listen_family,
    listen_backlog,
    listen_choice,
    listen_socket,
    listening_socket,
    new_socket,
    resolver_flags,
    set_int_option,
    sockaddr_length,
    split_bind,
    strerror,
    take_early,
)
from .sockets import SocketStream, format_sockaddr, ip_text
from .sockopt import CONNECTION_FORMS, apply_setsockopt

# The socket helpers moved to ``sockbind`` (no event loop there) are still
# imported from here by the other transports.
__all__ = [
    "DEFAULT_BACKLOG",
    "SOCKET_OPTIONS",
    "SocketListener",
    "TcpListener",
    "address_text",
    "apply_socket_options",
    "bind_option",
    "bind_socket",
    "connect",
    "default_listen_family",
    "expect_params",
    "family_of",
    "in_ranges",
    "ip_env",
    "listen",
    "listen_backlog",
    "listen_socket",
    "new_socket",
    "resolve",
    "resolver_flags",
    "set_int_option",
    "sockaddr_length",
    "split_bind",
    "strerror",
    "strip_brackets",
]

#: Options socat applies to each accepted connection and to client sockets.
_STREAM_OPTIONS = (
    "rcvbuf",
    "sndbuf",
    "keepalive",
    "keepidle",
    "keepintvl",
    "keepcnt",
    "nodelay",
    "tos",
    "ttl",
)

#: socat's ``lowport``: "use an unused random source port between 640 and
#: 1023 incl." for clients; listeners accept "only from ports below 1024".
LOWPORT_RANGE = range(640, 1024)


class SocketListener(Listener):
    """A listening stream socket and socat's accept loop over it.

    Each ``accept`` logs ``listening on ...`` (socat does so every time it
    waits), accepts, logs ``accepting connection from ... on ...``, and
    hands the connection to ``_admit``, which may refuse it (``range``,
    ``sourceport``); a refused peer is closed and the loop goes on. With
    ``--quiet-accepts`` only the first ``listening on`` is logged.
    """

    def __init__(self, sock: socket.socket, text: str, options: Options) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.text = text
        self.options = options
        self.accept_timeout = options.seconds("accept-timeout")
        self.backlog = listen_backlog(options)
        #: The bound address (with the real port when ``0`` was asked for).
        self.sockname: object = sock.getsockname()
        self.label = format_sockaddr(sock.family, self.sockname)
        self._closed = False
        self._announced = False

    async def accept(self) -> Stream:
        while True:
            if not self._announced or peer_notices():
                logger.log(NOTICE, "listening on %s", self.label)
                self._announced = True
            conn = await self._accept_one()
            try:
                stream = self._admit(conn)
            except BaseException:
                conn.close()
                raise
            if stream is not None:
                return stream

    async def _accept_one(self) -> socket.socket:
        fd = self.sock.fileno()
        try:
            # socat: "accept-timeout=<seconds>: End waiting for a connection
            # after the given time".
            async with asyncio.timeout(self.accept_timeout):
                while True:
                    try:
                        conn, _ = self.sock.accept()
                        return conn
                    except (BlockingIOError, InterruptedError):
                        await wait_readable(fd)
                    except ConnectionAbortedError as exc:
                        # The peer gave up while queued; socat notes it and goes on.
                        logger.log(NOTICE, "accept(%d, ...): %s", fd, strerror(exc))
        except TimeoutError:
            raise AcceptTimeout(self.text, "accept: Connection timed out") from None
        except OSError as exc:
            raise OpenError(self.text, f"accept({fd}, ...): {strerror(exc)}") from exc

    def _admit(self, conn: socket.socket) -> Stream | None:
        """Check and prepare an accepted connection; None refuses it."""
        return SocketStream(conn)

    @staticmethod
    def refuse(conn: socket.socket) -> None:
        """Close a refused connection the way socat does (shutdown, then close)."""
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            logger.info("shutdown(%d, 2): %s", conn.fileno(), strerror(exc))
        conn.close()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()


class TcpListener(SocketListener):
    """``TCP-LISTEN``: refuses peers outside ``range`` or from another ``sourceport``."""

    def __init__(self, sock: socket.socket, text: str, options: Options) -> None:
        super().__init__(sock, text, options)
        self.ranges = options.networks("range")
        self.sourceport = options.integer("sourceport")
        self.lowport = options.flag("lowport")

    def _admit(self, conn: socket.socket) -> Stream | None:
        addresses = self.admit_peer(conn)
        if addresses is None:
            self.refuse(conn)
            return None
        peer, local = addresses
        env = {**ip_env("PEER", conn.family, peer), **ip_env("SOCK", conn.family, local)}
        return SocketStream(conn, env=env)

    @property
    def checks_peers(self) -> bool:
        """Whether ``admit_peer`` has anything to check or set beyond logging."""
        return bool(self.ranges) or self.sourceport is not None or self.lowport or any(
            name in self.options for name in _STREAM_OPTIONS
        )

    def admit_peer(self, conn: socket.socket) -> tuple[Any, Any] | None:
        """Log and check an accepted peer (``range``, ``sourceport``, ``lowport``), set its options.

        Returns the peer's and our socket addresses, or None when refused:
        the caller closes it. ``conn`` may also be the socket of an
        event-loop transport (``bridge.py``).
        """
        try:
            peer = conn.getpeername()
            local = conn.getsockname()
        except OSError as exc:
            # The peer reset before we looked: nothing to relay.
            logger.log(NOTICE, "getpeername(%d, ...): %s", conn.fileno(), strerror(exc))
            return None
        peer_text = format_sockaddr(conn.family, peer)
        if peer_notices():
            logger.log(
                NOTICE,
                "accepting connection from %s on %s",
                peer_text,
                format_sockaddr(conn.family, local),
            )
        if self.ranges:
            if not in_ranges(peer[0], self.ranges):
                logger.warning("refusing connection from %s due to range option", peer_text)
                return None
            logger.info("permitting connection from %s due to range option", peer_text)
        if self.sourceport is not None:
            if peer[1] != self.sourceport:
                logger.warning("refusing connection from %s due to wrong sourceport", peer_text)
                return None
            logger.info("permitting connection from %s due to sourceport option", peer_text)
        elif self.lowport:
            if peer[1] >= LOWPORT_RANGE.stop:
                logger.warning("refusing connection from %s due to lowport option", peer_text)
                return None
            logger.info("permitting connection from %s due to lowport option", peer_text)
        try:
            apply_socket_options(conn, self.options, _STREAM_OPTIONS, self.text)
            apply_setsockopt(conn, self.options, CONNECTION_FORMS, self.text)
        except OpenError as exc:
            # One peer's socket option must not end the listener.
            logger.warning("%s", exc)
        return peer, local


def in_ranges(host: str, ranges: tuple[Network, ...]) -> bool:
    """Whether a peer address lies in one of the ``range`` networks.

    A dual-stack listener sees IPv4 peers as ``::ffff:a.b.c.d``; those are
    also compared with IPv4 networks, so ``range=10.0.0.0/8`` works on the
    default ``TCP-LISTEN`` (socat would compare the mapped form only).
    """
    address = ipaddress.ip_address(host.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(
        candidate.version == network.version and candidate in network
        for network in ranges
        for candidate in candidates
    )


def ip_env(prefix: str, family: int, address: tuple[object, ...]) -> dict[str, str]:
    """``SOCAT_<prefix>ADDR``/``PORT`` as socat writes them (xiosetsockaddrenv_ip4/ip6).

    IPv4 as dotted quad; IPv6 as eight 4-digit hex groups in brackets
    (``[0000:0000:0000:0000:0000:0000:0000:0001]``), never abbreviated.
    """
    host = ip_text(family, str(address[0]))
    return {f"SOCAT_{prefix}ADDR": host, f"SOCAT_{prefix}PORT": str(address[1])}


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def family_of(address: Address, ctx: OpenContext) -> int:
    """The address family: see ``sockbind.address_family`` (``-4``/``-6`` from ``ctx``)."""
    return address_family(address, ctx.family)


async def resolve(
    host: str | None, port: str | None, family: int, flags: int, text: str
) -> list[tuple[int, tuple[object, ...]]]:
    """``getaddrinfo`` for TCP; failures worded as socat's xiogetaddrinfo()."""
    if port == "":
        # getaddrinfo() takes "" for "any port": TCP4-LISTEN: would listen on a
        # random port. socat refuses it: "empty port/service".
        raise OpenError(text, "empty port/service")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host,
            port,
            family=family,
            type=socket.SOCK_STREAM,
            proto=socket.IPPROTO_TCP,
            flags=flags,
        )
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        shown_host = "NULL" if host is None else host
        shown_port = "NULL" if port is None else port
        raise OpenError(
            text,
            f'getaddrinfo("{shown_host}", "{shown_port}", {{{flags},{family},'
            f"{socket.SOCK_STREAM},{socket.IPPROTO_TCP}}}, {{}}): {reason}",
        ) from exc
    if not infos:
        raise OpenError(text, f'getaddrinfo("{host}", "{port}"): no address')
    return [(info[0], info[4]) for info in infos]


def expect_params(address: Address, count: int, *, non_empty: bool = False) -> tuple[str, ...]:
    """The address's ``count`` parameters, or socat's "wrong number of parameters" error.

    ``non_empty``: an empty parameter counts as missing (a path, for files and sockets).
    """
    if len(address.params) != count or (non_empty and not all(address.params)):
        raise OpenError(
            address_text(address),
            f"{address.keyword}: wrong number of parameters "
            f"({len(address.params)} instead of {count})",
        )
    return address.params


async def connect(address: Address, ctx: OpenContext) -> Stream:
    """Open ``TCP:<host>:<port>`` (and ``TCP4``/``TCP6``): try each resolved address in turn."""
    text = address_text(address)
    host, port = expect_params(address, 2)
    options = address.options
    destinations.check_name(strip_brackets(host), text)  # a denied name is not even looked up
    family = family_of(address, ctx)
    targets = await resolve(strip_brackets(host), port, family, resolver_flags(options, 0), text)
    bind_text = options.text("bind")
    sourceport = options.integer("sourceport")
    for index, (target_family, target) in enumerate(targets):
        logger.log(NOTICE, "opening connection to %s", format_sockaddr(target_family, target))
        try:
            destinations.check(target_family, target, text, strip_brackets(host))
            sock = await _connect_one(target_family, target, options, bind_text, sourceport, text)
        except OpenError as exc:
            if index + 1 < len(targets):
                # socat: further addresses remain, so this failure is only info.
                logger.info("%s", exc.reason)
                continue
            raise
        try:
            local = format_sockaddr(sock.family, sock.getsockname())
        except OSError:
            local = format_sockaddr(sock.family, "?")
        logger.log(NOTICE, "successfully connected from local address %s", local)
        return SocketStream(sock)
    raise AssertionError("unreachable: resolve() returns at least one address")


async def _connect_one(
    family: int,
    target: tuple[object, ...],
    options: Options,
    bind_text: str | None,
    sourceport: int | None,
    text: str,
) -> socket.socket:
    sock = new_socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, text)
    try:
        sock.setblocking(False)
        apply_socket_options(sock, options, EARLY_OPTIONS, text)
        apply_setsockopt(sock, options, CONNECTION_FORMS, text)
        if options.flag("lowport") and sourceport is None:
            await _bind_low_port(sock, family, bind_text, text)
        elif bind_text is not None or sourceport is not None:
            await _bind_client(sock, family, bind_text, sourceport, text)
        apply_socket_options(sock, options, _STREAM_OPTIONS, text)
        await _connect_socket(sock, family, target, options.seconds("connect-timeout"), text)
    except BaseException:
        sock.close()
        raise
    return sock


async def _bind_client(
    sock: socket.socket,
    family: int,
    bind_text: str | None,
    sourceport: int | None,
    text: str,
) -> None:
    host, port = bind_option(bind_text, text)
    if sourceport is not None:
        port = str(sourceport)
    local = await resolve(host, port or "0", family, socket.AI_PASSIVE, text)
    bind_socket(sock, local[0][1], text)


async def _bind_low_port(
    sock: socket.socket, family: int, bind_text: str | None, text: str
) -> None:
    """``lowport``: bind to a free port of 640..1023, starting at a random one (needs root)."""
    start = LOWPORT_RANGE.start + int.from_bytes(os.urandom(2), "big") % len(LOWPORT_RANGE)
    ports = [*range(start, LOWPORT_RANGE.stop), *range(LOWPORT_RANGE.start, start)]
    for port in ports:
        try:
            await _bind_client(sock, family, bind_text, port, text)
            return
        except OpenError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                continue
            raise
    raise OpenError(text, "no low port available")


async def _connect_socket(
    sock: socket.socket,
    family: int,
    target: tuple[object, ...],
    timeout: float | None,
    text: str,
) -> None:
    loop = asyncio.get_running_loop()
    shown = format_sockaddr(family, target)
    try:
        # socat: "connect-timeout=<seconds>: Abort the connection attempt after
        # the given time with error status."
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, target)
    except TimeoutError:
        raise OpenError(text, f"connecting to {shown}: Connection timed out") from None
    except OSError as exc:
        length = sockaddr_length(family, target)
        raise OpenError(
            text, f"connect({sock.fileno()}, {shown}, {length}): {strerror(exc)}"
        ) from exc


async def listen(address: Address, ctx: OpenContext) -> Listener:
    """Open ``TCP-LISTEN:<port>`` (and ``TCP4-LISTEN``/``TCP6-LISTEN``): bind and listen now."""
    text = address_text(address)
    (port,) = expect_params(address, 1)
    options = address.options
    early = take_early(address, ctx.family)
    if early is not None:  # bound at start-up (sockbind.listen_early), before the event loop
        return TcpListener(early, text, options)
    host, family, dual_stack = listen_choice(address, ctx.family, text)
    try:
        return await _listen_on(host, port, family, dual_stack, options, text)
    except OpenError as exc:
        cause = exc.__cause__
        if dual_stack and isinstance(cause, OSError) and cause.errno == errno.EAFNOSUPPORT:
            # A kernel without IPv6: listen on IPv4 as socat does on such hosts.
            logger.info("%s", exc.reason)
            return await _listen_on(host, port, socket.AF_INET, False, options, text)
        raise


async def _listen_on(
    host: str | None, port: str, family: int, dual_stack: bool, options: Options, text: str
) -> Listener:
    flags = resolver_flags(options, socket.AI_PASSIVE)
    local_family, local = (await resolve(host, port, family, flags, text))[0]
    sock = listening_socket(local_family, local, dual_stack, options, text)
    return TcpListener(sock, text, options)
