"""Address options: the table of every option socat knows that the engine supports.

The table is data (one ``OptionSpec`` per option: canonical name, aliases,
value kind, option groups); ``parse_options`` looks each written option up,
checks that the address accepts its group and converts its value with the
converter of its kind. Nothing here depends on a particular option.

socat's man page on groups: "For filtering the options that are useful with
an address type, each option is member of one option group. For each address
type there is a set of option groups allowed. Only options belonging to one of
these address groups may be used". Option keywords are case insensitive.

Numbers are read the way socat reads them (C ``strtoul``/``strtod``):
``0x10`` is hexadecimal, ``010`` octal, modes are always octal. Error messages
reuse socat 1.8.1's wording where socat has one; where socat quotes "the
option" it quotes the option text up to the end of the argument, as socat does.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType

from .errors import OptionError, shorten
from .grammar import OPTION_VALUE_ENDS, RawOption, quote
from .records import Record

# ``typing`` takes milliseconds to import, and parsing the first address is all
# a TCP listener waits for at start-up (``cli``): mypy reads this name as
# typing's own, and the annotations (and OptionTarget, at the end) are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

#: A network accepted by ``range=`` (socat: ``range=<address>/<bits>`` or ``<address>:<mask>``).
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: The typed value of one option after conversion.
OptionValue = bool | int | float | str | tuple[Network, ...]


class Options(Record, Mapping[str, OptionValue]):
    """The converted options of one address, keyed by canonical option name.

    Canonical names are socat's main spellings in lower case (``reuseaddr``,
    ``connect-timeout``, ``max-children``, ``cert``); aliases are resolved by
    the parser. Typed getters keep transports free of casts.
    """

    __slots__ = ("by_name",)
    by_name: Final[Mapping[str, OptionValue]]

    def __init__(self, by_name: Mapping[str, OptionValue] | None = None) -> None:
        self.by_name = {} if by_name is None else by_name

    def __getitem__(self, name: str) -> OptionValue:
        return self.by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def flag(self, name: str, default: bool = False) -> bool:
        """A flag or constant option (``fork``, ``crnl``), ``default`` when absent."""
        value = self.by_name.get(name, default)
        assert isinstance(value, bool), name
        return value

    def integer(self, name: str, default: int | None = None) -> int | None:
        """A numeric option (``backlog``, ``mode``), ``default`` when absent."""
        value = self.by_name.get(name, default)
        assert value is None or (isinstance(value, int) and not isinstance(value, bool)), name
        return value

    def seconds(self, name: str, default: float | None = None) -> float | None:
        """A time option in seconds (``connect-timeout``), ``default`` when absent."""
        value = self.by_name.get(name, default)
        assert value is None or isinstance(value, int | float), name
        return None if value is None else float(value)

    def text(self, name: str, default: str | None = None) -> str | None:
        """A text option (``bind``, ``cert``), ``default`` when absent."""
        value = self.by_name.get(name, default)
        assert value is None or isinstance(value, str), name
        return value

    def networks(self, name: str) -> tuple[Network, ...]:
        """The networks of ``range`` options, empty when absent."""
        value = self.by_name.get(name, ())
        assert isinstance(value, tuple), name
        return value


class Group(enum.Flag):
    """socat's option groups, in socat's order (``-h`` lists them in this order)."""

    FD = enum.auto()
    FIFO = enum.auto()
    CHR = enum.auto()
    BLK = enum.auto()
    REG = enum.auto()
    SOCKET = enum.auto()
    NAMED = enum.auto()
    OPEN = enum.auto()
    EXEC = enum.auto()
    FORK = enum.auto()
    LISTEN = enum.auto()
    SHELL = enum.auto()
    CHILD = enum.auto()
    RETRY = enum.auto()
    TERMIOS = enum.auto()
    RANGE = enum.auto()
    PTY = enum.auto()
    PARENT = enum.auto()
    UNIX = enum.auto()
    IP4 = enum.auto()
    IP6 = enum.auto()
    UDP = enum.auto()
    TCP = enum.auto()
    SOCKS = enum.auto()
    OPENSSL = enum.auto()
    PROCESS = enum.auto()
    APPL = enum.auto()
    HTTP = enum.auto()
    #: socat's "General address options" (``umask``): "may be applied to all address types".
    ADDR = enum.auto()


#: Groups every address accepts: process properties, data-level options, general options.
ANY_ADDRESS = Group.PROCESS | Group.APPL | Group.ADDR


def group_names(groups: Group) -> str:
    """``FD,SOCKET,LISTEN`` for socat's ``groups=`` help column."""
    return ",".join(member.name or "" for member in groups)


