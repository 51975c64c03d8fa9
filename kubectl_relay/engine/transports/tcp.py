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
from collections.abc import Mapping
from typing import Any

from .. import destinations
from ..addresses import Address
from ..errors import AcceptTimeout, OpenError
from ..log import NOTICE, logger
from ..options import Network, Options
from .base import Listener, OpenContext, Stream, wait_readable
from .sockets import SocketStream, format_sockaddr, ip_text
from .sockopt import CONNECTION_FORMS, LISTEN_FORMS, apply_setsockopt

#: socat's default ``backlog`` is 5 ("1 seems to cause problems under some
#: load", xio-listen.c), which overflows as soon as a few clients connect at
#: once: their SYNs are dropped and they wait for the retransmission (1 s, then
#: 3 s...). We deliberately deviate and default to 512, capped at the kernel's
#: limit; ``backlog=`` still sets any value.
DEFAULT_BACKLOG = min(512, socket.SOMAXCONN)

#: Integer socket options settable from an address: name -> (level, optname).
#: socat applies each with ``setsockopt(fd, level, optname, {value}, 4)``.
SOCKET_OPTIONS: Mapping[str, tuple[int, int]] = {
    "reuseaddr": (socket.SOL_SOCKET, socket.SO_REUSEADDR),
    "rcvbuf": (socket.SOL_SOCKET, socket.SO_RCVBUF),
    "sndbuf": (socket.SOL_SOCKET, socket.SO_SNDBUF),
    "keepalive": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "reuseport": (socket.SOL_SOCKET, socket.SO_REUSEPORT),
    "nodelay": (socket.IPPROTO_TCP, socket.TCP_NODELAY),
    "keepidle": (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    "keepintvl": (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    "keepcnt": (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    "mss": (socket.IPPROTO_TCP, socket.TCP_MAXSEG),
    # Linux also takes the IPv4 level on IPv6 sockets (for IPv4-mapped peers).
    "tos": (socket.IPPROTO_IP, socket.IP_TOS),
    "ttl": (socket.IPPROTO_IP, socket.IP_TTL),
}

#: Options that must be set before bind()/connect()/listen() to take effect
#: (buffer sizes decide the TCP window scale announced in the SYN).
_EARLY_OPTIONS = ("reuseaddr", "reuseport", "rcvbuf", "sndbuf", "mss")
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

#: ``pf=`` values (socat: "pf=<string> ... ip4, ip6") -> address family.
_PROTOCOL_FAMILIES: Mapping[str, int] = {
    "ip4": socket.AF_INET,
    "ipv4": socket.AF_INET,
    "inet": socket.AF_INET,
    "4": socket.AF_INET,
    "2": socket.AF_INET,
    "ip6": socket.AF_INET6,
    "ipv6": socket.AF_INET6,
    "inet6": socket.AF_INET6,
    "6": socket.AF_INET6,
    "10": socket.AF_INET6,
}

_KEYWORD_FAMILIES: Mapping[str, int] = {
    "TCP4": socket.AF_INET,
    "TCP6": socket.AF_INET6,
    "TCP4-LISTEN": socket.AF_INET,
    "TCP6-LISTEN": socket.AF_INET6,
}


def address_text(address: Address) -> str:
    """How errors name an address: its canonical text, else its keyword."""
    return str(address) or address.keyword


def strerror(exc: OSError) -> str:
    """The C library's text for an error, as socat prints it after the call."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc)


def sockaddr_length(family: int, address: object) -> int:
    """The ``socklen_t`` socat prints with a socket address.

    For UNIX paths socat computes a tight length (``unix-tightsocklen``
    defaults to 1): the path length plus the 2-byte family field.
    """
    if family == socket.AF_INET:
        return 16
    if family == socket.AF_INET6:
        return 28
    if isinstance(address, str):
        return 2 + len(os.fsencode(address))
    if isinstance(address, bytes):
        return 2 + len(address)
    return 0


def apply_socket_options(
    sock: socket.socket, options: Options, names: tuple[str, ...], text: str
) -> None:
    """Set the integer socket options among ``names`` that ``options`` holds."""
    for name in names:
        if name not in options or name not in SOCKET_OPTIONS:
            continue
        value = options[name]
        if isinstance(value, bool):
            number = int(value)
        elif isinstance(value, int):
            number = value
        else:
            continue
        if sock.family == socket.AF_UNIX and SOCKET_OPTIONS[name][0] == socket.IPPROTO_TCP:
            continue
        set_int_option(sock, *SOCKET_OPTIONS[name], number, text)


def set_int_option(sock: socket.socket, level: int, optname: int, value: int, text: str) -> None:
    """``setsockopt`` with socat's error wording on failure."""
    try:
        sock.setsockopt(level, optname, value)
    except OSError as exc:
        raise OpenError(
            text,
            f"setsockopt({sock.fileno()}, {level}, {optname}, {{{value}}}, 4): {strerror(exc)}",
        ) from exc


def bind_socket(sock: socket.socket, address: object, text: str) -> None:
    """``bind`` with socat's error wording: ``bind(5, {AF=2 0.0.0.0:80}, 16): ...``."""
    try:
        sock.bind(address)  # type: ignore[arg-type]
    except OSError as exc:
        shown = format_sockaddr(sock.family, address)
        length = sockaddr_length(sock.family, address)
        raise OpenError(
            text, f"bind({sock.fileno()}, {{{shown}}}, {length}): {strerror(exc)}"
        ) from exc


def listen_backlog(options: Options) -> int:
    """The ``backlog`` option, or our larger default (see ``DEFAULT_BACKLOG``)."""
    backlog = options.integer("backlog", DEFAULT_BACKLOG)
    assert backlog is not None
    return backlog


def listen_socket(sock: socket.socket, options: Options, text: str) -> None:
    """``listen`` with the ``backlog`` option or our larger default (see ``DEFAULT_BACKLOG``)."""
    backlog = listen_backlog(options)
    try:
        sock.listen(backlog)
    except OSError as exc:
        raise OpenError(text, f"listen({sock.fileno()}, {backlog}): {strerror(exc)}") from exc


def new_socket(family: int, kind: int, proto: int, text: str) -> socket.socket:
    """``socket`` with socat's error wording."""
    try:
        return socket.socket(family, kind, proto)
    except OSError as exc:
        raise OpenError(text, f"socket({family}, {kind}, {proto}): {strerror(exc)}") from exc


class SocketListener(Listener):
    """A listening stream socket and socat's accept loop over it.

    Each ``accept`` logs ``listening on ...`` (socat does so every time it
    waits), accepts, logs ``accepting connection from ... on ...``, and
    hands the connection to ``_admit``, which may refuse it (``range``,
    ``sourceport``); a refused peer is closed and the loop goes on.
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

    async def accept(self) -> Stream:
        while True:
            logger.log(NOTICE, "listening on %s", self.label)
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


def split_bind(text: str) -> tuple[str | None, str | None]:
    """``bind=`` for IP addresses: ``host``, ``host:port``, ``[ipv6]:port`` or ``:port``."""
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end >= 0 else "?"
        if end < 0 or (rest and not rest.startswith(":")):
            raise ValueError(text)
        return text[1:end] or None, rest[1:] or None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host or None, port or None
    # A bare host, or an IPv6 address without brackets (no port then).
    return text or None, None


def _bind_option(bind_text: str | None, text: str) -> tuple[str | None, str | None]:
    if bind_text is None:
        return None, None
    try:
        return split_bind(bind_text)
    except ValueError:
        raise OpenError(text, f'bind="{bind_text}": not a valid address') from None


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def family_of(address: Address, ctx: OpenContext) -> int:
    """The address family: option ``pf`` first, then the keyword's 4/6, then ``-4``/``-6``.

    socat applies ``-4``/``-6`` when the keyword leaves it open and lets
    ``pf`` override both (``retropt_socket_pf`` runs last).
    """
    value = address.options.get("pf")
    if value is not None:
        family = _PROTOCOL_FAMILIES.get(str(value).lower())
        if family is None:
            raise OpenError(address_text(address), f'unknown protocol family "{value}"')
        return family
    return _KEYWORD_FAMILIES.get(address.keyword, ctx.family)


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
    targets = await resolve(strip_brackets(host), port, family, 0, text)
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
        apply_socket_options(sock, options, _EARLY_OPTIONS, text)
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
    host, port = _bind_option(bind_text, text)
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
    family = family_of(address, ctx)
    host, _ = _bind_option(options.text("bind"), text)
    dual_stack = False
    if family == socket.AF_UNSPEC and host is None:
        family, dual_stack = default_listen_family()
    try:
        return await _listen_on(host, port, family, dual_stack, options, text)
    except OpenError as exc:
        cause = exc.__cause__
        if dual_stack and isinstance(cause, OSError) and cause.errno == errno.EAFNOSUPPORT:
            # A kernel without IPv6: listen on IPv4 as socat does on such hosts.
            logger.info("%s", exc.reason)
            return await _listen_on(host, port, socket.AF_INET, False, options, text)
        raise


def default_listen_family() -> tuple[int, bool]:
    """The family of a listener given no ``pf``, 4/6 keyword, ``-4``/``-6`` or ``bind``.

    socat's man page: "The IP version is 4 or the one specified with address
    option pf, socat option (-4, -6), or environment variable
    SOCAT_DEFAULT_LISTEN_IP". ``SOCAT_DEFAULT_LISTEN_IP=0`` asks for one
    dual-stack IPv6 socket that takes IPv4 peers too. Returns (family, dual_stack).
    """
    choice = os.environ.get("SOCAT_DEFAULT_LISTEN_IP", "4").strip().lower()
    if choice in ("6", "ip6", "ipv6"):
        return socket.AF_INET6, False
    if choice == "0" and socket.has_ipv6:
        return socket.AF_INET6, True
    return socket.AF_INET, False


async def _listen_on(
    host: str | None, port: str, family: int, dual_stack: bool, options: Options, text: str
) -> Listener:
    local_family, local = (await resolve(host, port, family, socket.AI_PASSIVE, text))[0]
    sock = new_socket(local_family, socket.SOCK_STREAM, socket.IPPROTO_TCP, text)
    try:
        # socat 1.8 sets SO_REUSEADDR on TCP listeners unless "reuseaddr="
        # (xiosock_reuseaddr: "Option not applied: set it to 1").
        if "reuseaddr" not in options:
            set_int_option(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1, text)
        v6only = options.get("ipv6-v6only")
        if local_family == socket.AF_INET6 and (v6only is not None or dual_stack):
            # Our implicit [::] listener exists to take IPv4 peers too, so it
            # does not depend on the host's net.ipv6.bindv6only default.
            value = int(v6only) if isinstance(v6only, bool | int) else 0
            set_int_option(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, value, text)
        apply_socket_options(sock, options, _EARLY_OPTIONS, text)
        apply_setsockopt(sock, options, LISTEN_FORMS, text)
        bind_socket(sock, local, text)
        listen_socket(sock, options, text)
        return TcpListener(sock, text, options)
    except BaseException:
        sock.close()
        raise
