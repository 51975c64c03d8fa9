"""socat addresses: ``KEYWORD[:param...][,option[=value]...]`` as frozen values.

``ADDRESS_KINDS`` is the table of address types (one ``AddressKind`` each);
``parse_address`` turns address text into an ``Address`` or, for ``A!!B``, a
``DualAddress``, checking the keyword, the number of parameters and the
options. Parsing never touches a socket or a file.

Keywords follow socat's man page: "Keywords are case insensitive. For a few
special address types, the keyword may be omitted: Address specifications
starting with a number are assumed to be FD (raw file descriptor) addresses;
if a '/' is found before the first ':' or ',', GOPEN (generic file open) is
assumed." socat's code takes only a single digit as FD; any number is
accepted here, which turns socat's error for ``10`` into what the man page
promises.

Host names in brackets: socat keeps brackets in parameters (``TCP:[::1]:80``)
so that an IPv6 address can hold colons, and strips them when it resolves the
host. ``parse_address`` strips one pair of brackets around a whole host
parameter (``HOST_PARAMS``), so transports get ``::1``; ``str()`` puts them
back where the host contains a colon.
"""

from __future__ import annotations

import re

from .errors import AddressError, shorten
from .grammar import PARAM_ENDS, RawAddress, quote, tokenize
from .options import Group, Options, format_option, parse_options
from .records import Record

# ``typing`` takes milliseconds to import, and parsing the first address is all
# a TCP listener waits for at start-up (``cli``): mypy reads this name as
# typing's own, and the annotations are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

_G = Group
_IP = _G.IP4 | _G.IP6
# An inherited descriptor can be anything, so socat accepts the options of all
# the kinds it might be.
# TERMIOS (raw, echo...): on a terminal we were given (transports/terminal.py).
_STDIO_GROUPS = _G.FD | _G.FIFO | _G.CHR | _G.BLK | _G.REG | _G.SOCKET | _G.UNIX | _G.TERMIOS
_STDIO_GROUPS |= _IP | _G.UDP | _G.TCP
_TCP_CONNECT = _G.FD | _G.SOCKET | _G.CHILD | _G.RETRY | _G.TCP
_TCP_LISTEN = _G.FD | _G.SOCKET | _G.LISTEN | _G.CHILD | _G.RETRY | _G.RANGE | _G.TCP
_UDP_CONNECT = _G.FD | _G.SOCKET | _G.UDP
_UDP_LISTEN = _G.FD | _G.SOCKET | _G.LISTEN | _G.CHILD | _G.RANGE | _G.UDP
_UDP_RECVFROM = _G.FD | _G.SOCKET | _G.CHILD | _G.RANGE | _G.UDP
# TERMIOS: the terminal of option pty (socat's EXEC and SYSTEM have the group).
_PROCESS = _G.FD | _G.FIFO | _G.SOCKET | _G.EXEC | _G.FORK | _G.PTY | _G.PARENT | _G.TERMIOS
_FILE = _G.FD | _G.FIFO | _G.CHR | _G.BLK | _G.REG | _G.NAMED | _G.OPEN | _G.TERMIOS
# socat 1.8 (xio-socks.c, xio-socks5.c, xio-proxy.c): a TCP client with its
# own option group; the SOCKS and HTTP clients also take fork (CHILD).
_SOCKS = _G.FD | _G.SOCKET | _IP | _G.TCP | _G.SOCKS | _G.CHILD | _G.RETRY
_UNIX_DGRAM = _G.FD | _G.SOCKET | _G.NAMED | _G.UNIX | _G.RETRY
# socat.1: "Option groups are the same as with the related UNIX addresses,
# except that the ABSTRACT addresses are not member of the NAMED group."
_ABSTRACT = _G.FD | _G.SOCKET | _G.UNIX | _G.RETRY
_HTTP_PROXY = _G.FD | _G.SOCKET | _IP | _G.TCP | _G.HTTP | _G.CHILD | _G.RETRY

#: Parameters that name a host; their brackets are stripped (``[::1]`` -> ``::1``).
HOST_PARAMS = frozenset(
    {"host", "address", "socks-server", "target-host", "listen-host", "proxy-server"}
)


