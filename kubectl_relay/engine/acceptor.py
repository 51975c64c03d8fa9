"""Accepting the fast path's peers without running out of descriptors (``bridge.py``)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Protocol

from . import sharing
from .descriptors import SOCKET_SESSION, DescriptorBudget
from .log import logger
from .transports.tcp import TcpListener, strerror

#: How long to wait before accepting again after accept() failed.
ACCEPT_RETRY_SECONDS = 0.2


class Slots(Protocol):
    """``max-children``: an ``asyncio.Semaphore``, or ``sharing.SharedSlots`` across workers."""

    async def acquire(self) -> bool: ...

    def release(self) -> None: ...


class Acceptor:
    """Accepting peers: in C by the loop while descriptors abound, one by one near the limit.

    With ``max-children`` every peer is accepted one by one, each once a slot
    is taken (``slots``): socat's parent likewise accepts no more while that
    many children run, and the loop's server would take a whole backlog at
    once. With ``--workers`` the slots are the run's (``sharing``), and a
    worker that has none waits without accepting, leaving peers to the
    others as they free slots.

    The loop's server accepts every pending peer at each wake-up (uvloop:
    libuv accepts until the backlog is empty), and out of descriptors libuv
    accepts and resets them all. So once fewer descriptors are left than a
    full backlog's sessions need, the loop's server is closed and peers are
    accepted one at a time, each only when its descriptors fit: the others
    wait in the listen backlog, as with socat, until sessions end. Far from
    the limit again, the loop's server takes over. It runs on a duplicate
    of the listening socket, so closing it keeps the socket and its backlog.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: TcpListener,
        factory: Callable[[], asyncio.BaseProtocol],
    ) -> None:
        self.loop, self.listener, self.factory = loop, listener, factory
        self.budget = DescriptorBudget(SOCKET_SESSION)
        #: Descriptors a whole backlog of peers takes at once (the loop's batch).
        self.batch = (listener.backlog or 128) * SOCKET_SESSION
        self.server: asyncio.AbstractServer | None = None  # the loop's, while it accepts
        self.task: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()  # a session ended: descriptors came back
        limit = listener.options.integer("max-children")
        local = asyncio.Semaphore(limit) if limit else None
        self.slots: Slots | None = sharing.shared_slots() or local
        self.started = 0  # sessions begun, to know whether an accepted peer became one

    def start(self) -> None:
        """Start accepting (the loop's server, or one by one if already short)."""
        self.task = self.loop.create_task(self._accept())

    def session_started(self) -> None:
        """A peer was accepted: near the limit, hand over to accepting one by one."""
        self.budget.session_started()
        self.started += 1
        if self.server is not None and not self.budget.has_room(self.batch):
            # Not from here (uvloop is inside its accept loop): just after.
            self.loop.call_soon(self._close_server)

    def session_ended(self) -> None:
        """A session gave its descriptors back."""
        self.budget.session_ended()
        if self.server is None:
            # Accepting one by one: the accept waiting for room may go on. (While
            # the loop's server accepts, only its closing wakes the accept task:
            # a wake-up per session cost about 4% of a short connection.)
            self.ended.set()
        if self.slots is not None:
            self.slots.release()

    def _close_server(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            self.ended.set()  # wake the accept task: it accepts one by one now

    async def _accept(self) -> None:
        while True:
            try:
                if self.slots is None and self.budget.has_room(self.batch):
                    await self._serve_in_loop()
                else:
                    await self._accept_one()
            except OSError as exc:  # out of descriptors after all, say: try again soon
                logger.error("accept(%s): %s", self.listener.sock.fileno(), strerror(exc))
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)

    async def _serve_in_loop(self) -> None:
        """Let the loop's server accept until ``session_started`` closes it."""
        sock = socket.socket(fileno=os.dup(self.listener.sock.fileno()))
        try:
            # listen() again on the same socket keeps the listener's backlog.
            self.server = await self.loop.create_server(
                self.factory, sock=sock, backlog=self.listener.backlog
            )
        except BaseException:
            sock.close()
            raise
        while self.server is not None:
            self.ended.clear()
            await self.ended.wait()

    async def _accept_one(self) -> None:
        """Accept one peer once its descriptors fit (and it has a ``max-children`` slot)."""
        while not self.budget.has_room():
            self.ended.clear()
            await self.ended.wait()
        if self.slots is not None:
            await self.slots.acquire()
        started = self.started
        try:
            peer, _ = await self.loop.sock_accept(self.listener.sock)
            try:
                await self.loop.connect_accepted_socket(self.factory, peer)
            except BaseException:
                peer.close()
                raise
        except BaseException:
            if self.slots is not None and self.started == started:
                self.slots.release()  # no session took it (its end gives it back)
            raise

    def close(self) -> None:
        """Stop accepting for good."""
        if self.task is not None:
            self.task.cancel()
        self._close_server()
