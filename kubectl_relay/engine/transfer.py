"""The one transfer loop: moves bytes between two open streams with socat's semantics.

socat's man page, which this module follows:

- ``-t<timeout>``: "When one channel has reached EOF, the write part of the
  other channel is shut down. Then, socat waits <timeout> seconds before
  terminating. Default is 0.5 seconds." socat re-arms that wait on every
  transfer (it is the timeout of each ``select()`` once closing), so a reply
  that keeps flowing is not cut off; this loop does the same.
- ``-T<timeout>``: "Total inactivity timeout: when socat is already in the
  transfer loop and nothing has happened for <timeout> seconds ... then it
  terminates. Useful with protocols like UDP that cannot transfer EOF."
- Activity is progress: a read, or bytes a sink took (a write that went
  out, not a sink merely waiting). After an EOF, ``-t`` waits for the other
  side and never cuts data on its way: a direction that still holds bytes
  for its sink (a write in progress, the fast path's write buffer) is not
  idle. A reader slower than the sender pauses the reading side
  (backpressure), so counting only reads would end a session whose reply
  still flows to a slow client. ``-T`` counts from the last progress either
  way, held bytes or not: a peer that takes nothing for ``-T`` seconds ends
  its session, as socat's, and what was held is said in an ``E`` line
  (``log_undelivered``) and the peers are reset, not closed as if all was
  delivered (``time_to_idle``, the one rule both paths apply).
- Input that arrived before the deadline is a transfer, even when the relay
  gets to it late: socat's ``select()`` reports a ready descriptor rather
  than its timeout, but an event loop may run its due timers before it polls
  (uvloop always does), so a relay that was not scheduled for a moment (a
  loaded machine) would cut a reply already waiting in its socket. Before a
  timer ends a session, ``input_waiting`` looks (``poll`` with no wait).
- A session's end never destroys what the kernel still sends: a TCP (or TLS)
  side whose send queue is not empty when the session ends lingers
  (``Lingering``, ``linger``) rather than closing into a reset. socat closes
  at once here.
- ``-u``/``-U``: unidirectional mode, left to right / right to left.
- ``readbytes=<n>``: "Reads only so many bytes from this address ... acts as
  if EOF" after that; ``ignoreeof``: "When EOF occurs on input data stream,
  ignore it and keep reading (like tail -f)".
- ``crnl``/``cr``: convert the line terminator NL to/from CRNL or CR "when
  writing/reading on this channel".

``bridge.py`` keeps these semantics on the event loop's transports for the
plain forking TCP relay; everything else comes through here.

Both directions run as tasks of one task group, so nothing outlives the
session and an error in one direction ends the session without touching any
other. Tracing only reads the blocks it is given; what is relayed is the same
with or without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import mmap
import select
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from .errors import OpenError, first_open_error
from .log import INFO, NOTICE, logger
from .metrics import METRICS
from .trace import Tracer
from .transports.base import Stream

#: A large read size is most of the speed of a copying relay: one system call
#: moves up to this much. socat reads 8 KiB blocks; ``-b`` overrides both.
#: Measured on 2 cores (``./dev bench --only throughput``): 256 KiB reads
#: relayed 2.8 GB/s, 1 MiB 3.1 GB/s, 4 MiB 3.5 GB/s, 16 MiB no more.
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024

#: A read this many times smaller than the buffer ends a burst: the buffer
#: shrinks back to ``INITIAL_BLOCK_SIZE``, so a connection that was busy once
#: does not keep megabytes while it idles or chats.
SHRINK_RATIO = 64

#: The first read of a stream direction; reads that fill it make it grow
#: fourfold up to the block size.
INITIAL_BLOCK_SIZE = 8 * 1024

#: The largest datagram read at once (``-b`` may make it smaller). A UDP
#: payload is at most 65,507 bytes; a UNIX datagram is bounded by the
#: sender's ``wmem_max`` (208 KiB by default), which 4 MiB covers when raised.
MAX_DATAGRAM_READ = 4 * 1024 * 1024

#: Buffers this large or larger are anonymous mappings (see ``new_buffer``).
MAPPED_BUFFER_SIZE = 128 * 1024

#: Under ``-T``, a block is written in pieces of this size, each a sign of
#: progress: a slow reader taking a 4 MiB block over seconds is not idle.
WRITE_PROGRESS_PIECE = 64 * 1024

#: How often an ``ignoreeof`` address is polled for new data after EOF.
IGNOREEOF_POLL_SECONDS = 0.25

#: How often a graceful stop looks whether the sessions it waits for have ended.
STOP_POLL_SECONDS = 0.05

#: A closing socket whose kernel still holds bytes for its peer stays open
#: (reading and dropping what comes) until the peer takes them, unless it
#: takes none for this long, or ``-t`` if longer (see ``Lingering``).
LINGER_SECONDS = 5.0
#: The first look at a lingering socket's send queue, doubled up to the last.
LINGER_FIRST_LOOK = 0.01
LINGER_LAST_LOOK = 0.25

Direction = Literal[">", "<"]

#: The write failures ``cool-write`` takes easy: the peer went away.
COOL_WRITE_ERRORS = frozenset({errno.EPIPE, errno.ECONNRESET})


class LineTerminator(enum.Enum):
    """The ``crnl``/``cr`` conversions of an address (``NL`` means none)."""

    NL = b"\n"
    CRNL = b"\r\n"
    CR = b"\r"


@dataclass(frozen=True)
class TransferSettings:
    """The global options that shape a transfer."""

    block_size: int = DEFAULT_BLOCK_SIZE  # -b
    close_timeout: float = 0.5  # -t
    idle_timeout: float | None = None  # -T
    unidirectional: Literal["both", "left-to-right", "right-to-left"] = "both"  # -u / -U


@dataclass
class Side:
    """One end of a session with the transfer options taken from its address."""

    stream: Stream
    number: int  # 1 or 2: socat's "socket 1"/"socket 2" in log lines
    readbytes: int | None = None
    ignoreeof: bool = False
    terminator: LineTerminator = LineTerminator.NL
    #: ``escape=<code>``: this byte read from the address acts as its EOF.
    escape: int | None = None
    #: ``cool-write``: a write failing with EPIPE or ECONNRESET ends the
    #: direction quietly (a notice) instead of as an error.
    cool_write: bool = False
    #: ``end-close``: the other side's EOF does not shut this side's writing
    #: down (it may serve the next peer of a forking second address).
    end_close: bool = False

    @property
    def fd_label(self) -> str:
        fd = self.stream.fileno()
        return str(fd if fd is not None else -1)

    def from_wire(self, data: bytes) -> bytes:
        """Convert data read from this address to NL line ends."""
        if self.terminator is LineTerminator.NL:
            return data
        return data.replace(self.terminator.value, b"\n")

    def to_wire(self, data: bytes) -> bytes:
        """Convert NL line ends to this address's terminator before writing."""
        if self.terminator is LineTerminator.NL:
            return data
        return data.replace(b"\n", self.terminator.value)