class AddressKind(Record):
    """One address type: its keyword, parameters and accepted option groups.

    ``params`` are the parameter names in order, as socat's help shows them;
    the last ``optional`` of them may be left out (``PIPE`` without a name is
    an unnamed pipe), and so may the one named ``skippable`` wherever it
    stands (``SOCKS5-CONNECT:<socks-server>[:<socks-port>]:<target-host>:...``).
    ``listening`` kinds are passive: they wait for peers.
    """

    __slots__ = ("aliases", "groups", "keyword", "listening", "optional", "params", "skippable")
    keyword: Final[str]
    params: Final[tuple[str, ...]]
    groups: Final[Group]
    aliases: Final[tuple[str, ...]]
    listening: Final[bool]
    optional: Final[int]
    skippable: Final[str | None]

    def __init__(self, keyword: str, params: tuple[str, ...], groups: Group,
                 aliases: tuple[str, ...] = (), listening: bool = False, optional: int = 0,
                 skippable: str | None = None) -> None:
        self.keyword = keyword
        self.params = params
        self.groups = groups
        self.aliases = aliases
        self.listening = listening
        self.optional = optional
        self.skippable = skippable

    @property
    def min_params(self) -> int:
        """The fewest parameters the address accepts."""
        return len(self.params) - self.optional - (self.skippable is not None)

    @property
    def max_params(self) -> int:
        """The most parameters the address accepts."""
        return len(self.params)

    @property
    def syntax(self) -> str:
        """The parameters as socat's help writes them: ``:<host>:<port>``."""
        last_required = len(self.params) - self.optional
        return "".join(
            f"[:<{name}>]" if index >= last_required or name == self.skippable else f":<{name}>"
            for index, name in enumerate(self.params)
        )

    def param_names(self, count: int) -> tuple[str, ...]:
        """The names of the parameters when ``count`` of them are written.

        The ``skippable`` parameter is the first to go, then the optional
        ones from the end.
        """
        names = self.params
        if self.skippable is not None and count < len(names):
            names = tuple(name for name in names if name != self.skippable)
        return names[:count]


def _family(
    keyword: str,
    params: tuple[str, ...],
    groups: Group,
    aliases: tuple[str, ...] = (),
    *,
    listening: bool = False,
) -> tuple[AddressKind, ...]:
    """``keyword`` for both IP versions plus its ``4`` and ``6`` variants.

    ``TCP-LISTEN`` gives ``TCP-LISTEN``, ``TCP4-LISTEN`` and ``TCP6-LISTEN``;
    the aliases follow the same pattern (``TCP-L``, ``TCP4-L``, ``TCP6-L``).
    """
    kinds = [AddressKind(keyword, params, groups | _IP, aliases, listening)]
    for version, group in (("4", _G.IP4), ("6", _G.IP6)):
        kinds.append(
            AddressKind(
                _versioned(keyword, version),
                params,
                groups | group,
                tuple(_versioned(alias, version) for alias in aliases),
                listening,
            )
        )
    return tuple(kinds)


def _versioned(name: str, version: str) -> str:
    """``TCP-L`` -> ``TCP4-L``: the version goes after the first word."""
    head, dash, tail = name.partition("-")
    return head + version + dash + tail


