"""``relay [options] ADDRESS1 ADDRESS2``: socat's command line, exit codes and signals.

Exit statuses as socat's: 0 after a normal end, 1 after an error, and
128 + the signal number when a signal (SIGINT, SIGTERM, SIGHUP) ended the run.
Errors are one socat-style ``E`` line on stderr, never a traceback.

SIGTERM, which Kubernetes sends at every rollout, stops a relay whose first
address listens gracefully (a relay extension; socat ends at once): the
listener closes at once, so new connections are refused, running sessions
get ``--grace-period`` seconds (default 20, below Kubernetes' default
``terminationGracePeriodSeconds`` of 30) to end, and each session still
running then is cut with a log line saying what it held. A relay that does
not listen (``PTY``, ``STDIO``, a connecting first address: one session,
not a service in a pod) ends at once, as socat. SIGINT and SIGHUP end at
once as in socat, and so does any signal during a graceful stop.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .addresses import Address, AddressSpec, address_kind, parse_address
from .destinations import ConnectPolicy, parse_networks
from .destinations import configure as configure_destinations
from .errors import RelayError, UsageError, shorten
from .log import (
    NOTICE,
    WARNING,
    configure,
    default_progname,
    level_from_d_count,
    level_from_d_number,
    logger,
)
from .metrics import parse_metrics_address
from .options import lookup_option
from .session import DEFAULT_UDP_FORK_IDLE_TIMEOUT, Relay, RunSettings
from .statistics import log_statistics
from .trace import TraceSettings
from .transfer import DEFAULT_BLOCK_SIZE, TransferSettings
from .transports import LISTENERS
from .transports.stdio import record_inherited_descriptors
from .usage import usage_text
from .version import version_text

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: Signals that end a run the way they end socat: cleanly, with 128 + signum.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

HELP_HINT = 'use option "-h" for help'

#: The signal that stops gracefully when ``--grace-period`` is not 0.
GRACEFUL_SIGNAL = signal.SIGTERM
#: Seconds a graceful stop waits for sessions: below Kubernetes' default
#: ``terminationGracePeriodSeconds`` (30), after which the kubelet kills.
DEFAULT_GRACE_PERIOD = 20.0

#: Long options (relay extensions; socat's options are all single-dash) and their values.
LONG_OPTIONS = {
    "--metrics": "[HOST:]PORT",
    "--grace-period": "SECONDS",
    "--deny-connect": "CIDR[,CIDR...]",
    "--allow-connect": "CIDR[,CIDR...]",
}

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
    block_size: int = DEFAULT_BLOCK_SIZE
    close_timeout: float = 0.5
    idle_timeout: float | None = None  # -T; None: not given, 0: given as "none"
    unidirectional: Literal["both", "left-to-right", "right-to-left"] = "both"
    family: int = socket.AF_UNSPEC
    metrics_address: tuple[str, int] | None = None
    grace_period: float = DEFAULT_GRACE_PERIOD
    statistics: bool = False  # --statistics
    connect_policy: ConnectPolicy = field(default_factory=ConnectPolicy)
    show_version: bool = False
    help_level: int = 0
    addresses: list[str] = field(default_factory=list)


def parse_command_line(argv: Sequence[str], progname: str = "relay") -> CommandLine:
    """Parse socat's global options; raise ``UsageError`` with socat's wording."""
    line = CommandLine(progname=progname)
    verbose = hexdump = False
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
            policy = line.connect_policy
            if name == "--metrics":
                line.metrics_address = parse_metrics_address(text)
            elif name == "--deny-connect":
                denied = policy.denied + parse_networks(text, name)
                line.connect_policy = ConnectPolicy(denied, policy.allowed)
            elif name == "--allow-connect":
                allowed = (policy.allowed or ()) + parse_networks(text, name)
                line.connect_policy = ConnectPolicy(policy.denied, allowed)
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
        elif arg == "-4":
            line.family = socket.AF_INET
        elif arg == "-6":
            line.family = socket.AF_INET6
        elif arg == "-0":
            # socat: "Do not prefer a particular IP version; this lets passive
            # addresses (LISTEN, RECV, ...) serve both versions": the same as
            # SOCAT_DEFAULT_LISTEN_IP=0, which the listeners read.
            line.family = socket.AF_UNSPEC
            os.environ["SOCAT_DEFAULT_LISTEN_IP"] = "0"
        else:
            raise UsageError(f'unknown option "{arg}"; {HELP_HINT}')
    line.addresses = rejoin_split_options(args[index:])
    line.trace = TraceSettings(
        verbose=verbose, hex=hexdump, raw_left=raw_left, raw_right=raw_right
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
    names = [item.partition("=")[0] for item in argument.split(",")]
    return (
        address_kind(argument.partition(":")[0]) is None
        and ":" not in names[0]
        and all(lookup_option(name) is not None for name in names)
    )


def _block_size(text: str) -> int:
    """``-b``: a positive C integer (``4096``, ``0x1000``) no larger than one read can be."""
    number = 0
    if _C_UNSIGNED.fullmatch(text):
        digits = text.strip().lstrip("+")
        base = 16 if digits[:2] in ("0x", "0X") else 8 if digits.startswith("0") else 10
        try:
            number = int(digits, base)
        except ValueError:  # more decimal digits than Python converts: far too big
            number = MAX_BLOCK_SIZE + 1
    if number <= 0:
        raise UsageError(f'option "-b": invalid size "{shorten(text)}", expected a positive number')
    if number > MAX_BLOCK_SIZE:
        # socat 1.7.4: "buffer size option (-b) to big - %zu (max is %zu)" (sic).
        raise UsageError(
            f"buffer size option (-b) to big - {shorten(text)} (max is {MAX_BLOCK_SIZE})"
        )
    return number


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


def run_settings(line: CommandLine) -> RunSettings:
    """What the global options decide for the run."""
    return RunSettings(
        transfer=TransferSettings(
            block_size=line.block_size,
            close_timeout=line.close_timeout,
            idle_timeout=line.idle_timeout or None,
            unidirectional=line.unidirectional,
        ),
        trace=line.trace,
        family=line.family,
        metrics_address=line.metrics_address,
        # -T, even -T0, says what the user wants; without it, relay's default.
        udp_fork_idle_timeout=(
            DEFAULT_UDP_FORK_IDLE_TIMEOUT if line.idle_timeout is None else None
        ),
    )


def _default_loop_factory() -> LoopFactory | None:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


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
            sys.stdout.write(usage_text(line.help_level))
            return 0
        first = parse_address(line.addresses[0])
        second = parse_address(line.addresses[1])
    except RelayError as exc:
        logger.error("%s", exc)
        return 1
    settings = run_settings(line)
    configure_destinations(line.connect_policy)
    factory = loop_factory or _default_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        status = runner.run(_run_until_signal(first, second, settings, line.grace_period))
    logger.log(NOTICE, "exiting with status %d", status)
    if line.statistics:
        log_statistics(line.unidirectional)
    return status


async def _run_until_signal(
    first: AddressSpec, second: AddressSpec, settings: RunSettings, grace_period: float
) -> int:
    """Run the relay; a handled signal stops it (see the module docstring): 128 + signum."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []
    relay = Relay(first, second, settings)
    listens = isinstance(first, Address) and first.keyword in LISTENERS

    def on_signal(signum: int) -> None:
        logger.log(NOTICE, "socat_signal(): handling signal %d", signum)
        graceful = (
            listens and not received and signum == GRACEFUL_SIGNAL and grace_period > 0
        )
        received.append(signum)
        if graceful:
            relay.stop(grace_period)
        else:
            task.cancel()

    for signum in HANDLED_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    # socat: SIGUSR1 logs the statistics and the run goes on.
    loop.add_signal_handler(signal.SIGUSR1, log_statistics, settings.transfer.unidirectional)
    try:
        status = await relay.run()
    except asyncio.CancelledError:
        if not received:
            raise
        status = 128 + received[0]
    finally:
        for handled in (*HANDLED_SIGNALS, signal.SIGUSR1):
            loop.remove_signal_handler(handled)
    if received:
        logger.log(WARNING, "exiting on signal %d", received[0])
        return 128 + received[0]
    return status