class _Pump:
    """One direction of a session: read from ``source``, write to ``sink``."""

    def __init__(
        self,
        source: Side,
        sink: Side,
        direction: Direction,
        block_size: int,
        tracer: Tracer | None,
        clock: _ActivityClock,
    ) -> None:
        self.source = source
        self.sink = sink
        self.direction: Direction = direction
        self.block_size = block_size
        self.tracer = tracer
        self.clock = clock
        self.transferred = 0
        #: Bytes read from ``source`` and not yet written (see ``time_to_idle``).
        self.held = 0
        #: Write in pieces that each count as progress (``-T`` is in force).
        self.piece: int | None = None
        #: Set when the other direction failed: finish the block held, read no more.
        self.last_block = False
        #: How this direction failed (``run_guarded``), if it did, and on which side.
        self.failure: OpenError | None = None
        self.broken: Side | None = None
        self.counter = METRICS.bytes_total["left-to-right" if direction == ">" else "right-to-left"]

    async def run(self) -> None:
        source, sink = self.source, self.sink
        # Start small (socat's 8 KiB) so that idle sessions cost little, and
        # grow while reads fill the buffer: bulk flows reach the large block
        # size after a few reads. A datagram must fit whole from the start, so
        # datagram sources read into one scratch buffer of the largest size,
        # shared by all sessions, and copy each datagram out at its own size.
        datagram = source.stream.datagram
        if datagram:
            size = min(self.block_size, MAX_DATAGRAM_READ)
            view = datagram_scratch(size)
        else:
            size = min(INITIAL_BLOCK_SIZE, self.block_size)
            view = new_buffer(size)
        converting = source.terminator is not LineTerminator.NL or (
            sink.terminator is not LineTerminator.NL
        )
        # Locals for the hot loop: one relayed block costs a read, a write
        # and little else (no per-block attribute lookups or wrapper frames).
        read_into, write = source.stream.read_into, sink.stream.write
        tracer, counter, touch = self.tracer, self.counter, self.clock.touch
        log_blocks = logger.isEnabledFor(INFO)
        remaining = source.readbytes
        reading = True
        try:
            while True:
                wanted = size if remaining is None else min(size, remaining)
                reading = True
                if self.last_block:
                    return
                count = await read_into(view[:wanted]) if wanted else 0
                if count == 0:
                    if source.ignoreeof and remaining != 0:
                        await asyncio.sleep(IGNOREEOF_POLL_SECONDS)
                        continue
                    log_at_eof(source.number, source.fd_label)
                    return
                if remaining is not None:
                    remaining -= count
                escaped = False
                if source.escape is not None:
                    found = view[:count].tobytes().find(source.escape)
                    escaped = found >= 0
                    count = found if escaped else count
                block: bytes | memoryview = view[:count]
                if datagram:
                    # Before any await: another session reads into the scratch next.
                    block = bytes(block)
                if converting:
                    block = sink.to_wire(source.from_wire(bytes(block)))
                if tracer is not None:
                    tracer.record(self.direction, block)
                reading = False
                touch()  # a read is progress, whatever its sink does next
                if count:
                    await self._write(write, memoryview(block))
                self.transferred += count
                counter[0] += count
                counter[1] += 1
                touch()
                if log_blocks:
                    log_transferred(count, source.fd_label, sink.fd_label)
                if self.last_block:
                    return
                if escaped:
                    log_at_eof(source.number, source.fd_label)
                    return
                if not datagram and (
                    resized := next_block_size(size, count, self.block_size)
                ) != size:
                    size = resized
                    view = new_buffer(size)
        except OSError as exc:
            side, call = (source, "read") if reading else (sink, "write")
            self.broken = side
            # socat names the size asked for: the buffer for a read, the
            # block for a write.
            reason = failure_text(call, side.fd_label, size if reading else len(block), exc)
            if not reading and sink.cool_write and exc.errno in COOL_WRITE_ERRORS:
                logger.log(NOTICE, "%s", reason)
                return
            raise OpenError(side.stream.label, reason) from exc

    async def _write(
        self, write: Callable[[memoryview], Awaitable[None]], block: memoryview
    ) -> None:
        """Write ``block``, keeping ``held`` at what is still to go."""
        self.held = len(block)
        if self.piece is None:
            await write(block)
        else:
            for start in range(0, len(block), self.piece):
                await write(block[start : start + self.piece])
                self.held = max(0, len(block) - start - self.piece)
                self.clock.touch()
        self.held = 0

    async def run_guarded(self) -> None:
        """``run``, with a failure kept in ``failure`` rather than raised.

        The supervisor then lets the other direction deliver what it holds
        before the session ends (a task group would cancel it at once).
        """
        try:
            await self.run()
        except OpenError as exc:
            self.failure = exc