class ValueKind(enum.Enum):
    """How an option's value is written and what it becomes."""

    #: ``fork``, ``fork=1``, ``fork=0``: any number, non-zero is true.
    FLAG = "flag"
    #: Like FLAG, and ``reuseaddr=`` (empty) is false: socat 1.8 "If you prefer the
    #: system default (no related setsockopt(...SO_REUSEADDR...) call at all), use
    #: form reuseaddr=".
    FLAG_OR_EMPTY = "flag-or-empty"
    #: ``crnl``: no value allowed; stored as ``True``.
    CONST = "const"
    #: A C integer (``10``, ``0x10``, ``010``); without a value it is 1, as in socat.
    INT = "int"
    #: Like INT, never negative.
    UINT = "uint"
    #: A port number 0..65535.
    PORT = "port"
    #: A byte count.
    SIZE = "size"
    #: Seconds, fractions allowed (``5``, ``0.5``); stored as float.
    SECONDS = "seconds"
    #: An octal permission mode (``0600``); stored as int.
    MODE = "mode"
    #: Any text.
    STRING = "string"
    #: A path name.
    FILENAME = "filename"
    #: ``<ip4>/<bits>``, ``<ip4>:<mask>`` or ``[<ip6>]/<bits>``; stored as a tuple of networks.
    RANGE = "range"


#: The type column of ``-hh`` in socat's terms.
SOCAT_TYPE_NAMES: Mapping[ValueKind, str] = {
    ValueKind.FLAG: "BOOL",
    ValueKind.FLAG_OR_EMPTY: "INT/NULL",
    ValueKind.CONST: "CONST",
    ValueKind.INT: "INT",
    ValueKind.UINT: "UNSIGNED-INT",
    ValueKind.PORT: "UNSIGNED-SHORT",
    ValueKind.SIZE: "SIZE_T",
    ValueKind.SECONDS: "STRUCT-TIMEVAL",
    ValueKind.MODE: "MODE_T",
    ValueKind.STRING: "STRING",
    ValueKind.FILENAME: "FILENAME",
    ValueKind.RANGE: "RANGE",
}

_INT_MAX = 2**31 - 1
_DEFAULT_BOUNDS: Mapping[ValueKind, tuple[int, int]] = {
    ValueKind.INT: (-(2**31), _INT_MAX),
    ValueKind.UINT: (0, 2**32 - 1),
    ValueKind.PORT: (0, 65535),
    ValueKind.SIZE: (0, 2**63 - 1),
    ValueKind.MODE: (0, 0o7777),
}
_COUNT = (0, _INT_MAX)
_BYTE = (0, 255)


class OptionSpec(Record):
    """One option: its canonical name, how its value is read, where it applies."""

    __slots__ = ("aliases", "bounds", "choices", "groups", "kind", "name")
    name: Final[str]
    kind: Final[ValueKind]
    groups: Final[Group]
    aliases: Final[tuple[str, ...]]
    #: Accepted range of a numeric value; ``None`` takes the kind's default.
    bounds: Final[tuple[int, int] | None]
    #: The accepted values of a text option (any case); empty: any text.
    choices: Final[tuple[str, ...]]

    def __init__(self, name: str, kind: ValueKind, groups: Group, aliases: tuple[str, ...] = (),
                 bounds: tuple[int, int] | None = None, choices: tuple[str, ...] = ()) -> None:
        self.name = name
        self.kind = kind
        self.groups = groups
        self.aliases = aliases
        self.bounds = bounds
        self.choices = choices

    @property
    def limits(self) -> tuple[int, int] | None:
        """The accepted numeric range, if the value is an integer."""
        return self.bounds or _DEFAULT_BOUNDS.get(self.kind)


