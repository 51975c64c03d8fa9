"""The fast path for ``TCP-LISTEN:P,fork TCP:host:port``: sessions on the event loop's transports.

The general path (``session.py`` + ``transfer.py``) runs every session as
tasks: an accept loop, a task per child, a task per direction and a
supervisor. That is what makes every address combination, trace and
conversion work, but for the commonest relay of all, a forking TCP listener
in front of a TCP or UNIX upstream with nothing to convert or trace, most of
its cost per connection is Python bookkeeping. Here the event loop (uvloop,
in C) accepts, reads and writes; Python runs one callback per block and a
handful per connection (the two ends: ``ends.py``). Measured with ``./dev
bench`` on 2 cores (2026-11-24): short connections 2,600 -> 4,700 a second
one at a time and 4,500 -> 11,400 with 50 clients, against the general path;
idle memory 29.5 -> 18.8 KiB per connection, then 3.6 with read buffers lent
per read (``blocks``, 2026-12-06); the same bytes relayed. Small reads left
to the loop's own buffer (2026-12-07, interleaved runs before and after):
CPU per short connection 0.232 -> 0.220 ms, per pinned 1-byte round trip
24.9 -> 22.1 µs.

The semantics are those of ``transfer.py``, kept in the same words:

- half-close: a side's EOF shuts down the write half of the other side once
  its buffered data is written; the session ends when both directions are
  done, or ``-t`` seconds after the first EOF without a transfer (re-armed on
  each transfer, socat's select timeout); ``-T`` ends a session without
  progress (bytes read, or bytes a transport sent); after an EOF a side whose
  write buffer still holds bytes is not idle (``time_to_idle``), nor one
  whose socket has input waiting when the timer runs (uvloop runs due timers
  before it polls: ``input_waiting``); bytes a timer drops are said in an
  ``E`` line and the peers reset;
- a failed read or write logs one ``E`` line and ends only its session,
  once the other side got what was read for it (``_deliver_after_failure``);
- a session that ends while a side's kernel still holds bytes for its peer
  half-closes that side and reads on until the peer took them (``Lingering``);
- backpressure: while one side has a block unwritten, the other is not read,
  so memory stays bounded by one block per direction;
- ``-b`` bounds the reads; small ones are the event loop's (up to 256 KiB),
  a burst's grow in our buffers while they fill them.

``fastpath.eligible`` decides which runs take this path; everything else takes the
general one, unchanged.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .acceptor import Acceptor
from .addresses import AddressSpec
from .driven import Driven
from .ends import End
from .errors import RelayError
from .fastpath import direct_upstream
from .log import INFO, NOTICE, logger, peer_notices, quiet_session
from .metrics import METRICS
from .transfer import (
    LINGER_FIRST_LOOK,
    STOP_POLL_SECONDS,
    Lingering,
    TransferSettings,
    current_limit,
    failure_text,
    input_waiting,
    linger_seconds,
    log_at_eof,
    log_cut,
    log_transfer_start,
    log_undelivered,
    time_to_idle,
)
from .transports.base import Stream
from .transports.sockets import SocketStream, format_sockaddr, unsent_bytes
from .transports.tcp import TcpListener, strerror

#: A direct connect that failed faster than this is tried again through the
#: general opener, which words the error exactly as socat (with the socket's
#: descriptor); a slower failure (a timeout, a slow name server) is reported
#: at once rather than waited for twice.
QUICK_FAILURE_SECONDS = 1.0

#: Opens the second address for a session, given the first's ``SOCAT_*`` variables.
OpenSecond = Callable[[Mapping[str, str]], Awaitable[Stream]]


@dataclass(frozen=True)
class Run:
    """What every session of one run shares."""

    listener: TcpListener
    open_second: OpenSecond
    settings: TransferSettings
    #: The loop can connect by itself (``TCP:host:port`` without options):
    #: host, port and address family for ``create_connection``.
    upstream: tuple[str, int, int] | None
    #: No peer checks, socket options or notices: accepted peers need no look.
    plain_accept: bool
    #: ``--quiet-sessions``: the sessions' own notices are not logged.
    quiet_sessions: bool


@dataclass(frozen=True)
class Stopping:
    """The run's graceful stop: set once it begins, with the grace period then in force."""

    requested: asyncio.Event
    grace_period: Callable[[], float]