def new_buffer(size: int) -> memoryview:
    """A read buffer of ``size`` bytes; large ones are mapped straight from the kernel.

    A large ``bytearray`` is zeroed when made, so all its pages are resident
    at once even when reads fill a fraction of it, and once freed the C
    allocator may keep its pages for later (after bursts of 1,000 sessions,
    gigabytes). An anonymous mapping costs only the pages a read touches and
    goes back to the kernel as soon as nothing holds a view of it.
    """
    if size < MAPPED_BUFFER_SIZE:
        return memoryview(bytearray(size))
    return memoryview(mmap.mmap(-1, size))


class _Scratch(threading.local):
    """The datagram read buffer of one thread (event loops do not share threads)."""

    view = memoryview(bytearray(0))


_scratch = _Scratch()


def datagram_scratch(size: int) -> memoryview:
    """A buffer of at least ``size`` bytes for reading one datagram, shared by every session.

    A read fills it and the reader copies the datagram out before it awaits
    anything, so one buffer serves all sessions of the thread: a thousand
    UDP peers cost a thousand queued datagrams, not a thousand buffers.
    """
    if len(_scratch.view) < size:
        _scratch.view = new_buffer(size)
    return _scratch.view[:size]


def next_block_size(size: int, count: int, limit: int) -> int:
    """The read size after a read of ``count`` into ``size``: both paths' buffer policy.

    A read that fills the buffer means a bulk flow: read four times more next
    time, up to ``limit``. A read ``SHRINK_RATIO`` times smaller ends the
    burst: back to ``INITIAL_BLOCK_SIZE``.
    """
    if count == size and size < limit:
        return min(size * 4, limit)
    if size > INITIAL_BLOCK_SIZE and count * SHRINK_RATIO <= size:
        return INITIAL_BLOCK_SIZE
    return size