_K = ValueKind
_G = Group

#: socat's boolean terminal flags, by the termios word that holds them (pty.py sets them;
#: the names are the flags' in lower case, so the bits need no table of their own).
TERMIOS_FLAGS: Mapping[str, tuple[str, ...]] = {
    "iflag": (
        "ignbrk", "brkint", "ignpar", "parmrk", "inpck", "istrip", "inlcr", "igncr", "icrnl",
        "iuclc", "ixon", "ixany", "ixoff", "imaxbel",
    ),
    "oflag": ("opost", "olcuc", "onlcr", "ocrnl", "onocr", "onlret", "ofill", "ofdel"),
    "cflag": ("cstopb", "cread", "parenb", "parodd", "hupcl", "clocal", "crtscts"),
    "lflag": (
        "isig", "icanon", "xcase", "echo", "echoe", "echok", "echonl", "echoctl", "echoprt",
        "echoke", "flusho", "noflsh", "tostop", "pendin", "iexten",
    ),
}  # fmt: skip

#: Every supported option. Canonical names are the spellings of socat's man page.
OPTIONS: tuple[OptionSpec, ...] = (
    # Data level, accepted by every address.
    OptionSpec("cr", _K.CONST, _G.APPL),
    OptionSpec("crnl", _K.CONST, _G.APPL, ("crlf",)),
    OptionSpec("ignoreeof", _K.FLAG, _G.APPL, ("ignoreof",)),
    # socat: "readbytes=<bytes> ... Must be greater than 0."
    OptionSpec("readbytes", _K.SIZE, _G.APPL, ("bytes",), (1, 2**63 - 1)),
    OptionSpec("setsid", _K.FLAG, _G.PROCESS, ("sid",)),
    # Signals an EXEC/SYSTEM/SHELL child gets instead of the relay ending (process.py).
    OptionSpec("sighup", _K.CONST, _G.PARENT),
    OptionSpec("sigint", _K.CONST, _G.PARENT),
    OptionSpec("sigquit", _K.CONST, _G.PARENT),
    # socat: "escape=<int> Specifies the numeric code of a character that
    # triggers EOF on the input stream."
    OptionSpec("escape", _K.INT, _G.APPL, (), _BYTE),
    # A relay extension, not in socat: length-prefixed frames (framing.py).
    OptionSpec("frame", _K.STRING, _G.APPL, choices=("len16",)),
    OptionSpec("umask", _K.MODE, _G.ADDR),
    OptionSpec("chdir", _K.FILENAME, _G.ADDR, ("cd",)),
    # FD and file system entries.
    OptionSpec("mode", _K.MODE, _G.FD | _G.NAMED, ("perm",)),
    OptionSpec("append", _K.FLAG, _G.FD | _G.OPEN, ("o-append",)),
    OptionSpec("shut-none", _K.FLAG, _G.FD),
    # Descriptors are always non-blocking here; accepted for socat's command lines.
    OptionSpec("nonblock", _K.FLAG, _G.FD, ("o-nonblock", "o-ndelay", "ndelay")),
    # "Changes the (address dependent) method of ending a connection to just
    # close the file descriptors": no shutdown(), no signal to a child.
    OptionSpec("end-close", _K.FLAG, _G.FD),
    # "Takes it easy when write fails with EPIPE or ECONNRESET and logs the
    # message with notice level instead of error."
    OptionSpec("cool-write", _K.FLAG, _G.FD, ("coolwrite",)),
    OptionSpec("shut-null", _K.FLAG, _G.FD),
    OptionSpec("perm-early", _K.MODE, _G.NAMED),
    OptionSpec("unlink-early", _K.FLAG, _G.NAMED, ("new",)),
    OptionSpec("unlink-close", _K.FLAG, _G.NAMED),
    OptionSpec("creat", _K.FLAG, _G.OPEN, ("create", "o-creat", "o-create")),
    OptionSpec("excl", _K.FLAG, _G.OPEN, ("o-excl",)),
    OptionSpec("trunc", _K.FLAG, _G.OPEN, ("o-trunc",)),
    OptionSpec("rdonly", _K.FLAG, _G.OPEN, ("o-rdonly",)),
    OptionSpec("wronly", _K.FLAG, _G.OPEN, ("o-wronly",)),
    OptionSpec("rdwr", _K.FLAG, _G.OPEN, ("o-rdwr",)),
    # "Sets the O_NOATIME options, so reads do not change the access timestamp."
    OptionSpec("o-noatime", _K.FLAG, _G.FD | _G.OPEN, ("noatime",)),
    # "Sets the O_DIRECT flag": reads bypass the page cache (files.py).
    OptionSpec("o-direct", _K.FLAG, _G.OPEN, ("direct",)),
    # File attributes of ext2 and its successors (chattr(1)), set after open (files.py);
    # socat's aliases: ext2-X and ext3-X always, the bare name where it is free.
    *(
        OptionSpec(f"fs-{name}", _K.FLAG, _G.REG, (f"ext2-{name}", f"ext3-{name}", *bare))
        for name, bare in (
            ("secrm", ("secrm",)),
            ("unrm", ("unrm",)),
            ("compr", ("compr",)),
            ("sync", ("sync",)),
            ("immutable", ("immutable",)),
            ("append", ()),
            ("nodump", ("nodump",)),
            ("noatime", ()),
            ("journal-data", ("journal-data", "journal")),
            ("notail", ()),
            ("dirsync", ("dirsync",)),
            ("topdir", ("topdir",)),
        )
    ),
    # Sockets.
    OptionSpec("bind", _K.STRING, _G.SOCKET),
    OptionSpec("connect-timeout", _K.SECONDS, _G.SOCKET),
    OptionSpec("pf", _K.STRING, _G.SOCKET, ("protocol-family",)),
    OptionSpec("reuseaddr", _K.FLAG_OR_EMPTY, _G.SOCKET, ("so-reuseaddr",)),
    OptionSpec("reuseport", _K.FLAG_OR_EMPTY, _G.SOCKET, ("so-reuseport",)),
    OptionSpec("keepalive", _K.FLAG, _G.SOCKET, ("so-keepalive",)),
    OptionSpec("broadcast", _K.FLAG, _G.SOCKET, ("so-broadcast",)),
    OptionSpec("rcvbuf", _K.INT, _G.SOCKET, ("so-rcvbuf",), _COUNT),
    OptionSpec("sndbuf", _K.INT, _G.SOCKET, ("so-sndbuf",), _COUNT),
    OptionSpec("null-eof", _K.FLAG, _G.SOCKET),
    # socat's generic socket options: "<level>:<optname>:<optval>".
    OptionSpec("setsockopt", _K.STRING, _G.SOCKET, ("sockopt",)),
    OptionSpec("setsockopt-int", _K.STRING, _G.SOCKET, ("sockopt-int",)),
    OptionSpec("setsockopt-bin", _K.STRING, _G.SOCKET, ("sockopt-bin",)),
    OptionSpec("setsockopt-string", _K.STRING, _G.SOCKET, ("sockopt-string",)),
    OptionSpec("setsockopt-listen", _K.STRING, _G.LISTEN, ("sockopt-listen",)),
    OptionSpec("so-rcvtimeo", _K.SECONDS, _G.SOCKET, ("rcvtimeo",)),
    OptionSpec("so-sndtimeo", _K.SECONDS, _G.SOCKET, ("sndtimeo",)),
    # socat: "so-type=<type> Sets the type of the socket" (SOCKETPAIR: 1 stream, 2 datagram).
    OptionSpec("so-type", _K.INT, _G.SOCKET, ("type", "socktype"), (1, 10)),
    # IP.
    OptionSpec("tos", _K.INT, _G.IP4 | _G.IP6, ("ip-tos",), _BYTE),
    OptionSpec("ttl", _K.INT, _G.IP4 | _G.IP6, ("ip-ttl",), _BYTE),
    # getaddrinfo() flags, set or cleared (transports/tcp.py resolver_flags).
    OptionSpec("ai-addrconfig", _K.FLAG, _G.IP4 | _G.IP6, ("addrconfig",)),
    OptionSpec("ai-all", _K.FLAG, _G.IP4 | _G.IP6),
    OptionSpec("ai-v4mapped", _K.FLAG, _G.IP4 | _G.IP6, ("v4mapped",)),
    OptionSpec("ai-passive", _K.FLAG, _G.IP4 | _G.IP6, ("passive",)),
    OptionSpec("ipv6-v6only", _K.FLAG, _G.IP6, ("ipv6only", "v6only")),
    OptionSpec("sourceport", _K.PORT, _G.TCP | _G.UDP, ("sp",)),
    OptionSpec("lowport", _K.FLAG, _G.TCP | _G.UDP),
    # TCP.
    OptionSpec("nodelay", _K.FLAG, _G.TCP, ("tcp-nodelay",)),
    OptionSpec("keepidle", _K.INT, _G.TCP, ("tcp-keepidle",), _COUNT),
    OptionSpec("keepintvl", _K.INT, _G.TCP, ("tcp-keepintvl",), _COUNT),
    OptionSpec("keepcnt", _K.INT, _G.TCP, ("tcp-keepcnt",), _COUNT),
    OptionSpec("mss", _K.INT, _G.TCP, ("tcp-maxseg", "maxseg"), _COUNT),
    # Listening, children, retries, peer checks.
    OptionSpec("backlog", _K.INT, _G.LISTEN, (), _COUNT),
    OptionSpec("accept-timeout", _K.SECONDS, _G.LISTEN, ("listen-timeout",)),
    OptionSpec("fork", _K.FLAG, _G.CHILD),
    OptionSpec("max-children", _K.INT, _G.CHILD, ("maxchildren",), _COUNT),
    OptionSpec("children-shutup", _K.INT, _G.CHILD, ("child-shutup",), _COUNT),
    OptionSpec("retry", _K.UINT, _G.RETRY),
    OptionSpec("interval", _K.SECONDS, _G.RETRY, ("intervall",)),
    OptionSpec("forever", _K.FLAG, _G.RETRY),
    OptionSpec("range", _K.RANGE, _G.RANGE),
    # Programs (EXEC, SYSTEM).
    OptionSpec("path", _K.STRING, _G.EXEC),
    OptionSpec("dash", _K.FLAG, _G.EXEC, ("login",)),
    OptionSpec("nofork", _K.FLAG, _G.FORK),
    OptionSpec("pipes", _K.FLAG, _G.FORK),
    OptionSpec("stderr", _K.FLAG, _G.FORK),
    OptionSpec("fdin", _K.INT, _G.FORK, (), _COUNT),
    OptionSpec("fdout", _K.INT, _G.FORK, (), _COUNT),
    # SHELL: socat 1.8 "shell=<path>" overrides $SHELL.
    OptionSpec("shell", _K.STRING, _G.SHELL),
    OptionSpec("pty", _K.FLAG, _G.PTY),
    # PTY: socat "link=<filename> Generates a symbolic link that points to the
    # actual pseudo terminal".
    OptionSpec("symbolic-link", _K.FILENAME, _G.PTY, ("link",)),
    OptionSpec("pty-wait-slave", _K.FLAG, _G.PTY, ("wait-slave",)),
    OptionSpec("pty-interval", _K.SECONDS, _G.PTY, ("pty-intervall",)),
    # Terminal settings (socat's TERMIOS group), applied by PTY (pty.py).
    OptionSpec("raw", _K.CONST, _G.TERMIOS),
    OptionSpec("termios-rawer", _K.CONST, _G.TERMIOS, ("rawer",)),
    OptionSpec("termios-cfmakeraw", _K.CONST, _G.TERMIOS, ("cfmakeraw",)),
    *(OptionSpec(name, _K.FLAG, _G.TERMIOS) for names in TERMIOS_FLAGS.values() for name in names),
    OptionSpec("ispeed", _K.INT, _G.TERMIOS),
    OptionSpec("ospeed", _K.INT, _G.TERMIOS),
    # socat groups it with TERMIOS; only the process addresses here have a terminal to give.
    OptionSpec("tiocsctty", _K.FLAG, _G.EXEC, ("ctty",)),
    OptionSpec("openpty", _K.FLAG, _G.PTY),
    OptionSpec("ptmx", _K.FLAG, _G.PTY),
    # TLS.
    OptionSpec("cert", _K.FILENAME, _G.OPENSSL, ("certificate", "openssl-certificate")),
    OptionSpec("key", _K.FILENAME, _G.OPENSSL, ("openssl-key",)),
    OptionSpec("dhparams", _K.FILENAME, _G.OPENSSL, ("dhparam", "openssl-dhparams")),
    OptionSpec("cafile", _K.FILENAME, _G.OPENSSL, ("openssl-cafile",)),
    OptionSpec("capath", _K.FILENAME, _G.OPENSSL, ("openssl-capath",)),
    OptionSpec("verify", _K.FLAG, _G.OPENSSL, ("openssl-verify",)),
    OptionSpec("commonname", _K.STRING, _G.OPENSSL, ("cn", "openssl-commonname")),
    OptionSpec("snihost", _K.STRING, _G.OPENSSL, ("openssl-snihost",)),
    OptionSpec("no-sni", _K.FLAG, _G.OPENSSL, ("nosni", "openssl-no-sni")),
    OptionSpec(
        "min-proto-version", _K.STRING, _G.OPENSSL, ("min-version", "openssl-min-proto-version")
    ),
    OptionSpec(
        "max-proto-version", _K.STRING, _G.OPENSSL, ("max-version", "openssl-max-proto-version")
    ),
    OptionSpec("cipher", _K.STRING, _G.OPENSSL, ("ciphers", "cipherlist", "openssl-cipherlist")),
    # SOCKS clients. socat: "socksport=<tcp service> Overrides the default
    # "socks" service or port 1080"; "socksuser=<user> ... Default is the
    # actual user name ($LOGNAME or $USER)".
    OptionSpec("socksport", _K.STRING, _G.SOCKS),
    OptionSpec("socksuser", _K.STRING, _G.SOCKS),
    # HTTP CONNECT proxy client (PROXY).
    OptionSpec("proxyport", _K.STRING, _G.HTTP),
    OptionSpec("ignorecr", _K.FLAG, _G.HTTP),
    OptionSpec("http-version", _K.STRING, _G.HTTP),
    OptionSpec("proxy-resolve", _K.FLAG, _G.HTTP, ("resolve",)),
    OptionSpec("proxy-authorization", _K.STRING, _G.HTTP, ("proxyauth",)),
    OptionSpec("proxy-authorization-file", _K.FILENAME, _G.HTTP, ("proxyauthfile",)),
    OptionSpec("compress", _K.STRING, _G.OPENSSL, ("openssl-compress",), choices=("auto", "none")),
)