async def serve(listener: TcpListener, second: AddressSpec, open_second: OpenSecond,
                settings: TransferSettings, family: int, stopping: Stopping,
                *, quiet_sessions: bool = False) -> None:
    """Accept and relay on ``listener`` until cancelled; then end every session at once.

    Once a graceful stop begins the listener closes (new peers are refused)
    and this returns when the last session has ended; the caller cancels it
    when the grace period runs out, and the sessions still running are cut
    with a log line each.
    """
    loop = asyncio.get_running_loop()
    run = Run(
        listener,
        open_second,
        settings,
        direct_upstream(second, family),
        plain_accept=not listener.checks_peers and not peer_notices(),
        quiet_sessions=quiet_sessions,
    )
    sessions: set[Session] = set()

    def new_session() -> End:
        acceptor.session_started()
        return Session(loop, run, sessions, acceptor).first

    acceptor = Acceptor(loop, listener, new_session)

    logger.log(NOTICE, "listening on %s", listener.label)
    # Errors the loop meets on its own (accept failing with EMFILE, say) are
    # logged and survived by the server: say them as socat-style lines.
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(_log_loop_error)
    acceptor.start()
    try:
        await stopping.requested.wait()  # or until the run is cancelled (a signal)
        # Refuse new peers at once: the acceptor serves a duplicate of the
        # listening socket, so the socket itself is closed too.
        acceptor.close()
        listener.sock.close()
        while sessions:
            await asyncio.sleep(STOP_POLL_SECONDS)
    finally:
        acceptor.close()
        for session in list(sessions):
            if stopping.requested.is_set():
                session.cut(stopping.grace_period())
            else:
                session.abort()
        loop.set_exception_handler(previous_handler)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    reason = strerror(exc) if isinstance(exc, OSError) else exc or ""
    logger.error("%s: %s", context.get("message", "event loop"), reason)


class _ConnectFailed(Exception):
    """The direct connection failed and was reported."""


