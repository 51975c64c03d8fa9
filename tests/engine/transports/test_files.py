"""PIPE, OPEN, GOPEN and CREATE on real files, FIFOs and devices in tmp_path."""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import stat
from pathlib import Path

import pytest

from kubectl_relay.engine.errors import OpenError
from kubectl_relay.engine.log import NOTICE
from kubectl_relay.engine.transports import files, unix
from kubectl_relay.engine.transports.base import OpenContext
from tests.conftest import scaled
from tests.engine.transports.streams import address, read_all, read_some
from tests.support import run_relay

LOGGER = "kubectl_relay.engine"
CTX = OpenContext()


async def test_unnamed_pipe_echoes_and_half_closes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(NOTICE, logger=LOGGER)
    data = os.urandom(500_000)  # far more than the pipe holds: reading must go on meanwhile
    async with asyncio.timeout(scaled(5)):
        pipe = await files.open_pipe(address("PIPE"), CTX)
        try:
            assert pipe.readable and pipe.writable

            async def feed() -> None:
                await pipe.write(memoryview(data))
                await pipe.shutdown_write()

            _, echoed = await asyncio.gather(feed(), read_all(pipe))
            assert echoed == data
        finally:
            await pipe.aclose()
    assert "writing to and reading from unnamed pipe" in caplog.messages


async def test_named_pipe_is_created_echoes_and_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(NOTICE, logger=LOGGER)
    path = str(tmp_path / "fifo")
    async with asyncio.timeout(scaled(5)):
        pipe = await files.open_pipe(address("PIPE", path, mode=0o600), CTX)
        try:
            info = os.stat(path)
            assert stat.S_ISFIFO(info.st_mode)
            assert stat.S_IMODE(info.st_mode) == 0o600
            await pipe.write(memoryview(b"echo through a named pipe"))
            assert await read_some(pipe) == b"echo through a named pipe"
        finally:
            await pipe.aclose()
    assert not os.path.lexists(path)
    assert f'created named pipe "{path}" for reading and writing' in caplog.messages


async def test_named_pipe_sees_no_eof_when_writers_come_and_go(tmp_path: Path) -> None:
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    async with asyncio.timeout(scaled(5)):
        pipe = await files.open_pipe(address("PIPE", path), CTX)
        try:
            writer = os.open(path, os.O_WRONLY)
            os.write(writer, b"first")
            os.close(writer)
            assert await read_some(pipe) == b"first"
            # The only outside writer is gone; a pipe opened read-only would
            # now read EOF. Ours waits for the next writer.
            pending = asyncio.ensure_future(read_some(pipe))
            await asyncio.sleep(0)
            writer = os.open(path, os.O_WRONLY)
            os.write(writer, b"second")
            os.close(writer)
            assert await pending == b"second"
        finally:
            await pipe.aclose()
    assert stat.S_ISFIFO(os.stat(path).st_mode)  # not ours: left in place


async def test_read_only_named_pipe_waits_for_its_first_writer(tmp_path: Path) -> None:
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    async with asyncio.timeout(scaled(5)):
        pipe = await files.open_pipe(address("PIPE", path, rdonly=True), CTX)
        try:
            assert pipe.readable and not pipe.writable
            reading = asyncio.ensure_future(read_all(pipe))
            await asyncio.sleep(0)
            writer = os.open(path, os.O_WRONLY)
            os.write(writer, b"late writer")
            os.close(writer)
            assert await reading == b"late writer"
        finally:
            await pipe.aclose()


async def test_write_only_named_pipe_waits_for_a_reader(tmp_path: Path) -> None:
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    async with asyncio.timeout(scaled(5)):
        opening = asyncio.ensure_future(files.open_pipe(address("PIPE", path, wronly=True), CTX))
        await asyncio.sleep(0.01)
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            pipe = await opening
            assert pipe.writable and not pipe.readable
            await pipe.write(memoryview(b"to the reader"))
            await pipe.aclose()
            assert os.read(reader, 100) == b"to the reader"
        finally:
            os.close(reader)


async def test_open_reads_and_writes_a_regular_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(NOTICE, logger=LOGGER)
    path = tmp_path / "data.bin"
    content = os.urandom(1_000_000)
    path.write_bytes(content)
    stream = await files.open_file(address("OPEN", str(path)), CTX)
    try:
        assert stream.readable and stream.writable
        assert await read_all(stream) == content
        await stream.write(memoryview(b"appended at the offset"))
    finally:
        await stream.aclose()
    assert path.read_bytes() == content + b"appended at the offset"
    assert f'opening regular file "{path}" for reading and writing' in caplog.messages


async def test_open_missing_file_is_open_error(tmp_path: Path) -> None:
    path = str(tmp_path / "missing")
    with pytest.raises(OpenError) as caught:
        await files.open_file(address("OPEN", path), CTX)
    assert caught.value.reason == f'open("{path}", 02, 0666): No such file or directory'


