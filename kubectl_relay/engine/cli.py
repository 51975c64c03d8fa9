"""``relay [options] ADDRESS1 ADDRESS2``: socat's command line and exit codes.

Exit statuses as socat's: 0 after a normal end, 1 after an error, and
128 + the signal number when a signal (SIGINT, SIGTERM, SIGHUP) ended the run
(``running`` handles the signals, and stops a listening relay gracefully on
SIGTERM). Errors are one socat-style ``E`` line on stderr, never a traceback.

Start-up time counts (socat's own tests sleep a fixed time after starting
it; ``kubectl exec`` relays are short-lived), so this module imports only
the light parts of the engine: ``-V``, ``-h`` and usage errors never load
the event loop, and a run imports the address parser, then ``running``
(asyncio, the session) and, through the transport tables, only the
transports its two addresses use.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .descriptors import record_inherited_descriptors
from .errors import RelayError, UsageError, shorten
from .log import (
    configure,
    default_progname,
    level_from_d_count,
    level_from_d_number,
    logger,
)
from .trace import TraceSettings
from .version import version_text

# ``typing`` and ``socket`` each take milliseconds to import and are not
# needed to answer -V: the type checker reads this name as typing's own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    from .destinations import ConnectPolicy
    from .running import LoopFactory

#: socket.AF_UNSPEC: 0 wherever there are sockets (POSIX and Windows alike).
_AF_UNSPEC = 0

HELP_HINT = 'use option "-h" for help'

#: Seconds a graceful stop waits for sessions: below Kubernetes' default
#: ``terminationGracePeriodSeconds`` (30), after which the kubelet kills.
DEFAULT_GRACE_PERIOD = 20.0

#: Long options (relay extensions; socat's options are all single-dash) and their values.
LONG_OPTIONS = {
    "--metrics": "[HOST:]PORT",
    "--grace-period": "SECONDS",
    "--deny-connect": "CIDR|NAME[,...]",
    "--allow-connect": "CIDR|NAME[,...]",
    "--workers": "N|auto",
}

#: The most ``--workers``: far more processes than any machine has cores is a typo.
MAX_WORKERS = 1024

#: The largest ``-b``: Linux moves at most this much in one read or write
#: (MAX_RW_COUNT, 2 GiB less a page), so a larger buffer is never filled.
MAX_BLOCK_SIZE = 0x7FFFF000
#: The longest ``-t``/``-T`` (a 32-bit time_t's worth of seconds, 68 years):
#: longer waits overflow the event loop's timers and mean "never" anyway.
MAX_SECONDS = 2**31 - 1
#: ``-d<n>`` with more digits than this is simply the highest level.
_MAX_D_DIGITS = 4

# Python's str.isdigit() and float() accept other scripts' digits ("²", "٣");
# socat's strtoul/strtod read ASCII only.
_ASCII_DIGITS = re.compile(r"[0-9]+")
#: One past the largest C unsigned long (64 bits on Linux).
ULONG_LIMIT = 1 << 64
_C_UNSIGNED = re.compile(r"\s*\+?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_DECIMAL = re.compile(r"\s*\+?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


@dataclass
class CommandLine:
    """The parsed global options and the two address texts."""

    d_count: int = 0
    d_number: int | None = None  # -d<n> sets the level directly
    progname: str = "relay"
    log_file: str | None = None
    syslog_facility: str | None = None
    log_stderr: bool = False
    log_microseconds: bool = False
    log_hostname: bool = False
    trace: TraceSettings = field(default_factory=TraceSettings)
    block_size: int | None = None  # -b; None: the transfer loop's default
    close_timeout: float = 0.5
    idle_timeout: float | None = None  # -T; None: not given, 0: given as "none"
    unidirectional: Literal["both", "left-to-right", "right-to-left"] = "both"
    family: int = _AF_UNSPEC
    metrics_address: tuple[str, int] | None = None
    grace_period: float = DEFAULT_GRACE_PERIOD
    statistics: bool = False  # --statistics
    log_signals: int | None = None  # -S<sigmask>; None: socat's default set
    workers: int | Literal["auto"] = 1  # --workers (a relay extension)
    connect_policy: ConnectPolicy | None = None
    """--deny-connect/--allow-connect (None: connect anywhere)."""
    show_version: bool = False
    help_level: int = 0
    addresses: list[str] = field(default_factory=list)


def _add_to_policy(policy: ConnectPolicy | None, option: str, text: str) -> ConnectPolicy:
    """The policy with ``--deny-connect``'s or ``--allow-connect``'s networks and names added."""
    from .destinations import ConnectPolicy, parse_destinations  # noqa: PLC0415 - imports socket

    policy = policy or ConnectPolicy()
    networks, names = parse_destinations(text, option)
    if option == "--deny-connect":
        return replace(
            policy, denied=policy.denied + networks, denied_names=policy.denied_names + names
        )
    if names:
        policy = replace(policy, allowed_names=(policy.allowed_names or ()) + names)
    if networks:
        policy = replace(policy, allowed=(policy.allowed or ()) + networks)
    return policy


def parse_command_line(argv: Sequence[str], progname: str = "relay") -> CommandLine:
    """Parse socat's global options; raise ``UsageError`` with socat's wording."""
    line = CommandLine(progname=progname)
    verbose = hexdump = session_ids = False
    raw_left: str | None = None
    raw_right: str | None = None
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        # "-" is the STDIO address, also with options or as half of a dual
        # address ("-,escape=27", "-!!-"): socat stops reading options there.
        if not arg.startswith("-") or arg[1:2] in ("", ",", ":", "!"):
            break
        if arg == "--":
            index += 1
            break
        index += 1
        name = arg.partition("=")[0]
        if name in LONG_OPTIONS:
            # A relay extension: socat's options are all single-dash, so no clash.
            text = arg.partition("=")[2] if "=" in arg else None
            if text is None:
                if index >= len(args):
                    raise UsageError(
                        f'option "{name}" requires {LONG_OPTIONS[name]}; {HELP_HINT}'
                    )
                text = args[index]
                index += 1
            if name == "--metrics":
                from .metrics import parse_metrics_address  # noqa: PLC0415 - imports asyncio

                line.metrics_address = parse_metrics_address(text)
            elif name == "--workers":
                line.workers = _workers(text)
            elif name in ("--deny-connect", "--allow-connect"):
                line.connect_policy = _add_to_policy(line.connect_policy, name, text)
            else:
                line.grace_period = _seconds(text, name)
            continue

        def value(attached: str, arg: str = arg) -> str:
            """The option's value, attached (``-t5``) or as the next argument (``-t 5``)."""
            nonlocal index
            if attached:
                return attached
            if index >= len(args):
                raise UsageError(f'option "{arg}" requires an argument; {HELP_HINT}')
            index += 1
            return args[index - 1]

        if arg == "--statistics":
            line.statistics = True
        elif arg == "--trace-session-ids":
            session_ids = True
        elif arg == "-V":
            line.show_version = True
        elif arg in ("-h", "-?", "-hh", "-hhh", "-??", "-???"):
            line.help_level = len(arg) - 1
        elif len(arg) > 1 and set(arg[1:]) == {"d"}:
            line.d_count += len(arg) - 1
        elif arg.startswith("-d") and _ASCII_DIGITS.fullmatch(arg[2:]):
            # socat 1.8: -d<n> sets the level directly ("-d0" .. "-d4"); any
            # larger number means everything, however many digits it has.
            line.d_number = int(arg[2:]) if len(arg) <= _MAX_D_DIGITS + 2 else 99
        elif arg == "-v":
            verbose = True
        elif arg == "-x":
            hexdump = True
        elif arg.startswith("-r"):
            raw_left = value(arg[2:])
        elif arg.startswith("-R"):
            raw_right = value(arg[2:])
        elif arg.startswith("-lp"):
            line.progname = value(arg[3:])
        elif arg.startswith("-lf"):
            line.log_file = value(arg[3:])
        elif arg == "-ls":
            line.log_stderr = True
        elif arg.startswith("-ly"):
            line.syslog_facility = arg[3:] or "daemon"
        elif arg == "-lu":
            line.log_microseconds = True
        elif arg == "-lh":
            line.log_hostname = True
        elif arg.startswith("-b"):
            line.block_size = _block_size(value(arg[2:]))
        elif arg.startswith("-S"):
            line.log_signals = _signal_mask(value(arg[2:]))
        elif arg.startswith("-t"):
            line.close_timeout = _seconds(value(arg[2:]), "-t")
        elif arg.startswith("-T"):
            line.idle_timeout = _seconds(value(arg[2:]), "-T")  # 0: explicitly none
        elif arg == "-u":
            line.unidirectional = "left-to-right"
        elif arg == "-U":
            line.unidirectional = "right-to-left"
        elif arg == "-s":
            pass  # sloppy: sessions already fail alone; nothing more to relax
        elif arg in ("-4", "-6"):
            line.family = _address_family(arg)
        elif arg == "-0":
            # socat: "Do not prefer a particular IP version; this lets passive
            # addresses (LISTEN, RECV, ...) serve both versions": the same as
            # SOCAT_DEFAULT_LISTEN_IP=0, which the listeners read.
            line.family = _AF_UNSPEC
            os.environ["SOCAT_DEFAULT_LISTEN_IP"] = "0"
        else:
            raise UsageError(f'unknown option "{arg}"; {HELP_HINT}')
    line.addresses = rejoin_split_options(args[index:])
    line.trace = TraceSettings(
        verbose=verbose,
        hex=hexdump,
        raw_left=raw_left,
        raw_right=raw_right,
        session_ids=session_ids,
    )
    if not (line.show_version or line.help_level) and len(line.addresses) != 2:
        raise UsageError(
            f"exactly 2 addresses required (there are {len(line.addresses)}); {HELP_HINT}"
        )
    return line