def failure_text(call: str, fd_label: str, size: int, exc: BaseException) -> str:
    """A failed read or write in socat's words: ``read(5, 8192): Connection reset by peer``."""
    reason = (exc.strerror if isinstance(exc, OSError) else None) or exc
    return f"{call}({fd_label}, {size}): {reason}"


def log_transferred(count: int, source_fd: str, sink_fd: str) -> None:
    """socat's ``-d -d -d`` line for each relayed block."""
    logger.info("transferred %d bytes from %s to %s", count, source_fd, sink_fd)


def log_at_eof(number: int, fd_label: str) -> None:
    """socat's notice when one side of a session reaches its end of input."""
    logger.log(NOTICE, "socket %d (fd %s) is at EOF", number, fd_label)


class _ActivityClock:
    """When data last moved; read by the supervisor for ``-t`` and ``-T``."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()

    def touch(self) -> None:
        self.last = self.loop.time()

    def idle_for(self) -> float:
        return self.loop.time() - self.last


class InFlight:
    """What a running transfer holds: read from one side, not yet written to the other."""

    def __init__(self) -> None:
        self.pumps: list[_Pump] = []

    def held(self) -> int:
        """Bytes read and not yet written (a write in progress counts whole), and written
        bytes the kernels still hold for the peers, which a reset discards (``reset``): a
        lingering side's (``Lingering``) are all of that kind."""
        sinks = {id(pump.sink.stream): pump.sink.stream for pump in self.pumps}
        return sum(pump.held for pump in self.pumps) + sum(
            stream.unsent() for stream in sinks.values()
        )

    def reset(self) -> None:
        """Make the streams' coming close abortive: the peers see the cut as one."""
        for pump in self.pumps:
            pump.source.stream.reset()
            pump.sink.stream.reset()


def log_cut(label: str, grace_period: float, held: int) -> None:
    """A session still running when a graceful stop's grace period ran out (or a second signal).

    An error when the relay, or its kernel, held bytes the cut's reset will not
    deliver; else a warning.
    """
    if held:
        logger.error(
            "session with %s cut after the %gs grace period: up to %d bytes not delivered",
            label, grace_period, held,
        )
    else:
        logger.warning(
            "session with %s cut after the %gs grace period (no bytes held)", label, grace_period
        )


def log_undelivered(held: int, number: int, fd_label: str, why: str) -> None:
    """Bytes read for socket ``number`` that it will never get: an error, never a quiet end.

    The peer is reset as well (the caller's part), so that it cannot take
    the end of the session for a complete transfer.
    """
    logger.error("%d bytes for socket %d (fd %s) not delivered: %s", held, number, fd_label, why)


