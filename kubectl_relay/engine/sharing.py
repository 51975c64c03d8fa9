"""What the workers of one ``--workers`` run share: their counters and ``max-children``.

Both are made by the supervisor before it forks (``workers.py``), so every
worker inherits them; neither needs a lock or a thread:

- ``SharedCounters``: an anonymous shared mapping with one row of counters
  per worker. A worker's ``metrics.METRICS`` keeps its counters in its row
  (``Metrics.share``), so only that worker writes the row, and the
  supervisor sums the rows when the ``--metrics`` endpoint is scraped or
  ``--statistics`` are logged: exact at every instant, and a worker that
  is killed leaves its counts behind.
- ``SharedSlots``: ``max-children`` for the whole run as tokens in a pipe,
  one byte per slot. Taking a slot is reading one byte (a worker without a
  slot waits for the pipe to be readable, so it accepts nothing meanwhile);
  giving it back is writing one. The worker's row counts the slots it holds,
  so that the supervisor returns the slots of a worker that died.

``CURRENT`` is this process's worker, or None in a relay of one process.
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
from dataclasses import dataclass

from .errors import UsageError
from .metrics import METRICS, ROW_CELLS, Metrics

#: A worker's row: the cells of its ``Metrics``, then the ``max-children`` slots it holds.
ROW = ROW_CELLS + 1
_HELD = ROW_CELLS
_ACTIVE = 1  # Metrics.sessions_active's cell


class SharedCounters:
    """One row of counters per worker in memory shared across ``fork``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._mapping = mmap.mmap(-1, workers * ROW * 8)
        self.cells = memoryview(self._mapping).cast("q")

    def row(self, index: int) -> memoryview:
        """Worker ``index``'s row (only that worker writes it)."""
        return self.cells[index * ROW : (index + 1) * ROW]

    def total(self) -> Metrics:
        """The sum of every worker's counters: those of the whole relay."""
        metrics = Metrics()
        for index in range(self.workers):
            metrics.add(self.row(index))
        return metrics

    def held(self, index: int) -> int:
        """The ``max-children`` slots worker ``index`` holds."""
        return self.cells[index * ROW + _HELD]

    def add_held(self, index: int, change: int) -> None:
        """Worker ``index`` took (+1) or gave back (-1) a slot."""
        self.cells[index * ROW + _HELD] += change

    def forget_worker(self, index: int) -> None:
        """Worker ``index`` is gone: its sessions and its slots with it (its totals stay)."""
        self.cells[index * ROW + _ACTIVE] = 0
        self.cells[index * ROW + _HELD] = 0


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

    @property
    def wake_fd(self) -> int:
        """Readable while a slot is free."""
        return self.read_fd

    def take(self) -> bool:
        """Take a slot if one is free."""
        try:
            if os.read(self.read_fd, 1):
                self.counters.add_held(self.index, 1)
                return True
        except BlockingIOError:
            pass
        return False

    async def acquire(self) -> bool:
        """Take a slot, waiting (without accepting) until one is free."""
        while not self.take():
            await _readable(self.read_fd)
        return True

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
    """Wait until ``fd`` can be read."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():  # the loop may call again before the waiter removes us
            ready.set_result(None)

    loop.add_reader(fd, wake)
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


#: This process's worker; None when the relay is one process.
CURRENT: Worker | None = None


def become_worker(worker: Worker) -> None:
    """Called in a worker right after the fork."""
    global CURRENT  # one per process, set once after the fork
    CURRENT = worker
    METRICS.share(worker.counters.row(worker.index))
    if worker.slots is not None:
        worker.slots.index = worker.index


def shared_slots() -> SharedSlots | None:
    """The run's ``max-children`` slots when they are shared by workers."""
    return None if CURRENT is None else CURRENT.slots