def rejoin_split_options(arguments: list[str]) -> list[str]:
    """Join option-only arguments back onto the address before them.

    A Kubernetes manifest written ``command: [socat, -v, TCP-LISTEN:8080,fork,
    TCP:svc:80]`` is a YAML flow sequence, which splits at every comma: the
    program receives ``TCP-LISTEN:8080``, ``fork`` and ``TCP:svc:80``. socat
    then fails with three addresses; such manifests are common, so when there
    are more than two arguments, one made only of known option names (and not
    an address keyword) is joined back with a comma, and a warning says how to
    write the manifest.
    """
    if len(arguments) <= 2:
        return arguments
    joined: list[str] = []
    for argument in arguments:
        if joined and _is_option_list(argument):
            logger.warning(
                'argument "%s" is not an address; joined to "%s" as its option '
                "(in a YAML flow sequence, quote addresses that contain commas)",
                argument,
                joined[-1],
            )
            joined[-1] = f"{joined[-1]},{argument}"
        else:
            joined.append(argument)
    return joined


def _is_option_list(argument: str) -> bool:
    # Only a command line of more than two arguments needs the option tables.
    from .addresses import address_kind  # noqa: PLC0415 - see the module docstring
    from .options import lookup_option  # noqa: PLC0415

    names = [item.partition("=")[0] for item in argument.split(",")]
    return (
        address_kind(argument.partition(":")[0]) is None
        and ":" not in names[0]
        and all(lookup_option(name) is not None for name in names)
    )