async def transfer(
    left: Side,
    right: Side,
    settings: TransferSettings,
    tracer: Tracer | None = None,
    in_flight: InFlight | None = None,
) -> None:
    """Relay between ``left`` (address 1) and ``right`` (address 2) until both sides are done.

    Raises ``OpenError`` when a read or write fails; the caller logs it and
    decides the exit status. Does not close the streams (their opener does),
    unless one lingers (``Lingering``): then each closes when its own is done.
    ``in_flight``, if given, shows what the transfer holds while it runs.
    """
    clock = _ActivityClock()
    pumps: list[_Pump] = [] if in_flight is None else in_flight.pumps
    if settings.unidirectional != "right-to-left" and left.stream.readable and (
        right.stream.writable
    ):
        pumps.append(_Pump(left, right, ">", settings.block_size, tracer, clock))
    if settings.unidirectional != "left-to-right" and right.stream.readable and (
        left.stream.writable
    ):
        pumps.append(_Pump(right, left, "<", settings.block_size, tracer, clock))
    log_transfer_start(left.fd_label, right.fd_label)
    if not pumps:
        return
    try:
        await _supervise(pumps, settings, clock)
    except* OpenError as group:
        # Even a shutdown in the task group's own body that fails on a reset
        # peer comes wrapped: report it as the one error it is.
        raise first_open_error(group) from None


def log_transfer_start(left_fd: str, right_fd: str) -> None:
    """socat's notice as a session starts moving data."""
    logger.log(
        NOTICE,
        "starting data transfer loop with FDs [%s,%s] and [%s,%s]",
        left_fd,
        left_fd,
        right_fd,
        right_fd,
    )


async def _supervise(pumps: list[_Pump], settings: TransferSettings, clock: _ActivityClock) -> None:
    if settings.idle_timeout is not None:
        for pump in pumps:
            # A datagram (or a frame) is one write: never split.
            if not (pump.source.stream.datagram or pump.sink.stream.datagram):
                pump.piece = WRITE_PROGRESS_PIECE
    failures: list[OpenError] = []
    drained: list[_Drain] = []
    reset = False
    async with asyncio.TaskGroup() as group:
        running = {group.create_task(pump.run_guarded()): pump for pump in pumps}
        closing = False
        while running:
            holding = any(pump.held for pump in running.values())
            left = time_to_idle(settings, closing, clock.idle_for(), holding)
            if left is not None and left <= 0 and input_waiting(
                # Only sources read now: one whose pump is stuck writing has
                # input waiting because of that (backpressure), and one at
                # its EOF (ignoreeof) is always readable.
                pump.source.stream.fileno() for pump in running.values()
                if not (pump.source.ignoreeof or pump.last_block or pump.held)
            ):
                clock.touch()  # the pump reads it as soon as this task yields
                continue
            if left is not None and left <= 0:
                if not closing:
                    logger.log(NOTICE, "inactivity timeout triggered")
                limit = current_limit(settings, closing)
                reset = _drop_held(running.values(), f"nothing written for {limit:g}s")
                for task in running:
                    task.cancel()
                break
            done, _ = await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                pump = running.pop(task)
                if task.cancelled():
                    continue
                if pump.failure is not None:
                    # Its own block is in its failure line ("write(5, 8192): ..."),
                    # as socat words it: nothing more to say for it.
                    failures.append(pump.failure)
                    # The other direction delivers the block it holds, if its
                    # sink takes it, and reads no more; a pump waiting for
                    # input holds nothing and ends now.
                    for other_task, other in running.items():
                        other.last_block = True
                        if not other.held:
                            other_task.cancel()
                    if not drained and pump.broken is not None:
                        drain = _Drain(pump)
                        drain.task = group.create_task(drain.run())
                        drained.append(drain)
                    closing = True
                    clock.touch()
                    continue
                if not pump.sink.end_close and not failures:
                    await pump.sink.stream.shutdown_write()
                closing = True
                # socat's -t counts from the EOF, then from each later transfer.
                clock.touch()
        for drain in drained:  # the session ends: lingering reads on
            if drain.task is not None:
                drain.task.cancel()
    if not reset:
        await _linger_sides(pumps, settings, drained)
    for drain in drained:
        drain.log()
    if failures:
        # Report the first failure as socat does; a later one (the other
        # direction's sink gone too) is its consequence.
        raise failures[0]


