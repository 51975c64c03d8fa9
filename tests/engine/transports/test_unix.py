"""UNIX domain sockets on real socket files in tmp_path."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
from pathlib import Path

import pytest

from kubectl_relay.engine.errors import OpenError
from kubectl_relay.engine.log import NOTICE
from kubectl_relay.engine.options import OptionValue
from kubectl_relay.engine.transports import tcp, unix
from kubectl_relay.engine.transports.base import Listener, OpenContext, Stream
from tests.conftest import SOCAT, requires_socat, scaled
from tests.engine.transports.streams import address, read_all, send_all, socat_echoes_through

LOGGER = "kubectl_relay.engine"


async def connected_pair(
    listener: Listener, path: str, **options: OptionValue
) -> tuple[Stream, Stream]:
    accepting = asyncio.ensure_future(listener.accept())
    try:
        client = await unix.connect(address("UNIX-CONNECT", path, **options), OpenContext())
        return client, await accepting
    except BaseException:
        accepting.cancel()
        raise


async def test_both_directions_with_half_close_and_environment(tmp_path: Path) -> None:
    path = str(tmp_path / "relay.sock")
    async with asyncio.timeout(scaled(5)):
        listener = await unix.listen(address("UNIX-LISTEN", path), OpenContext())
        try:
            client, server = await connected_pair(listener, path)
            assert server.env == {"SOCAT_PEERADDR": "<anon>", "SOCAT_SOCKADDR": path}
            up, down = os.urandom(250_000), os.urandom(120_000)
            _, got = await asyncio.gather(send_all(client, up), read_all(server))
            assert got == up
            _, got = await asyncio.gather(send_all(server, down), read_all(client))
            assert got == down
            await client.aclose()
            await server.aclose()
        finally:
            await listener.aclose()


async def test_socket_file_is_removed_on_close_unless_unlink_close_is_off(
    tmp_path: Path,
) -> None:
    removed = str(tmp_path / "removed.sock")
    kept = str(tmp_path / "kept.sock")
    first = await unix.listen(address("UNIX-LISTEN", removed), OpenContext())
    second = await unix.listen(address("UNIX-LISTEN", kept, unlink_close=False), OpenContext())
    assert stat.S_ISSOCK(os.stat(removed).st_mode)
    await first.aclose()
    await second.aclose()
    assert not os.path.lexists(removed)
    assert stat.S_ISSOCK(os.lstat(kept).st_mode)


async def test_close_leaves_a_socket_file_that_is_no_longer_ours(tmp_path: Path) -> None:
    path = str(tmp_path / "taken-over.sock")
    listener = await unix.listen(address("UNIX-LISTEN", path), OpenContext())
    # Another relay started with unlink-early took the path over meanwhile.
    successor = await unix.listen(address("UNIX-LISTEN", path, unlink_early=True), OpenContext())
    await listener.aclose()
    assert os.path.lexists(path)
    await successor.aclose()
    assert not os.path.lexists(path)


async def test_existing_path_is_refused_unless_unlink_early(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    path.write_text("left over")
    with pytest.raises(OpenError) as caught:
        await unix.listen(address("UNIX-LISTEN", str(path)), OpenContext())
    assert caught.value.reason == f'"{path}" exists'
    listener = await unix.listen(
        address("UNIX-LISTEN", str(path), unlink_early=True), OpenContext()
    )
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    await listener.aclose()


async def test_mode_and_umask(tmp_path: Path) -> None:
    private = str(tmp_path / "private.sock")
    masked = str(tmp_path / "masked.sock")
    before = os.umask(0o022)
    os.umask(before)
    first = await unix.listen(address("UNIX-LISTEN", private, mode=0o600), OpenContext())
    second = await unix.listen(address("UNIX-LISTEN", masked, umask="077"), OpenContext())
    try:
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(masked).st_mode) == 0o700
        # umask applies only while the address opens.
        current = os.umask(before)
        assert current == before
    finally:
        await first.aclose()
        await second.aclose()


async def test_bind_failure_is_open_error_and_leaves_no_file(tmp_path: Path) -> None:
    path = str(tmp_path / "missing-dir" / "relay.sock")
    with pytest.raises(OpenError) as caught:
        await unix.listen(address("UNIX-LISTEN", path), OpenContext())
    length = 2 + len(path)
    assert re.fullmatch(
        rf'bind\(\d+, \{{AF=1 "{re.escape(path)}"\}}, {length}\): No such file or directory',
        caught.value.reason,
    )
    assert not os.path.lexists(path)
    too_long = str(tmp_path / ("x" * 200))
    with pytest.raises(OpenError):
        await unix.listen(address("UNIX-LISTEN", too_long), OpenContext())
    assert not os.path.lexists(too_long)


async def test_connect_failure_in_socat_words(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody.sock")
    with pytest.raises(OpenError) as caught:
        await unix.connect(address("UNIX-CONNECT", path), OpenContext())
    # socat's own message for this call has no descriptor (xio-unix.c).
    assert caught.value.reason == (
        f'connect(, AF=1 "{path}", {2 + len(path)}): No such file or directory'
    )
    with pytest.raises(OpenError) as caught:
        await unix.connect(address("UNIX-CLIENT", path), OpenContext())
    assert caught.value.reason == f"UNIX-CLIENT: {path}: No such file or directory"


async def test_log_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(NOTICE, logger=LOGGER)
    path = str(tmp_path / "logged.sock")
    async with asyncio.timeout(scaled(5)):
        listener = await unix.listen(address("UNIX-LISTEN", path), OpenContext())
        client, server = await connected_pair(listener, path)
        for item in (client, server, listener):
            await item.aclose()
    assert f'listening on AF=1 "{path}"' in caplog.messages
    assert f'opening connection to AF=1 "{path}"' in caplog.messages
    assert f'accepting connection from AF=1 "<anon>" on AF=1 "{path}"' in caplog.messages
    assert 'successfully connected from local address AF=1 "<anon>"' in caplog.messages


async def test_client_bind_path_is_created_and_removed(tmp_path: Path) -> None:
    path = str(tmp_path / "server.sock")
    mine = str(tmp_path / "client.sock")
    async with asyncio.timeout(scaled(5)):
        listener = await unix.listen(address("UNIX-LISTEN", path), OpenContext())
        try:
            client, server = await connected_pair(listener, path, bind=mine)
            assert server.env["SOCAT_PEERADDR"] == mine
            assert os.path.lexists(mine)
            await client.aclose()
            await server.aclose()
            assert not os.path.lexists(mine)
        finally:
            await listener.aclose()


async def test_unix_client_falls_back_to_datagrams(tmp_path: Path) -> None:
    path = str(tmp_path / "dgram.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        async with asyncio.timeout(scaled(5)):
            stream = await unix.connect(address("UNIX-CLIENT", path), OpenContext())
            try:
                assert stream.datagram
                await stream.write(memoryview(b"one datagram"))
                await stream.write(memoryview(b"two"))
                assert server.recv(100) == b"one datagram"
                assert server.recv(100) == b"two"
            finally:
                await stream.aclose()


async def test_unix_client_prefers_a_stream(tmp_path: Path) -> None:
    path = str(tmp_path / "stream.sock")
    async with asyncio.timeout(scaled(5)):
        listener = await unix.listen(address("UNIX-LISTEN", path), OpenContext())
        try:
            accepting = asyncio.ensure_future(listener.accept())
            client = await unix.connect(address("UNIX-CLIENT", path), OpenContext())
            server = await accepting
            assert not client.datagram
            _, got = await asyncio.gather(send_all(client, b"hello"), read_all(server))
            assert got == b"hello"
            await client.aclose()
            await server.aclose()
        finally:
            await listener.aclose()


async def test_accept_timeout(tmp_path: Path) -> None:
    listener = await unix.listen(
        address("UNIX-LISTEN", str(tmp_path / "t.sock"), accept_timeout=0.1), OpenContext()
    )
    try:
        async with asyncio.timeout(scaled(5)):
            with pytest.raises(tcp.AcceptTimeout):
                await listener.accept()
    finally:
        await listener.aclose()


@requires_socat
async def test_real_socat_peer(tmp_path: Path) -> None:
    assert SOCAT is not None
    path = str(tmp_path / "peer.sock")
    data = os.urandom(80_000)
    async with asyncio.timeout(scaled(10)):
        listener = await unix.listen(address("UNIX-LISTEN", path), OpenContext())
        await socat_echoes_through(listener, SOCAT, f"UNIX-CONNECT:{path}", data)