def _address_family(option: str) -> int:
    """``-4``: ``AF_INET``, ``-6``: ``AF_INET6`` (socket imported only when they are given)."""
    import socket  # noqa: PLC0415 - see TYPE_CHECKING above

    return socket.AF_INET if option == "-4" else socket.AF_INET6


def _c_unsigned(text: str) -> int | None:
    """``text`` read whole like C ``strtoul(text, &end, 0)``; None if it is not such a number.

    A number past any C unsigned long comes back as ``ULONG_LIMIT``.
    """
    if not _C_UNSIGNED.fullmatch(text):
        return None
    digits = text.strip().lstrip("+")
    base = 16 if digits[:2] in ("0x", "0X") else 8 if digits.startswith("0") else 10
    try:
        return min(int(digits, base), ULONG_LIMIT)
    except ValueError:  # more decimal digits than Python converts: far too big
        return ULONG_LIMIT


def _block_size(text: str) -> int:
    """``-b``: a positive C integer (``4096``, ``0x1000``) no larger than one read can be."""
    number = _c_unsigned(text) or 0
    if number <= 0:
        raise UsageError(f'option "-b": invalid size "{shorten(text)}", expected a positive number')
    if number > MAX_BLOCK_SIZE:
        # socat 1.7.4: "buffer size option (-b) to big - %zu (max is %zu)" (sic).
        raise UsageError(
            f"buffer size option (-b) to big - {shorten(text)} (max is {MAX_BLOCK_SIZE})"
        )
    return number


