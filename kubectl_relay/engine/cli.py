"""``relay [options] ADDRESS1 ADDRESS2``: socat's command line and exit codes.

Exit statuses as socat's: 0 after a normal end, 1 after an error, and
128 + the signal number when a signal (SIGINT, SIGTERM, SIGHUP) ended the run
(``running`` handles the signals, and stops a listening relay gracefully on
SIGTERM). Errors are one socat-style ``E`` line on stderr, never a traceback.

Start-up time counts (socat's own tests sleep a fixed time after starting
it; ``kubectl exec`` relays are short-lived), so this module imports only
the light parts of the engine: ``-V`` loads neither the log nor the parser,
``-h`` and usage errors never load the event loop, and a run imports the
address parser, binds a TCP listener (``transports.sockbind``), then loads
the log and ``running`` (asyncio, the session) and, through the transport
tables, only the transports its two addresses use.
"""

from __future__ import annotations

import os
import sys

from .descriptors import record_inherited_descriptors
from .errors import RelayError, UsageError, shorten
from .version import version_text

# ``typing``, ``socket``, ``re``, ``dataclasses`` and ``logging`` each take
# milliseconds to import and are not needed to answer -V: the type checker
# reads this name as typing's own. ``log`` and ``trace`` load when a run (or
# an error) needs them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Literal

    from .addresses import AddressSpec
    from .destinations import ConnectPolicy
    from .loops import LoopFactory
    from .trace import TraceSettings

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

#: One past the largest C unsigned long (64 bits on Linux).
ULONG_LIMIT = 1 << 64
# Python's str.isdigit() and float() accept other scripts' digits ("²", "٣");
# socat's strtoul/strtod read ASCII only. Patterns, compiled (by ``re``'s own
# cache) only when an option that takes a number is given.
_C_UNSIGNED = r"\s*\+?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)"
_DECIMAL = r"\s*\+?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*"


class CommandLine:
    """The parsed global options and the two address texts.

    A plain class, not a dataclass: building a dataclass imports ``inspect``
    and compiles its methods, which ``-V`` would pay for.
    """

    def __init__(self, progname: str = "relay") -> None:
        self.d_count = 0
        self.d_number: int | None = None  # -d<n> sets the level directly
        self.progname = progname
        self.log_file: str | None = None
        self.syslog_facility: str | None = None
        self.log_stderr = False
        self.log_microseconds = False
        self.log_hostname = False
        # -v, -x, -r FILE, -R FILE, --trace-session-ids: see ``trace``.
        self.verbose = False
        self.hexdump = False
        self.raw_left: str | None = None
        self.raw_right: str | None = None
        self.session_ids = False
        self.block_size: int | None = None  # -b; None: the transfer loop's default
        self.close_timeout = 0.5
        self.idle_timeout: float | None = None  # -T; None: not given, 0: given as "none"
        self.unidirectional: Literal["both", "left-to-right", "right-to-left"] = "both"
        self.family = _AF_UNSPEC
        self.metrics_address: tuple[str, int] | None = None
        self.grace_period = DEFAULT_GRACE_PERIOD
        self.statistics = False  # --statistics
        self.quiet_sessions = False  # --quiet-sessions (a relay extension)
        self.quiet_accepts = False  # --quiet-accepts (a relay extension)
        self.log_signals: int | None = None  # -S<sigmask>; None: socat's default set
        self.workers: int | Literal["auto"] = 1  # --workers (a relay extension)
        #: --deny-connect/--allow-connect (None: connect anywhere).
        self.connect_policy: ConnectPolicy | None = None
        self.show_version = False
        self.help_level = 0
        self.addresses: list[str] = []
        #: Warnings found while parsing, for ``main`` to log once logging is set up.
        self.warnings: list[str] = []

    @property
    def answers_at_once(self) -> bool:
        """Whether the command line only asks for ``-V`` or ``-h`` (no relay runs)."""
        return self.show_version or bool(self.help_level)

    @property
    def trace(self) -> TraceSettings:
        """The trace options of the run (``trace`` is imported only by a run that asks)."""
        from .trace import TraceSettings  # noqa: PLC0415 - see the module docstring

        return TraceSettings(
            verbose=self.verbose,
            hex=self.hexdump,
            raw_left=self.raw_left,
            raw_right=self.raw_right,
            session_ids=self.session_ids,
        )


def _add_to_policy(policy: ConnectPolicy | None, option: str, text: str) -> ConnectPolicy:
    """The policy with ``--deny-connect``'s or ``--allow-connect``'s networks and names added."""
    from dataclasses import replace  # noqa: PLC0415 - destinations imports it anyway

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