#: Every supported address type. The keywords are exactly the keys of the
#: transport registry (``transports.OPENERS`` and ``transports.LISTENERS``).
ADDRESS_KINDS: tuple[AddressKind, ...] = (
    AddressKind("STDIO", (), _STDIO_GROUPS, ("-",)),
    AddressKind("STDIN", (), _STDIO_GROUPS),
    AddressKind("STDOUT", (), _STDIO_GROUPS),
    AddressKind("STDERR", (), _STDIO_GROUPS),
    AddressKind("FD", ("num",), _STDIO_GROUPS),
    *_family("TCP", ("host", "port"), _TCP_CONNECT, ("TCP-CONNECT", "INET")),
    *_family(
        "TCP-LISTEN", ("port",), _TCP_LISTEN, ("TCP-L", "INET-L", "INET-LISTEN"), listening=True
    ),
    AddressKind(
        "UNIX-CONNECT", ("filename",), _G.FD | _G.SOCKET | _G.NAMED | _G.RETRY | _G.UNIX, ("LOCAL",)
    ),
    AddressKind(
        "UNIX-CLIENT", ("filename",), _G.FD | _G.SOCKET | _G.NAMED | _G.RETRY | _G.UNIX, ("UNIX",)
    ),
    AddressKind(
        "UNIX-LISTEN",
        ("filename",),
        _G.FD | _G.SOCKET | _G.NAMED | _G.LISTEN | _G.CHILD | _G.RETRY | _G.UNIX,
        ("UNIX-L",),
        listening=True,
    ),
    AddressKind(
        "PIPE", ("filename",), _G.FD | _G.FIFO | _G.NAMED | _G.OPEN, ("ECHO", "FIFO"), optional=1
    ),
    AddressKind("OPEN", ("filename",), _FILE, ("FILE",)),
    AddressKind("GOPEN", ("filename",), _FILE | _G.SOCKET | _G.UNIX),
    AddressKind("CREATE", ("filename",), _G.FD | _G.REG | _G.NAMED, ("CREAT",)),
    AddressKind("EXEC", ("command-line",), _PROCESS | _G.UNIX),
    AddressKind("SYSTEM", ("shell-command",), _PROCESS | _G.UNIX),
    AddressKind("SHELL", ("shell-command",), _PROCESS | _G.UNIX | _G.SHELL),
    *_family("UDP", ("host", "port"), _UDP_CONNECT, ("UDP-CONNECT",)),
    *_family("UDP-SENDTO", ("host", "port"), _UDP_CONNECT, ("UDP-SEND",)),
    *_family("UDP-LISTEN", ("port",), _UDP_LISTEN, ("UDP-L",), listening=True),
    *_family("UDP-RECVFROM", ("port",), _UDP_RECVFROM, listening=True),
    *_family("UDP-RECV", ("port",), _G.FD | _G.SOCKET | _G.RANGE | _G.UDP),
    *_family(
        "UDP-DATAGRAM", ("address", "port"), _G.FD | _G.SOCKET | _G.RANGE | _G.UDP, ("UDP-DGRAM",)
    ),
    AddressKind("UNIX-SENDTO", ("filename",), _UNIX_DGRAM, ("UNIX-SEND",)),
    AddressKind("UNIX-RECV", ("filename",), _UNIX_DGRAM),
    AddressKind("UNIX-RECVFROM", ("filename",), _UNIX_DGRAM | _G.CHILD, listening=True),
    AddressKind("ABSTRACT-CONNECT", ("filename",), _ABSTRACT),
    AddressKind("ABSTRACT-CLIENT", ("filename",), _ABSTRACT),
    AddressKind(
        "ABSTRACT-LISTEN", ("filename",), _ABSTRACT | _G.LISTEN | _G.CHILD, listening=True
    ),
    AddressKind("ABSTRACT-SENDTO", ("filename",), _ABSTRACT),
    AddressKind("ABSTRACT-RECV", ("filename",), _ABSTRACT),
    AddressKind("ABSTRACT-RECVFROM", ("filename",), _ABSTRACT | _G.CHILD, listening=True),
    AddressKind(
        "ACCEPT-FD",
        ("fdnum",),
        _G.FD | _G.SOCKET | _G.UNIX | _IP | _G.TCP | _G.UDP | _G.CHILD | _G.RANGE | _G.RETRY,
        ("ACCEPT",),
        listening=True,
    ),
    AddressKind("PTY", (), _G.FD | _G.NAMED | _G.PTY | _G.TERMIOS),
    AddressKind(
        "VSOCK-CONNECT", ("cid", "port"), _G.FD | _G.SOCKET | _G.CHILD | _G.RETRY, ("VSOCK",)
    ),
    AddressKind(
        "VSOCK-LISTEN",
        ("port",),
        _G.FD | _G.SOCKET | _G.LISTEN | _G.CHILD | _G.RETRY,
        ("VSOCK-L",),
        listening=True,
    ),
    # Generic sockets (generic.py). socat gives the RECV, RECVFROM, LISTEN and
    # DATAGRAM forms RANGE as well, in its own dalan notation: not offered here.
    AddressKind(
        "SOCKET-CONNECT",
        ("domain", "protocol", "remote-address"),
        _G.FD | _G.SOCKET | _G.CHILD | _G.RETRY,
    ),
    AddressKind(
        "SOCKET-LISTEN",
        ("domain", "protocol", "local-address"),
        _G.FD | _G.SOCKET | _G.LISTEN | _G.CHILD | _G.RETRY,
        listening=True,
    ),
    AddressKind(
        "SOCKET-SENDTO", ("domain", "type", "protocol", "remote-address"), _G.FD | _G.SOCKET
    ),
    AddressKind(
        "SOCKET-DATAGRAM",
        ("domain", "type", "protocol", "remote-address"),
        _G.FD | _G.SOCKET,
        ("DATAGRAM", "DGRAM"),
    ),
    AddressKind("SOCKET-RECV", ("domain", "type", "protocol", "local-address"), _G.FD | _G.SOCKET),
    AddressKind(
        "SOCKET-RECVFROM",
        ("domain", "type", "protocol", "local-address"),
        _G.FD | _G.SOCKET | _G.CHILD,
        listening=True,
    ),
    # socat's help shows ":<filename>" for SOCKETPAIR, which takes no parameter.
    AddressKind("SOCKETPAIR", (), _G.FD | _G.SOCKET),
    AddressKind(
        "OPENSSL", ("host", "port"), _TCP_CONNECT | _IP | _G.OPENSSL, ("OPENSSL-CONNECT", "SSL")
    ),
    AddressKind(
        "OPENSSL-LISTEN", ("port",), _TCP_LISTEN | _IP | _G.OPENSSL, ("SSL-L",), listening=True
    ),
    AddressKind("SOCKS4", ("socks-server", "host", "port"), _SOCKS, ("SOCKS",)),
    AddressKind("SOCKS4A", ("socks-server", "host", "port"), _SOCKS),
    AddressKind(
        "SOCKS5-CONNECT",
        ("socks-server", "socks-port", "target-host", "target-port"),
        _SOCKS,
        ("SOCKS5",),
        skippable="socks-port",
    ),
    AddressKind(
        "SOCKS5-LISTEN",
        ("socks-server", "socks-port", "listen-host", "listen-port"),
        _SOCKS,
        ("SOCKS5-BIND",),
        skippable="socks-port",
    ),
    AddressKind("PROXY", ("proxy-server", "host", "port"), _HTTP_PROXY, ("PROXY-CONNECT",)),
    # A relay extension (transports/proxyserver.py): the server side of the
    # three above; its options are those of the TCP connection it makes.
    AddressKind("PROXY-SERVER", (), _G.FD | _G.SOCKET | _IP | _G.TCP, ("SOCKS-SERVER",)),
    # A relay extension (transports/mux.py): each opening is one stream on the
    # one multiplexed connection accepted on the port; not a listener itself.
    AddressKind("MUX-LISTEN", ("port",), _G.FD | _G.SOCKET | _IP | _G.LISTEN | _G.TCP),
    # Its mirror (transports/mux.py): a listener whose sessions are the streams
    # that the one multiplexed connection accepted on the port opens.
    AddressKind(
        "MUX-ACCEPT",
        ("port",),
        _G.FD | _G.SOCKET | _IP | _G.LISTEN | _G.CHILD | _G.TCP,
        listening=True,
    ),
)