class Session:
    """One accepted peer and its upstream: connecting, relaying, timing out, closing."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        run: Run,
        registry: set[Session],
        acceptor: Acceptor,
    ) -> None:
        self.loop = loop
        self.run = run
        self.acceptor = acceptor
        self.settings = run.settings
        self.registry = registry
        self.first = End(self, 1)
        self.second: End | None = None
        self.opening: asyncio.Task[None] | Driven[End | None] | None = None
        self.connecting_directly = False  # the loop connects: its notices are ours to say
        self.timer: asyncio.TimerHandle | None = None
        self.linger_timer: asyncio.TimerHandle | None = None
        self.failed = False  # a side failed: what is dropped meanwhile is said so
        self.closing = False  # a direction has ended: -t is in force
        self.written = 0  # bytes the sides' transports had sent at the last look
        self.finished = False
        #: The last transfer, as -t and -T count: kept up to date while ``timer`` runs
        #: (set whenever it is armed), and read only by it.
        self.last_activity = loop.time()
        self.log_blocks = logger.isEnabledFor(INFO)
        #: socat's -d -d notices: looked up once, not in three calls a session.
        self.log_notices = logger.isEnabledFor(NOTICE) and not run.quiet_sessions
        #: The ends look their sockets up as they connect (else on first use, see ``End.fd``).
        self.needs_sockets = self.log_notices or self.log_blocks or not run.plain_accept

    # -- set-up ---------------------------------------------------------------

    def accepted(self, first: End, sock: Any) -> None:
        """The listener handed us a peer: check it as the general path does, then connect."""
        assert first.transport is not None
        first.transport.pause_reading()
        listener = self.run.listener
        if not self.run.plain_accept:
            admitted = sock is not None and listener.admit_peer(sock) is not None
            if peer_notices():
                logger.log(NOTICE, "listening on %s", listener.label)
            if not admitted:
                first.transport.close()  # refused (range, sourceport...): logged by admit_peer
                self.finished = True
                self.acceptor.session_ended()
                return
        METRICS.sessions_total += 1
        METRICS.sessions_active += 1
        self.registry.add(self)
        if self.run.upstream is None:
            self.opening = self.loop.create_task(self._connect())
        else:
            # The commonest case, once per connection: no task (its creation,
            # registration and extra loop iteration) for one awaited connect.
            driven = Driven(self._connect_direct(), self._direct_ended)
            self.opening = driven
            driven.step()

    def _direct_ended(self, outcome: End | BaseException | None) -> None:
        """The direct connect is over: relayed, failed and said, or to be tried the general way."""
        self.opening = None
        if outcome is None:  # failed at once: the general opener words it exactly as socat
            self.opening = self.loop.create_task(self._connect())
            return
        try:
            if isinstance(outcome, End):
                self._close_unlinked(outcome)
            elif not isinstance(outcome, (_ConnectFailed, asyncio.CancelledError)):
                raise outcome  # a defect: the loop's handler says it, as for a task's
        finally:
            self._forget_if_gone()

    async def _connect(self) -> None:
        """Open the upstream the general way (in a task: openers may use timeouts)."""
        if self.run.quiet_sessions:
            quiet_session()  # the opener's notices are this session's
        try:
            second = await self._connect_general()
            if second is not None:
                self._close_unlinked(second)
        finally:
            self.opening = None
            self._forget_if_gone()

    def _close_unlinked(self, second: End) -> None:
        """Close an upstream that ``upstream_made`` did not link: the first side went away."""
        if self.second is None:
            self.second = second
            self._close_sides(abort=True)

    async def _connect_direct(self) -> End | None:
        """Let the loop connect; None if that failed at once (the general opener retries)."""
        assert self.run.upstream is not None
        host, port, family = self.run.upstream
        second = End(self, 2)
        started = self.loop.time()
        self.connecting_directly = True
        try:
            await self.loop.create_connection(lambda: second, host, port, family=family)
        except OSError as exc:
            if second.transport is not None:  # pragma: no cover - uvloop raises before connecting
                raise
            if self.loop.time() - started < QUICK_FAILURE_SECONDS:
                # Connect again the general way: it words the error exactly as socat.
                return None
            # A timeout would cost as long again: report it now.
            logger.error("connect(%s:%s): %s", host, port, exc.strerror or exc)
            self._fail()
            raise _ConnectFailed from None
        finally:
            self.connecting_directly = False
        return second

    async def _connect_general(self) -> End | None:
        """Open the second address with its opener and hand its socket to the loop."""
        try:
            stream = await self.run.open_second({})
        except RelayError as exc:
            logger.error("%s", exc)
            self._fail()
            return None
        if not isinstance(stream, SocketStream):  # pragma: no cover - CONNECTORS open sockets
            await stream.aclose()
            raise TypeError(f"fast path needs a socket upstream, got {stream!r}")
        second = End(self, 2)
        await self.loop.create_connection(lambda: second, sock=stream.detach())
        return second

    def upstream_made(self, second: End) -> None:
        """The upstream is connected: relay from here, in the loop iteration that connected it.

        The opener's task would resume one iteration later: the first bytes
        would wait for it (a poll of the loop) on every connection.
        """
        if self.connecting_directly and self.log_notices:
            # The loop connected by itself: say it as the general opener would.
            assert second.transport is not None
            transport = second.transport
            family = transport.get_extra_info("socket").family
            peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
            logger.log(NOTICE, "opening connection to %s", format_sockaddr(family, peer))
            logger.log(NOTICE, "successfully connected from local address %s",
                       format_sockaddr(family, local))
        if not self.finished:  # else the opener closes it (``_connect``)
            self._link(second)

    def _link(self, second: End) -> None:
        first = self.first
        assert first.transport is not None and second.transport is not None
        self.second = second
        first.peer, second.peer = second, first
        if self.log_notices:
            log_transfer_start(first.fd_label, second.fd_label)
        self.last_activity = self.loop.time()
        self._arm_timer()
        for side in (first, second):
            assert side.peer is not None and side.peer.transport is not None
            for data in side.early:
                side.peer.transport.write(data)
                side.peer.queued += len(data)
                side.transferred(len(data), side.peer)
            side.early.clear()
        for side in (first, second):
            if side.at_eof:
                self.direction_done(side)
            elif side.transport is not None and not self.finished:
                side.transport.resume_reading()

    # -- transfer -------------------------------------------------------------

    def direction_done(self, source: End) -> None:
        """``source`` reached EOF: half-close its peer, and end the session if both are done."""
        if self.log_notices:
            log_at_eof(source.number, source.fd_label)
        sink = source.peer
        if sink is None or self.finished:
            return
        assert sink.transport is not None
        if not sink.lost and sink.transport.can_write_eof():
            sink.transport.write_eof()  # once its buffered data is written
        if sink.at_eof:
            self.finish()
            return
        # socat's -t counts from the EOF, then from each later transfer.
        self.closing = True
        self.last_activity = self.loop.time()
        self._arm_timer()

    def _arm_timer(self, wait: float | None = None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if wait is None:
            limit = current_limit(self.settings, self.closing)
            wait = None if limit is None else self.last_activity + limit - self.loop.time()
        if wait is not None and not self.finished:
            self.timer = self.loop.call_later(max(0.0, wait), self._check_idle)

    def _open_sides(self) -> list[tuple[End, asyncio.Transport]]:
        """The sides still connected, with their transports."""
        return [
            (side, side.transport)
            for side in (self.first, self.second)
            if side is not None and side.transport is not None and not side.lost
        ]

    def _holding(self) -> bool:
        """Whether a side still has bytes to write (its reader is slower than its writer)."""
        return any(transport.get_write_buffer_size() > 0 for _, transport in self._open_sides())

    def _wrote_since_last_look(self) -> bool:
        """Whether a side's transport sent bytes since the last look: progress, as a read is."""
        written = sum(
            side.queued - transport.get_write_buffer_size()
            for side, transport in self._open_sides()
        )
        progressed = written != self.written
        self.written = written
        return progressed

    def _check_idle(self) -> None:
        self.timer = None
        if self.finished:
            return
        if self._wrote_since_last_look():
            # Bytes went out: -t and -T count from now (from when we saw it,
            # never earlier, so no session is cut early).
            self.last_activity = self.loop.time()
        holding = self._holding()
        idle_for = self.loop.time() - self.last_activity
        left = time_to_idle(self.settings, self.closing, idle_for, holding)
        if left is None:
            return
        if left > 0:
            period = current_limit(self.settings, self.closing) or left
            # Data waits to be written: look at its progress a few times a period.
            self._arm_timer(min(left, period / 4) if holding else left)
            return
        if input_waiting(side.unread_fd() for side in (self.first, self.second) if side):
            # It came in time and the loop ran this timer before reading it
            # (uvloop runs due timers before polling): a transfer, as socat's
            # select() would report it, not an idle session.
            self.last_activity = self.loop.time()
            self._arm_timer()
            return
        if not self.closing:
            logger.log(NOTICE, "inactivity timeout triggered")
        limit = current_limit(self.settings, self.closing)
        sides = [side for side, _ in self._open_sides()]
        self.finish(abort=self._drop_held(f"nothing written for {limit:g}s", sides))

    def _drop_held(self, why: str, reset: list[End]) -> bool:
        """Say what each open side still holds and will not deliver; reset ``reset`` if so."""
        dropped = False
        for side, transport in self._open_sides():
            if held := transport.get_write_buffer_size():
                log_undelivered(held, side.number, side.fd_label, why)
                dropped = True
        if dropped:
            for side in reset:
                side.reset_on_close()
        return dropped

    # -- ending ---------------------------------------------------------------

    def finish(self, *, abort: bool = False) -> None:
        """End the session: close both sides once what they hold is written, or now if ``abort``."""
        if self.finished:
            if abort:  # sides still lingering are reset now
                for side in (self.first, self.second):
                    if side is not None and side.lingering is not None:
                        side.lingering = None
                        self._close_side(side, abort=True)
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for side in (self.first, self.second):
            if side is not None:
                self._say_discarded(side)
        # Once linked, the opener only has to return: cancelling it then
        # would close the upstream under what it still has to write.
        if (
            self.opening is not None
            and self.second is None
            and self.opening is not asyncio.current_task()
        ):
            self.opening.cancel()
        self._close_sides(abort=abort)
        self._forget_if_gone()

    def abort(self) -> None:
        """End at once (the relay is exiting, or a side failed): drop whatever is buffered."""
        self.finish(abort=True)

    def cut(self, grace_period: float) -> None:
        """End at the end of a graceful stop: say what is dropped, and reset both peers."""
        sides = [side for side in (self.first, self.second) if side is not None]
        # The reset below discards the kernels' send queues too (a lingering side's included).
        held = sum(len(data) for side in sides for data in side.early) + sum(
            self._queued(side) for side in sides
        )
        if self.finished and not held:
            self.abort()  # ended by itself, only closing
            return
        for side in sides:  # the peers see the cut as one: a reset, not a FIN
            side.reset_on_close()
        transport = self.first.transport
        sock = self.first.live_socket()
        peer = None if transport is None else transport.get_extra_info("peername")
        label = "?" if sock is None else format_sockaddr(sock.family, peer)
        log_cut(label, grace_period, held)
        self.abort()

    def _close_sides(self, *, abort: bool) -> None:
        for side in (self.first, self.second):
            if side is not None and not (abort or side.at_eof):
                self._start_lingering(side)
            if side is not None and side.lingering is None:
                self._close_side(side, abort=abort)
        if any(side is not None and side.lingering is not None
               for side in (self.first, self.second)):
            self.linger_timer = self.loop.call_later(LINGER_FIRST_LOOK, self._look_lingering)

    def _close_side(self, side: End, *, abort: bool) -> None:
        if side.transport is not None and not side.lost:
            if abort:
                side.transport.abort()
            else:
                side.transport.close()

    def _queued(self, side: End) -> int:
        """What ``side`` still has to send: its transport's buffer and its kernel's queue."""
        if side.transport is None or side.lost:
            return 0
        sock = side.live_socket()
        kernel = 0 if sock is None else unsent_bytes(sock)
        return side.transport.get_write_buffer_size() + kernel

    def _start_lingering(self, side: End) -> None:
        """Keep ``side`` open while its peer has bytes of ours to take (``transfer.Lingering``)."""
        transport = side.transport
        if transport is None or side.lost or not (queued := self._queued(side)):
            return  # the common case: nothing to wait for
        side.lingering = Lingering(queued, linger_seconds(self.settings), self.loop.time())
        if transport.can_write_eof():
            transport.write_eof()  # once its buffered data is written
        transport.resume_reading()

    def _look_lingering(self) -> None:
        self.linger_timer = None
        now, wait = self.loop.time(), None
        for side in (self.first, self.second):
            if side is None or side.lingering is None:
                continue
            if (after := side.lingering.look(self._queued(side), now)) is None:
                self.end_lingering(side)
            else:
                wait = after if wait is None else min(wait, after)
        if wait is not None:
            self.linger_timer = self.loop.call_later(wait, self._look_lingering)

    def end_lingering(self, side: End) -> None:
        """``side``'s peer took everything, sent its EOF, or the bound ran out: close it."""
        lingering, side.lingering = side.lingering, None
        if lingering is None:
            return
        if lingering.expired:  # a reset, not a FIN that looks like the whole reply
            lingering.log_expired(side.number, side.fd_label)
            side.reset_on_close()
        self._say_discarded(side)
        self._close_side(side, abort=lingering.expired)

    def _say_discarded(self, side: End) -> None:
        """Say what ``side`` read and dropped since last said, for the peer that never gets it."""
        if side.discarded and side.peer is not None:
            why = "the transfer failed" if self.failed else "the session had ended"
            log_undelivered(side.discarded, side.peer.number, side.peer.fd_label, why)
            side.discarded = 0

    def _fail(self) -> None:
        METRICS.session_errors_total += 1
        self.abort()

    def side_lost(self, side: End, exc: Exception | None) -> None:
        if exc is not None and not self.finished:
            self.failed = True
            logger.error("%s", _transfer_error(side, exc))
            METRICS.session_errors_total += 1
            self._deliver_after_failure(side)
        elif not self.finished:
            # Closed under us without an error: end the other side too.
            self.finish()
        self._forget_if_gone()

    def _deliver_after_failure(self, failed: End) -> None:
        """One side failed: the other still gets what was read for it, then the session ends.

        What the failed side's transport still held is lost with it (said,
        when the transport still knows how much). The other side writes what
        it holds and half-closes, under the same timers as after an EOF; what
        it sends meanwhile is read and dropped (and said at the end). If its
        peer takes nothing for those timers, the rest is said in an ``E``
        line and the peer reset (``_check_idle``).
        """
        if failed.transport is not None and (held := failed.transport.get_write_buffer_size()):
            log_undelivered(held, failed.number, failed.fd_label, "the transfer failed")
        failed.at_eof = True  # the other side's EOF ends the session
        other = failed.peer
        if other is None or other.transport is None or other.lost:
            self.abort()
            return
        if other.at_eof or not other.transport.get_write_buffer_size():
            self.finish()
            return
        other.transport.write_eof()  # once its buffered data is written
        other.transport.resume_reading()  # the failed side no longer resumes it
        self.closing = True
        self.last_activity = self.loop.time()
        self._arm_timer()

    def _forget_if_gone(self) -> None:
        """Count the session as ended once no side is open and nothing is connecting."""
        if self not in self.registry or self.opening is not None:
            return
        # No all() over a generator here: one that stops early is closed by
        # throwing GeneratorExit into it, a cost on every session.
        first, second = self.first, self.second
        if (first.lost or first.transport is None) and (
            second is None or second.lost or second.transport is None
        ):
            self.registry.discard(self)
            METRICS.sessions_active -= 1
            self.acceptor.session_ended()
            if not self.registry:  # the load is over: its buffers go back to the system
                self.first.pool.settle()


def _transfer_error(side: End, exc: Exception) -> str:
    """A failed read or write as the general path words it: ``read(5, 8192): ...``."""
    call = "write" if isinstance(exc, OSError) and exc.errno == errno.EPIPE else "read"
    return failure_text(call, side.fd_label, side.size, exc)
