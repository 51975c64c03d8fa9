"""Sockets made, configured, bound and listening: the synchronous half of the IP transports.

Nothing here needs the event loop, so a relay whose first address is
``TCP-LISTEN`` listens before ``asyncio`` (and ``ssl``, which asyncio
imports) is loaded: ``listen_early`` binds and listens as soon as the
command line is parsed, and ``tcp.listen`` takes that socket instead of
making a new one. Importing the event loop and the session takes most of a
Python relay's start-up; peers that connect meanwhile wait in the kernel's
listen backlog and are accepted once the loop runs, as with socat's
``backlog`` while it forks. Scripts (and socat's own test suite) that start
a listener and connect a moment later no longer find the port closed.

The helpers give socat's error wording (``bind(5, {AF=2 0.0.0.0:80}, 16):
Address already in use``). The early path logs nothing and gives up quietly
on anything unusual (a name to resolve, an error): the transport then opens
the address as always, with its log lines and errors in socat's order.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from ..addresses import Address
from ..errors import OpenError
from ..options import Options
from .sockopt import LISTEN_FORMS, apply_setsockopt

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
EARLY_OPTIONS = ("reuseaddr", "reuseport", "rcvbuf", "sndbuf", "mss")

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

#: The addresses ``listen_early`` opens before the event loop.
EARLY_KEYWORDS = frozenset({"TCP-LISTEN", "TCP4-LISTEN", "TCP6-LISTEN"})

#: socat's getaddrinfo() flag options (xio-ip.c): option -> flag.
RESOLVER_FLAG_OPTIONS = {
    "ai-addrconfig": socket.AI_ADDRCONFIG,
    "ai-all": socket.AI_ALL,
    "ai-v4mapped": socket.AI_V4MAPPED,
    "ai-passive": socket.AI_PASSIVE,
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


def address_family(address: Address, fallback: int) -> int:
    """The address family: option ``pf`` first, then the keyword's 4/6, then ``fallback``.

    ``fallback`` is ``-4``/``-6``'s family (or ``AF_UNSPEC``): socat applies
    it when the keyword leaves the family open and lets ``pf`` override both
    (``retropt_socket_pf`` runs last).
    """
    value = address.options.get("pf")
    if value is not None:
        family = _PROTOCOL_FAMILIES.get(str(value).lower())
        if family is None:
            raise OpenError(address_text(address), f'unknown protocol family "{value}"')
        return family
    return _KEYWORD_FAMILIES.get(address.keyword, fallback)


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


def bind_option(bind_text: str | None, text: str) -> tuple[str | None, str | None]:
    """The ``bind`` option's host and port (None for what it leaves out)."""
    if bind_text is None:
        return None, None
    try:
        return split_bind(bind_text)
    except ValueError:
        raise OpenError(text, f'bind="{bind_text}": not a valid address') from None


def listen_choice(address: Address, family: int, text: str) -> tuple[str | None, int, bool]:
    """A TCP listener's ``bind`` host, its family and whether it is one dual-stack socket.

    ``family`` is ``-4``/``-6``'s (or ``AF_UNSPEC``); with no ``pf``, 4/6
    keyword, ``-4``/``-6`` or ``bind`` host, ``default_listen_family`` decides.
    """
    chosen = address_family(address, family)
    host, _ = bind_option(address.options.text("bind"), text)
    if chosen == socket.AF_UNSPEC and host is None:
        chosen, dual_stack = default_listen_family()
        return host, chosen, dual_stack
    return host, chosen, False


def resolver_flags(options: Options, flags: int) -> int:
    """``flags`` (the address's default) with the ``ai-*`` options set or cleared."""
    for name, flag in RESOLVER_FLAG_OPTIONS.items():
        if name in options:
            flags = flags | flag if options.flag(name) else flags & ~flag
    return flags


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
        # ``sockets`` loads the event loop: only a failed bind needs its wording.
        from .sockets import format_sockaddr  # noqa: PLC0415

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


def listening_socket(
    family: int, local: object, dual_stack: bool, options: Options, text: str
) -> socket.socket:
    """A TCP socket of ``family`` with the address's options, bound to ``local``, listening."""
    sock = new_socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, text)
    try:
        # socat 1.8 sets SO_REUSEADDR on TCP listeners unless "reuseaddr="
        # (xiosock_reuseaddr: "Option not applied: set it to 1").
        if "reuseaddr" not in options:
            set_int_option(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1, text)
        v6only = options.get("ipv6-v6only")
        if family == socket.AF_INET6 and (v6only is not None or dual_stack):
            # Our implicit [::] listener exists to take IPv4 peers too, so it
            # does not depend on the host's net.ipv6.bindv6only default.
            value = int(v6only) if isinstance(v6only, bool | int) else 0
            set_int_option(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, value, text)
        apply_socket_options(sock, options, EARLY_OPTIONS, text)
        apply_setsockopt(sock, options, LISTEN_FORMS, text)
        bind_socket(sock, local, text)
        listen_socket(sock, options, text)
    except BaseException:
        sock.close()
        raise
    return sock


#: The socket ``listen_early`` made, with the address and ``-4``/``-6`` family it is for.
_early: tuple[Address, int, socket.socket] | None = None


def listen_early(address: Address, family: int) -> None:
    """Listen for ``address`` now if it is a TCP listener on a numeric host and port.

    ``family`` is ``-4``/``-6``'s (or ``AF_UNSPEC``). Anything else, a host
    name (resolving it would wait here, unlike in the event loop) or any
    error leaves it to the transport, which opens it with socat's messages.
    """
    global _early
    close_early()
    if address.keyword not in EARLY_KEYWORDS or len(address.params) != 1:
        return
    text = address_text(address)
    (port,) = address.params
    options = address.options
    try:
        host, chosen, dual_stack = listen_choice(address, family, text)
        if not port:
            return  # "empty port/service": the transport says so
        flags = resolver_flags(options, socket.AI_PASSIVE)
        infos = socket.getaddrinfo(
            host, port, chosen, socket.SOCK_STREAM, socket.IPPROTO_TCP,
            flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
        )
        if infos:
            local_family, _, _, _, local = infos[0]
            sock = listening_socket(local_family, local, dual_stack, options, text)
            _early = (address, family, sock)
    except (OSError, UnicodeError, OpenError):
        return


def take_early(address: Address, family: int) -> socket.socket | None:
    """The socket ``listen_early`` made for this very ``address`` and family, once."""
    global _early
    if _early is None or _early[0] is not address or _early[1] != family:
        return None
    sock = _early[2]
    _early = None
    return sock


def close_early() -> None:
    """Close an early socket no transport took (the run ended before it listened)."""
    global _early
    if _early is not None:
        _early[2].close()
        _early = None
