"""Helpers shared by the transport tests: build addresses, drive streams."""

from __future__ import annotations

import asyncio
import subprocess

from kubectl_relay.engine.addresses import Address
from kubectl_relay.engine.options import Options, OptionValue
from kubectl_relay.engine.transports.base import Listener, Stream
from tests.support import PATIENT_CLOSE_TIMEOUT


def address(keyword: str, *params: str, **options: OptionValue) -> Address:
    """An already-parsed address; option names with ``_`` for ``-``."""
    return Address(keyword, params, Options({k.replace("_", "-"): v for k, v in options.items()}))


async def read_all(stream: Stream) -> bytes:
    """Everything the stream yields until end of input."""
    chunks = []
    buffer = bytearray(65536)
    while True:
        count = await stream.read_into(memoryview(buffer))
        if count == 0:
            return b"".join(chunks)
        chunks.append(bytes(buffer[:count]))


async def read_some(stream: Stream) -> bytes:
    """One read's worth."""
    buffer = bytearray(65536)
    count = await stream.read_into(memoryview(buffer))
    return bytes(buffer[:count])


async def send_all(stream: Stream, data: bytes) -> None:
    """Write ``data``, then half-close."""
    await stream.write(memoryview(data))
    await stream.shutdown_write()


async def socat_echoes_through(listener: Listener, socat: str, connect: str, data: bytes) -> None:
    """The real socat connects to ``listener`` with ``connect`` and echoes (``EXEC:cat``)
    what it gets: the accepted stream must read back exactly ``data``. Closes the listener."""
    echo = await asyncio.create_subprocess_exec(
        socat, "-t", PATIENT_CLOSE_TIMEOUT, connect, "EXEC:cat", stdin=subprocess.DEVNULL
    )
    try:
        server = await listener.accept()
        _, echoed = await asyncio.gather(send_all(server, data), read_all(server))
        assert echoed == data
        await server.aclose()
        assert await echo.wait() == 0
    finally:
        if echo.returncode is None:
            echo.kill()
            await echo.wait()
        await listener.aclose()
