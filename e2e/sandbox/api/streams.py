"""Streaming subresources: ``pods/log`` and ``pods/portforward``, served by a PodBackend.

``pods/log`` streams what ``backend.logs()`` yields as a chunked ``text/plain`` body.

``pods/portforward`` speaks the WebSocket protocol ``v4.channel.k8s.io`` of the kubelet, as the
Python client's ``kubernetes.stream.portforward`` expects: for the i-th requested port, channel
``2*i`` carries data and ``2*i+1`` errors; every binary frame starts with its channel byte; the
first frame of each channel carries the port number (2 bytes, little-endian). Each port is one
``backend.connect()``; a port that cannot be connected gets a message on its error channel. The
websocket closes when every port's connection has ended, or when the fault injector breaks it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from .errors import ApiError, BadRequest
from .faults import Faults

PORTFORWARD_PROTOCOL = "v4.channel.k8s.io"
_READ_SIZE = 64 * 1024


class PodBackend(Protocol):
    """What runs the pods (the sandbox cluster); the API server calls it for logs and ports."""

    def logs(
        self, namespace: str, pod: str, container: str | None, *, follow: bool,
        tail_lines: int | None = None,
    ) -> AsyncIterator[bytes]:
        """The container's output; with ``follow`` it ends when the container ends."""
        ...

    async def connect(
        self, namespace: str, pod: str, port: int,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to a pod's port; ConnectionError if nothing listens."""
        ...


def pick_container(pod: dict[str, Any], container: str | None) -> str:
    """The container a log request means, with the real server's refusals."""
    name = pod["metadata"]["name"]
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    if container is None:
        if len(names) != 1:
            raise BadRequest(f"a container name must be specified for pod {name}, choose one "
                             f"of: [{' '.join(str(n) for n in names)}]")
        container = str(names[0])
    elif container not in names:
        raise BadRequest(f"container {container} is not valid for pod {name}")
    if (pod.get("status") or {}).get("phase", "Pending") == "Pending":
        raise BadRequest(f'container "{container}" in pod "{name}" is waiting to start: '
                         "ContainerCreating")
    return container


async def serve_logs(
    request: web.Request, backend: PodBackend | None, pod: dict[str, Any],
    container: str | None, *, follow: bool, tail_lines: int | None, limit_bytes: int | None,
) -> web.StreamResponse:
    """``GET .../pods/NAME/log``: stream the backend's bytes as they come."""
    container = pick_container(pod, container)
    if backend is None:
        raise BadRequest(f'pod "{pod["metadata"]["name"]}" has no log source in this sandbox')
    chunks = backend.logs(pod["metadata"]["namespace"], pod["metadata"]["name"], container,
                          follow=follow, tail_lines=tail_lines)
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        sent = 0
        async for chunk in chunks:
            data = chunk if limit_bytes is None else chunk[: max(limit_bytes - sent, 0)]
            if data:
                await response.write(data)
                sent += len(data)
            if limit_bytes is not None and sent >= limit_bytes:
                break
        await response.write_eof()
    except (ConnectionError, ApiError):
        pass  # the client went away, or the backend failed after the headers were sent
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return response


def requested_ports(values: list[str]) -> list[int]:
    """The ``ports`` query parameter(s): repeated and/or comma-separated."""
    ports = []
    for value in values:
        for item in value.split(","):
            try:
                port = int(item)
            except ValueError:
                raise BadRequest(f"invalid port {item!r}") from None
            if not 0 < port < 65536:
                raise BadRequest(f"port {port} must be > 0 and < 65536")
            ports.append(port)
    if not ports:
        raise BadRequest('query parameter "port" is required')
    return ports


def _frame(channel: int, data: bytes) -> bytes:
    return bytes((channel,)) + data


async def serve_portforward(
    request: web.Request, backend: PodBackend | None, pod: dict[str, Any], ports: list[int],
    faults: Faults,
) -> web.WebSocketResponse:
    """``GET .../pods/NAME/portforward`` upgraded to a ``v4.channel.k8s.io`` websocket."""
    namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    if backend is None:
        raise BadRequest(f'pod "{name}" cannot be port-forwarded in this sandbox')
    if (pod.get("status") or {}).get("phase") != "Running":
        raise BadRequest(f"unable to upgrade connection: pod {name} is not running")
    ws = web.WebSocketResponse(protocols=(PORTFORWARD_PROTOCOL,), autoping=True)
    await ws.prepare(request)
    broken = asyncio.Event()
    untrack = faults.track_forward(broken.set)
    writers: dict[int, asyncio.StreamWriter] = {}
    pumps: set[asyncio.Task[None]] = set()
    try:
        for i, port in enumerate(ports):
            prefix = port.to_bytes(2, "little")
            await ws.send_bytes(_frame(2 * i, prefix))
            await ws.send_bytes(_frame(2 * i + 1, prefix))
        for i, port in enumerate(ports):
            try:
                reader, writer = await backend.connect(namespace, name, port)
            except ConnectionError as e:
                await ws.send_bytes(_frame(2 * i + 1, (
                    f"error forwarding port {port} to pod {name}, uid : failed to connect to "
                    f"localhost:{port} inside namespace {namespace}: {e}").encode()))
                continue
            writers[i] = writer
            pumps.add(asyncio.create_task(_pump(reader, ws, 2 * i)))
        if not pumps:
            return ws
        receiver = asyncio.create_task(_receive(ws, writers))
        breaker = asyncio.create_task(broken.wait())
        # Ends when the client closes, when every port's connection ends, or on a break.
        waiting = {receiver, breaker, asyncio.create_task(_all_done(pumps))}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
    finally:
        untrack()
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for writer in writers.values():
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        await ws.close()
    return ws


async def _all_done(tasks: set[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, ws: web.WebSocketResponse, channel: int) -> None:
    """Pod -> client, until the pod side ends its stream."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(_READ_SIZE):
            await ws.send_bytes(_frame(channel, data))


async def _receive(ws: web.WebSocketResponse, writers: dict[int, asyncio.StreamWriter]) -> None:
    """Client -> pod: data frames go to their port's connection; error channels are ignored."""
    async for msg in ws:
        if msg.type != WSMsgType.BINARY or not msg.data:
            continue
        channel, data = msg.data[0], msg.data[1:]
        writer = writers.get(channel // 2)
        if channel % 2 or writer is None or not data:
            continue
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError):
            writers.pop(channel // 2, None)
