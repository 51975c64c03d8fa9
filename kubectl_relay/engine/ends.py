"""The two ends of a fast-path session (``bridge``): how each reads, and writes to the other.

Reads are small ones until one is ``BULK_READ`` or more: the event loop reads
into its own buffer and hands a copy to ``End.data_received``, one call a
message, and an idle end holds no buffer at all. Bulk ones follow until the
burst ends: ``BulkReads`` has the loop read into the end's own buffers (from
``blocks``), with no copy, growing to ``-b`` (``next_block_size``). A ``-b``
below the loop's read size reads bulk only: only our buffers keep it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .blocks import thread_pool
from .metrics import METRICS
from .transfer import INITIAL_BLOCK_SIZE, Lingering, log_transferred, next_block_size
from .transports.sockets import abort_on_close

if TYPE_CHECKING:
    from .bridge import Session

#: Bytes a side may hold unwritten before the other side is no longer read:
#: none. A block the kernel could not take at once stays in its buffer (lent,
#: not copied) and the other side waits until it is written, as socat does.
WRITE_BUFFER_HIGH = 0

#: Bytes read at most while our peer still holds some (early data, failures).
PENDING_READ_LIMIT = 1024 * 1024

#: The most uvloop reads into its own buffer at once (``UV_STREAM_RECV_BUF_SIZE``):
#: a ``-b`` below it is kept only by reading into our buffers.
SMALL_READ_MAX = 256 * 1024
#: A small read this large means a bulk flow: from the next read on, into our buffers
#: (no copy, and reads growing to ``-b``). Below it, a message costs one Python call
#: instead of two and no buffer taken from the pool and given back: 11% less of the
#: relay's CPU per 1-byte round trip (24.9 -> 22.1 µs, pinned to one CPU).
BULK_READ = 128 * 1024
#: The first size of those reads: the next step after the loop's largest.
BULK_FIRST_SIZE = 4 * SMALL_READ_MAX


class End(asyncio.Protocol):
    """One side of a session: reads (small, then bulk: see above) and writes to the other side."""

    def __init__(self, session: Session, number: int) -> None:
        self.session = session
        self.number = number  # socat's "socket 1"/"socket 2"
        self.transport: asyncio.Transport | None = None
        self.peer: End | None = None  # set when both sides are connected
        #: Our descriptor and its text in log lines (``-1``: none), looked up on first use.
        self._fd: int | None = None
        self._fd_label: str | None = None
        self.size = min(INITIAL_BLOCK_SIZE, session.settings.block_size)
        self.pool = thread_pool()  # buffers for one read each: idle sides hold none
        self.view: memoryview | None = None  # borrowed for the read under way
        #: A buffer our peer's transport still writes from, until it is empty.
        self.lent: memoryview | None = None
        self.early: list[bytes] = []  # read before the other side was connected
        self.at_eof = False
        self.lost = False
        #: Bytes handed to our transport to write: less its write buffer, what went out.
        self.queued = 0
        #: Bytes read after the other side failed, which it will never get.
        self.discarded = 0
        #: Set while the session has ended and our kernel still sends to our peer.
        self.lingering: Lingering | None = None
        self.counter = METRICS.bytes_total["left-to-right" if number == 1 else "right-to-left"]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        stream_transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = stream_transport
        stream_transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        session = self.session
        # The socket costs uvloop a getsockname() and an object: only when a log line or
        # the listener's peer checks need it now; else on first use (see ``fd``).
        sock = self.live_socket() if session.needs_sockets else None
        if session.settings.block_size < SMALL_READ_MAX:
            self._read_bulk()  # -b bounds every read: only our buffers do
        if self.number == 1:
            session.accepted(self, sock)
        else:
            session.upstream_made(self)

    def live_socket(self) -> Any:
        """Our transport's socket, noting its descriptor (None before or after the transport)."""
        transport = self.transport
        if transport is None:
            return None  # not connected yet: looked up once it is
        # uvloop makes it from the live handle: after connection_lost there is none.
        sock = None if self.lost else transport.get_extra_info("socket")
        self._fd = None if sock is None else sock.fileno()
        self._fd_label = "-1" if self._fd is None else str(self._fd)
        return sock

    @property
    def fd(self) -> int | None:
        """Our descriptor while the transport owns it (see ``unread_fd``)."""
        if self._fd_label is None:
            self.live_socket()
        return self._fd

    @property
    def fd_label(self) -> str:
        """Our descriptor as log lines name it: ``-1`` if it was never known while open."""
        if self._fd_label is None:
            self.live_socket()
        return self._fd_label or "-1"

    def unread_fd(self) -> int | None:
        """Our socket while the loop reads it: open, not paused, its EOF not yet read.

        Never a closed transport's descriptor: the number may already be
        another session's. A paused side is left out: the loop will not read
        it, and its peer holds bytes (backpressure), which ``_holding`` counts.
        """
        transport = self.transport
        if self.lost or self.at_eof or transport is None or transport.is_closing():
            return None
        return self.fd if transport.is_reading() else None

    def data_received(self, data: bytes) -> None:
        """A small read (the loop's buffer, copied out): passed on as it is."""
        peer = self.peer
        if self.lingering is not None or peer is None or peer.lost:
            self._not_relayed(data)
            return
        nbytes = len(data)
        sink = peer.transport
        assert sink is not None
        if self.lent is not None and not sink.get_write_buffer_size():
            self.pool.give(self.lent)  # lent by the last bulk read: written out now
            self.lent = None
        peer.queued += nbytes
        sink.write(data)  # kept by the transport until written, if need be: ours no more
        # ``transferred``, inline: the call was 8% of the relay's instructions per
        # 1-byte round trip (callgrind), and every small message makes it.
        counter = self.counter
        counter[0] += nbytes
        counter[1] += 1
        session = self.session
        if session.timer is not None:
            session.last_activity = session.loop.time()
        if session.log_blocks:
            log_transferred(nbytes, self.fd_label, peer.fd_label)
        if nbytes >= BULK_READ:
            self._read_bulk()

    def _read_bulk(self) -> None:
        """Read into our own buffers from the next read on, ``BULK_FIRST_SIZE`` at first."""
        assert self.transport is not None
        self.size = min(self.session.settings.block_size, BULK_FIRST_SIZE)
        self.transport.set_protocol(BulkReads(self))

    def _read_small(self) -> None:
        """The burst is over: the loop reads for us again (a lent buffer goes back once written)."""
        assert self.transport is not None
        self.transport.set_protocol(self)

    def _not_relayed(self, data: bytes | memoryview) -> None:
        """What we read that cannot go to our peer now: dropped (and counted), or kept."""
        peer = self.peer
        if self.lingering is not None or (peer is not None and peer.lost):
            # The session has ended (read on to keep our close a close), or the
            # other side failed (input left unread would turn our close into a
            # reset that discards what is owed to our peer): count what is dropped.
            self.discarded += len(data)
            return
        # uvloop starts reading right after connection_made, whatever it asked:
        # keep the bytes until the other side exists.
        self.early.append(bytes(data))
        assert self.transport is not None
        self.transport.pause_reading()

    def transferred(self, nbytes: int, peer: End) -> None:
        """Count a block passed to ``peer`` (and say it at ``-d -d -d``)."""
        self.counter[0] += nbytes
        self.counter[1] += 1
        session = self.session
        if session.timer is not None:  # else no -t or -T applies yet: nobody reads it
            session.last_activity = session.loop.time()
        if session.log_blocks:
            log_transferred(nbytes, self.fd_label, peer.fd_label)

    def get_buffer(self, sizehint: int) -> memoryview:
        peer = self.peer
        pending = peer.transport.get_write_buffer_size() if peer and peer.transport else 0
        if self.lent is not None and not pending:  # the kernel holds all it had: free
            self.pool.give(self.lent)
            self.lent = None
        if self.view is None:
            self.view = self.pool.take(self.size)
        if pending:
            # The other side is behind: read no more than it may still queue,
            # so that what waits for it stays near PENDING_READ_LIMIT.
            return self.view[: max(INITIAL_BLOCK_SIZE, PENDING_READ_LIMIT - pending)]
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        assert self.view is not None and self.transport is not None
        block = self.view[:nbytes]
        peer = self.peer
        if self.lingering is not None or peer is None or peer.lost:
            self._not_relayed(block)  # copies what it keeps, before the buffer goes back
            self.give_back()
            return
        sink = peer.transport
        assert sink is not None
        peer.queued += nbytes
        # Ours no more before the write: one filling the sink calls pause_writing.
        view, self.view = self.view, None
        if sink.get_write_buffer_size():
            # Queued behind unwritten data, the block would pin this whole
            # buffer (up to 4 MiB) until written, and every read meanwhile
            # another one: a copy of the block's size leaves the buffer free.
            sink.write(bytes(block))
            self.pool.give(view)
        else:
            sink.write(block)
            if sink.get_write_buffer_size():
                # uvloop keeps a view of what it could not write at once: the
                # buffer is lent until that is written (see ``get_buffer``).
                if self.lent is not None:
                    self.pool.give(self.lent)  # the sink was empty: written out
                self.lent = view
            else:
                self.pool.give(view)
        self.transferred(nbytes, peer)
        size = self.size
        # Only a full read or a grown buffer can change the size: a small message in a
        # first-size buffer skips the call.
        if nbytes == size or size > INITIAL_BLOCK_SIZE:
            self.size = next_block_size(size, nbytes, self.session.settings.block_size)
            if self.size < size and self.session.settings.block_size >= SMALL_READ_MAX:
                self._read_small()  # the burst is over

    def reset_on_close(self) -> None:
        """Make our coming close a reset (SO_LINGER 0): our peer must not take it for an end."""
        sock = self.live_socket()
        if sock is not None:
            abort_on_close(sock)

    def give_back(self) -> None:
        """Return the read buffer (nothing points at it) to the pool."""
        if self.view is not None:
            self.pool.give(self.view)
            self.view = None

    def eof_received(self) -> bool:
        self.at_eof = True
        if self.lingering is not None:  # nothing more comes: a close cannot turn into a reset
            self.session.end_lingering(self)
            return True
        if self.peer is not None:  # else _link reports it, in socat's order
            self.session.direction_done(self)
        return True  # keep our write half open for the other direction

    def pause_writing(self) -> None:
        # We cannot take more: stop reading the side that feeds us, and let
        # its read buffer go while it waits (a stalled session keeps only
        # the block being written).
        source = self.peer
        if source is not None and source.transport is not None:
            source.transport.pause_reading()
            source.give_back()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.at_eof:
            peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if self._fd_label is None and (
            not self.session.finished or (peer is not None and peer.lingering is not None)
        ):
            # Closed under a running session, or before a peer that reads on: lines naming
            # our fd may follow (what the peer drops for us, ``Session._say_discarded``).
            self.live_socket()
        self.lost = True
        # The session, its ends and their transports refer to each other: a
        # cycle that only Python's cycle collector frees, whenever it runs.
        # Let the buffer go now, or bursts of sessions leave gigabytes behind.
        # A lent one may still be in the other side's transport: not reused.
        self.give_back()
        self.lent = None
        self.early.clear()
        self.session.side_lost(self, exc)


class BulkReads(asyncio.BufferedProtocol):
    """An end's protocol while it reads bulk: uvloop reads into the end's buffers."""

    def __init__(self, end: End) -> None:
        self.end = end

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.end.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.end.buffer_updated(nbytes)

    def eof_received(self) -> bool:
        return self.end.eof_received()

    def pause_writing(self) -> None:
        self.end.pause_writing()

    def resume_writing(self) -> None:
        self.end.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.end.connection_lost(exc)
