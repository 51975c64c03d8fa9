"""STDIO, STDIN, STDOUT, FD: exercised in a child Python process, never on pytest's own fds.

Each child runs one scenario from ``CHILD`` on the event loop named in its
arguments (asyncio or uvloop: uvloop's add_reader would set O_NONBLOCK) and
reports on stderr whether fds 0 and 1 were left blocking.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kubectl_relay.engine.addresses import Address
from kubectl_relay.engine.errors import OpenError
from kubectl_relay.engine.transports import stdio
from kubectl_relay.engine.transports.base import OpenContext
from tests.conftest import scaled

ROOT = str(Path(__file__).resolve().parents[3])

CHILD = r"""
import asyncio, fcntl, logging, os, sys
sys.path.insert(0, sys.argv[1])
from kubectl_relay.engine.addresses import Address
from kubectl_relay.engine.transports import stdio
from kubectl_relay.engine.transports.base import OpenContext

loop_name, mode, args = sys.argv[2], sys.argv[3], sys.argv[4:]
logging.basicConfig(level=25, format="%(message)s", stream=sys.stderr)


async def read_all(stream):
    chunks, buffer = [], bytearray(65536)
    while True:
        count = await stream.read_into(memoryview(buffer))
        if count == 0:
            return b"".join(chunks)
        chunks.append(bytes(buffer[:count]))


async def read_exactly(stream, size):
    data, buffer = b"", bytearray(65536)
    while len(data) < size:
        count = await stream.read_into(memoryview(buffer)[: size - len(data)])
        assert count, "early EOF"
        data += bytes(buffer[:count])
    return data


async def open_standard(keyword):
    return await stdio.open_stdio(Address(keyword), OpenContext())


async def main():
    if mode == "echo":
        stream = await open_standard("STDIO")
        data = await read_all(stream)
        await stream.write(memoryview(data))
        await stream.shutdown_write()
        await stream.aclose()
    elif mode == "copy":
        source, sink = await open_standard("STDIN"), await open_standard("STDOUT")
        buffer = bytearray(8192)
        while count := await source.read_into(memoryview(buffer)):
            await sink.write(memoryview(buffer)[:count])
        await source.aclose()
        await sink.aclose()
    elif mode == "halfclose":
        stream = await open_standard("STDIO")
        data = await read_exactly(stream, int(args[0]))
        await stream.write(memoryview(data))
        await stream.shutdown_write()
        rest = await read_all(stream)
        sys.stderr.write(f"after half-close: {rest!r}\n")
        await stream.aclose()
    elif mode == "cancel":
        stream = await open_standard("STDIO")
        pending = asyncio.ensure_future(stream.read_into(memoryview(bytearray(100))))
        await asyncio.sleep(0.05)
        pending.cancel()
        await stream.write(memoryview(b"ready\n"))
        data = await read_all(stream)
        await stream.write(memoryview(data))
        await stream.aclose()
    elif mode == "abandon":
        stream = await open_standard("STDIN")
        pending = asyncio.ensure_future(stream.read_into(memoryview(bytearray(100))))
        await asyncio.sleep(0.05)
        pending.cancel()
        await stream.aclose()
    elif mode == "fd":
        stream = await stdio.open_fd(Address("FD", (args[0],)), OpenContext())
        data = await read_all(stream)
        await stream.write(memoryview(data[::-1]))
        await stream.shutdown_write()
        await stream.aclose()
    flags = [bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK) for fd in (0, 1)]
    sys.stderr.write(f"nonblocking: {flags[0]} {flags[1]}\n")


if loop_name == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""

LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


async def start(
    loop: str,
    mode: str,
    *args: str,
    stdin: object = subprocess.PIPE,
    stdout: object = subprocess.PIPE,
    pass_fds: tuple[int, ...] = (),
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        ROOT,
        loop,
        mode,
        *args,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
    )


async def finish(child: asyncio.subprocess.Process, data: bytes | None = None) -> tuple[bytes, str]:
    try:
        async with asyncio.timeout(scaled(10)):
            # communicate() closes the child's stdin only when given input.
            feed = (data or b"") if child.stdin is not None else None
            out, err = await child.communicate(feed)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    text = err.decode()
    assert child.returncode == 0, text
    return out or b"", text


@LOOPS
async def test_stdio_echo_byte_for_byte_and_flags_untouched(loop: str) -> None:
    data = os.urandom(1_500_000)
    child = await start(loop, "echo")
    out, err = await finish(child, data)
    assert out == data
    assert "reading from and writing to stdio" in err
    assert "nonblocking: False False" in err


@LOOPS
async def test_stdin_and_stdout_on_regular_files(loop: str, tmp_path: Path) -> None:
    source, target = tmp_path / "in.bin", tmp_path / "out.bin"
    data = os.urandom(700_000)
    source.write_bytes(data)
    with source.open("rb") as stdin, target.open("wb") as stdout:
        child = await start(loop, "copy", stdin=stdin, stdout=stdout)
        _, err = await finish(child)
    assert target.read_bytes() == data
    assert "using stdin for reading" in err
    assert "using stdout for writing" in err


@LOOPS
async def test_stdin_from_dev_null_is_at_eof(loop: str) -> None:
    child = await start(loop, "echo", stdin=subprocess.DEVNULL)
    out, _ = await finish(child)
    assert out == b""


@LOOPS
async def test_half_close_on_a_socket_stdio(loop: str) -> None:
    ours, theirs = socket.socketpair()
    data = os.urandom(300_000)
    with ours, theirs:
        child = await start(loop, "halfclose", str(len(data)), stdin=theirs, stdout=theirs)
        theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            async with asyncio.timeout(scaled(10)):
                writer.write(data)
                await writer.drain()
                # The child's shutdown_write is an EOF we see while both stay open.
                assert await reader.read() == data
                writer.write(b"after")
                writer.write_eof()
                _, err = await finish(child)
        finally:
            writer.close()
            await writer.wait_closed()
    assert "after half-close: b'after'" in err


@LOOPS
async def test_cancelled_read_loses_no_data(loop: str) -> None:
    child = await start(loop, "cancel")
    assert child.stdin is not None and child.stdout is not None
    async with asyncio.timeout(scaled(10)):
        assert await child.stdout.readline() == b"ready\n"
        child.stdin.write(b"every byte")
    out, _ = await finish(child)
    assert out == b"every byte"


@LOOPS
async def test_a_pending_read_does_not_keep_the_process_alive(loop: str) -> None:
    child = await start(loop, "abandon")
    assert child.stdin is not None
    # stdin stays open and silent: the child must still exit on its own.
    async with asyncio.timeout(scaled(10)):
        code = await child.wait()
    child.stdin.close()
    assert code == 0


@LOOPS
async def test_fd_address_on_an_inherited_socket(loop: str) -> None:
    ours, theirs = socket.socketpair()
    number = theirs.fileno()
    with ours, theirs:
        child = await start(loop, "fd", str(number), pass_fds=(number,))
        theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            async with asyncio.timeout(scaled(10)):
                writer.write(b"abcdef")
                writer.write_eof()
                assert await reader.read() == b"fedcba"
                _, err = await finish(child)
        finally:
            writer.close()
            await writer.wait_closed()
    assert f"using file descriptor {number} for reading and writing" in err


async def test_fd_that_is_not_open_is_open_error() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)  # a descriptor number that is certainly free now
    with pytest.raises(OpenError) as caught:
        await stdio.open_fd(Address("FD", (str(fd),)), OpenContext())
    assert caught.value.reason == f"fcntl({fd}, F_GETFL): Bad file descriptor"