async def test_open_flags(tmp_path: Path) -> None:
    path = tmp_path / "made"
    stream = await files.open_file(address("OPEN", str(path), creat=True, mode=0o640), CTX)
    await stream.write(memoryview(b"12345"))
    await stream.aclose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~_umask()
    stream = await files.open_file(address("OPEN", str(path), wronly=True, append=True), CTX)
    assert stream.writable and not stream.readable
    await stream.write(memoryview(b"678"))
    await stream.aclose()
    assert path.read_bytes() == b"12345678"
    stream = await files.open_file(address("OPEN", str(path), wronly=True, trunc=True), CTX)
    await stream.write(memoryview(b"new"))
    await stream.aclose()
    assert path.read_bytes() == b"new"
    with pytest.raises(OpenError, match="File exists"):
        await files.open_file(address("OPEN", str(path), creat=True, excl=True), CTX)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


async def test_create_is_write_only_and_truncates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(NOTICE, logger=LOGGER)
    path = tmp_path / "out.bin"
    path.write_bytes(b"old content that must go")
    data = os.urandom(300_000)
    stream = await files.open_file(address("CREATE", str(path)), CTX)
    try:
        assert stream.writable and not stream.readable
        await stream.write(memoryview(data))
        await stream.shutdown_write()
    finally:
        await stream.aclose()
    assert path.read_bytes() == data
    assert f'creating regular file "{path}" for writing' in caplog.messages


async def test_gopen_creates_then_appends(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    for line in (b"one\n", b"two\n"):
        stream = await files.open_file(address("GOPEN", str(path)), CTX)
        await stream.write(memoryview(line))
        await stream.aclose()
    assert path.read_bytes() == b"one\ntwo\n"


async def test_gopen_connects_to_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "service.sock")
    async with asyncio.timeout(scaled(5)):
        listener = await unix.listen(address("UNIX-LISTEN", path), CTX)
        try:
            accepting = asyncio.ensure_future(listener.accept())
            client = await files.open_file(address("GOPEN", path), CTX)
            server = await accepting
            await client.write(memoryview(b"via GOPEN"))
            await client.shutdown_write()
            assert await read_all(server) == b"via GOPEN"
            await client.aclose()
            await server.aclose()
        finally:
            await listener.aclose()


async def test_devices_that_epoll_refuses() -> None:
    null = await files.open_file(address("OPEN", "/dev/null"), CTX)
    try:
        await null.write(memoryview(b"discarded" * 10_000))
        assert await read_some(null) == b""
    finally:
        await null.aclose()
    zero = await files.open_file(address("OPEN", "/dev/zero", rdonly=True), CTX)
    try:
        assert await read_some(zero) == bytes(65536)
    finally:
        await zero.aclose()


async def test_closed_stream_refuses_io(tmp_path: Path) -> None:
    stream = await files.open_pipe(address("PIPE"), CTX)
    await stream.aclose()
    await stream.aclose()  # twice is fine
    with pytest.raises(OSError):
        await stream.write(memoryview(b"x"))


def _supports_direct_io(directory: Path) -> bool:
    probe = directory / "direct-probe"
    probe.write_bytes(b"")
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("block", ["", "-b1000"])
def test_o_direct_reads_the_whole_file_through_aligned_buffers(block: str, tmp_path: Path) -> None:
    """O_DIRECT refuses unaligned buffers (EINVAL); a block smaller than a page must lose nothing."""
    if not _supports_direct_io(tmp_path):
        pytest.skip("this file system refuses O_DIRECT (tmpfs does)")
    path = tmp_path / "data"
    payload = os.urandom(3 * 4096 + 1234)
    path.write_bytes(payload)
    args = [*([block] if block else []), "-u", f"OPEN:{path},o-direct", "-"]
    result = run_relay(args)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == payload


def test_fs_noatime_sets_the_file_attribute(tmp_path: Path) -> None:
    path = tmp_path / "created"
    result = run_relay(["-u", "/dev/null", f"CREATE:{path},fs-noatime"])
    if b"FS_IOC_SETFLAGS" in result.stderr and b"not supported" in result.stderr:
        pytest.skip("this file system has no file attributes (tmpfs has none)")
    assert result.returncode == 0, result.stderr.decode()
    attributes = array.array("l", [0])
    with path.open("rb") as created:
        fcntl.ioctl(created.fileno(), files._FS_IOC_GETFLAGS, attributes, True)
    assert attributes[0] & files.FS_ATTRIBUTES["fs-noatime"]


def test_fs_attributes_are_refused_on_sockets() -> None:
    result = run_relay(["-u", "/dev/null", "TCP:127.0.0.1:1,fs-noatime"])
    assert result.returncode == 1
    assert 'option "fs-noatime" not supported with this address type' in result.stderr.decode()
