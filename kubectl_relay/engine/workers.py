"""``relay --workers N|auto``: N processes accepting on one listening socket (a relay extension).

One event loop uses one core; a forking TCP listener's connection rate ends
there. With ``--workers N`` the relay binds its listener once, then forks N
workers, each running the ordinary relay (the fast path of ``bridge.py``
where it applies) with its own event loop on that same socket, as nginx's
workers do; the kernel wakes a waiting worker for each new peer. A single
socket rather than one ``SO_REUSEPORT`` socket per worker: a busy or dead
worker then leaves its peers to the others instead of a backlog of its own.

This process stays the supervisor and accepts nothing. It serves
``--metrics`` with the sum of the workers' counters and logs
``--statistics`` from that sum (``sharing.SharedCounters``); ``max-children``
is one limit for the run (``sharing.SharedSlots``). Signals: a graceful
SIGTERM is passed on by closing the stop pipe, whose end the workers watch
(so a worker that also got the signal itself, from a process-group or
cgroup kill, still stops gracefully once); other caught signals are sent on
to every worker. A supervisor that dies closes the pipe too, and the
workers stop gracefully. A worker that dies is logged as socat logs a child
(``waitpid(): child PID exited on signal N``); the others go on, its
``max-children`` slots are given back and it is not restarted. The run ends
when every worker has ended; its status is the worst of the workers that
failed (128 + N for one killed by signal N), else 128 + the signal that
stopped the supervisor, as without workers, else the workers' worst.

``auto`` is the cores this process may use (``sched_getaffinity``), capped by
the cgroup's CPU quota (a pod with ``limits.cpu: 1`` gets 1 worker). The
default is 1, one process, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import signals
from .addresses import Address, AddressSpec, DualAddress
from .errors import RelayError, UsageError, shorten
from .log import NOTICE, logger
from .loops import stop_handling
from .metrics import start_metrics_server
from .sharing import SharedCounters, SharedSlots, Worker, become_worker
from .statistics import log_statistics

if TYPE_CHECKING:
    from .cli import CommandLine
    from .loops import LoopFactory

#: First addresses workers can share: forking TCP listeners.
SHARED_LISTENERS = frozenset({"TCP-LISTEN", "TCP4-LISTEN", "TCP6-LISTEN"})
#: Options of address 1 that are the listening process's alone, which workers cannot split.
UNSHARED_OPTIONS = ("accept-timeout",)
#: Second addresses that listen themselves: only one process can.
UNSHARED_SECOND = frozenset({"MUX-LISTEN"})

#: cgroup v2's CPU quota ("max 100000" or "200000 100000"), and v1's pair.
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                 Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))  # fmt: skip


def usable_cores() -> int:
    """Cores this process may run on, capped by its cgroup's CPU quota (at least 1)."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_cpu_quota() -> float | None:
    """CPUs the cgroup's quota allows (quota / period), or None without a quota."""
    try:
        quota_text, period_text = CGROUP_V2_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota_text, period_text = (path.read_text().strip() for path in CGROUP_V1_CPU)
        except (OSError, ValueError):
            return None
    try:
        quota, period = int(quota_text), int(period_text)
    except ValueError:  # "max": no quota
        return None
    return quota / period if quota > 0 and period > 0 else None


def worker_count(requested: int | str) -> int:
    """``--workers``'s count: the number itself, or ``usable_cores()`` for ``auto``."""
    return usable_cores() if requested == "auto" else int(requested)


def refusal(first: AddressSpec, second: AddressSpec, line: CommandLine) -> str | None:
    """Why this run cannot have workers, as the one error line to show; None if it can."""
    prefix = 'option "--workers"'
    if not (isinstance(first, Address) and first.keyword in SHARED_LISTENERS
            and first.options.flag("fork")):  # fmt: skip
        return (
            f"{prefix}: workers share a forking TCP listener, so address 1 must be one such"
            f' as TCP-LISTEN:8080,fork (not "{shorten(str(first))}")'
        )
    for name in UNSHARED_OPTIONS:
        if name in first.options:
            return f'{prefix}: option "{name}" of address 1 is for one process; leave one out'
    seconds = (second.reader, second.writer) if isinstance(second, DualAddress) else (second,)
    for part in seconds:
        if part.keyword in UNSHARED_SECOND or part.keyword.endswith("-LISTEN"):
            return (
                f'{prefix}: address 2 "{shorten(str(part))}" listens itself, and only one'
                " process can; leave one out"
            )
    if line.trace.raw_left or line.trace.raw_right:
        return f'{prefix}: each worker would write the -r/-R file over; leave one out'
    return None


