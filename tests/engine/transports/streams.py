"""Helpers shared by the transport tests: build addresses, drive streams."""

from __future__ import annotations

from kubectl_relay.engine.addresses import Address
from kubectl_relay.engine.options import Options, OptionValue
from kubectl_relay.engine.transports.base import Stream


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
