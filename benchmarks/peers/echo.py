"""Echo server on an event loop (uvloop when installed), for any number of connections.

``python -m benchmarks.peers.echo`` prints ``{"port": N}`` once listening and
runs until its stdin closes or it gets SIGTERM. It is the common upstream of
the latency, connection-rate and memory workloads: the same program behind
both candidates, and cheap per connection (no thread or process each), so it
is neither the bottleneck of the rate test nor a cost in the memory test.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import cast

from .common import HOST, emit

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a project dependency on Linux
    uvloop = None  # type: ignore[assignment]


class Echo(asyncio.Protocol):
    """Send every chunk back; close after the peer's EOF (asyncio sets TCP_NODELAY)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # let the transport close our side too


async def serve() -> None:
    """Listen until stdin reaches EOF or a termination signal arrives."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    def on_stdin() -> None:
        if not os.read(0, 4096):
            loop.remove_reader(0)
            request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    loop.add_reader(0, on_stdin)
    server = await loop.create_server(Echo, HOST, 0, backlog=4096, reuse_address=True)
    async with server:
        emit({"port": server.sockets[0].getsockname()[1]})
        await stop


def main() -> int:
    """Run the server on uvloop if available."""
    if uvloop is not None:
        uvloop.run(serve())
    else:
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