_BY_NAME: Mapping[str, OptionSpec] = {
    name: spec for spec in OPTIONS for name in (spec.name, *spec.aliases)
}


def lookup_option(name: str) -> OptionSpec | None:
    """The option called ``name`` (canonical or alias, any case), or ``None``."""
    return _BY_NAME.get(name.lower())


# (``TYPE_CHECKING`` and ``Final``: see the top of the module.)
if TYPE_CHECKING:
    from typing import Protocol

    class OptionTarget(Protocol):
        """What ``parse_options`` needs to know about an address kind."""

        @property
        def keyword(self) -> str: ...

        @property
        def groups(self) -> Group: ...


def parse_options(raw: Iterable[RawOption], kind: OptionTarget) -> Options:
    """Check and convert the written options of one address of ``kind``.

    Returns them keyed by canonical name in the order written; a repeated
    option keeps its last value, except ``range``, whose networks add up (a
    peer passes if it is in any of them).
    """
    values: dict[str, OptionValue] = {}
    for option in raw:
        spec = lookup_option(option.name)
        if spec is None:
            raise OptionError(
                option.name,
                f'parseopts_table(): unknown option "{option.name}"',
                kind.keyword,
            )
        if not spec.groups & (kind.groups | ANY_ADDRESS):
            raise OptionError(
                option.name,
                f'parseopts_table(): option "{option.name}" not supported with this address type',
                kind.keyword,
            )
        try:
            value = _CONVERTERS[spec.kind](spec, option)
        except OptionError as error:
            raise OptionError(error.option, error.reason, kind.keyword) from None
        previous = values.get(spec.name)
        if isinstance(previous, tuple) and isinstance(value, tuple):
            value = previous + value
        values[spec.name] = value
    return Options(MappingProxyType(values))


