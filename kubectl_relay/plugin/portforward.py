"""Local listeners whose connections reach the relay pod through the API server's port-forward.

A port-forward speaks SPDY/3.1 where the API server takes it (``spdyforward.py``,
``open_port_forward``: the container runtime spends less per byte on it), else
``v4.channel.k8s.io`` over a WebSocket (``PortForwardStream``): per requested
port, channel 0 carries data and channel 1 errors; every binary message starts
with its channel byte, and the first message of each channel carries the port
number (2 bytes, little-endian). Neither carries a half-close to the pod (the
runtime ends a forward at its first end of data), nor multiplexes beyond the
port list. A ``tcp``, ``tls``, ``proxy`` or ``udp`` tunnel therefore keeps one
port-forward to its relay pod and carries each local connection (each UDP
sender) as a stream of the mux protocol on it (``Forwarder.mux``, see
``muxforward.py``); ``run`` tunnels, and all with ``KUBECTL_RELAY_MUX=0``, give
every local connection a port-forward of its own: a broken one ends only its
own connection, and the listener stays open for the next.

On a port-forward of its own, both ends speak ``frame=len16`` (``engine/framing.py``):
length-prefixed frames, an empty frame for end of data. That keeps a TCP
client's half-close (the relay shuts down its write side towards the target
and the reply still flows back) and UDP datagram boundaries, which a ``udp``
tunnel's mux streams keep the same way.

Opening a port-forward is retried with exponential backoff (the API server
restarting, the pod being replaced); refusals (401, 403) are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import aiohttp

from ..engine.frames import END_FRAME, FrameDecoder, encode
from ..engine.muxing import SPLICE_READ_SIZE, Channel, splice
from .connections import Connections, Flow
from .errors import ApiError, ClusterError, LocalPortInUse, PluginError, PortForwardError
from .events import EventSink, ForwardRetry, Notice
from .kube import Cluster, pod_path
from .spdyforward import SpdyPortForward
from .targets import ListenAddress

if TYPE_CHECKING:
    from .muxforward import SharedPortForward

PROTOCOL = "v4.channel.k8s.io"
#: The environment variable that keeps every port-forward on the WebSocket (``0``).
SPDY_VARIABLE = "KUBECTL_RELAY_SPDY"
_DATA, _ERROR = 0, 1
#: Largest read from a local connection (one frame, one WebSocket message).
READ_SIZE = 0xFFFF
#: First and largest delay between attempts to open a port-forward.
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
#: How long a connection keeps trying before it gives up.
RETRY_FOR = 30.0
#: A local connection that cannot be accepted for want of a descriptor (or of kernel
#: memory) waits in the listen backlog until one closes: the tunnel goes on.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: How soon to try accepting again meanwhile, and how often to say so at most.
ACCEPT_RETRY_SECONDS = 0.1
SHORTAGE_WARNING_EVERY = 10.0
#: A UDP sender's session with no datagram either way for this long ends (``--session-idle``):
#: its stream (or port-forward) and the relay's socket to the target are closed.
UDP_SESSION_IDLE = 60.0
#: After a quiet sender's end frame, how long its session waits for the relay's end (the
#: relay's -t, 0.5 s, and a margin): replies still come meanwhile, and the stream then ends
#: without a reset, which the relay would log as a warning.
UDP_END_WAIT = 2.0
#: Reports bytes that went through a connection: ``>`` towards the target, ``<`` back.
Record = Callable[[str, bytes], None]
_Opened = TypeVar("_Opened")


class PortForwardStream:
    """One connection to a port of a pod, through ``pods/portforward``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, pod: str, port: int) -> None:
        self._ws = ws
        self.pod = pod
        self.port = port
        self._started = [False, False]
        #: Whether the pod refused the connection (a message on the error channel).
        self.refused = False

    @classmethod
    async def open(cls, cluster: Cluster, namespace: str, pod: str, port: int) -> PortForwardStream:
        """Open the WebSocket; ``ApiError`` when the API server refuses it."""
        ws = await cluster.websocket(
            pod_path(namespace, pod) + "/portforward", {"ports": str(port)}, [PROTOCOL]
        )
        if ws.protocol != PROTOCOL:
            await ws.close()
            raise PortForwardError(
                f"the API server answered the port-forward with protocol {ws.protocol!r}",
                f"kubectl relay needs {PROTOCOL} (Kubernetes 1.4 and later speak it)",
            )
        return cls(ws, pod, port)

    async def read(self) -> bytes:
        """The next data from the pod; ``b""`` when the connection ended.

        Raises ``PortForwardError`` for a message on the error channel (the pod
        refused the connection) or a broken WebSocket.
        """
        while True:
            message = await self._ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                data: bytes = message.data
                if not data or data[0] not in (_DATA, _ERROR):
                    continue
                channel, payload = data[0], data[1:]
                if not self._started[channel]:
                    # The first message of a channel is its port number.
                    self._started[channel] = True
                    payload = payload[2:]
                if not payload:
                    continue
                if channel == _DATA:
                    return payload
                self.refused = True
                raise PortForwardError(
                    f"pod {self.pod} refused the connection: "
                    f"{payload.decode(errors='replace').strip()}",
                    refused=True,
                )
            if message.type == aiohttp.WSMsgType.ERROR:
                raise PortForwardError(f"the port-forward to {self.pod} broke: {message.data}")
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                return b""

    async def write(self, data: bytes | bytearray) -> None:
        """Send data to the pod."""
        try:
            await self._ws.send_bytes(bytes((_DATA,)) + data)
        except (ConnectionError, RuntimeError) as exc:
            raise PortForwardError(f"the port-forward to {self.pod} broke: {exc}") from None

    async def aclose(self) -> None:
        """Close the WebSocket."""
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await self._ws.close()


