"""Run a parsed command line: the event loop, the relay, and the signals that stop it.

``cli`` parses the command line and answers ``-V``, ``-h`` and usage errors
without this module: the event loop (asyncio imports ``ssl``, ``logging``
and ``concurrent.futures``), the session and the transports are most of a
Python program's start-up, and ``cli`` imports them only for a real run.

SIGTERM, which Kubernetes sends at every rollout, stops a relay whose first
address listens gracefully (a relay extension; socat ends at once): the
listener closes at once, so new connections are refused, running sessions
get ``--grace-period`` seconds (default 20, below Kubernetes' default
``terminationGracePeriodSeconds`` of 30) to end, and each session still
running then is cut with a log line saying what it held. A relay that does
not listen (``PTY``, ``STDIO``, a connecting first address: one session,
not a service in a pod) ends at once, as socat. SIGINT and SIGHUP end at
once as in socat, and so does any signal during a graceful stop.

``-S<sigmask>`` chooses the signals caught (see ``signals``).
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

from . import signals
from .addresses import Address, AddressSpec, runs_program
from .descriptors import raise_open_files_limit
from .log import NOTICE, logger
from .loops import LoopFactory, stop_handling, uvloop_factory
from .session import DEFAULT_UDP_FORK_IDLE_TIMEOUT, Relay, RunSettings
from .statistics import log_statistics
from .transfer import DEFAULT_BLOCK_SIZE, TransferSettings
from .transports import LISTENERS
from .transports.sockbind import close_early
from .transports.tcp import TcpListener

if TYPE_CHECKING:
    from .cli import CommandLine

#: The signal that stops gracefully when ``--grace-period`` is not 0.
GRACEFUL_SIGNAL = signal.SIGTERM


def run_settings(line: CommandLine) -> RunSettings:
    """What the global options decide for the run."""
    return RunSettings(
        transfer=TransferSettings(
            block_size=line.block_size or DEFAULT_BLOCK_SIZE,
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
        quiet_sessions=line.quiet_sessions,
    )


def run(
    line: CommandLine,
    first: AddressSpec,
    second: AddressSpec,
    loop_factory: LoopFactory | None = None,
    *,
    listener: TcpListener | None = None,
    stop_fd: int | None = None,
) -> int:
    """Relay ``first`` and ``second`` as ``line`` says until the end; the exit status.

    ``--workers`` other than 1 hands the run to ``workers.run_workers``, which
    calls this again in each worker with the ``listener`` it bound and the
    ``stop_fd`` whose end (EOF) means a graceful stop.
    """
    # A program run by EXEC or SYSTEM keeps the limit the relay was given, as under
    # socat: one that uses select(), or closes every descriptor up to the limit,
    # expects it.
    if not (runs_program(first) or runs_program(second)):
        raised = raise_open_files_limit()
        if raised is not None:
            logger.debug("open files limit raised from %d to %d", *raised)
    if line.workers != 1:
        from . import workers  # noqa: PLC0415 - only for a run with workers

        problem = workers.refusal(first, second, line)
        if problem is not None:
            logger.error("%s", problem)
            return 1
        count = workers.worker_count(line.workers)
        if count > 1:
            assert isinstance(first, Address)  # refusal() checked it
            return workers.run_workers(line, first, second, count, loop_factory)
    settings = run_settings(line)
    factory = loop_factory or uvloop_factory()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            status = runner.run(
                _run_until_signal(first, second, settings, line.grace_period, line.log_signals,
                                  listener, stop_fd)
            )
    finally:
        close_early()  # bound at start-up, but the run ended before it listened
    logger.log(NOTICE, "exiting with status %d", status)
    if line.statistics:
        log_statistics(line.unidirectional)
    return status


async def open_first_listener(first: Address, line: CommandLine) -> TcpListener:
    """Bind address 1 as a run would (its ``retry`` too), before workers share it."""
    listener = await Relay(first, first, run_settings(line)).open_listener(first)
    assert isinstance(listener, TcpListener)  # workers.refusal() admits TCP listeners only
    return listener


async def _run_until_signal(
    first: AddressSpec,
    second: AddressSpec,
    settings: RunSettings,
    grace_period: float,
    signal_mask: int | None,
    listener: TcpListener | None = None,
    stop_fd: int | None = None,
) -> int:
    """Run the relay; a handled signal stops it (see the module docstring): 128 + signum.

    In a worker, the end of ``stop_fd`` (the supervisor closed it, or died)
    stops it as SIGTERM does.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []
    relay = Relay(first, second, settings, listener=listener)
    listens = isinstance(first, Address) and first.keyword in LISTENERS

    def on_signal(signum: int) -> None:
        logger.log(NOTICE, "socat_signal(): handling signal %d", signum)
        if signals.forward(signum):  # sigint & co.: the child's business
            return
        graceful = listens and not received and signum == GRACEFUL_SIGNAL and grace_period > 0
        received.append(signum)
        if graceful:
            relay.stop(grace_period)
        else:
            task.cancel()

    told_to_stop: list[bool] = []  # by the supervisor (``stop_fd``), not by a signal

    def on_stop_pipe() -> None:
        assert stop_fd is not None
        loop.remove_reader(stop_fd)
        if not received:  # a signal of its own may have come first
            told_to_stop.append(True)
            if listens and grace_period > 0:
                relay.stop(grace_period)
            else:
                task.cancel()

    caught = signals.caught(signal_mask)
    for signum in caught:
        loop.add_signal_handler(signum, on_signal, signum)
    if stop_fd is not None:
        loop.add_reader(stop_fd, on_stop_pipe)
    # socat: SIGUSR1 logs the statistics and the run goes on.
    loop.add_signal_handler(signal.SIGUSR1, log_statistics, settings.transfer.unidirectional)
    early = signals.take_early()
    if early is not None:  # it came while the relay started: it never runs
        logger.log(NOTICE, "socat_signal(): handling signal %d", early)
        received.append(early)
    status = 0
    try:
        if not received:
            status = await relay.run()
    except asyncio.CancelledError:
        # The end of a graceful stop cancels what still runs, as does a stop at once.
        if not (received or told_to_stop):
            raise
        status = 128 + received[0] if received else 0
    finally:
        stop_handling(loop, (*caught, signal.SIGUSR1))
        if stop_fd is not None:
            loop.remove_reader(stop_fd)
    if received:
        logger.log(signals.exit_log_level(received[0]), "exiting on signal %d", received[0])
        return 128 + received[0]
    return status
