"""The mux protocol (``mux``) over one asyncio byte stream: a connection and its channels.

Both ends use it: the relay pod's ``MUX-LISTEN`` address (over an accepted
TCP connection) and ``kubectl relay expose`` (over a port-forward stream).
The byte stream is anything with ``read``/``write``/``aclose`` (``Carrier``);
each stream of the protocol is a ``Channel`` with ``read``, ``write``,
``end`` (half-close) and ``reset``. A carrier that is a plain socket may
also be a ``DirectCarrier``: the connection then reads in the event loop's
callback and writes without a coroutine while the socket takes the bytes
(the relay pod's side, where each message cost a task wake-up and four
coroutines more).

A ``Channel.write`` waits for the peer's credit, so a stream whose consumer
is slow blocks only its own writer; a channel buffers at most its window.
When the connection ends (the peer is gone, breaks the protocol, or stops
answering pings), every open channel is reset with that reason: its reads
and writes raise ``ConnectionResetError``.

Like ``mux`` it imports nothing POSIX-only (the plugin runs it on any OS).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .mux import (
    INITIAL_WINDOW,
    Credited,
    Data,
    Ended,
    MuxError,
    MuxProtocol,
    Opened,
    Pong,
    Reset,
)


class Carrier(Protocol):
    """The byte stream a mux connection runs over."""

    async def read(self) -> bytes | memoryview:
        """The next bytes; ``b""`` at the end.

        A view may be of a buffer that the next ``read`` reuses: the
        connection hands it to the protocol, which copies it, before reading again.
        """

    async def write(self, data: bytes | bytearray) -> None:
        """Send all of ``data`` (which is the carrier's from then on: it may keep it queued)."""

    async def aclose(self) -> None:
        """Close it (safe to call twice)."""


#: Called with the bytes that arrived (a view valid during the call only).
Received = Callable[[memoryview], None]
#: Called once when the carrier's input ends, with why.
InputEnded = Callable[[str], None]


@runtime_checkable
class DirectCarrier(Carrier, Protocol):
    """A ``Carrier`` over a socket the connection may use without awaiting."""

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``."""

    def deliver(self, received: Received, ended: InputEnded) -> None:
        """From now on call ``received`` from the event loop as bytes arrive, ``ended`` at the
        end of input or a failure to read (once; ``aclose`` stops the deliveries)."""

    def send_now(self, data: bytearray) -> memoryview | None:
        """Send what the socket takes without waiting; the rest (``None`` when all went).

        Raises ``OSError`` when the socket failed.
        """

    def pause(self) -> None:
        """Deliver nothing more until ``resume`` (the kernel's buffer, then TCP, hold the peer)."""

    def resume(self) -> None:
        """Deliver again after ``pause``."""


class StreamsCarrier:
    """An asyncio connection (``asyncio.open_connection``'s pair) as a ``Carrier``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self) -> bytes:
        """The next bytes; ``b""`` at the end."""
        return await self.reader.read(64 * 1024)

    async def write(self, data: bytes | bytearray) -> None:
        """Send all of ``data``."""
        self.writer.write(data)
        await self.writer.drain()

    async def aclose(self) -> None:
        """Close the connection."""
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class Channel:
    """One stream of a ``MuxConnection``."""

    def __init__(self, connection: MuxConnection, stream: int, label: str) -> None:
        self.connection = connection
        self.id = stream
        #: What the opener said about the stream (the peer address, for logs).
        self.label = label
        self._chunks: deque[bytes | memoryview] = deque()
        self._ended = False
        #: Why the stream was reset, once it was.
        self.reset_reason: str | None = None
        # Bare futures rather than asyncio.Events, which cost more per message (and a
        # getpid() system call each in Python 3.11): set when data, the end, credit or a
        # reset comes, each awaited by at most one task (the stream's reader, its writer).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readable: asyncio.Future[None] | None = None
        self._credited: asyncio.Future[None] | None = None

    @property
    def was_reset(self) -> bool:
        """Whether the stream was reset (by either side, or with the connection)."""
        return self.reset_reason is not None

    async def read(self, size: int = 64 * 1024) -> bytes:
        """Up to ``size`` bytes (one DATA message at most); ``b""`` once the peer half-closed.

        ``ConnectionResetError`` once the stream was reset.
        """
        if not await self._arrived():
            return b""
        chunk = self._chunks.popleft()
        if len(chunk) > size:
            self._chunks.appendleft(memoryview(chunk)[size:])
            chunk = chunk[:size]
        protocol = self.connection.protocol
        protocol.consumed(self.id, len(chunk))
        if protocol.has_data_to_send():  # the credit, once a share of the window was read
            await self.connection.flush()
        return bytes(chunk)  # no copy for a whole message

    async def read_into(self, buffer: memoryview) -> int:
        """Fill ``buffer`` with what has arrived (one byte at least); 0 once the peer half-closed.

        Several DATA messages that wait go in one read, so that a reader's
        buffer fills (the engine's reads grow only when they do).
        """
        if not await self._arrived():
            return 0
        filled = 0
        while self._chunks and filled < len(buffer):
            chunk = self._chunks[0]
            taken = min(len(chunk), len(buffer) - filled)
            buffer[filled : filled + taken] = chunk[:taken]
            filled += taken
            if taken == len(chunk):
                self._chunks.popleft()
            else:  # the rest stays, without a copy
                self._chunks[0] = memoryview(chunk)[taken:]
        protocol = self.connection.protocol
        protocol.consumed(self.id, filled)
        if protocol.has_data_to_send():
            await self.connection.flush()
        return filled

    async def write(self, data: bytes | memoryview) -> None:
        """Send all of ``data``, waiting for credit as needed."""
        view = memoryview(data)
        protocol = self.connection.protocol
        while view:
            self._raise_if_reset()
            if protocol.send_window(self.id) == 0:
                self._credited = self._future()
                await self._credited
                continue
            taken = protocol.send_data(self.id, view)
            view = view[taken:]
            await self.connection.flush()

    async def end(self) -> None:
        """Half-close: the peer reads the end; its data still comes."""
        if self.reset_reason is None:
            self.connection.protocol.send_end(self.id)
            await self.connection.flush()

    def reset(self, reason: str = "") -> None:
        """Abort the stream both ways; sent with the connection's next flush."""
        if self.reset_reason is None:
            self.connection.protocol.send_reset(self.id, reason)
            self._gone(reason or "reset")
            self.connection.flush_soon()

    async def aclose(self) -> None:
        """Release the stream: reset it if it is still open either way."""
        if self.reset_reason is None and self.id in set(self.connection.protocol.streams()):
            self.reset("closed")
        self.connection.forget(self.id)
        await self.connection.flush()

    async def _arrived(self) -> bool:
        """Until data waits (True) or the peer's END came (False); raises once reset."""
        while not self._chunks and not self._ended:
            self._raise_if_reset()
            self._readable = self._future()
            await self._readable
        if not self._chunks:
            self._raise_if_reset()
            return False
        return True

    def _future(self) -> asyncio.Future[None]:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.create_future()

    # -- from the connection --------------------------------------------------------------------

    def _data(self, data: bytes | memoryview) -> None:
        self._chunks.append(data)
        _wake(self._readable)

    def _end(self) -> None:
        self._ended = True
        _wake(self._readable)

    def _credit(self) -> None:
        _wake(self._credited)

    def _gone(self, reason: str) -> None:
        if self.reset_reason is None:
            self.reset_reason = reason
        _wake(self._readable)
        _wake(self._credited)

    def _raise_if_reset(self) -> None:
        if self.reset_reason is not None:
            raise ConnectionResetError(errno.ECONNRESET, f"mux stream {self.id} reset: "
                                       f"{self.reset_reason}")


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class MuxConnection:
    """Runs ``MuxProtocol`` over a ``Carrier`` (see the module docstring).

    ``on_open`` gets each channel the peer opens. ``ping_interval``: send a
    PING that often, and end the connection when nothing came from the peer
    for ``ping_timeout`` (the relay pod's heartbeat of its client). ``window``:
    what this end grants each stream (at least the protocol's ``INITIAL_WINDOW``);
    ``max_window``: what a stream's window may grow to while its reader keeps up
    (``MuxProtocol.max_window``; the default: no growth).
    """

    def __init__(
        self,
        carrier: Carrier,
        *,
        listener: bool,
        on_open: Callable[[Channel], None] | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        window: int = INITIAL_WINDOW,
        max_window: int = 0,
    ) -> None:
        self.carrier = carrier
        # Checked once: an isinstance of a runtime protocol looks every method up.
        self._direct = carrier if isinstance(carrier, DirectCarrier) else None
        self.window = window
        self.protocol = MuxProtocol(listener, max_window)
        self.on_open = on_open
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.channels: dict[int, Channel] = {}
        #: Why the connection ended ("" while it runs).
        self.ended = ""
        #: How many streams were still open when it ended (each is reset).
        self.streams_cut = 0
        self._write_lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()
        self._closer: asyncio.Task[None] | None = None
        #: Set when the connection ends (a ``DirectCarrier``'s ``run`` waits for it).
        self._finished: asyncio.Future[None] | None = None
        #: The running loop's clock, for ``_take`` (set by ``run``).
        self._clock: Callable[[], float] = lambda: 0.0
        self._last_heard = 0.0

    async def open(self, label: str = "") -> Channel:
        """A new stream of our own."""
        if self.ended:
            raise ConnectionResetError(errno.ECONNRESET, f"mux connection ended: {self.ended}")
        stream = self.protocol.open_stream(label)
        channel = Channel(self, stream, label)
        self.channels[stream] = channel
        self.protocol.grant(stream, self.window - INITIAL_WINDOW)
        await self.flush()
        return channel

    def forget(self, stream: int) -> None:
        """Drop a channel its owner closed."""
        self.channels.pop(stream, None)

    async def flush(self) -> None:
        """Write what the protocol has to send; a broken carrier ends the connection."""
        if not self.protocol.has_data_to_send():
            return  # the common case (a read that owes no credit yet): no lock, no await
        carrier = self._direct
        if carrier is not None and not self._write_lock.locked() and not self.ended:
            # Nothing of an earlier flush still waits to go: these bytes may go now.
            try:
                rest = carrier.send_now(self.protocol.data_to_send())
            except OSError as exc:
                self._end(f"writing to the mux peer failed: {exc}")
                return
            if rest is None:
                return
            # The socket is full: the rest goes first once it drains (the lock is free,
            # so taking it does not wait and nothing can go ahead of it).
            async with self._write_lock:
                try:
                    await carrier.write(rest)
                except OSError as exc:
                    self._end(f"writing to the mux peer failed: {exc}")
            return
        async with self._write_lock:
            data = self.protocol.data_to_send()
            if not data or self.ended:
                return
            try:
                await self.carrier.write(data)
            except Exception as exc:  # OSError, or the carrier's own error (a port-forward's)
                self._end(f"writing to the mux peer failed: {exc}")

    def flush_soon(self) -> asyncio.Task[None] | None:
        """``flush`` from code that cannot wait (a reset from ``Stream.reset``); its task."""
        try:
            task = asyncio.get_running_loop().create_task(self.flush())
        except RuntimeError:  # no running loop: the connection is gone
            return None
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)
        return task

    async def run(self) -> str:
        """Read and dispatch until the connection ends; why it ended."""
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._last_heard = loop.time()
        await self.flush()  # our HELLO
        pinger = loop.create_task(self._ping()) if self.ping_interval else None
        try:
            if self._direct is not None and not self.ended:
                self._finished = loop.create_future()
                self._direct.deliver(self._received, self._end)
                await self._finished
            while not self.ended:
                try:
                    data = await self.carrier.read()
                except Exception as exc:  # OSError, or the carrier's own error
                    self._end(f"reading from the mux peer failed: {exc}")
                    break
                if not data:
                    self._end("the mux peer closed the connection")
                    break
                self._take(data)
                if self.protocol.has_data_to_send():  # PONGs, grants, resets
                    await self.flush()
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger
            self._end(self.ended or "the mux connection was closed")
            for task in list(self._flushes):
                task.cancel()
            await self.carrier.aclose()
            if self._closer is not None:
                await self._closer
        return self.ended

    def close(self, reason: str) -> None:
        """End the connection (its ``run`` returns, every channel is reset)."""
        self._end(reason)

    def _take(self, data: bytes | memoryview) -> None:
        """Bytes from the peer: their events dispatched, or the connection ended on an error."""
        self._last_heard = self._clock()
        try:
            events = self.protocol.receive_data(data)
        except MuxError as exc:
            self._end(str(exc))
            return
        for event in events:
            self._dispatch(event)

    def _received(self, data: memoryview) -> None:
        """What a ``DirectCarrier`` delivered, from the event loop's callback."""
        if self.ended:
            return
        self._take(data)
        if self.ended or not self.protocol.has_data_to_send():  # PONGs, resets
            return
        carrier = self._direct
        waiting = self._write_lock.locked()  # an earlier write waits for the socket
        task = self.flush_soon()
        if waiting and task is not None and carrier is not None:
            # As run's loop awaits its flush: nothing more is read until the answer went,
            # so a peer that sends (PINGs) without reading is held back by TCP, not by
            # answers piling up here.
            carrier.pause()
            task.add_done_callback(self._answered)

    def _answered(self, _: asyncio.Task[None]) -> None:
        """The answer that paused a ``DirectCarrier`` went: read again."""
        if not self.ended and self._direct is not None:
            self._direct.resume()

    def _dispatch(self, event: object) -> None:
        if isinstance(event, Opened):
            channel = Channel(self, event.stream, event.label)
            self.channels[event.stream] = channel
            self.protocol.grant_with_next(event.stream, self.window - INITIAL_WINDOW)
            if self.on_open is None:
                channel.reset("this end accepts no streams")
            else:
                self.on_open(channel)
            return
        if isinstance(event, Pong):
            return
        target = self.channels.get(event.stream)  # type: ignore[attr-defined]
        if target is None:
            return
        if isinstance(event, Data):
            target._data(event.data)
        elif isinstance(event, Ended):
            target._end()
        elif isinstance(event, Reset):
            target._gone(f"reset by the peer{': ' + event.reason if event.reason else ''}")
        elif isinstance(event, Credited):
            target._credit()

    def _end(self, reason: str) -> None:
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)
        if not self.ended:
            self.ended = reason
            self.streams_cut = sum(not c.was_reset for c in self.channels.values())
        for channel in list(self.channels.values()):
            channel._gone(self.ended)
        if self._closer is None:
            with contextlib.suppress(RuntimeError):
                # Wake the reader: a closed carrier ends its pending read.
                self._closer = asyncio.get_running_loop().create_task(self.carrier.aclose())

    async def _ping(self) -> None:
        assert self.ping_interval is not None
        loop = asyncio.get_running_loop()
        while not self.ended:
            await asyncio.sleep(self.ping_interval)
            silent = loop.time() - self._last_heard
            if self.ping_timeout is not None and silent > self.ping_timeout:
                self._end(f"the mux peer did not answer for {silent:.0f}s")
                return
            self.protocol.send_ping()
            await self.flush()


#: What ``splice`` reads from its local connection at most: a bulk flow then goes as
#: 256 KiB writes (four DATA messages, one carrier write: one WebSocket message in the
#: plugin), a quarter of the per-message work of 64 KiB reads all along the way.
#: Give the local ``StreamReader`` this ``limit`` so that it buffers that much.
SPLICE_READ_SIZE = 256 * 1024

#: Told about the bytes a ``splice`` moves: ``">"`` from the channel to the local end, ``"<"`` back.
Record = Callable[[str, bytes], None]


async def splice(
    channel: Channel,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    record: Record | None = None,
) -> str:
    """Relay between ``channel`` and a local connection until both directions end.

    Each end of data is passed on as a half-close (the peer's END shuts the
    local write side down, the local EOF sends END). A failure on either
    side resets the other (a TCP reset locally, RESET on the channel).
    Returns ``""`` after a clean end, else what went wrong.
    """

    async def to_local() -> None:
        while data := await channel.read():
            if record is not None:
                record(">", data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def from_local() -> None:
        while data := await reader.read(SPLICE_READ_SIZE):
            if record is not None:
                record("<", data)
            await channel.write(data)
        await channel.end()

    problem = ""
    try:
        async with asyncio.TaskGroup() as both:
            both.create_task(to_local())
            both.create_task(from_local())
    except* OSError as failures:
        problem = str(failures.exceptions[0])
        if channel.was_reset:
            writer.transport.abort()  # the peer's reset, passed on as a TCP reset
        else:
            channel.reset(f"local connection failed: {problem}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        await channel.aclose()
    return problem
