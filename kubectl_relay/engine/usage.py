"""The text of ``relay -h``, ``-hh`` and ``-hhh``, generated from the tables.

The shape is socat's: a usage line, the global options, then the address
types with their parameters and option groups. socat's man page: "-hh Like
-h, plus a list of the short names of all available address options";
"-hhh Like -hh, plus a list of all available address option names" (here:
the aliases of address keywords and options too). Columns are aligned with
tabs the way socat aligns them, so the output lines up the same in a
terminal and can be compared with ``socat -hhh`` side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

from .addresses import ADDRESS_KINDS
from .options import OPTIONS, SOCAT_TYPE_NAMES, group_names
from .session import DEFAULT_UDP_FORK_IDLE_TIMEOUT
from .transfer import DEFAULT_BLOCK_SIZE, INITIAL_BLOCK_SIZE

#: The program name shown in the usage line.
PROGRAM = "relay"


@dataclass(frozen=True)
class GlobalOption:
    """One command-line option of the relay itself, as the help lists it."""

    syntax: str
    help: str


#: The global options the engine supports, in socat's order.
GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption("-V", "print the version and exit"),
    GlobalOption("-h", "print this help and exit"),
    GlobalOption("-hh", "like -h, plus the common address option names"),
    GlobalOption("-hhh", "like -hh, plus every option name and alias"),
    GlobalOption("-d[ddd]", "log more: -dd notices, -ddd info, -dddd debug (-d0: errors only)"),
    GlobalOption("-ly[facility]", "log to syslog with this facility (default: daemon)"),
    GlobalOption("-lf<logfile>", "log to this file"),
    GlobalOption("-ls", "log to stderr (the default)"),
    GlobalOption("-lp<progname>", "program name in log lines"),
    GlobalOption("-lu", "microseconds in log timestamps"),
    GlobalOption("-lh", "host name in log lines"),
    GlobalOption("-v", "trace the relayed data as text on stderr"),
    GlobalOption("-x", "trace the relayed data as hex on stderr"),
    GlobalOption("-r <file>", "copy the data flowing left to right into <file>"),
    GlobalOption("-R <file>", "copy the data flowing right to left into <file>"),
    GlobalOption(
        "-b<size>",
        f"largest transfer block in bytes (reads start at {INITIAL_BLOCK_SIZE} and grow "
        f"on busy connections up to {DEFAULT_BLOCK_SIZE}; socat: a fixed 8192)",
    ),
    GlobalOption("-s", "sloppy: keep going after errors"),
    GlobalOption(
        "-S<sigmask>",
        "catch and log these signals (bit N: signal N), overriding the default"
        " (HUP INT QUIT ABRT TERM); others end the relay silently",
    ),
    GlobalOption("-t<timeout>", "seconds the other direction may go on after EOF (0.5)"),
    GlobalOption(
        "-T<timeout>",
        "end after this many seconds without traffic; UDP-LISTEN,fork sessions end "
        f"after {DEFAULT_UDP_FORK_IDLE_TIMEOUT:g} s without -T (socat: never; -T0 restores that)",
    ),
    GlobalOption("-u", "one direction only, left to right"),
    GlobalOption("-U", "one direction only, right to left"),
    GlobalOption("-4", "prefer IPv4 where the address does not say"),
    GlobalOption("-6", "prefer IPv6 where the address does not say"),
    GlobalOption("-0", "no preferred IP version; listeners serve IPv4 and IPv6"),
    GlobalOption("--statistics", "log transfer statistics on exit (and on SIGUSR1)"),
    GlobalOption("--metrics [HOST:]PORT", "serve Prometheus metrics (a relay extension)"),
    GlobalOption(
        "--grace-period <seconds>",
        "on SIGTERM stop accepting, let running sessions finish for this long, then cut"
        " them (20; 0: at once, as socat; a relay extension)",
    ),
    GlobalOption(
        "--workers N|auto",
        "with a forking TCP listener, N processes accept on its port (auto: one per usable"
        " core, within the CPU quota; default 1; a relay extension)",
    ),
    GlobalOption(
        "--trace-session-ids",
        "number the sessions: trace headers end in session=N, their log lines say"
        ' "session N:" (a relay extension)',
    ),
    GlobalOption(
        "--quiet-sessions",
        "forked sessions log no notices, only their warnings and errors: with -d -d a"
        " fork listener logs its own notices per connection, no more (a relay extension)",
    ),
    GlobalOption(
        "--quiet-accepts",
        'with -d -d, a listener says "listening on" once and logs nothing per accepted'
        " connection (a relay extension)",
    ),
    GlobalOption(
        "--deny-connect CIDR|NAME[,...]",
        "refuse to connect to these networks (checked after resolving) and host name"
        " patterns such as *.kube-system.svc.cluster.local (a relay extension)",
    ),
    GlobalOption(
        "--allow-connect CIDR|NAME[,...]",
        "connect only to these networks (checked after resolving) or names matching these"
        " patterns (a relay extension)",
    ),
)

#: What ``relay`` has that socat has not, as ``-h`` lists it: (name, what it does).
EXTENSIONS: tuple[tuple[str, str], ...] = (
    ("--metrics [HOST:]PORT", "Prometheus counters over HTTP"),
    ("frame=len16", "address option: datagrams and half-close over a byte stream"),
    ("PROXY-SERVER", "second address: a SOCKS5, SOCKS4/4a and HTTP proxy server on one port"),
    ("--deny-connect", "networks and name patterns refused (--allow-connect: the only allowed)"),
    ("MUX-LISTEN:<port>", "each session is a stream on the one mux peer accepted on <port>"),
    ("MUX-ACCEPT:<port>", "each stream opened by the mux peer accepted on <port> is a session"),
    ("--workers N|auto", "TCP-LISTEN,fork on N cores: N processes accepting on one port"),
    ("--quiet-sessions", "with -d -d, a fork listener logs its accepts, its sessions no notices"),
    ("--quiet-accepts", "with -d -d, a listener logs no notice per accepted connection"),
)

#: Where ``relay`` deliberately behaves otherwise than socat 1.8, as ``-h`` lists it.
DIFFERENCES: tuple[str, ...] = (
    "fork makes a task per session in one process (or --workers), not a child process",
    "listen backlog 512 (socat: 5); reads grow from 8192 bytes up to 4 MiB on busy links",
    "SOCKS and PROXY: a refused request is an E line and exit 1 (socat 1.8.0: W, exit 255)",
    "SOCKET-*: socket families 1 (UNIX), 2 (IPv4) and 10 (IPv6) only; no range option",
)

_INDENT = "      "


def usage_text(level: int) -> str:
    """The help for ``-h`` (1), ``-hh`` (2) or ``-hhh`` (3), ending in a newline."""
    if level not in (1, 2, 3):
        raise ValueError(f"help level must be 1, 2 or 3, not {level}")
    lines = [
        f"{PROGRAM}: the socat-compatible relay of kubectl-relay",
        "Usage:",
        f"{PROGRAM} [options] <bi-address> <bi-address>",
        "   options (general command line options):",
        *(_global_line(option) for option in GLOBAL_OPTIONS),
        *_address_lines(verbose=level == 3),
    ]
    if level >= 2:
        lines += _option_lines(verbose=level == 3)
    lines += _extension_lines()
    return "\n".join(lines) + "\n"


def _extension_lines() -> list[str]:
    lines = ["   extensions (relay only, not in socat):"]
    lines += [f"{_INDENT}{name.ljust(23)}{text}" for name, text in EXTENSIONS]
    lines.append("   differences from socat 1.8 (deliberate):")
    lines += [f"{_INDENT}{text}" for text in DIFFERENCES]
    return lines


def _global_line(option: GlobalOption) -> str:
    width = 7 if len(option.syntax) < 7 else 15
    # The long extensions overflow socat's column: one space keeps them apart.
    gap = " " if len(option.syntax) >= width else ""
    return f"{_INDENT}{option.syntax.ljust(width)}{gap}{option.help}"


def _tabs(used: int, column: int) -> str:
    """Tabs from ``used`` characters towards ``column``, as socat's help computes them."""
    return "\t" * max(0, (column - used + 7) // 8)


def _names(name: str, aliases: tuple[str, ...], verbose: bool) -> tuple[str, ...]:
    return (name, *aliases) if verbose else (name,)


def _address_lines(*, verbose: bool) -> list[str]:
    lines = [
        "   bi-address:",
        f"{_INDENT}<single-address>",
        f"{_INDENT}<single-address>!!<single-address>   (read from the first, write to the second)",
        "   single-address:",
        f"{_INDENT}<address-head>[,<opts>]",
        "   address-head:",
    ]
    entries = sorted(
        (
            (name, kind)
            for kind in ADDRESS_KINDS
            for name in _names(kind.keyword, kind.aliases, verbose)
        ),
        key=lambda entry: entry[0],
    )
    for name, kind in entries:
        if name == kind.keyword:
            head = f"{_INDENT}{name}{kind.syntax}"
            lines.append(f"{head}{_tabs(len(head), 40)}\tgroups={group_names(kind.groups)}")
        else:
            head = f"{_INDENT}{name}"
            lines.append(f"{head}{_tabs(len(head), 40)}\tis an alias name for {kind.keyword}")
    if verbose:
        lines.append(f"{_INDENT}<num> is a short form for FD:<num>")
        lines.append(f"{_INDENT}<filename> is a short form for GOPEN:<filename> (if it has a '/')")
    return lines


def _option_lines(*, verbose: bool) -> list[str]:
    lines = ["   opts:", f"{_INDENT}<opt>{{,<opts>}}:", "   opt:"]
    entries = sorted(
        ((name, spec) for spec in OPTIONS for name in _names(spec.name, spec.aliases, verbose)),
        key=lambda entry: entry[0],
    )
    for name, spec in entries:
        head = f"{_INDENT}{name}"
        if name != spec.name:
            lines.append(f"{head}{_tabs(len(head), 16)}\tis an alias for {spec.name}")
            continue
        groups = f"groups={group_names(spec.groups)}"
        lines.append(
            f"{head}{_tabs(len(head), 16)}\t{groups}{_tabs(len(groups), 24)}"
            f"type={SOCAT_TYPE_NAMES[spec.kind]}"
        )
    return lines
