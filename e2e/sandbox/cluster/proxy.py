"""The sandbox's kube-proxy: a userspace proxy on each Service's cluster IP and port.

One listener per Service port (TCP or UDP) on ``clusterIP:port`` (and on
``<node IP>:nodePort`` for NodePort and LoadBalancer Services). Each new TCP
connection, or each new UDP client, goes to the next ready endpoint (round
robin); a backend that refuses is skipped. Endpoints are read when a
connection arrives, so endpoint changes apply to the next connection, while
established ones continue, as with kube-proxy's iptables mode.

TCP keeps half-closes (an EOF from one side is passed on as a FIN and the other
direction goes on) and resets (a reset on one side aborts the other), and the
client's address (the backend sees the connection come from the client's pod
IP, as behind kube-proxy). With
no ready endpoint, a connection is reset at once (a real cluster answers
"connection refused"; a listener cannot refuse selectively).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from .informer import cancel_and_wait

log = logging.getLogger("sandbox.proxy")

#: A UDP "connection" with no traffic for this long is forgotten (conntrack's UDP timeout).
UDP_IDLE = 30.0

#: Chunk size of the TCP relay.
CHUNK = 64 * 1024

#: (namespace, service, port name) -> ready backends as (ip, port).
BackendLookup = Callable[[str, str, str], list[tuple[str, int]]]


@dataclass(frozen=True)
class PortKey:
    """One listener: where it listens and which Service port it serves."""

    namespace: str
    service: str
    port_name: str
    protocol: str
    host: str
    port: int


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close; exceptions reach the caller."""
    while True:
        data = await reader.read(CHUNK)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()