class _Drain:
    """After a failure, read and drop what the surviving side still sends.

    Input left unread when a socket closes turns its close into a reset,
    and the reset discards what the kernel still had to send that peer:
    the bytes the other direction was delivering. So the survivor is read
    until the session ends (then ``linger`` reads on while its peer still
    has bytes to take), and what it sent is said as undelivered.
    """

    def __init__(self, failed: _Pump) -> None:
        assert failed.broken is not None
        broken = failed.broken
        self.survivor = failed.sink if broken is failed.source else failed.source
        self.broken = broken
        self.fd_label = broken.fd_label  # said after the session, when it may be closed
        self.count = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        if not self.survivor.stream.readable:
            return
        view = memoryview(bytearray(INITIAL_BLOCK_SIZE))
        with contextlib.suppress(OSError):
            while count := await self.survivor.stream.read_into(view):
                self.count += count

    def log(self) -> None:
        if self.count:
            log_undelivered(
                self.count, self.broken.number, self.fd_label, "the transfer failed"
            )


def _drop_held(pumps: Iterable[_Pump], why: str) -> bool:
    """Say what ``pumps`` hold and will not deliver, and reset their peers; True if any."""
    dropped = False
    for pump in pumps:
        if pump.held:
            log_undelivered(pump.held, pump.sink.number, pump.sink.fd_label, why)
            pump.sink.stream.reset()
            pump.source.stream.reset()
            pump.held = 0
            dropped = True
    return dropped


class Lingering:
    """The close of a socket whose kernel still holds bytes for its peer: both paths' rule.

    Linux answers input that reaches a closed socket (or a close with input
    unread) with a reset, and the reset discards the send queue: a reply
    handed to the kernel, gone unsaid while the peer still sends. So a
    closing side half-closes (FIN after the data), reads and drops its
    input, and closes once its queue is empty (all acknowledged), or at its
    peer's EOF or reset. A peer that takes nothing for ``bound`` seconds is
    reset and the bytes left said (``expired``), so a forking relay's
    lingering sessions cannot pile up. Sessions count as running (and
    toward ``max-children``) until their sockets close.
    """

    def __init__(self, queued: int, bound: float, now: float) -> None:
        self.queued = queued
        self.bound = bound
        self.since = now  # the last progress: the queue shrank
        self.wait = LINGER_FIRST_LOOK
        self.expired = False

    def look(self, queued: int, now: float) -> float | None:
        """Seconds until the next look at the queue, or None: close now (reset if ``expired``)."""
        if queued < self.queued:
            self.since = now
        self.queued = queued
        if not queued:
            return None
        left = self.since + self.bound - now
        if left <= 0:
            self.expired = True
            return None
        wait, self.wait = self.wait, min(self.wait * 2, LINGER_LAST_LOOK)
        return min(wait, left)

    def log_expired(self, number: int, fd_label: str) -> None:
        """The ``E`` line of a peer that took nothing for the bound."""
        log_undelivered(
            self.queued, number, fd_label, f"nothing taken for {self.bound:g}s while closing"
        )


def linger_seconds(settings: TransferSettings) -> float:
    """How long a closing socket waits for its peer to take anything: ``-t``, at least a few s."""
    return max(settings.close_timeout, LINGER_SECONDS)