def format_option(name: str, value: OptionValue) -> str:
    """The canonical text of one option: ``fork``, ``backlog=5``, ``mode=0600``.

    A ``range`` with several networks gives one ``range=`` per network.
    """
    spec = lookup_option(name)
    kind = spec.kind if spec else None
    if isinstance(value, tuple):
        return ",".join(f"{name}={_format_network(network)}" for network in value)
    if isinstance(value, bool):
        if kind is _K.CONST or value:
            return name
        return f"{name}=0"
    if kind is _K.MODE and isinstance(value, int):
        return f"{name}={_octal(value)}"
    if isinstance(value, float):
        return f"{name}={_format_seconds(value)}"
    if isinstance(value, int):
        return f"{name}={value}"
    return f"{name}={quote(value, OPTION_VALUE_ENDS)}"


def parse_network(text: str) -> Network:
    """One ``range=`` value: ``10.0.0.0/8``, ``10.0.0.0:255.0.0.0`` or ``[::1]/128``.

    socat: "For IPv4 addresses, address-range takes the form address/bits,
    e.g. 10.0.0.0/8, or address:mask, e.g. 10.0.0.0:255.0.0.0; for IPv6, it
    is [ip6-address]/bits, e.g. [::1]/128." Host bits are allowed
    (``127.0.0.1/8``), and so are host names, resolved now as socat does
    (``localhost:255.255.255.255``, in socat's own test suite). Raises ``ValueError``.
    """
    if text.startswith("["):
        address, bracket, bits = text[1:].partition("]/")
        if not bracket:
            raise ValueError(text)
        return ipaddress.IPv6Network(f"{_host_address(address, 6)}/{bits}", strict=False)
    if "/" in text:
        address, _, bits = text.partition("/")
        if ":" in address:
            return ipaddress.IPv6Network(f"{address}/{bits}", strict=False)
        return ipaddress.IPv4Network(f"{_host_address(address, 4)}/{bits}", strict=False)
    address, colon, mask = text.partition(":")
    if not colon:
        raise ValueError(text)
    return ipaddress.IPv4Network(f"{_host_address(address, 4)}/{mask}", strict=False)