#: A port-forward of either protocol: the same ``read``, ``write``, ``aclose`` and ``refused``.
PodStream = PortForwardStream | SpdyPortForward


async def open_port_forward(
    cluster: Cluster, namespace: str, pod: str, port: int, emit: EventSink | None = None
) -> PodStream:
    """A port-forward to ``port`` of ``pod``, over SPDY where it can be, else the WebSocket.

    SPDY costs the container runtime a quarter of the CPU per byte sent
    (``spdyforward.py``). When the SPDY upgrade is refused with any status but
    401, 403 and 404 (which the WebSocket would get too), this attempt goes
    over the WebSocket; if that one opens, SPDY is what the API server (or
    something in front of it) refuses, and the rest of the run keeps to the
    WebSocket, said once through ``emit``. A failure of both (a 503 while the
    server restarts) is the caller's to retry. A kubeconfig with a proxy, and
    ``KUBECTL_RELAY_SPDY=0``, keep to the WebSocket too.
    """
    refusal = None
    if not cluster.spdy_refused and os.environ.get(SPDY_VARIABLE, "1") != "0" and (
        not cluster.proxy_uses_websocket
    ):
        try:
            return await SpdyPortForward.open(cluster, namespace, pod, port)
        except ApiError as exc:
            if exc.status in (401, 403, 404):
                raise
            refusal = exc
    stream = await PortForwardStream.open(cluster, namespace, pod, port)
    if refusal is not None and not cluster.spdy_refused:
        cluster.spdy_refused = f"{refusal.status} {refusal}"
        if emit is not None:
            emit(Notice(f"the API server refused port-forwards over SPDY ({cluster.spdy_refused}); "
                        "they go over the WebSocket, which is slower", warning=True))
    return stream


class PodRoute(Protocol):
    """Where connections go: the tunnel's current relay pod."""

    async def pod(self) -> str:
        """The name of a ready relay pod (starting one if there is none)."""
        ...

    def failed(self, pod: str, reason: str) -> None:
        """``pod`` could not be reached (the tunnel checks on it)."""
        ...

    def used(self, pod: str) -> None:
        """A connection was opened to ``pod`` (its idle timer restarts)."""
        ...


