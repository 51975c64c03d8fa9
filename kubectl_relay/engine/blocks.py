"""Read buffers lent to the fast path's bulk reads only while their data is in flight.

(Small messages are read through the event loop's own buffer: ``ends.py``.)
A session of the fast path (``bridge.py``) reads a block, hands it to the
other side's transport and is done with it, usually at once: the write goes
straight into the kernel. Keeping a buffer per side between reads would cost
an idle relayed connection two read buffers (8 KiB each, or up to ``-b``)
for as long as it lives; allocating one per read costs a zero-filled
``bytearray`` (or a fresh mapping whose every page faults in) per block,
which was the largest part of the fast path's Python time on bulk transfers.
So sides borrow a buffer from this pool for each read and give it back as
soon as the transport has taken the bytes; a buffer the transport still
points at (a partial write) is given back by its side once that transport's
write buffer is empty, which means the kernel has every byte of it.

The pool keeps a bounded number of buffers of each size (``POOL_BYTES`` a
size, at least ``MIN_KEPT``), so what it holds under load is bounded too; the
rest go back to the allocator (mapped ones to the kernel), and so does all
of it but two first-read buffers once the last session has ended (``settle``).
Each thread has its own pool (an event loop runs on one thread; the tests
run several engines in one process), and every session of a loop shares it.
"""

from __future__ import annotations

import threading

from .transfer import INITIAL_BLOCK_SIZE, new_buffer

#: Bytes of idle buffers kept per buffer size.
POOL_BYTES = 4 * 1024 * 1024

#: Idle buffers kept per size however large they are: a bulk direction needs
#: two (one being read into, one a slow writer still points at).
MIN_KEPT = 2

#: First-read buffers kept when no session is left: a relay serving one short
#: connection after another zero-filled two new ones for each (8% of the
#: instructions of a short connection), and 16 KiB is what one session holds.
KEPT_WHEN_SETTLED = 2


class BufferPool:
    """Free read buffers by size: ``take`` one, ``give`` it back when nothing points at it."""

    def __init__(self) -> None:
        self._free: dict[int, list[memoryview]] = {}

    def take(self, size: int) -> memoryview:
        """A buffer of exactly ``size`` bytes: a kept one if there is one, else a new one."""
        kept = self._free.get(size)
        return kept.pop() if kept else new_buffer(size)

    def give(self, buffer: memoryview) -> None:
        """Take ``buffer`` back: no transport and no caller may use it any more."""
        size = len(buffer)
        kept = self._free.setdefault(size, [])
        if len(kept) < max(MIN_KEPT, POOL_BYTES // size):
            kept.append(buffer)

    def settle(self) -> None:
        """No session is left: let the kept buffers go, but ``KEPT_WHEN_SETTLED`` of the
        first read's size (what the next session's two sides take first)."""
        first_reads = self._free.get(INITIAL_BLOCK_SIZE, [])[:KEPT_WHEN_SETTLED]
        self._free = {INITIAL_BLOCK_SIZE: first_reads}

    def held(self) -> int:
        """Bytes of the buffers kept (for tests and the memory figures)."""
        return sum(size * len(kept) for size, kept in self._free.items())


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.pool = BufferPool()


_per_thread = _PerThread()


def thread_pool() -> BufferPool:
    """The pool of the calling thread (of its event loop)."""
    return _per_thread.pool
