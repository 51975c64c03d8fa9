"""Accepting the fast path's peers without running out of descriptors (``bridge.py``)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Protocol

from . import sharing
from .descriptors import SOCKET_SESSION, DescriptorBudget
from .driven import Driven
from .log import logger
from .transports.tcp import TcpListener, strerror

#: How long to wait before accepting again after accept() failed.
ACCEPT_RETRY_SECONDS = 0.2


class Slots(Protocol):
    """``max-children``: an ``asyncio.Semaphore``, or ``sharing.SharedSlots`` across workers."""

    async def acquire(self) -> bool: ...

    def release(self) -> None: ...


class CountedSlots:
    """``max-children`` in one process: free slots counted, taken without waiting."""

    #: Nothing to watch: a slot comes back only when one of our sessions ends.
    wake_fd = None

    def __init__(self, limit: int) -> None:
        self.free = limit

    def take(self) -> bool:
        """Take a slot if one is free."""
        if self.free:
            self.free -= 1
            return True
        return False

    def release(self) -> None:
        """Give a slot back (a session ended, or an accept found no peer)."""
        self.free += 1


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

    One by one is one callback per wake-up of the listening socket
    (``_accept_ready``): it accepts while peers wait, slots are free and
    descriptors fit, and hands each peer to the loop without a task. (A task
    that awaited each accept and then each transport cost 146 to 171 µs of
    CPU per short connection with 50 clients; this, 84 to 90; the loop's
    server, 101 to 116.)
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
        self.ended = asyncio.Event()  # the loop's server was closed: accept one by one
        limit = listener.options.integer("max-children")
        self.slots: CountedSlots | sharing.SharedSlots | None = sharing.shared_slots() or (
            CountedSlots(limit) if limit else None
        )
        self.started = 0  # sessions begun, to know whether an accepted peer became one
        #: Accepting one by one: resolved when the loop's server may take over again.
        self.far_from_limit: asyncio.Future[None] | None = None
        self.watching = False  # the listening socket's reader is ours
        self.waiting_for_slot = False  # another worker's slot would wake us (``wake_fd``)
        self.retry: asyncio.TimerHandle | None = None  # after accept() failed
        self.closed = False

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
        """A session gave its descriptors (and its slot) back: accept again if we stopped."""
        self.budget.session_ended()
        if self.slots is not None:
            self.slots.release()
        far = self.far_from_limit
        if far is None:
            return  # the loop's server accepts (a wake-up per session cost 4% of one)
        if self.slots is None and self.budget.has_room(self.batch):
            if not far.done():
                far.set_result(None)
        else:
            self._watch()

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
                    await self._accept_one_by_one()
            except OSError as exc:  # out of descriptors after all, say: try again soon
                self._log_failure(exc)
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

    async def _accept_one_by_one(self) -> None:
        """Accept on the listening socket's wake-ups until far from the limit again."""
        self.far_from_limit = self.loop.create_future()
        self._watch()
        try:
            await self.far_from_limit
        finally:
            self.far_from_limit = None
            self._stop_watching()

    def _watch(self) -> None:
        """Be woken when a peer waits (unless already, or stopped)."""
        if not (self.watching or self.closed or self.retry is not None):
            self.loop.add_reader(self.listener.sock.fileno(), self._accept_ready)
            self.watching = True

    def _unwatch(self) -> None:
        if self.watching:
            self.loop.remove_reader(self.listener.sock.fileno())
            self.watching = False

    def _stop_watching(self) -> None:
        """Neither the listening socket, nor the slots, nor a retry wakes us any more."""
        self._unwatch()
        if self.waiting_for_slot:
            assert self.slots is not None and self.slots.wake_fd is not None
            self.loop.remove_reader(self.slots.wake_fd)
            self.waiting_for_slot = False
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None

    def _accept_ready(self) -> None:
        """Peers may wait: accept each that has room, until none waits or room runs out."""
        slots = self.slots
        while True:
            if not self.budget.has_room():
                self._unwatch()  # a session's end watches again
                return
            if slots is not None and not slots.take():
                self._unwatch()  # our sessions' ends watch again, other workers' wake us
                if slots.wake_fd is not None and not self.waiting_for_slot:
                    self.loop.add_reader(slots.wake_fd, self._slot_freed)
                    self.waiting_for_slot = True
                return
            try:
                peer, _ = self.listener.sock.accept()
            except BlockingIOError:  # none left (or another worker took it)
                if slots is not None:
                    slots.release()
                return
            except OSError as exc:  # out of descriptors after all, say: try again soon
                if slots is not None:
                    slots.release()
                self._log_failure(exc)
                self._unwatch()
                self.retry = self.loop.call_later(ACCEPT_RETRY_SECONDS, self._retry)
                return
            self._hand_over(peer)

    def _slot_freed(self) -> None:
        """A slot is free (another worker's session ended): look for peers again."""
        assert self.slots is not None and self.slots.wake_fd is not None
        self.loop.remove_reader(self.slots.wake_fd)
        self.waiting_for_slot = False
        self._watch()

    def _retry(self) -> None:
        self.retry = None
        self._watch()

    def _hand_over(self, peer: socket.socket) -> None:
        """Make ``peer`` the loop's transport (its protocol, a session, from ``factory``).

        Non-blocking from there on: both loops set that themselves (libuv's
        ``uv_tcp_open``, asyncio's transport), so it costs no call here.
        """
        started = self.started

        def ended(outcome: object) -> None:
            if not isinstance(outcome, BaseException):
                return
            peer.close()
            if self.slots is not None and self.started == started:
                self.slots.release()  # no session took it (its end gives it back)
            if isinstance(outcome, OSError):
                self._log_failure(outcome)
            elif not isinstance(outcome, asyncio.CancelledError):  # the loop is closing
                raise outcome  # a defect: the loop's handler says it

        Driven(self.loop.connect_accepted_socket(self.factory, peer), ended).step()

    def _log_failure(self, exc: OSError) -> None:
        logger.error("accept(%s): %s", self.listener.sock.fileno(), strerror(exc))

    def close(self) -> None:
        """Stop accepting for good (at once: the listening socket may be closed next)."""
        self.closed = True
        self._stop_watching()
        if self.task is not None:
            self.task.cancel()
        self._close_server()
