"""``MUX-LISTEN`` and ``MUX-ACCEPT``: sessions as streams of one multiplexed connection.

``MUX-LISTEN:<port>`` (second address) opens a stream on the mux peer for each session;
``MUX-ACCEPT:<port>`` (first address) makes each stream the mux peer opens a session.

``relay TCP-LISTEN:8000,fork,reuseaddr MUX-LISTEN:4000`` is the relay pod of
``kubectl relay expose``: it accepts one mux peer at a time on port 4000 (the
plugin, through the port-forward) and turns each connection accepted on port
8000 into a stream of the protocol in ``mux`` (open, data, half-close each
way, reset, per-stream credit), so that the peer connects it to its own
local port.

- The port listens from the start of the run (``hubs``), before the first
  address accepts anyone.
- A connection that arrives while no mux peer is connected is held up to
  ``PEER_WAIT_SECONDS`` for one to come, then refused: the session fails
  with ``no mux peer on ...`` and the accepted connection is closed.
- A new mux peer replaces the one before (a client reconnecting after its
  port-forward broke); the old one's streams are reset.
- The relay PINGs its peer every ``PING_SECONDS`` and drops a peer it has not
  heard from for ``PEER_TIMEOUT_SECONDS`` (a client that vanished without
  closing), resetting its streams. Each reset is logged with the stream's
  number, as is each stream opened and closed.

``relay MUX-ACCEPT:4000,fork TCP:web:80`` is the mirror, the relay pod of a
``kubectl relay tcp`` tunnel: the plugin keeps one mux connection to port
4000 (one port-forward) and opens a stream per local connection; each stream
is accepted as a session (logged ``accepting connection from <label>``, the
label being what the opener said: the local client's address) and relayed
to the second address, half-close included.

- The mux port listens from the first ``accept`` on; a new mux peer replaces
  the one before (the plugin reconnecting), whose streams are reset; the
  same heartbeat as above drops a peer that went silent.
- ``accept-timeout`` counts from one accepted stream to the next, as
  ``TCP-LISTEN``'s counts between connections (the relay pod's idle exit).
  Once it passed, streams opened afterwards are reset ("the relay stopped
  accepting") instead of waiting for an accept that never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from ..addresses import Address, AddressSpec
from ..errors import AcceptTimeout, OpenError
from ..log import NOTICE, logger, peer_notices
from ..mux import INITIAL_WINDOW, TUNNEL_MAX_WINDOW, TUNNEL_WINDOW
from ..muxing import Channel, InputEnded, MuxConnection, Received
from ..options import Options
from . import tcp
from .base import Listener, OpenContext, Stream
from .sockets import SocketStream

#: How long a session waits for a mux peer before it is refused.
PEER_WAIT_SECONDS = 5.0
#: The relay's heartbeat of its mux peer.
PING_SECONDS = 10.0
PEER_TIMEOUT_SECONDS = 35.0
_KEYWORD = "MUX-LISTEN"
_ACCEPT_KEYWORD = "MUX-ACCEPT"
#: What the relay reads from its mux connection at once: a tunnel's bulk arrives in
#: 256 KiB WebSocket messages, and each read costs a round of the protocol in Python.
_READ_SIZE = 256 * 1024


class _StreamCarrier:
    """An engine ``Stream`` (the accepted mux connection) as a ``muxing.Carrier``."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._buffer = memoryview(bytearray(_READ_SIZE))

    async def read(self) -> memoryview:
        count = await self.stream.read_into(self._buffer)
        return self._buffer[:count]  # no copy: the protocol's decoder copies it

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.write(memoryview(data))

    async def aclose(self) -> None:
        await self.stream.aclose()


