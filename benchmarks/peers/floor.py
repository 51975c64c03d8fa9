"""Python's floor for forwarding TCP: relays that do nothing but pass bytes and EOFs on.

``python -m benchmarks.peers.floor uvloop|epoll TCP-LISTEN:PORT[,...] TCP:HOST:PORT``
forwards like ``relay TCP-LISTEN:PORT,fork TCP:HOST:PORT`` with none of the
engine's work: no options, timers, logs, metrics or failure reports. Each
EOF is passed on as a half-close, and a connection's two sockets close once
both directions have ended or either fails.

- ``uvloop``: on uvloop's transports, as the engine's fast path runs.
- ``epoll``: a bare ``select.epoll`` loop with the plain socket calls (about
  20 system calls per short connection against 30 on uvloop).

Beside the engine in ``connrate`` and ``latency`` (candidates ``floor-uvloop``
and ``floor-epoll``), they show which part of a gap to HAProxy or nginx is
the engine's own work and which part any Python relay on this machine has.
"""

from __future__ import annotations

import asyncio
import errno
import select
import signal
import socket
import sys
from typing import cast

import uvloop

from .common import listen

#: What one read of the epoll relay takes at most. ``recv(n)`` allocates n
#: bytes each call: at uvloop's 256 KiB, glibc's allocator gave memory back
#: to the system on every read, and a pinned round trip took 76 µs against 44.
READ_SIZE = 64 * 1024
BACKLOG = 512  # the engine's default
USAGE = "usage: python -m benchmarks.peers.floor uvloop|epoll TCP-LISTEN:PORT[,...] TCP:HOST:PORT"


def parse(argv: list[str]) -> tuple[str, int, tuple[str, int]]:
    """Mode, listening port and upstream from the harness's socat-style command line."""
    if len(argv) != 3 or argv[0] not in ("uvloop", "epoll"):
        raise SystemExit(USAGE)
    listen, connect = argv[1], argv[2]
    if not listen.startswith("TCP-LISTEN:") or not connect.startswith("TCP:"):
        raise SystemExit(USAGE)
    port = int(listen.split(":", 1)[1].split(",", 1)[0])
    host, upstream = connect.split(":", 1)[1].rsplit(":", 1)
    return argv[0], port, (host, int(upstream))


def listening_socket(port: int) -> socket.socket:
    sock = listen(BACKLOG, port)
    sock.setblocking(False)
    return sock


# -- on uvloop's transports -----------------------------------------------------


class Side(asyncio.Protocol):
    """One socket of a connection; bytes read before the other is connected wait in ``early``."""

    def __init__(self) -> None:
        self.peer: Side | None = None
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.at_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def link(self, peer: Side) -> None:
        """Both are connected: pass on what either read meanwhile, and any EOF."""
        self.peer, peer.peer = peer, self
        for source, sink in ((self, peer), (peer, self)):
            assert sink.transport is not None
            for data in source.early:
                sink.transport.write(data)
            source.early.clear()
        for side in (self, peer):
            if side.at_eof:
                side.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
        else:
            assert self.peer.transport is not None
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.at_eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write_eof()
            if peer.at_eof:
                peer.transport.close()
                assert self.transport is not None
                self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve_uvloop(port: int, upstream: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()

    async def connect(first: Side) -> None:
        second = Side()
        try:
            await loop.create_connection(lambda: second, *upstream)
        except OSError:
            assert first.transport is not None
            first.transport.close()
            return
        first.link(second)

    connecting: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    def accepted() -> Side:
        first = Side()
        task = loop.create_task(connect(first))
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return first

    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await loop.create_server(accepted, sock=listening_socket(port), backlog=BACKLOG)
    async with server:
        await stop


# -- on a bare epoll loop -------------------------------------------------------


class Socket:
    """One socket of a connection in the epoll loop."""

    __slots__ = ("at_eof", "connecting", "fd", "peer", "sock", "unsent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer: Socket | None = None
        self.at_eof = False
        self.connecting = False
        self.unsent = b""  # what the peer's socket could not take: we are not read meanwhile


def serve_epoll(port: int, upstream: tuple[str, int]) -> None:
    listener = listening_socket(port)
    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN)
    sockets: dict[int, Socket] = {}
    running = True

    def stop(signum: int, frame: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)

    def close(side: Socket) -> None:
        for one in (side, side.peer):
            if one is not None and sockets.pop(one.fd, None) is not None:
                one.sock.close()  # closing takes it out of the epoll set

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first, second = Socket(client), Socket(server)
            first.peer, second.peer = second, first
            second.connecting = True
            sockets[first.fd], sockets[second.fd] = first, second
            if server.connect_ex(upstream) not in (0, errno.EINPROGRESS):
                close(first)
                continue
            epoll.register(second.fd, select.EPOLLOUT)

    def connected(side: Socket) -> None:
        if side.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            close(side)
            return
        side.connecting = False
        epoll.modify(side.fd, select.EPOLLIN)
        assert side.peer is not None
        epoll.register(side.peer.fd, select.EPOLLIN)

    def send(side: Socket, data: bytes) -> None:
        """Send ``data`` to ``side``; what it cannot take waits, and its peer is not read."""
        try:
            sent = side.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            close(side)
            return
        if sent < len(data):
            side.unsent = data[sent:]
            epoll.modify(side.fd, select.EPOLLOUT)
            assert side.peer is not None
            if not side.peer.at_eof:
                epoll.modify(side.peer.fd, 0)

    def writable(side: Socket) -> None:
        data, side.unsent = side.unsent, b""
        epoll.modify(side.fd, 0 if side.at_eof else select.EPOLLIN)
        assert side.peer is not None
        if not side.peer.at_eof:
            epoll.modify(side.peer.fd, select.EPOLLIN)
        send(side, data)
        if not side.unsent and side.peer.at_eof:
            end(side.peer)

    def end(side: Socket) -> None:
        """``side`` reached EOF: half-close its peer once its bytes are out."""
        peer = side.peer
        assert peer is not None
        if peer.unsent:
            return  # ``writable`` comes back here
        try:
            peer.sock.shutdown(socket.SHUT_WR)
        except OSError:
            close(side)
            return
        if peer.at_eof:
            close(side)

    def readable(side: Socket) -> None:
        assert side.peer is not None
        if side.at_eof:  # an event after the EOF: an error or a reset
            close(side)
            return
        if side.peer.unsent:  # a hang-up while we wait for the peer: read later
            return
        try:
            data = side.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            close(side)
            return
        if data:
            send(side.peer, data)
            return
        side.at_eof = True
        epoll.modify(side.fd, select.EPOLLOUT if side.unsent else 0)
        end(side)

    while running:
        try:
            events = epoll.poll(1.0)
        except InterruptedError:
            continue
        for fd, mask in events:
            if fd == listener.fileno():
                accept()
                continue
            side = sockets.get(fd)
            if side is None:  # closed earlier in this batch
                continue
            if side.connecting:
                connected(side)
            elif side.unsent and mask & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                writable(side)
            elif mask & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                readable(side)


def main(argv: list[str]) -> int:
    if argv[-1] == "-V":
        python = sys.version.split()[0]
        print(f"benchmarks.peers.floor (Python {python}, uvloop {uvloop.__version__})")
        return 0
    mode, port, upstream = parse(argv[1:])
    if mode == "uvloop":
        uvloop.run(serve_uvloop(port, upstream))
    else:
        serve_epoll(port, upstream)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
