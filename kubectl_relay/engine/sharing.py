"""What the workers of one ``--workers`` run share: their counters and ``max-children``.

Both are made by the supervisor before it forks (``workers.py``), so every
worker inherits them; neither needs a lock or a thread:

- ``SharedCounters``: an anonymous shared mapping with one row of counters
  per worker. A worker copies its own ``metrics.METRICS`` into its row
  (``publish``) when a session ends and once a second; only that worker
  writes the row, and the supervisor sums the rows when the ``--metrics``
  endpoint is scraped or ``--statistics`` are logged.
- ``SharedSlots``: ``max-children`` for the whole run as tokens in a pipe,
  one byte per slot. Taking a slot is reading one byte (a worker without a
  slot waits for the pipe to be readable, so it accepts nothing meanwhile);
  giving it back is writing one. The worker's row counts the slots it holds,
  so that the supervisor returns the slots of a worker that died.

``CURRENT`` is this process's worker, or None in a relay of one process:
then ``publish`` costs one comparison and nothing is shared.
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
from dataclasses import dataclass

from .errors import UsageError
from .metrics import DIRECTIONS, METRICS, Metrics

#: The columns of a worker's row, in order.
COLUMNS = (
    "sessions_total",
    "sessions_active",
    "session_errors_total",
    "left-to-right bytes",
    "left-to-right blocks",
    "right-to-left bytes",
    "right-to-left blocks",
    "slots held",
)
_HELD = COLUMNS.index("slots held")
_ACTIVE = COLUMNS.index("sessions_active")
_CELL_BYTES = 8  # a signed 64-bit counter ("q")


class SharedCounters:
    """One row of counters per worker in memory shared across ``fork``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._mapping = mmap.mmap(-1, workers * len(COLUMNS) * _CELL_BYTES)
        self.cells = memoryview(self._mapping).cast("q")

    def publish(self, index: int, metrics: Metrics = METRICS) -> None:
        """Copy ``metrics`` into row ``index`` (only worker ``index`` calls this)."""
        base = index * len(COLUMNS)
        cells = self.cells
        cells[base] = metrics.sessions_total
        cells[base + 1] = metrics.sessions_active
        cells[base + 2] = metrics.session_errors_total
        left, right = (metrics.bytes_total[name] for name in DIRECTIONS)
        cells[base + 3], cells[base + 4] = left[0], left[1]
        cells[base + 5], cells[base + 6] = right[0], right[1]

    def total(self) -> Metrics:
        """The sum of every worker's row: the counters of the whole relay."""
        sums = [0] * len(COLUMNS)
        for index in range(self.workers):
            base = index * len(COLUMNS)
            for column in range(len(COLUMNS)):
                sums[column] += self.cells[base + column]
        metrics = Metrics(
            sessions_total=sums[0], sessions_active=sums[1], session_errors_total=sums[2]
        )
        metrics.bytes_total[DIRECTIONS[0]][:] = sums[3:5]
        metrics.bytes_total[DIRECTIONS[1]][:] = sums[5:7]
        return metrics

    def held(self, index: int) -> int:
        """The ``max-children`` slots worker ``index`` holds."""
        return self.cells[index * len(COLUMNS) + _HELD]

    def add_held(self, index: int, change: int) -> None:
        """Worker ``index`` took (+1) or gave back (-1) a slot."""
        self.cells[index * len(COLUMNS) + _HELD] += change

    def forget_worker(self, index: int) -> None:
        """Worker ``index`` is gone: its sessions and its slots with it (its totals stay)."""
        base = index * len(COLUMNS)
        self.cells[base + _ACTIVE] = 0
        self.cells[base + _HELD] = 0


class SharedSlots:
    """``max-children`` across processes: a pipe holding one byte per free slot."""

    def __init__(self, limit: int, counters: SharedCounters) -> None:
        self.limit = limit
        self.counters = counters
        self.index = -1  # the worker this process is (``Worker`` sets it after the fork)
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._fill(limit)
        except BaseException:
            self.close()
            raise

    def _fill(self, limit: int) -> None:
        if limit > fcntl.fcntl(self.write_fd, fcntl.F_GETPIPE_SZ):
            try:
                fcntl.fcntl(self.write_fd, fcntl.F_SETPIPE_SZ, limit)
            except OSError:
                capacity = fcntl.fcntl(self.write_fd, fcntl.F_GETPIPE_SZ)
                raise UsageError(
                    f'option "max-children": {limit} is more than --workers can share '
                    f"(at most {capacity}; or leave --workers out)"
                ) from None
        os.write(self.write_fd, b"s" * limit)

    async def acquire(self) -> bool:
        """Take a slot, waiting (without accepting) until one is free."""
        while True:
            try:
                if os.read(self.read_fd, 1):
                    self.counters.add_held(self.index, 1)
                    return True
            except BlockingIOError:
                pass
            await _readable(self.read_fd)

    def release(self) -> None:
        """Give a slot back (a session ended, or an accept failed)."""
        self.counters.add_held(self.index, -1)
        os.write(self.write_fd, b"s")

    def give_back(self, count: int) -> None:
        """The supervisor returns the slots a dead worker held."""
        if count > 0:
            os.write(self.write_fd, b"s" * count)

    def close(self) -> None:
        """Close both ends of the pipe."""
        for fd in (self.read_fd, self.write_fd):
            os.close(fd)


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


@dataclass
class Worker:
    """This process as one worker of a ``--workers`` run."""

    index: int  # 0 to count - 1
    count: int
    counters: SharedCounters
    slots: SharedSlots | None

    def publish(self) -> None:
        """Copy this process's counters into its row."""
        self.counters.publish(self.index)


#: This process's worker; None when the relay is one process.
CURRENT: Worker | None = None


def become_worker(worker: Worker) -> None:
    """Called in a worker right after the fork."""
    global CURRENT  # one per process, set once after the fork
    CURRENT = worker
    if worker.slots is not None:
        worker.slots.index = worker.index


def publish() -> None:
    """Share this worker's counters now (a session ended); nothing in a one-process relay."""
    if CURRENT is not None:
        CURRENT.publish()


class _Repeating:
    """``publish`` every ``seconds`` on ``loop`` until cancelled."""

    def __init__(self, seconds: float, loop: asyncio.AbstractEventLoop) -> None:
        self.seconds, self.loop = seconds, loop
        self.handle = loop.call_later(seconds, self._tick)

    def _tick(self) -> None:
        publish()
        self.handle = self.loop.call_later(self.seconds, self._tick)

    def cancel(self) -> None:
        self.handle.cancel()


def publish_every(seconds: float, loop: asyncio.AbstractEventLoop) -> _Repeating:
    """Share this worker's counters every ``seconds`` (long sessions' bytes as they go)."""
    return _Repeating(seconds, loop)


def shared_slots() -> SharedSlots | None:
    """The run's ``max-children`` slots when they are shared by workers."""
    return None if CURRENT is None else CURRENT.slots