async def linger(side: Side, bound: float, queued: int) -> int:
    """Keep ``side`` open while its kernel still holds ``queued`` bytes for its peer (see
    ``Lingering``).

    Returns how many bytes of input were read and dropped meanwhile. The
    caller closes the stream after (reset if the bound ran out).
    """
    stream = side.stream
    if not queued:
        return 0
    loop = asyncio.get_running_loop()
    lingering = Lingering(queued, bound, loop.time())
    await stream.shutdown_write()
    dropped = 0

    async def discard() -> None:
        nonlocal dropped
        if not stream.readable:
            await asyncio.Future()  # nothing to read: only the queue tells the end
        view = memoryview(bytearray(INITIAL_BLOCK_SIZE))
        # A failed read is the peer's end too (a TLS stream words it as OpenError).
        with contextlib.suppress(OSError, OpenError):
            while count := await stream.read_into(view):
                dropped += count

    reader = asyncio.ensure_future(discard())
    try:
        wait = lingering.look(queued, loop.time())
        while wait is not None:
            await asyncio.wait({reader}, timeout=wait)
            if reader.done():
                break  # the peer's end or reset: nothing more can come
            wait = lingering.look(stream.unsent(), loop.time())
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    if lingering.expired:
        lingering.log_expired(side.number, side.fd_label)
        stream.reset()
    return dropped


async def _linger_sides(
    pumps: list[_Pump], settings: TransferSettings, drained: list[_Drain]
) -> None:
    """Linger on every side of an ended session; say what they dropped meanwhile."""
    sides: dict[int, Side] = {}
    receivers: dict[int, tuple[int, str]] = {}  # where a side's input would have gone
    for pump in pumps:
        for side in (pump.source, pump.sink):
            if not side.end_close:  # it serves the next peer: not ours to close
                sides[id(side)] = side
        receivers[id(pump.source)] = (pump.sink.number, pump.sink.fd_label)  # before closing
    order = list(sides.values())
    queued = [side.stream.unsent() for side in order]  # one look each, used by linger
    if not any(queued):
        return  # the common case: the opener closes them, nothing to wait for
    bound = linger_seconds(settings)

    async def linger_and_close(side: Side, unsent: int) -> int:
        # A side with nothing queued closes now, as at any session's end:
        # its peer must not wait for the other's lingering.
        try:
            return await linger(side, bound, unsent)
        finally:
            await side.stream.aclose()

    dropped = await asyncio.gather(
        *(linger_and_close(side, unsent) for side, unsent in zip(order, queued, strict=True))
    )
    for side, count in zip(order, dropped, strict=True):
        drain = next((drain for drain in drained if drain.survivor is side), None)
        if drain is not None:
            drain.count += count
        elif count and (receiver := receivers.get(id(side))) is not None:
            log_undelivered(count, *receiver, "the session had ended")


def time_to_idle(
    settings: TransferSettings, closing: bool, idle_for: float, holding: bool
) -> float | None:
    """Seconds before a session ends for inactivity: the rule of both paths.

    ``idle_for`` is the time since the last progress (a read, or bytes a
    sink took). ``None``: no limit in force; zero or less: end the session
    now. ``-T`` counts from the last progress whatever is held: a sink that
    takes nothing is no activity. ``-t`` (once ``closing``) waits while the
    session is ``holding`` bytes for a sink: the answer is then a whole
    period, after which the caller asks again.
    """
    limits: list[float] = []
    if settings.idle_timeout is not None:
        limits.append(settings.idle_timeout - idle_for)
    if closing:
        limits.append(settings.close_timeout if holding else settings.close_timeout - idle_for)
    return min(limits) if limits else None


def input_waiting(descriptors: Iterable[int | None]) -> bool:
    """Whether any of ``descriptors`` (``None`` ones skipped) has input to read right now.

    Readable includes a pending EOF or error: the caller passes only sources
    whose end has not been read yet, so either is news the session must see.
    """
    poller = select.poll()
    registered = False
    for fd in descriptors:
        if fd is not None:
            poller.register(fd, select.POLLIN)
            registered = True
    return registered and bool(poller.poll(0))


def current_limit(settings: TransferSettings, closing: bool) -> float | None:
    """The inactivity limit in force: ``-t`` once closing (bounded by ``-T``), else ``-T``."""
    if closing:
        if settings.idle_timeout is not None:
            return min(settings.close_timeout, settings.idle_timeout)
        return settings.close_timeout
    return settings.idle_timeout