def _signal_mask(text: str) -> int:
    """``-S``: a C unsigned long (``0x8000``, ``0``) whose bit N stands for signal N."""
    mask = _c_unsigned(text)
    if mask is not None and mask < ULONG_LIMIT:
        return mask
    raise UsageError(
        f'option "-S": invalid signal mask "{shorten(text)}", expected a number whose bit N '
        "stands for signal N (0x8000: SIGTERM only; 0: none)"
    )


def _workers(text: str) -> int | Literal["auto"]:
    """``--workers``: ``auto`` or a decimal count from 1 to ``MAX_WORKERS``."""
    if text == "auto":
        return "auto"
    if _ASCII_DIGITS.fullmatch(text) and len(text) <= 4 and 1 <= int(text) <= MAX_WORKERS:
        return int(text)
    raise UsageError(
        f'option "--workers": invalid count "{shorten(text)}", expected a number of'
        f" processes from 1 to {MAX_WORKERS} such as 2, or auto (one per usable core)"
    )


def _seconds(text: str, option: str) -> float:
    """``-t``/``-T``: seconds from 0 to ``MAX_SECONDS``; not nan, not inf."""
    try:
        seconds = float(text) if _DECIMAL.fullmatch(text) else -1.0
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_SECONDS:
        raise UsageError(
            f'option "{option}": invalid timeout "{shorten(text)}", expected seconds '
            f"from 0 to {MAX_SECONDS} such as 5 or 0.5"
        )
    return seconds


def main(argv: Sequence[str] | None = None, *, loop_factory: LoopFactory | None = None) -> int:
    """Run the engine as the ``relay`` command does; return the exit status."""
    # Before relay opens anything itself (log file, event loop): FD:<n> may
    # only name what the process was given.
    record_inherited_descriptors()
    if argv is None:
        argv = sys.argv[1:]
    progname = default_progname(sys.argv[0] if sys.argv else "relay")
    configure(level=level_from_d_count(0), progname=progname)
    try:
        line = parse_command_line(argv, progname)
        level = (
            level_from_d_count(line.d_count)
            if line.d_number is None
            else level_from_d_number(line.d_number)
        )
        configure(
            level=level,
            progname=line.progname,
            microseconds=line.log_microseconds,
            hostname=line.log_hostname,
            file=line.log_file,
            syslog_facility=line.syslog_facility,
            stderr=line.log_stderr,
        )
        if line.show_version:
            sys.stdout.write(version_text(line.progname))
            return 0
        if line.help_level:
            from .usage import usage_text  # noqa: PLC0415 - -h reads every table

            sys.stdout.write(usage_text(line.help_level))
            return 0
        # Only a run needs it; the plugin parses command lines with this module on
        # systems without SIGHUP (Windows).
        from .signals import catch_early  # noqa: PLC0415

        catch_early(line.log_signals)
        from .addresses import parse_address  # noqa: PLC0415 - see the module docstring

        first = parse_address(line.addresses[0])
        second = parse_address(line.addresses[1])
    except RelayError as exc:
        logger.error("%s", exc)
        return 1
    if line.connect_policy is not None:
        from .destinations import configure as configure_destinations  # noqa: PLC0415

        configure_destinations(line.connect_policy)
    from .running import run  # noqa: PLC0415 - see the module docstring

    return run(line, first, second, loop_factory)