def _host_address(text: str, version: int) -> str:
    """``text`` if it is an address of IP ``version``, else the first address its name
    resolves to in that version. Raises ``ValueError``."""
    try:
        literal = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        if literal.version != version:
            raise ValueError(text)
        return text
    if not text or not re.fullmatch(r"[A-Za-z0-9._-]+", text):
        raise ValueError(text)
    import socket  # noqa: PLC0415 - only a range with a name needs the resolver

    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        found = socket.getaddrinfo(text, None, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ValueError(text) from None
    return str(found[0][4][0])


def _format_network(network: Network) -> str:
    if isinstance(network, ipaddress.IPv6Network):
        return f"[{network.network_address}]/{network.prefixlen}"
    return str(network)


def _octal(value: int) -> str:
    """A mode the way it is written: ``0600``."""
    return f"0{value:o}" if value else "0"


def _format_seconds(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


# Converters, one per value kind. socat's messages quote ``option.source``: the
# option text from its name to the end of the argument.

_C_INTEGER = re.compile(r"\s*[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_C_OCTAL = re.compile(r"\s*[+-]?[0-7]+")
_C_DECIMAL = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _required(spec: OptionSpec, option: RawOption) -> str:
    if option.value is None:
        raise OptionError(option.name, f'option "{option.source}": value required')
    return option.value


def _number_text(pattern: re.Pattern[str], option: RawOption, text: str) -> str:
    """The part of ``text`` that is a number, with socat's strtoul/strtod messages."""
    match = pattern.match(text)
    if match is None:
        raise OptionError(
            option.name, f'parseopts(): missing numerical value of option "{option.source}"'
        )
    if match.end() != len(text):
        raise OptionError(
            option.name,
            f'parseopts(): trailing garbage in numerical arg of option "{option.source}"',
        )
    return match.group().strip()


def _c_integer(option: RawOption, text: str) -> int:
    """``text`` read like C ``strtoul(text, &end, 0)``, but whole or not at all."""
    digits = _number_text(_C_INTEGER, option, text)
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    # C reads "010" as octal; Python's int(..., 0) only knows "0o10".
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX":
        return sign * int(digits, 8)
    try:
        return sign * int(digits, 0)
    except ValueError:  # more decimal digits than Python converts (4,300)
        raise OptionError(
            option.name,
            f'option "{option.name}": value of {len(digits)} digits is out of range',
        ) from None


def _in_limits(spec: OptionSpec, option: RawOption, number: int) -> int:
    low, high = spec.limits or _DEFAULT_BOUNDS[_K.INT]
    if not low <= number <= high:
        show = _octal if spec.kind is _K.MODE else str
        raise OptionError(
            option.name,
            f'option "{option.name}": value {show(number)} is out of range, '
            f"accepted: {show(low)} to {show(high)}",
        )
    return number


def _to_flag(spec: OptionSpec, option: RawOption) -> OptionValue:
    if option.value is None:
        return True
    if option.value == "" and spec.kind is _K.FLAG_OR_EMPTY:
        return False
    return _c_integer(option, option.value) != 0


def _to_const(spec: OptionSpec, option: RawOption) -> OptionValue:
    if option.value is not None:
        raise OptionError(option.name, f'no value permitted for option "{spec.name}"')
    return True


def _to_integer(spec: OptionSpec, option: RawOption) -> OptionValue:
    if option.value is None:
        return _in_limits(spec, option, 1)
    return _in_limits(spec, option, _c_integer(option, option.value))


def _to_mode(spec: OptionSpec, option: RawOption) -> OptionValue:
    text = _number_text(_C_OCTAL, option, _required(spec, option))
    return _in_limits(spec, option, int(text, 8))


def _to_seconds(spec: OptionSpec, option: RawOption) -> OptionValue:
    seconds = float(_number_text(_C_DECIMAL, option, _required(spec, option)))
    if seconds < 0 or not math.isfinite(seconds):
        raise OptionError(
            option.name,
            f'option "{option.name}": value {shorten(option.value or "")} is out of range, '
            "accepted: a number of seconds >= 0",
        )
    return seconds


def _to_text(spec: OptionSpec, option: RawOption) -> OptionValue:
    text = _required(spec, option)
    if spec.choices and text.lower() not in spec.choices:
        raise OptionError(
            option.name,
            f'option "{option.name}": unknown value "{text}", accepted: {", ".join(spec.choices)}',
        )
    return text


def _to_range(spec: OptionSpec, option: RawOption) -> OptionValue:
    text = _required(spec, option)
    try:
        return (parse_network(text),)
    except ValueError:
        raise OptionError(
            option.name,
            f'option "{option.name}": "{text}" is not an address range, accepted: '
            "<ip4-address>/<bits>, <ip4-address>:<mask> or [<ip6-address>]/<bits>",
        ) from None


_CONVERTERS: Mapping[ValueKind, Callable[[OptionSpec, RawOption], OptionValue]] = {
    _K.FLAG: _to_flag,
    _K.FLAG_OR_EMPTY: _to_flag,
    _K.CONST: _to_const,
    _K.INT: _to_integer,
    _K.UINT: _to_integer,
    _K.PORT: _to_integer,
    _K.SIZE: _to_integer,
    _K.SECONDS: _to_seconds,
    _K.MODE: _to_mode,
    _K.STRING: _to_text,
    _K.FILENAME: _to_text,
    _K.RANGE: _to_range,
}