_BY_NAME: dict[str, AddressKind] = {
    name: kind for kind in ADDRESS_KINDS for name in (kind.keyword, *kind.aliases)
}
_FD = _BY_NAME["FD"]
_GOPEN = _BY_NAME["GOPEN"]
_DIGITS = re.compile(r"[0-9]+")
#: The largest descriptor number (a C int).
_FD_MAX = 2**31 - 1
_C_UNSIGNED = re.compile(r"\s*\+?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def address_kind(keyword: str) -> AddressKind | None:
    """The address type called ``keyword`` (canonical or alias, any case), or ``None``."""
    return _BY_NAME.get(keyword.upper())


class Address(Record):
    """One parsed address.

    ``keyword`` is the canonical upper-case keyword after alias resolution
    (``TCP-L`` -> ``TCP-LISTEN``, ``-`` -> ``STDIO``, a bare number -> ``FD``,
    a bare path -> ``GOPEN``); ``params`` are the colon-separated parameters
    with quoting removed (a ``host`` without its brackets, an ``FD`` number in
    decimal).
    """

    __slots__ = ("keyword", "options", "params")
    keyword: Final[str]
    params: Final[tuple[str, ...]]
    options: Final[Options]

    def __init__(self, keyword: str, params: tuple[str, ...] = (),
                 options: Options | None = None) -> None:
        self.keyword = keyword
        self.params = params
        self.options = Options() if options is None else options

    def __str__(self) -> str:
        """The canonical spelling: ``TCP-LISTEN:8080,fork,reuseaddr``.

        Upper-case keyword, parameters quoted where needed, options by their
        canonical names in the order given; ``parse_address`` reads it back
        to an equal value.
        """
        kind = address_kind(self.keyword)
        names = kind.param_names(len(self.params)) if kind else ()
        parts = [self.keyword]
        for index, param in enumerate(self.params):
            is_host = index < len(names) and names[index] in HOST_PARAMS
            parts.append(_format_host(param) if is_host else quote(param, PARAM_ENDS))
        text = ":".join(parts)
        for name, value in self.options.items():
            text += "," + format_option(name, value)
        return text


class DualAddress(Record):
    """``A!!B``: read from ``reader``, write to ``writer``."""

    __slots__ = ("reader", "writer")
    reader: Final[Address]
    writer: Final[Address]

    def __init__(self, reader: Address, writer: Address) -> None:
        self.reader = reader
        self.writer = writer

    def __str__(self) -> str:
        """``reader!!writer`` in canonical spelling."""
        return f"{self.reader}!!{self.writer}"


AddressSpec = Address | DualAddress


def parse_address(text: str) -> AddressSpec:
    """Parse one command-line address argument.

    Raises ``AddressError`` (unknown keyword, wrong number of parameters,
    unclosed quote or bracket, bad FD number) or ``OptionError`` (unknown
    option, option of a group the address does not accept, bad value), with
    socat's wording.
    """
    parts = tuple(_single(raw, text) for raw in tokenize(text))
    if len(parts) == 1:
        return parts[0]
    return DualAddress(parts[0], parts[1])


def is_listening(address: Address) -> bool:
    """Whether ``address`` is passive (``TCP-LISTEN``, ``UDP-RECVFROM``...)."""
    kind = address_kind(address.keyword)
    return kind is not None and kind.listening


def runs_program(spec: AddressSpec) -> bool:
    """Whether ``spec`` starts a program: ``EXEC``, ``SYSTEM``, ``SHELL``, either side of ``!!``."""
    parts = (spec.reader, spec.writer) if isinstance(spec, DualAddress) else (spec,)
    return any(
        (kind := address_kind(part.keyword)) is not None and bool(kind.groups & _G.EXEC)
        for part in parts
    )


def _single(raw: RawAddress, text: str) -> Address:
    kind, written, params = _resolve(raw, text)
    if not kind.min_params <= len(params) <= kind.max_params:
        # socat 1.8 (xiohelp_syntax): "%s: wrong number of parameters (%d instead
        # of %d): usage: %s%s", naming the keyword as the user wrote it.
        raise AddressError(
            text,
            f"{written}: wrong number of parameters ({len(params)} instead of "
            f"{kind.max_params}): usage: {written}{kind.syntax}",
            raw.position,
        )
    names = kind.param_names(len(params))
    cleaned = tuple(
        _clean(kind, name, param, text, raw) for name, param in zip(names, params, strict=True)
    )
    return Address(kind.keyword, cleaned, parse_options(raw.options, kind))


def _resolve(raw: RawAddress, text: str) -> tuple[AddressKind, str, tuple[str, ...]]:
    """The address kind, the keyword as socat names it in messages, and the parameters."""
    kind = address_kind(raw.keyword)
    if kind is not None:
        return kind, raw.keyword, raw.params
    if _DIGITS.fullmatch(raw.keyword):
        return _FD, _FD.keyword, (raw.keyword, *raw.params)
    if "/" in raw.keyword:
        return _GOPEN, _GOPEN.keyword, (raw.keyword, *raw.params)
    raise AddressError(text, f'unknown device/address "{raw.keyword}"', raw.position)


def _clean(kind: AddressKind, name: str, param: str, text: str, raw: RawAddress) -> str:
    if name in HOST_PARAMS and len(param) >= 2 and param[0] == "[" and param[-1] == "]":
        return param[1:-1]
    if kind is _FD:
        # socat reads the number with strtoul(..., 0): 10, 0x0a and 012 are all ten.
        if not _C_UNSIGNED.fullmatch(param):
            raise AddressError(text, f'error in FD number "{shorten(param)}"', raw.position)
        digits = param.strip().lstrip("+")
        octal = len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX"
        try:
            number = int(digits, 8) if octal else int(digits, 0)
        except ValueError:  # more digits than Python converts
            number = _FD_MAX + 1
        if number > _FD_MAX:
            # Descriptors are C ints: socat's strtoul result would not fit.
            raise AddressError(text, f'error in FD number "{shorten(param)}"', raw.position)
        return str(number)
    return param


def _format_host(host: str) -> str:
    if ":" in host or (host.startswith("[") and host.endswith("]")):
        return quote(f"[{host}]", PARAM_ENDS)
    return quote(host, PARAM_ENDS)
