"""Helpers shared by the transport tests: real peer programs (socat, openssl) as subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

from kubectl_relay.engine.transports.base import Stream
from tests.conftest import scaled
from tests.engine.transports import streams
from tests.support import is_listening


@contextlib.asynccontextmanager
async def spawn(*argv: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run a peer program with pipes; kill it and everything it forked on exit."""
    # A session of its own, so that the children socat forks end with it.
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Read the pipes to their end too, not only wait(): a pipe still open
        # when the test's loop closes makes uvloop's close() fail with EBUSY.
        async with asyncio.timeout(scaled(10)):
            await proc.communicate()


async def wait_for_line(stream: asyncio.StreamReader | None, text: str) -> str:
    """Read lines until one contains ``text`` (bounded in time); return that line."""
    assert stream is not None
    async with asyncio.timeout(scaled(10)):
        while True:
            line = (await stream.readline()).decode(errors="replace")
            if not line:
                raise EOFError(f"the peer ended before printing {text!r}")
            if text in line:
                return line


async def wait_for_tcp_port(port: int) -> None:
    """Wait until something listens on TCP ``port`` (without connecting to it)."""
    async with asyncio.timeout(scaled(10)):
        while not is_listening(port, "tcp"):
            await asyncio.sleep(0.02)


async def read_some(stream: Stream) -> bytes:
    """One ``read_into`` of ``stream`` (one datagram on a datagram stream), bounded in time."""
    async with asyncio.timeout(scaled(10)):
        return await streams.read_some(stream)


def read_terminal(fd: int, count: int) -> bytes:
    """Up to ``count`` bytes from a terminal descriptor, waiting a bounded time for them."""
    os.set_blocking(fd, False)
    data = b""
    deadline = time.monotonic() + scaled(10)
    while len(data) < count and time.monotonic() < deadline:
        try:
            data += os.read(fd, count - len(data))
        except BlockingIOError:
            time.sleep(0.01)
    return data