def run_workers(
    line: CommandLine,
    first: Address,
    second: AddressSpec,
    count: int,
    loop_factory: LoopFactory | None,
) -> int:
    """Bind ``first``, fork ``count`` workers on it and supervise them; the run's status."""
    from .running import open_first_listener, run  # noqa: PLC0415 - running imports us

    try:
        listener = asyncio.run(open_first_listener(first, line))
    except RelayError as exc:
        logger.error("%s", exc)
        return 1
    counters = SharedCounters(count)
    limit = first.options.integer("max-children")
    try:
        slots = SharedSlots(limit, counters) if limit else None
    except UsageError as exc:
        listener.sock.close()
        logger.error("%s", exc)
        return 1
    stop_read, stop_write = os.pipe2(os.O_CLOEXEC)
    worker_line = copy.copy(line)  # each worker's run: no endpoint, no statistics of its own
    worker_line.metrics_address, worker_line.statistics, worker_line.workers = None, False, 1
    pids: dict[int, int] = {}  # pid -> worker index
    for index in range(count):
        _flush_logs()  # nothing buffered is written twice
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: go on with those there are
            logger.error("fork(): %s", exc.strerror or exc)
            break
        if pid == 0:  # the worker: it never returns from here
            status = 1
            try:
                os.close(stop_write)
                become_worker(Worker(index, count, counters, slots))
                status = run(worker_line, first, second, loop_factory,
                             listener=listener, stop_fd=stop_read)  # fmt: skip
            except BaseException as exc:  # a worker must never return to the caller
                logger.error("worker %d: %s", index + 1, str(exc) or type(exc).__name__)
            finally:
                _flush_logs()
                os._exit(status)
        pids[pid] = index
        logger.log(NOTICE, "forked off child process %d", pid)
    os.close(stop_read)
    listener.sock.close()  # only the workers accept
    if not pids:
        os.close(stop_write)
        return 1
    return asyncio.run(_supervise(line, pids, counters, slots, stop_write))


async def _supervise(
    line: CommandLine,
    pids: dict[int, int],
    counters: SharedCounters,
    slots: SharedSlots | None,
    stop_write: int,
) -> int:
    """Pass signals on, serve the summed metrics, reap the workers; the worst status."""
    loop = asyncio.get_running_loop()
    received: list[int] = []
    statuses: list[int] = []  # of workers that ended as told
    failures: list[int] = []  # of workers that died or failed: these decide the status
    running = dict(pids)
    all_ended = asyncio.Event()
    stop_pipe = [stop_write]  # open until the workers are told to stop

    def stop_gracefully() -> None:
        if stop_pipe:
            os.close(stop_pipe.pop())

    def on_signal(signum: int) -> None:
        logger.log(NOTICE, "socat_signal(): handling signal %d", signum)
        graceful = not received and signum == signal.SIGTERM and line.grace_period > 0
        received.append(signum)
        if graceful:
            stop_gracefully()
        else:
            for pid in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def on_exit(pid: int, pidfd: int) -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        _, wait_status = os.waitpid(pid, 0)
        index = running.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if code < 0:
            logger.error("waitpid(): child %d exited on signal %d", pid, -code)
            failures.append(128 - code)
        elif code and code - 128 not in received:
            logger.error("waitpid(): child %d exited with status %d", pid, code)
            failures.append(code)
        else:
            logger.info("waitpid(): child %d exited with status %d", pid, code)
            statuses.append(code)
        if slots is not None:
            slots.give_back(counters.held(index))
        counters.forget_worker(index)
        if not running:
            all_ended.set()

    caught = signals.caught(line.log_signals)
    for signum in caught:
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: log_statistics(line.unidirectional, counters.total())
    )
    for pid in list(running):
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, on_exit, pid, pidfd)
    early = signals.take_early()
    if early is not None:  # before the handlers: the workers may have missed it
        received.append(early)
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, early)
    metrics_server = None
    try:
        if line.metrics_address is not None:
            host, port = line.metrics_address
            try:
                metrics_server = await start_metrics_server(lambda: counters.total().render(),
                                                            host, port)  # fmt: skip
            except OSError as exc:
                logger.error('option "--metrics": cannot listen on %s:%d: %s',
                             host, port, exc.strerror or exc)  # fmt: skip
                failures.append(1)
                stop_gracefully()
        await all_ended.wait()
    finally:
        stop_gracefully()
        if metrics_server is not None:
            metrics_server.close()
        stop_handling(loop, (*caught, signal.SIGUSR1))
    status = max(statuses, default=0)
    if received:
        logger.log(signals.exit_log_level(received[0]), "exiting on signal %d", received[0])
        status = 128 + received[0]
    if failures:  # a worker that died is worse than the stop that was asked for
        status = max(failures)
    logger.log(NOTICE, "exiting with status %d", status)
    if line.statistics:
        log_statistics(line.unidirectional, counters.total())
    return status


def _flush_logs() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    for handler in logger.handlers:
        handler.flush()
