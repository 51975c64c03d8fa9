"""``frame=len16``: the codec as a table, the stream wrapper in memory, and real relays."""

from __future__ import annotations

import socket
import time

import pytest

from kubectl_relay.engine import framing
from kubectl_relay.engine.addresses import parse_address
from kubectl_relay.engine.errors import OptionError
from kubectl_relay.engine.framing import END_FRAME, FrameDecoder, FramedStream, encode
from kubectl_relay.engine.transports.base import Stream
from tests.conftest import scaled
from tests.support import ThreadedServer, free_port, recv_all, relay_listening, run_relay, udp_echo

# -- the codec -----------------------------------------------------------------------------------

ENCODED = [
    (b"a", b"\x00\x01a"),
    (b"hello", b"\x00\x05hello"),
    (b"", b""),
    (b"x" * 0xFFFF, b"\xff\xff" + b"x" * 0xFFFF),
    (b"x" * 0x10000, b"\xff\xff" + b"x" * 0xFFFF + b"\x00\x01x"),
]


@pytest.mark.parametrize(("data", "wire"), ENCODED)
def test_encode(data: bytes, wire: bytes) -> None:
    assert encode(data) == wire


DECODED = [
    # (chunks fed, frames after each chunk)
    ([b"\x00\x03abc"], [[b"abc"]]),
    ([b"\x00", b"\x03a", b"bc"], [[], [], [b"abc"]]),
    ([b"\x00\x01a\x00\x01b"], [[b"a", b"b"]]),
    ([b"\x00\x01a\x00\x00"], [[b"a", b""]]),
    ([b"\x00\x02ab\x00"], [[b"ab"]]),
]


@pytest.mark.parametrize(("chunks", "expected"), DECODED)
def test_decoder(chunks: list[bytes], expected: list[list[bytes]]) -> None:
    decoder = FrameDecoder()
    assert [decoder.feed(chunk) for chunk in chunks] == expected


def test_decoder_reports_an_unfinished_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x05ab")
    assert decoder.pending
    decoder.feed(b"cde")
    assert not decoder.pending


def test_apply_wraps_only_framed_addresses() -> None:
    inner = MemoryStream(b"")
    assert framing.apply(inner, parse_address("TCP-LISTEN:1")) is inner
    assert isinstance(framing.apply(inner, parse_address("TCP-LISTEN:1,frame=len16")), FramedStream)


# -- the stream wrapper ---------------------------------------------------------------------------


class MemoryStream(Stream):
    """A stream reading from fixed bytes in small pieces and recording what is written."""

    def __init__(self, incoming: bytes, piece: int = 3) -> None:
        self.incoming = incoming
        self.piece = piece
        self.written = bytearray()
        self.closed = False

    async def read_into(self, buffer: memoryview) -> int:
        size = min(self.piece, len(buffer), len(self.incoming))
        buffer[:size] = self.incoming[:size]
        self.incoming = self.incoming[size:]
        return size

    async def write(self, data: memoryview) -> None:
        self.written += data

    async def aclose(self) -> None:
        self.closed = True


async def read_all(stream: Stream, size: int = 1024) -> list[bytes]:
    reads = []
    buffer = memoryview(bytearray(size))
    while count := await stream.read_into(buffer):
        reads.append(bytes(buffer[:count]))
    return reads


async def test_one_read_is_one_frame() -> None:
    stream = FramedStream(
        MemoryStream(encode(b"first") + encode(b"2nd") + END_FRAME + encode(b"x"))
    )
    # The end frame ends the stream: what follows it is never delivered.
    assert await read_all(stream) == [b"first", b"2nd"]
    assert await stream.read_into(memoryview(bytearray(8))) == 0


async def test_a_frame_longer_than_the_buffer_is_truncated() -> None:
    stream = FramedStream(MemoryStream(encode(b"0123456789") + encode(b"ab")))
    assert await read_all(stream, size=4) == [b"0123", b"ab"]


async def test_the_connection_ending_inside_a_frame_is_eof() -> None:
    stream = FramedStream(MemoryStream(b"\x00\x09abc"))
    assert await read_all(stream) == []


async def test_writes_are_frames_and_shutdown_is_the_end_frame() -> None:
    inner = MemoryStream(b"")
    stream = FramedStream(inner)
    await stream.write(memoryview(b"abc"))
    await stream.write(memoryview(b""))
    await stream.shutdown_write()
    assert bytes(inner.written) == b"\x00\x03abc\x00\x00"
    assert stream.datagram
    await stream.aclose()
    assert inner.closed


# -- real relays -------------------------------------------------------------------------------


def read_frames(conn: socket.socket, until_end: bool = True) -> list[bytes]:
    """Frames from ``conn`` until the end frame (or until the connection ends)."""
    decoder = FrameDecoder()
    frames: list[bytes] = []
    while chunk := conn.recv(65536):
        frames.extend(decoder.feed(chunk))
        if until_end and b"" in frames:
            return frames[: frames.index(b"")]
    return frames


def test_udp_datagrams_keep_their_boundaries_through_a_framed_tcp_connection() -> None:
    with ThreadedServer(udp_echo, kind=socket.SOCK_DGRAM) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},frame=len16", f"UDP:127.0.0.1:{server.port},shut-none"]
        with (
            relay_listening(args, listen),
            socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn,
        ):
            replies: list[bytes] = []
            decoder = FrameDecoder()
            for datagram in (b"one", b"two", b"x" * 1000):
                conn.sendall(encode(datagram))
                while len(replies) < 3 and not any(r == datagram for r in replies):
                    replies.extend(decoder.feed(conn.recv(65536)))
            conn.sendall(END_FRAME)
    assert replies == [b"one", b"two", b"x" * 1000]


def test_half_close_crosses_a_framed_connection_both_ways() -> None:
    def reply_after_eof(conn: socket.socket) -> None:
        request = recv_all(conn)
        time.sleep(0.2)
        conn.sendall(b"got:" + request)
        conn.shutdown(socket.SHUT_WR)

    with ThreadedServer(reply_after_eof) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork,frame=len16", f"TCP:127.0.0.1:{server.port}"]
        with (
            relay_listening(args, listen),
            socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn,
        ):
            conn.sendall(encode(b"ping") + encode(b"-pong") + END_FRAME)
            reply = b"".join(read_frames(conn))
    assert reply == b"got:ping-pong"


def test_an_unknown_format_is_refused_before_listening() -> None:
    listen = free_port()
    result = run_relay([f"TCP-LISTEN:{listen},frame=len8", "PIPE"])
    assert result.returncode == 1
    assert result.stderr.decode().endswith(
        'E option "frame": unknown value "len8", accepted: len16\n'
    )


def test_unknown_frame_format_is_refused_when_parsing() -> None:
    with pytest.raises(OptionError) as caught:
        parse_address("TCP:127.0.0.1:80,frame=len32")
    assert str(caught.value) == 'option "frame": unknown value "len32", accepted: len16'