class SocketCarrier(_StreamCarrier):
    """An accepted mux connection's socket as a ``muxing.DirectCarrier``: the connection
    reads in the loop's callback and writes without awaiting while the socket takes it."""

    def __init__(self, stream: SocketStream) -> None:
        super().__init__(stream)
        self.sock = stream.sock
        self._reading: asyncio.AbstractEventLoop | None = None
        self._readable: Callable[[], None] = lambda: None

    def deliver(self, received: Received, ended: InputEnded) -> None:
        sock, buffer = self.sock, self._buffer

        def readable() -> None:
            try:
                count = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._stop_reading()
                ended(f"reading from the mux peer failed: {exc}")
                return
            if not count:
                self._stop_reading()
                ended("the mux peer closed the connection")
                return
            received(buffer[:count])

        self._readable = readable
        self.resume()

    def pause(self) -> None:
        self._stop_reading()

    def resume(self) -> None:
        if self._reading is None and self.stream.fileno() is not None:
            self._reading = asyncio.get_running_loop()
            self._reading.add_reader(self.sock.fileno(), self._readable)

    def send_now(self, data: bytearray) -> memoryview | None:
        view = memoryview(data)
        try:
            sent = self.sock.send(view)
        except (BlockingIOError, InterruptedError):
            return view
        return view[sent:] if sent < len(view) else None

    def _stop_reading(self) -> None:
        if self._reading is not None:
            self._reading.remove_reader(self.sock.fileno())
            self._reading = None

    async def aclose(self) -> None:
        if self.stream.fileno() is not None:  # not closed yet: the reader goes first
            self._stop_reading()
        await super().aclose()


class Hub:
    """The mux port of one ``MUX-LISTEN`` (or ``MUX-ACCEPT``) address and its connected peer.

    ``on_open`` gets the streams the peer opens (``MUX-ACCEPT``); without it
    the peer may open none.
    """

    def __init__(
        self,
        address: Address,
        listener: Listener,
        on_open: Callable[[Channel], None] | None = None,
        window: int = INITIAL_WINDOW,
        max_window: int = 0,
    ) -> None:
        self.address = address
        self.listener = listener
        self.on_open = on_open
        self.window = window
        self.max_window = max_window
        self.peer: MuxConnection | None = None
        self._peer_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Accept mux peers from now on (until ``aclose``)."""
        self._spawn(self._serve())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self) -> None:
        """Accept mux peers, each replacing the one before."""
        while True:
            stream = await self.listener.accept()
            carrier: _StreamCarrier
            if isinstance(stream, SocketStream):
                # Many streams' small messages share the connection: Nagle's wait for
                # an ACK would hold one stream's reply behind another's (40 ms each).
                stream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                carrier = SocketCarrier(stream)
            else:
                carrier = _StreamCarrier(stream)
            if self.peer is not None:
                self.peer.close("replaced by a new mux peer")
            peer = MuxConnection(
                carrier,
                listener=True,
                on_open=self.on_open,
                window=self.window,
                max_window=self.max_window,
                ping_interval=PING_SECONDS,
                ping_timeout=PEER_TIMEOUT_SECONDS,
            )
            self.peer = peer
            self._peer_ready.set()
            logger.log(NOTICE, "mux peer %s connected", stream.label)
            self._spawn(self._run_peer(peer, stream.label))

    async def _run_peer(self, peer: MuxConnection, label: str) -> None:
        reason = await peer.run()
        if self.peer is peer:
            self.peer = None
            self._peer_ready.clear()
        logger.warning(
            "mux peer %s gone (%s); %d stream(s) reset", label, reason, peer.streams_cut
        )

    async def open_stream(self, label: str) -> Stream:
        """A new stream on the connected peer (``OpenError`` when none comes in time)."""
        if self.peer is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PEER_WAIT_SECONDS):
                    await self._peer_ready.wait()
        peer = self.peer
        if peer is None:
            raise OpenError(
                str(self.address),
                f"no mux peer on {self.listener.label} within {PEER_WAIT_SECONDS:g}s",
            )
        try:
            channel = await peer.open(label)
        except ConnectionResetError as exc:
            raise OpenError(str(self.address), f"mux peer: {exc.strerror}") from exc
        logger.log(NOTICE, "mux stream %d opened for %s", channel.id, label or "a session")
        return MuxStream(channel)

    async def aclose(self) -> None:
        """Close the port and the peer; reset what is open."""
        if self.peer is not None:
            self.peer.close("the relay is stopping")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.listener.aclose()


class MuxStream(Stream):
    """One session's end: a ``muxing.Channel``."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.label = f"mux stream {channel.id}"

    async def read_into(self, buffer: memoryview) -> int:
        return await self.channel.read_into(buffer)

    async def write(self, data: memoryview) -> None:
        await self.channel.write(data)

    async def shutdown_write(self) -> None:
        await self.channel.end()

    def reset(self) -> None:
        self.channel.reset("the relay cut the session")

    async def aclose(self) -> None:
        reason = self.channel.reset_reason
        await self.channel.aclose()
        if reason is not None and reason != "closed":
            logger.warning("mux stream %d reset: %s", self.channel.id, reason)
        else:
            logger.log(NOTICE, "mux stream %d closed", self.channel.id)