def bind(listen: ListenAddress, kind: socket.SocketKind) -> socket.socket:
    """Bind the local listener now; ``LocalPortInUse`` when the address is taken."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=kind)
        family = infos[0][0]
        address = infos[0][4]
    except socket.gaierror as exc:
        raise LocalPortInUse(
            f"cannot listen on {listen}: {exc.strerror}", "use an IP address with --listen"
        ) from None
    sock = socket.socket(family, kind)
    try:
        # POSIX: rebind at once after a restart. Not on Windows, where
        # SO_REUSEADDR lets a second socket take a port that is in use.
        if kind == socket.SOCK_STREAM and os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError as exc:
        sock.close()
        proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        raise LocalPortInUse(
            f"cannot listen on {listen} ({proto}): {exc.strerror}",
            "choose another local port with --listen (or 0 for any free port)",
        ) from None
    sock.setblocking(False)
    return sock


def bound_text(sock: socket.socket) -> str:
    """``127.0.0.1:8080`` / ``[::1]:8080`` for a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Forwarder:
    """Serves one bound local socket (TCP or UDP) through the relay pods of one tunnel."""

    sock: socket.socket
    cluster: Cluster
    namespace: str
    route: PodRoute
    port: int
    tunnel: int
    on_event: EventSink
    #: Where connections, their bytes and their ends are reported (in order, per connection).
    connections: Connections
    udp: bool = False
    #: Speak frame=len16 with the relay (off for ``kubectl relay run``: the user's command).
    framed: bool = True
    udp_idle: float = UDP_SESSION_IDLE
    #: The tunnel's one port-forward, its TCP connections being streams of it (``muxforward``);
    #: ``None``: a port-forward per connection.
    mux: SharedPortForward | None = None
    _count: int = 0
    _udp_sessions: dict[object, asyncio.Queue[bytes]] = field(default_factory=dict)

    async def serve(self) -> None:
        """Accept and forward until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                if self.udp:
                    await self._serve_udp(group)
                else:
                    await self._serve_tcp(group)
        finally:
            if self.mux is not None:
                await self.mux.aclose()

    # -- opening the tunnel connection ---------------------------------------------------------

    async def _open(self, number: int) -> PodStream:
        _, stream = await self._retrying(
            number,
            lambda pod: open_port_forward(
                self.cluster, self.namespace, pod, self.port, self.on_event
            ),
        )
        return stream

    async def _retrying(
        self, number: int, connect: Callable[[str], Awaitable[_Opened]]
    ) -> tuple[str, _Opened]:
        """``connect`` to the current relay pod, again with backoff; the pod and the result."""
        delay = BACKOFF_FIRST
        deadline = time.monotonic() + RETRY_FOR
        while True:
            pod = await self.route.pod()
            try:
                opened = await connect(pod)
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise
                reason = str(exc)
                self.route.failed(pod, reason)
            except (ClusterError, PortForwardError) as exc:
                reason = str(exc)
            except ConnectionResetError as exc:  # the shared port-forward ended just now
                reason = exc.strerror or str(exc)
            else:
                self.route.used(pod)
                return pod, opened
            if time.monotonic() + delay > deadline:
                raise PortForwardError(
                    f"no port-forward to the relay pod after {RETRY_FOR:g}s: {reason}",
                    "check the API server and the relay pod (kubectl relay ls)",
                )
            self.on_event(ForwardRetry(self.tunnel, reason, delay, number))
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _next_number(self) -> int:
        self._count += 1
        return self._count

    # -- TCP ----------------------------------------------------------------------------------

    async def _serve_tcp(self, group: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        warned = -SHORTAGE_WARNING_EVERY  # when the last shortage was said
        while True:
            try:
                conn, peer = await loop.sock_accept(self.sock)
            except OSError as exc:
                if exc.errno not in OUT_OF_DESCRIPTORS:
                    raise
                # A burst runs short again at each accept that one close allowed: say it
                # once a while, not per connection.
                if time.monotonic() - warned >= SHORTAGE_WARNING_EVERY:
                    self.on_event(Notice(
                        f"cannot accept another local connection ({exc.strerror}): the next "
                        "ones wait until one closes (ulimit -n raises the limit)",
                        warning=True,
                    ))
                    warned = time.monotonic()
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            group.create_task(self._tcp_connection(conn, peer))

    async def _tcp_connection(self, conn: socket.socket, peer: tuple[object, ...]) -> None:
        number = self._next_number()
        flow = self.connections.opened(number, _peer_text(peer))
        error = ""
        reader, writer = await asyncio.open_connection(sock=conn, limit=SPLICE_READ_SIZE)

        def record(direction: str, data: bytes) -> None:
            self.connections.data(flow, direction, data)

        try:
            if self.mux is not None:
                error = await self._tcp_stream(number, flow, reader, writer, record)
                return
            stream = await self._open(number)
            self.connections.routed(flow, stream.pod)
            try:
                if self.framed:
                    await _pipe(reader, writer, stream, record)
                else:
                    await _plain_pipe(reader, writer, stream, record)
            except PortForwardError as exc:
                if exc.refused:
                    self.route.failed(stream.pod, exc.cause)
                raise
            finally:
                await stream.aclose()
        except PluginError as exc:
            error = str(exc)
        except (ConnectionError, OSError) as exc:
            error = f"local connection: {exc}"
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            self.connections.closed(flow, error)

    async def _tcp_stream(
        self,
        number: int,
        flow: Flow,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: Record,
    ) -> str:
        """One TCP connection as a stream of the shared port-forward; its error ("" if none)."""
        pod, channel = await self._open_stream(number, flow)

        def towards(direction: str, data: bytes) -> None:
            # splice says ">" for what the stream brings (from the target).
            record("<" if direction == ">" else ">", data)

        problem = await splice(channel, reader, writer, towards)
        if broke := self._stream_error(pod, channel):
            return broke
        if problem and not channel.was_reset:
            return f"local connection: {problem}"
        # A reset by the relay (its target refused, say) ends the connection as a
        # relay closing its own connection does: the relay's log line says why.
        return ""

    async def _open_stream(self, number: int, flow: Flow) -> tuple[str, Channel]:
        """A new stream of the shared port-forward for ``flow`` (retried); its pod and it."""
        mux = self.mux
        assert mux is not None
        pod, channel = await self._retrying(number, lambda pod: mux.open(pod, flow.peer))
        self.connections.routed(flow, pod)
        return pod, channel

    def _stream_error(self, pod: str, channel: Channel) -> str:
        """Why a stream of the shared port-forward ended, if it broke with it ("" if not)."""
        mux = self.mux
        assert mux is not None
        if broke := mux.broke(channel):
            if mux.refused(channel):
                self.route.failed(pod, broke)  # the tunnel checks on the pod
            return f"the port-forward to {pod} broke: {broke}"
        return ""

    # -- UDP ----------------------------------------------------------------------------------

    async def _serve_udp(self, group: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        forwarder = self

        class Protocol(asyncio.DatagramProtocol):
            # Its own transport, from connection_made: uvloop delivers a datagram that
            # waited on the bound socket before create_datagram_endpoint has returned.
            transport: asyncio.DatagramTransport

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
                queue = forwarder._udp_sessions.get(addr)
                if queue is None:
                    queue = asyncio.Queue()
                    forwarder._udp_sessions[addr] = queue
                    group.create_task(forwarder._udp_session(self.transport, addr, queue))
                queue.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(Protocol, sock=self.sock)
        try:
            await asyncio.Future()  # until cancelled
        finally:
            transport.abort()

    async def _udp_session(
        self,
        transport: asyncio.DatagramTransport,
        addr: tuple[object, ...],
        queue: asyncio.Queue[bytes],
    ) -> None:
        number = self._next_number()
        flow = self.connections.opened(number, _peer_text(addr))
        error = ""

        def record(direction: str, data: bytes) -> None:
            self.connections.data(flow, direction, data)

        def retire() -> None:
            # The session is ending: the sender's next datagram starts a new one rather
            # than wait in this queue, which nobody reads any more.
            if self._udp_sessions.get(addr) is queue:
                del self._udp_sessions[addr]

        try:
            if self.mux is not None:
                error = await self._udp_stream(number, flow, transport, addr, queue, record, retire)
                return
            stream = await self._open(number)
            self.connections.routed(flow, stream.pod)
            try:
                await _udp_pipe(transport, addr, queue, stream, record, retire, self.udp_idle)
            finally:
                await stream.aclose()
        except PluginError as exc:
            error = str(exc)
        finally:
            retire()
            self.connections.closed(flow, error)

    async def _udp_stream(
        self,
        number: int,
        flow: Flow,
        transport: asyncio.DatagramTransport,
        addr: tuple[object, ...],
        queue: asyncio.Queue[bytes],
        record: Record,
        retire: Callable[[], None],
    ) -> str:
        """One UDP sender as a stream of the shared port-forward; its error ("" if none)."""
        pod, channel = await self._open_stream(number, flow)
        try:
            await _udp_pipe(transport, addr, queue, channel, record, retire, self.udp_idle)
        except ConnectionResetError:
            pass  # the relay reset the stream: its log line says why
        finally:
            await channel.aclose()
        return self._stream_error(pod, channel)


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stream: PodStream,
    record: Record,
) -> None:
    """Relay one TCP connection in frames, half-closes included, until both directions end."""

    async def up() -> None:
        while data := await reader.read(READ_SIZE):
            await stream.write(encode(data))
            record(">", data)
        await stream.write(END_FRAME)

    async def down() -> None:
        decoder = FrameDecoder()
        while data := await stream.read():
            for frame in decoder.feed(data):
                if not frame:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(frame)
                record("<", frame)
            await writer.drain()
        raise ConnectionResetError("the relay closed the connection")

    await _both(up, down)


async def _udp_pipe(
    transport: asyncio.DatagramTransport,
    addr: tuple[object, ...],
    queue: asyncio.Queue[bytes],
    stream: PodStream | Channel,
    record: Record,
    retire: Callable[[], None],
    idle: float,
) -> None:
    """Relay one UDP sender's datagrams as frames until no datagram went either way for
    ``idle`` seconds.

    Replies count: a target that streams to a sender that asked once (a subscription, a
    media stream) keeps the session. ``retire`` is called as the session starts to end
    (quiet, or the relay's end): the sender's next datagrams go to a new session.
    """
    loop = asyncio.get_running_loop()
    last_heard = loop.time()  # the last datagram, either way

    async def up() -> None:
        nonlocal last_heard
        while True:
            quiet_left = last_heard + idle - loop.time()
            datagram: bytes | None = None  # None: quiet for ``idle``, the session ends
            if not queue.empty():  # one that came as the time ran out still goes
                datagram = queue.get_nowait()
            elif quiet_left > 0:
                try:
                    async with asyncio.timeout(quiet_left):
                        datagram = await queue.get()
                except TimeoutError:
                    continue  # a reply may have come meanwhile: count again
            if datagram is None:
                retire()
                await stream.write(END_FRAME)
                return
            last_heard = loop.time()
            await stream.write(encode(datagram))
            record(">", datagram)

    async def down() -> None:
        nonlocal last_heard
        decoder = FrameDecoder()
        while data := await stream.read():
            last_heard = loop.time()
            for frame in decoder.feed(data):
                if not frame:
                    return
                transport.sendto(frame, addr)
                record("<", frame)

    # The session ends when the sender went quiet (up) or the relay ended it (down).
    sending, receiving = asyncio.ensure_future(up()), asyncio.ensure_future(down())
    tasks = [sending, receiving]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        retire()
        if done == {sending} and sending.exception() is None:
            done |= (await asyncio.wait([receiving], timeout=UDP_END_WAIT))[0]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _both(
    up: Callable[[], Coroutine[Any, Any, None]], down: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Run both directions; a reset in ``down`` ends ``up`` too, a finished ``up`` does not."""
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(up())
            group.create_task(down())
    except BaseExceptionGroup as failures:
        # A reset (the relay ended the connection without an end frame, or the
        # client did) just ends the connection; anything else is reported.
        others = [e for e in failures.exceptions if not isinstance(e, ConnectionResetError)]
        if others:
            raise others[0] from None


async def _plain_pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stream: PodStream,
    record: Record,
) -> None:
    """Relay one TCP connection as plain bytes (no half-close: the port-forward has none)."""

    async def up() -> None:
        while data := await reader.read(READ_SIZE):
            await stream.write(data)
            record(">", data)

    async def down() -> None:
        while data := await stream.read():
            writer.write(data)
            record("<", data)
            await writer.drain()
        raise ConnectionResetError("the relay closed the connection")

    await _both(up, down)


def _peer_text(peer: tuple[object, ...]) -> str:
    host, port = str(peer[0]), peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