async def _open_from(
    client: asyncio.StreamWriter, backend: tuple[str, int]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``backend`` from the client's own address when possible.

    kube-proxy rewrites only the destination, so a pod sees its real client.
    Every 127.x address is local here, so the proxy can bind its side of the
    connection to the client's address and get the same effect.
    """
    peer = client.get_extra_info("peername")
    if peer and peer[0] != backend[0]:
        try:
            return await asyncio.open_connection(*backend, local_addr=(peer[0], 0))
        except OSError:
            pass  # fall back to the kernel's choice of source address
    return await asyncio.open_connection(*backend)


async def _settle(
    tasks: list[asyncio.Task[None]], writers: list[asyncio.StreamWriter | None]
) -> None:
    """Wait for cancelled pipes and closing writers, ignoring their errors."""
    with contextlib.suppress(asyncio.CancelledError, OSError):
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            if writer is not None:
                await writer.wait_closed()


@dataclass
class _Listener:
    key: PortKey
    server: asyncio.Server | None = None
    transport: asyncio.DatagramTransport | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class ServiceProxy:
    """All Service listeners of the sandbox."""

    def __init__(self, backends: BackendLookup) -> None:
        self._backends = backends
        self._listeners: dict[PortKey, _Listener] = {}
        self._round_robin: dict[tuple[str, str, str], itertools.count[int]] = {}

    async def sync(self, namespace: str, service: str, keys: list[PortKey]) -> None:
        """Make the Service's listeners exactly ``keys``."""
        wanted = set(keys)
        for key in [k for k in self._listeners if (k.namespace, k.service) == (namespace, service)]:
            if key not in wanted:
                await self._close(self._listeners.pop(key))
        for key in keys:
            if key not in self._listeners:
                listener = _Listener(key)
                try:
                    await self._open(listener)
                except OSError as exc:
                    log.warning(
                        "service %s/%s: cannot listen on %s:%s/%s: %s",
                        namespace,
                        service,
                        key.host,
                        key.port,
                        key.protocol,
                        exc,
                    )
                    continue
                self._listeners[key] = listener

    async def stop(self) -> None:
        """Close every listener and connection."""
        for listener in list(self._listeners.values()):
            await self._close(listener)
        self._listeners.clear()

    def _next_backend(self, key: PortKey, skip: set[tuple[str, int]]) -> tuple[str, int] | None:
        backends = [
            b for b in self._backends(key.namespace, key.service, key.port_name) if b not in skip
        ]
        if not backends:
            return None
        counter = self._round_robin.setdefault(
            (key.namespace, key.service, key.port_name), itertools.count()
        )
        return backends[next(counter) % len(backends)]

    async def _open(self, listener: _Listener) -> None:
        key = listener.key
        loop = asyncio.get_running_loop()
        if key.protocol == "UDP":
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpFront(self, key), local_addr=(key.host, key.port), reuse_port=False
            )
            listener.transport = transport
            return

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            listener.tasks.add(task)
            try:
                await self._relay_tcp(key, reader, writer)
            finally:
                listener.tasks.discard(task)

        listener.server = await asyncio.start_server(
            handle, key.host, key.port, reuse_address=True, backlog=512
        )

    async def _relay_tcp(
        self, key: PortKey, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        upstream: asyncio.StreamWriter | None = None
        pipes: list[asyncio.Task[None]] = []
        try:
            tried: set[tuple[str, int]] = set()
            while upstream is None:
                backend = self._next_backend(key, tried)
                if backend is None:
                    _reset(client)
                    return
                try:
                    upstream_reader, upstream = await _open_from(client, backend)
                except OSError:
                    tried.add(backend)
            pipes = [
                asyncio.create_task(_pipe(client_reader, upstream)),
                asyncio.create_task(_pipe(upstream_reader, client)),
            ]
            # Both directions end by EOF (half-closes pass through), or one fails:
            # then the other side is reset too instead of waiting forever.
            done, _ = await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
            if any(not t.cancelled() and t.exception() is not None for t in done):
                _reset(client)
                _reset(upstream)
        finally:
            # Close first, synchronously: a cancellation while awaiting below must
            # not leave a socket open.
            for task in pipes:
                task.cancel()
            client.close()
            if upstream is not None:
                upstream.close()
            await _settle(pipes, [client, upstream])

    async def _close(self, listener: _Listener) -> None:
        if listener.server is not None:
            listener.server.close()
        await cancel_and_wait(listener.tasks)
        if listener.server is not None:
            await listener.server.wait_closed()
        if listener.transport is not None:
            protocol = listener.transport.get_protocol()
            if isinstance(protocol, _UdpFront):
                protocol.close_flows()
            listener.transport.close()


class _UdpBack(asyncio.DatagramProtocol):
    """The proxy's socket towards one backend, for one client: replies go back to that client."""

    def __init__(self, front: _UdpFront, client: tuple[str, int]) -> None:
        self.front = front
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.front.reply(data, self.client)
        self.front.touch(self.client)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors (port unreachable): drop, as a NAT does


class _UdpFront(asyncio.DatagramProtocol):
    """The listener on clusterIP:port for one UDP Service port."""

    def __init__(self, proxy: ServiceProxy, key: PortKey) -> None:
        self.proxy = proxy
        self.key = key
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple[str, int], _UdpBack] = {}
        self.pending: dict[tuple[str, int], list[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        flow = self.flows.get(addr)
        if flow is not None and flow.transport is not None:
            flow.transport.sendto(data)
            self.touch(addr)
            return
        if addr in self.pending:
            self.pending[addr].append(data)
            return
        backend = self.proxy._next_backend(self.key, set())
        if backend is None:
            return  # no endpoint: the datagram is lost
        self.pending[addr] = [data]
        asyncio.get_running_loop().create_task(self._connect(addr, backend))

    async def _connect(self, client: tuple[str, int], backend: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, back = await loop.create_datagram_endpoint(
                lambda: _UdpBack(self, client), remote_addr=backend
            )
        except OSError:
            self.pending.pop(client, None)
            return
        self.flows[client] = back
        for data in self.pending.pop(client, []):
            if back.transport is not None:
                back.transport.sendto(data)
        self.touch(client)

    def reply(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, client)

    def touch(self, client: tuple[str, int]) -> None:
        flow = self.flows.get(client)
        if flow is None:
            return
        if flow.idle is not None:
            flow.idle.cancel()
        flow.idle = asyncio.get_running_loop().call_later(UDP_IDLE, self._expire, client)

    def _expire(self, client: tuple[str, int]) -> None:
        flow = self.flows.pop(client, None)
        if flow is not None and flow.transport is not None:
            flow.transport.close()

    def close_flows(self) -> None:
        for client in list(self.flows):
            flow = self.flows[client]
            if flow.idle is not None:
                flow.idle.cancel()
            self._expire(client)