#: The hubs of the running relay, by address text.
_HUBS: dict[str, Hub] = {}


async def _start(address: Address, context: OpenContext) -> Hub:
    listen = Address("TCP-LISTEN", address.params, address.options)
    listener = await tcp.listen(listen, context)
    hub = Hub(address, listener)
    _HUBS[str(address)] = hub
    hub.start()
    return hub


@contextlib.asynccontextmanager
async def hubs(spec: AddressSpec, context: OpenContext) -> AsyncIterator[None]:
    """Listen on the mux port of ``spec`` (if it is ``MUX-LISTEN``) for as long as the run lasts."""
    if isinstance(spec, Address) and spec.keyword == _KEYWORD and str(spec) not in _HUBS:
        await _start(spec, context)
    try:
        yield
    finally:
        for key, hub in list(_HUBS.items()):
            del _HUBS[key]
            await hub.aclose()


async def open_stream(address: Address, context: OpenContext) -> Stream:
    """``MUX-LISTEN``'s opener: one stream on its hub (started here if the run has none yet)."""
    hub = _HUBS.get(str(address)) or await _start(address, context)
    peer = context.env.get("SOCAT_PEERADDR")
    label = f"{peer}:{context.env.get('SOCAT_PEERPORT', '')}" if peer else ""
    return await hub.open_stream(label)


class StreamListener(Listener):
    """``MUX-ACCEPT``: each stream the connected mux peer opens is accepted as a session."""

    def __init__(self, address: Address, peers: Listener) -> None:
        self.address = address
        self.label = peers.label
        self.accept_timeout = address.options.seconds("accept-timeout")
        self.hub = Hub(address, peers, on_open=self._opened, window=TUNNEL_WINDOW,
                       max_window=TUNNEL_MAX_WINDOW)
        self._incoming: asyncio.Queue[Channel] = asyncio.Queue()
        self._accepting = True
        self._started = False

    async def accept(self) -> Stream:
        """The next stream the peer opens; ``AcceptTimeout`` after ``accept-timeout`` without."""
        if not self._started:
            self._started = True
            self.hub.start()
        try:
            async with asyncio.timeout(self.accept_timeout):
                channel = await self._incoming.get()
                while channel.was_reset:  # its peer went away before it was accepted
                    await channel.aclose()
                    channel = await self._incoming.get()
        except TimeoutError:
            self._stop_accepting("the relay stopped accepting (accept-timeout)")
            raise AcceptTimeout(str(self.address), "accept: Connection timed out") from None
        if peer_notices():
            logger.log(NOTICE, "accepting connection from %s on %s",
                       channel.label or f"mux stream {channel.id}", self.label)
        return MuxStream(channel)

    def _opened(self, channel: Channel) -> None:
        if self._accepting:
            self._incoming.put_nowait(channel)
        else:
            channel.reset("the relay stopped accepting")

    def _stop_accepting(self, reason: str) -> None:
        self._accepting = False
        while not self._incoming.empty():
            self._incoming.get_nowait().reset(reason)

    async def aclose(self) -> None:
        """Stop accepting peers and streams; reset what is still open."""
        self._stop_accepting("the relay is stopping")
        await self.hub.aclose()


async def accept_streams(address: Address, context: OpenContext) -> Listener:
    """``MUX-ACCEPT``'s listener: the mux port, bound now; peers accepted from ``accept`` on."""
    # accept-timeout is about streams (StreamListener), not about mux peers.
    socket_options = Options({k: v for k, v in address.options.items() if k != "accept-timeout"})
    peers = await tcp.listen(Address("TCP-LISTEN", address.params, socket_options), context)
    return StreamListener(address, peers)