def parse_command_line(
    argv: Sequence[str], progname: str = "relay", *, collect_warnings: bool = False
) -> CommandLine:
    """Parse socat's global options; raise ``UsageError`` with socat's wording.

    Warnings (arguments joined back onto an address) are logged at once, or
    with ``collect_warnings`` kept in ``CommandLine.warnings`` for the caller.
    """
    line = CommandLine(progname=progname)
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
            line.session_ids = True
        elif arg == "--quiet-sessions":
            line.quiet_sessions = True
        elif arg == "--quiet-accepts":
            line.quiet_accepts = True
        elif arg == "-V":
            line.show_version = True
        elif arg in ("-h", "-?", "-hh", "-hhh", "-??", "-???"):
            line.help_level = len(arg) - 1
        elif len(arg) > 1 and set(arg[1:]) == {"d"}:
            line.d_count += len(arg) - 1
        elif arg.startswith("-d") and arg[2:].isascii() and arg[2:].isdigit():
            # socat 1.8: -d<n> sets the level directly ("-d0" .. "-d4"); any
            # larger number means everything, however many digits it has.
            line.d_number = int(arg[2:]) if len(arg) <= _MAX_D_DIGITS + 2 else 99
        elif arg == "-v":
            line.verbose = True
        elif arg == "-x":
            line.hexdump = True
        elif arg.startswith("-r"):
            line.raw_left = value(arg[2:])
        elif arg.startswith("-R"):
            line.raw_right = value(arg[2:])
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
    line.addresses = rejoin_split_options(
        args[index:], line.warnings.append if collect_warnings else None
    )
    if not line.answers_at_once and len(line.addresses) != 2:
        raise UsageError(
            f"exactly 2 addresses required (there are {len(line.addresses)}); {HELP_HINT}"
        )
    return line


def rejoin_split_options(
    arguments: list[str], warn: Callable[[str], object] | None = None
) -> list[str]:
    """Join option-only arguments back onto the address before them.

    A Kubernetes manifest written ``command: [socat, -v, TCP-LISTEN:8080,fork,
    TCP:svc:80]`` is a YAML flow sequence, which splits at every comma: the
    program receives ``TCP-LISTEN:8080``, ``fork`` and ``TCP:svc:80``. socat
    then fails with three addresses; such manifests are common, so when there
    are more than two arguments, one made only of known option names (and not
    an address keyword) is joined back with a comma, and a warning says how to
    write the manifest (given to ``warn``, else logged).
    """
    if len(arguments) <= 2:
        return arguments
    if warn is None:
        from .log import logger  # noqa: PLC0415 - see the module docstring

        warn = logger.warning
    joined: list[str] = []
    for argument in arguments:
        if joined and _is_option_list(argument):
            warn(
                f'argument "{argument}" is not an address; joined to "{joined[-1]}" as its '
                "option (in a YAML flow sequence, quote addresses that contain commas)"
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
    import re  # noqa: PLC0415 - see _C_UNSIGNED

    if not re.fullmatch(_C_UNSIGNED, text):
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
    if text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= MAX_WORKERS:
        return int(text)
    raise UsageError(
        f'option "--workers": invalid count "{shorten(text)}", expected a number of'
        f" processes from 1 to {MAX_WORKERS} such as 2, or auto (one per usable core)"
    )


def _seconds(text: str, option: str) -> float:
    """``-t``/``-T``: seconds from 0 to ``MAX_SECONDS``; not nan, not inf."""
    try:
        import re  # noqa: PLC0415 - see _C_UNSIGNED

        seconds = float(text) if re.fullmatch(_DECIMAL, text) else -1.0
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_SECONDS:
        raise UsageError(
            f'option "{option}": invalid timeout "{shorten(text)}", expected seconds '
            f"from 0 to {MAX_SECONDS} such as 5 or 0.5"
        )
    return seconds


def default_progname(argv0: str) -> str:
    """The program name for log lines: ``socat`` when invoked under that name, else ``relay``.

    socat names itself after the last component of ``argv[0]``; our container
    image installs the engine as ``socat`` too, and scripts grep for
    ``socat[pid]`` there.
    """
    return "socat" if os.path.basename(argv0) == "socat" else "relay"


def _configure_logging(line: CommandLine) -> None:
    """Set up the log as the command line's ``-d``, ``-l*`` options say (``UsageError`` if not)."""
    from .log import (  # noqa: PLC0415
        configure,
        level_from_d_count,
        level_from_d_number,
        quiet_accepts,
    )

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
    quiet_accepts(line.quiet_accepts)


def _log_error(error: RelayError, line: CommandLine | None, progname: str) -> int:
    """Log ``error`` as socat's ``E`` line; exit status 1.

    The log is set up as ``line`` says if it was not yet (``None``: the
    command line itself is wrong, so by default, on stderr). A log that
    cannot be set up is the error told: socat opens it while reading its
    options, before any address.
    """
    from .log import configure, level_from_d_count, logger  # noqa: PLC0415

    configured = False
    if line is not None:
        try:
            _configure_logging(line)
            configured = True
        except RelayError as log_error:
            error = log_error
    if not configured:
        configure(level=level_from_d_count(0), progname=progname)
    logger.error("%s", error)
    return 1


def main(argv: Sequence[str] | None = None, *, loop_factory: LoopFactory | None = None) -> int:
    """Run the engine as the ``relay`` command does; return the exit status.

    Order, for start-up time: the command line; ``-V``/``-h`` answered; the
    signals caught (``signals.catch_early``); the two addresses parsed; a TCP
    first address bound and listening (``_listen_early``); only then the log
    and the event loop, each milliseconds of imports that peers now wait
    for in the listen backlog. Nothing is logged before the log is set up.
    """
    # Before relay opens anything itself (log file, event loop): FD:<n> may
    # only name what the process was given.
    record_inherited_descriptors()
    if argv is None:
        argv = sys.argv[1:]
    progname = default_progname(sys.argv[0] if sys.argv else "relay")
    line: CommandLine | None = None
    try:
        line = parse_command_line(argv, progname, collect_warnings=True)
        if line.answers_at_once:
            return _answer(line, progname)
        # Only a run needs it; the plugin parses command lines with this module on
        # systems without SIGHUP (Windows).
        from .signals import catch_early  # noqa: PLC0415

        catch_early(line.log_signals)
        from .addresses import parse_address  # noqa: PLC0415 - see the module docstring

        first = parse_address(line.addresses[0])
        second = parse_address(line.addresses[1])
    except RelayError as exc:
        return _log_error(exc, line, progname)
    if line.connect_policy is not None:
        from .destinations import configure as configure_destinations  # noqa: PLC0415

        configure_destinations(line.connect_policy)
    listening = _listen_early(first, second, line)
    try:
        _configure_logging(line)
    except RelayError as exc:
        if listening:
            from .transports.sockbind import close_early  # noqa: PLC0415

            close_early()
        return _log_error(exc, None, progname)
    from .log import logger  # noqa: PLC0415 - see the module docstring

    for warning in line.warnings:
        logger.warning("%s", warning)
    from .running import run  # noqa: PLC0415 - see the module docstring

    return run(line, first, second, loop_factory)


def _answer(line: CommandLine, progname: str) -> int:
    """``-V`` or ``-h``: print the answer; exit status 0 (1 if the log cannot be set up)."""
    # They log nothing: unless the log goes somewhere socat would open (-lf,
    # -ly), they answer without loading ``logging``.
    if (line.log_file, line.syslog_facility) != (None, None):
        try:
            _configure_logging(line)
        except RelayError as exc:
            return _log_error(exc, None, progname)
    if line.show_version:
        sys.stdout.write(version_text(line.progname))
        return 0
    from .usage import usage_text  # noqa: PLC0415 - -h reads every table

    sys.stdout.write(usage_text(line.help_level))
    return 0


def _listen_early(first: AddressSpec, second: AddressSpec, line: CommandLine) -> bool:
    """Listen for a TCP first address before the event loop loads (see ``sockbind``).

    Not when something else opens before the listener and may be counted on
    once the port answers (or fail the run first): ``--metrics``'s endpoint,
    ``-r``/``-R``'s dump files, address 2's ``MUX-LISTEN`` port. Which first
    addresses qualify is ``listen_early``'s to say. Returns whether it asked
    (``sockbind.close_early`` then undoes what it made).
    """
    from .addresses import Address  # noqa: PLC0415 - loaded by parse_address already

    if (
        not isinstance(first, Address)
        or (isinstance(second, Address) and second.keyword == "MUX-LISTEN")
        or line.metrics_address is not None
        or (line.raw_left, line.raw_right) != (None, None)
    ):
        return False
    from .transports.sockbind import listen_early  # noqa: PLC0415

    listen_early(first, line.family)
    return True
