"""Running a relay: open address 1, then address 2, and transfer; with ``fork``, once per peer.

socat's man page on the order: "socat ... opens the first address and, when
successful, the second address". With ``fork`` on a listening first address,
"after establishing a connection, handles its channel in a child process and
keeps the parent process attempting to produce more connections". Here every
child is a task in the listener's task group instead of a process: a session
that fails is logged and ends alone, the listener and the other sessions go
on. ``max-children`` "limits the number of concurrent child processes": the
listener stops accepting while that many sessions run.

``retry``/``interval``/``forever`` apply to opening an address (connect or
bind): "Number of retries before the connection or listen attempt is
aborted", "Time between consecutive attempts", "Performs an unlimited
number of retry attempts". The interval defaults to 1 second: socat's
xioopen.c sets ``intervall.tv_sec = 1`` for every address.

A graceful stop (``Relay.stop``, on SIGTERM) closes the listener at once, so
that new peers are refused, and gives running sessions the grace period to
end by themselves; what still runs then is cut, each with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from . import bridge, fastpath, framing
from .acceptor import Slots
from .addresses import Address, AddressSpec, DualAddress
from .descriptors import ANY_SESSION, DescriptorBudget
from .errors import AcceptTimeout, OpenError, RelayError, first_open_error
from .log import NOTICE, SESSION_ID, logger, quiet_session, shut_up
from .metrics import METRICS, serve_metrics
from .sharing import shared_slots
from .trace import TraceOutput, TraceSettings
from .transfer import (
    STOP_POLL_SECONDS,
    InFlight,
    LineTerminator,
    Side,
    TransferSettings,
    log_cut,
    transfer,
)
from .transports import ANSWERING, LISTENERS, OPENERS, preload, process
from .transports.base import Direction, Listener, OpenContext, Stream
from .transports.tcp import TcpListener

T = TypeVar("T")

#: Set to ``0`` to run every session on the general path (for comparisons, or
#: to rule the fast path out when chasing a problem).
FAST_PATH_VARIABLE = "RELAY_FAST_PATH"

#: accept() errors that pass once sessions end (no descriptor, no buffer, no
#: memory): a forking listener logs them and tries again after this long.
TRANSIENT_ACCEPT_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_SECONDS = 0.2

#: A relay difference from socat: with ``UDP-LISTEN,fork`` and no ``-T``,
#: socat keeps every sender's child (and its buffers) for ever, so anyone who
#: can send from many source ports exhausts the host. Sessions of senders
#: silent this long end (conntrack forgets an unanswered UDP flow after 30 s).
DEFAULT_UDP_FORK_IDLE_TIMEOUT = 60.0

#: Listeners that make one session per datagram sender.
UDP_LISTENERS = frozenset({"UDP-LISTEN", "UDP4-LISTEN", "UDP6-LISTEN"})

#: socat's default ``interval`` (xioopen.c: ``intervall.tv_sec = 1``).
DEFAULT_RETRY_INTERVAL = 1.0


@dataclass(frozen=True)
class RunSettings:
    """Everything the global options decide for a run."""

    transfer: TransferSettings = field(default_factory=TransferSettings)
    trace: TraceSettings = field(default_factory=TraceSettings)
    family: int = 0  # socket.AF_UNSPEC, or AF_INET/AF_INET6 for -4/-6
    metrics_address: tuple[str, int] | None = None  # --metrics (a relay extension)
    #: The idle timeout of ``UDP-LISTEN,fork`` sessions when ``-T`` is not
    #: given; ``None`` keeps socat's behaviour (``-T 0`` asks for that).
    udp_fork_idle_timeout: float | None = None
    #: ``--quiet-sessions`` (a relay extension): sessions log no notices.
    quiet_sessions: bool = False


class DualStream(Stream):
    """``A!!B``: reads come from one stream, writes go to another."""

    def __init__(self, reader: Stream, writer: Stream) -> None:
        self.reader = reader
        self.writer = writer
        self.label = f"{reader.label}!!{writer.label}"
        self.env = reader.env
        self.readable = reader.readable
        self.writable = writer.writable

    async def read_into(self, buffer: memoryview) -> int:
        return await self.reader.read_into(buffer)

    async def write(self, data: memoryview) -> None:
        await self.writer.write(data)

    async def shutdown_write(self) -> None:
        await self.writer.shutdown_write()

    def reset(self) -> None:
        self.reader.reset()
        self.writer.reset()

    async def aclose(self) -> None:
        try:
            await self.reader.aclose()
        finally:
            await self.writer.aclose()

    @property
    def failed(self) -> bool:
        return self.reader.failed or self.writer.failed

    def descriptors(self) -> tuple[int | None, int | None]:
        return self.reader.descriptors()[0], self.writer.descriptors()[1]


def is_listening(spec: AddressSpec) -> bool:
    """Whether the address waits for peers (``TCP-LISTEN``, ``UDP-LISTEN``...)."""
    return isinstance(spec, Address) and spec.keyword in LISTENERS


def _keywords(spec: AddressSpec) -> tuple[str, ...]:
    if isinstance(spec, DualAddress):
        return (spec.reader.keyword, spec.writer.keyword)
    return (spec.keyword,)


class Relay:
    """One invocation of the engine: ``relay [options] ADDRESS1 ADDRESS2``."""

    def __init__(
        self,
        first: AddressSpec,
        second: AddressSpec,
        settings: RunSettings,
        *,
        listener: TcpListener | None = None,
    ) -> None:
        """``listener``: address 1 already bound (by ``--workers``' supervisor)."""
        self.first = first
        self.bound_listener = listener
        self.second = second
        self.settings = settings
        # Transports load on first use; load both addresses' now, before
        # anything listens, so that the first peer waits for no import.
        preload(*_keywords(first), *_keywords(second))
        #: The transfer settings of each session (see ``udp_fork_idle_timeout``).
        self.transfer_settings = session_transfer_settings(first, settings)
        self.trace_output: TraceOutput | None = None
        self.grace_period = 0.0
        self._stopping = asyncio.Event()
        #: Sessions relaying now on the general path, with what each holds.
        self._running: dict[int, tuple[str, InFlight]] = {}
        #: The fast path serves: it ends once its last session has ended.
        self._fast_serving = False
        #: Sessions started, with ``--trace-session-ids`` (their numbers).
        self._session_count = 0

    def stop(self, grace_period: float) -> None:
        """Stop gracefully: accept no more peers, let sessions run ``grace_period`` seconds more."""
        self.grace_period = grace_period
        self._stopping.set()

    async def run(self) -> int:
        """Relay until done or stopped; return socat's exit status (0, or 1 after an error)."""
        main = asyncio.ensure_future(self._run())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not main.done():
                await self._wind_down(main)
            return await main
        finally:
            stopping.cancel()
            if not main.done():  # cancelled from outside: a second signal
                self._log_cuts()
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await main

    async def _wind_down(self, main: asyncio.Future[int]) -> None:
        """The grace period of a stop: wait for the sessions, then cut what still runs.

        Only sessions between two byte streams are waited for: one with a
        datagram side has no end of its own to wait for (only ``-T``).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_period
        while not main.done() and (self._fast_serving or self._streams_running()):
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait({main}, timeout=min(left, STOP_POLL_SECONDS))
        if not main.done():
            self._log_cuts()
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main

    def _streams_running(self) -> bool:
        return any(
            not any(pump.source.stream.datagram or pump.sink.stream.datagram
                    for pump in in_flight.pumps)
            for _, in_flight in self._running.values()
        )

    def _log_cuts(self) -> None:
        if self._stopping.is_set():
            for label, in_flight in self._running.values():
                log_cut(label, self.grace_period, in_flight.held())
                in_flight.reset()
        self._running.clear()

    async def _run(self) -> int:
        metrics_server = None
        try:
            if self.settings.metrics_address is not None:
                metrics_server = await serve_metrics(*self.settings.metrics_address)
            if self.settings.trace.enabled:
                self.trace_output = TraceOutput(self.settings.trace)
            async with self._mux_port():
                return await self._open_and_relay()
        except RelayError as exc:
            logger.error("%s", exc)
            return 1
        finally:
            if self.trace_output is not None:
                self.trace_output.close()
            if metrics_server is not None:
                metrics_server.close()

    def _mux_port(self) -> contextlib.AbstractAsyncContextManager[None]:
        """``MUX-LISTEN`` as address 2 listens for its peer from the start (transports/mux.py)."""
        if isinstance(self.second, Address) and self.second.keyword == "MUX-LISTEN":
            from .transports import mux  # noqa: PLC0415 - loaded only for a mux run

            return mux.hubs(self.second, self._context(number=2))
        return contextlib.nullcontext()

    async def _open_and_relay(self) -> int:
        if is_listening(self.first):
            assert isinstance(self.first, Address)
            return await self._listen_first(self.first)
        if isinstance(self.first, Address) and self.first.options.flag("fork"):
            return await self._fork_first_connect(self.first)
        first = await self._open(self.first, self._context(number=1))
        second = self.second
        if isinstance(second, Address) and is_listening(second) and second.options.flag("fork"):
            return await self._fork_second(second, first)
        return await self._session(first)

    async def open_listener(self, address: Address) -> Listener:
        """Listen on address 1 (with its ``retry`` and ``chdir``)."""
        with _working_directory(address):
            return await _with_retry(
                address, lambda: LISTENERS[address.keyword](address, self._context(number=1))
            )

    async def _listen_first(self, address: Address) -> int:
        listener = self.bound_listener or await self.open_listener(address)
        try:
            if not address.options.flag("fork"):
                stream = await listener.accept()
                # socat closes the listening socket once its one peer is accepted.
                await listener.aclose()
                return await self._session(stream)
            if self._fast_path() and isinstance(listener, TcpListener):
                self._fast_serving = True
                await bridge.serve(
                    listener,
                    self.second,
                    self._open_second,
                    self.settings.transfer,
                    self.settings.family,
                    bridge.Stopping(self._stopping, lambda: self.grace_period),
                    quiet_sessions=self.settings.quiet_sessions,
                )
            else:
                await self._serve(address, listener)
            return 0
        except AcceptTimeout as exc:
            # socat: "W accept: Connection timed out", then an ordinary exit.
            logger.warning("%s", exc)
            return 0
        finally:
            await listener.aclose()

    def _fast_path(self) -> bool:
        """Whether sessions go through ``bridge.py`` (``RELAY_FAST_PATH=0`` says never)."""
        if os.environ.get(FAST_PATH_VARIABLE, "1") == "0":
            return False
        if isinstance(self.first, Address) and "children-shutup" in self.first.options:
            return False  # its sessions are not children logging at a level of their own
        return fastpath.eligible(
            self.first, self.second, self.settings.transfer, self.settings.trace.enabled
        )

    async def _open_second(self, env: Mapping[str, str]) -> Stream:
        return await self._open(self.second, self._context(env=env, number=2))

    async def _serve(self, address: Address, listener: Listener) -> None:
        limit = address.options.integer("max-children")
        # With --workers, one limit for all of them (sharing.SharedSlots).
        slots = shared_slots() or (asyncio.Semaphore(limit) if limit else None)
        try:
            await self._accept_loop(listener, slots)
        except* OpenError as failures:
            # The task group wraps a failed accept: report it as the one error it is.
            raise first_open_error(failures) from None

    async def _accept_loop(self, listener: Listener, slots: Slots | None) -> None:
        budget = DescriptorBudget(ANY_SESSION)
        async with asyncio.TaskGroup() as children:
            while True:
                if slots is not None and not await self._unless_stopping(slots.acquire()):
                    await listener.aclose()  # stopping: see below
                    return
                # Out of descriptors, socat does not accept until it can: the
                # peers wait in the backlog instead of being failed.
                while not budget.has_room() and not self._stopping.is_set():
                    await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                try:
                    stream = await self._unless_stopping(listener.accept())
                    if stream is None:
                        # Refuse new peers at once; leaving the task group waits
                        # for the sessions (run() bounds that by the grace period).
                        if slots is not None:
                            slots.release()
                        await listener.aclose()
                        return
                except AcceptTimeout as exc:
                    # socat's parent stops accepting and exits with 0 while its
                    # children finish: leaving the task group waits for them.
                    logger.warning("%s", exc)
                    return
                except OpenError as exc:
                    if slots is not None:
                        slots.release()
                    if not _out_of_resources(exc):
                        raise
                    # Sessions that end give descriptors back: keep the listener.
                    logger.error("%s", exc)
                    await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                    continue
                except BaseException:
                    if slots is not None:
                        slots.release()
                    raise
                budget.session_started()
                children.create_task(self._child(stream, slots, budget))

    async def _child(
        self,
        stream: Stream,
        slots: Slots | None,
        budget: DescriptorBudget | None = None,
    ) -> None:
        if isinstance(self.first, Address):
            # What this session (a child process in socat) logs, from here on.
            shut_up(self.first.options.integer("children-shutup") or 0)
        if self.settings.quiet_sessions:
            quiet_session()
        try:
            await self._session(stream)
        except Exception as exc:  # a fault in one session must never reach another
            logger.error("%s", exc)
        finally:
            if budget is not None:
                budget.session_ended()
            if slots is not None:
                slots.release()

    async def _unless_stopping(self, work: Coroutine[Any, Any, T]) -> T | None:
        """``await work``, or None as soon as a graceful stop begins (``work`` is cancelled)."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return None
        return task.result()

    async def _session(self, first: Stream) -> int:
        """Open address 2 for an open address 1 and transfer; return the exit status."""
        if self.settings.trace.session_ids:
            # Each session runs in a task of its own: the number stays with it.
            self._session_count += 1
            SESSION_ID.set(self._session_count)
        METRICS.sessions_total += 1
        METRICS.sessions_active += 1
        in_flight = InFlight()
        key = id(in_flight)
        self._running[key] = (first.label, in_flight)
        try:
            status = await self._relay_session(first, in_flight)
        finally:
            self._running.pop(key, None)
            METRICS.sessions_active -= 1
        if status:
            METRICS.session_errors_total += 1
        return status

    async def _relay_session(self, first: Stream, in_flight: InFlight) -> int:
        opened = [first]
        try:
            context = self._context(env=first.env, number=2)
            if isinstance(self.second, Address) and process.runs_in_place(self.second):
                return await self._run_in_place(self.second, first, context)
            if isinstance(self.second, Address) and self.second.keyword in ANSWERING:
                # It reads its request through address 1's framing (frame=).
                first = opened[0] = framing.apply(first, self.first)
                context = replace(context, peer=first)
            try:
                second = await self._open(self.second, context)
            except RelayError as exc:
                logger.error("%s", exc)
                return 1
            opened.append(second)
            try:
                if not await self._transfer(first, second, in_flight):
                    return 1
            finally:
                await second.aclose()
        finally:
            await first.aclose()
        # socat: a failed EXEC/SYSTEM child ("exited with status 1") fails the run.
        return 1 if any(stream.failed for stream in opened) else 0

    async def _transfer(
        self,
        first: Stream,
        second: Stream,
        in_flight: InFlight | None = None,
        *,
        shared_first: bool = False,
    ) -> bool:
        """Relay between two open streams; False (after logging why) when it failed.

        ``in_flight``, if given, shows a graceful stop what the transfer holds.
        ``shared_first``: address 1 serves one peer after another, so a peer's
        EOF must not shut its writing down.
        """
        tracer = None
        try:
            # frame= (a relay extension, framing.py) wraps either side.
            first, second = framing.apply(first, self.first), framing.apply(second, self.second)
            if self.trace_output is not None:
                tracer = self.trace_output.session(first.env)
            left = _side(first, self.first, 1)
            left.end_close = left.end_close or shared_first
            await transfer(
                left,
                _side(second, self.second, 2),
                self.transfer_settings,
                tracer,
                in_flight,
            )
        except RelayError as exc:
            logger.error("%s", exc)
            return False
        finally:
            if tracer is not None:
                tracer.close()
        return True

    async def _fork_first_connect(self, address: Address) -> int:
        """``fork`` on a connecting first address: connect again and again (socat 1.8).

        Each connection becomes a session of its own, like an accepted peer;
        the next connection is made ``interval`` seconds later (default 1),
        and ``max-children`` bounds the sessions that run at once.
        """
        limit = address.options.integer("max-children")
        slots = asyncio.Semaphore(limit) if limit else None
        pause = address.options.seconds("interval", DEFAULT_RETRY_INTERVAL) or 0.0
        async with asyncio.TaskGroup() as children:
            while True:
                if slots is not None:
                    await slots.acquire()
                try:
                    stream = await self._open(address, self._context(number=1))
                except BaseException:
                    if slots is not None:
                        slots.release()
                    raise
                children.create_task(self._child(stream, slots))
                await asyncio.sleep(pause)

    async def _fork_second(self, address: Address, first: Stream) -> int:
        """``fork`` on a listening second address: every peer in turn meets address 1.

        socat opens address 1, then listens on address 2 and hands each
        accepted peer to a child process that inherited address 1; a child's
        end closes only its own copy. Here the peers take turns on the one
        open address 1, whose writing is never shut down between them.
        """
        try:
            listener = await _with_retry(
                address, lambda: LISTENERS[address.keyword](address, self._context(number=2))
            )
            try:
                while True:
                    try:
                        peer = await listener.accept()
                    except AcceptTimeout as exc:
                        logger.warning("%s", exc)
                        return 0
                    try:
                        METRICS.sessions_total += 1
                        await self._transfer(first, peer, shared_first=True)
                    finally:
                        await peer.aclose()
            finally:
                await listener.aclose()
        finally:
            await first.aclose()

    async def _run_in_place(self, address: Address, first: Stream, context: OpenContext) -> int:
        """``nofork``: the program talks to address 1 itself; the relay waits for it."""
        read_fd, write_fd = first.descriptors()
        stdin = None if context.direction == "read" else read_fd
        stdout = None if context.direction == "write" else write_fd
        missing = (context.direction != "read" and read_fd is None) or (
            context.direction != "write" and write_fd is None
        )
        if missing:
            logger.error(
                'option "nofork": address 1 (%s) has no file descriptor to give the program; '
                'leave "nofork" out',
                first.label,
            )
            return 1
        try:
            status = await process.run_in_place(address, context, stdin, stdout)
        except RelayError as exc:
            logger.error("%s", exc)
            return 1
        # socat turned into the program: its exit status is the program's.
        return status if status >= 0 else 1

    async def _open(self, spec: AddressSpec, context: OpenContext) -> Stream:
        if isinstance(spec, DualAddress):
            reader = await self._open(spec.reader, replace(context, direction="read"))
            try:
                writer = await self._open(spec.writer, replace(context, direction="write"))
            except BaseException:
                await reader.aclose()
                raise
            return DualStream(reader, writer)
        address = spec
        if address.keyword in LISTENERS:
            # A listening second address accepts exactly one peer.
            with _working_directory(address):
                listener = await _with_retry(
                    address, lambda: LISTENERS[address.keyword](address, context)
                )
            try:
                return await listener.accept()
            finally:
                await listener.aclose()
        opener = OPENERS[address.keyword]
        with _working_directory(address):
            return await _with_retry(address, lambda: opener(address, context))

    def _context(self, number: int, env: Mapping[str, str] | None = None) -> OpenContext:
        """What opening address ``number`` (1 or 2) needs: ``-u``/``-U`` decide its direction."""
        return OpenContext(
            env=dict(env or {}),
            family=self.settings.family,
            direction=address_direction(self.settings.transfer.unidirectional, number),
        )


def address_direction(unidirectional: str, number: int) -> Direction:
    """socat's open mode of address ``number`` under ``-u`` (left to right) or ``-U``."""
    if unidirectional == "both":
        return "both"
    reads_first = unidirectional == "left-to-right"
    return "read" if reads_first == (number == 1) else "write"


def session_transfer_settings(first: AddressSpec, settings: RunSettings) -> TransferSettings:
    """The run's transfer settings, with the UDP fork idle timeout where it applies."""
    transfer_settings = settings.transfer
    if (
        isinstance(first, Address)
        and first.keyword in UDP_LISTENERS
        and first.options.flag("fork")
        and transfer_settings.idle_timeout is None
        and settings.udp_fork_idle_timeout is not None
    ):
        return replace(
            transfer_settings, idle_timeout=settings.udp_fork_idle_timeout
        )
    return transfer_settings


@contextlib.contextmanager
def _working_directory(address: Address) -> Iterator[None]:
    """socat's ``chdir``: "Changes the working directory. After opening the address
    the master process changes back to the original working directory. Sub
    processes inherit the temporary setting." (The directory is the process's:
    forked sessions opening addresses at the same moment would share it.)"""
    directory = address.options.text("chdir")
    if directory is None:
        yield
        return
    previous = os.getcwd()
    try:
        os.chdir(directory)
    except OSError as exc:
        raise OpenError(str(address), f'chdir("{directory}"): {exc.strerror}') from exc
    try:
        yield
    finally:
        os.chdir(previous)


def _out_of_resources(exc: OpenError) -> bool:
    """Whether an accept failed for want of descriptors or memory, which comes back."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in TRANSIENT_ACCEPT_ERRORS


def _side(stream: Stream, spec: AddressSpec, number: int) -> Side:
    """The transfer options of one address (for ``A!!B``, reading ones of the reading part)."""
    address = spec.reader if isinstance(spec, DualAddress) else spec
    writer = spec.writer if isinstance(spec, DualAddress) else spec
    options = address.options
    terminator = LineTerminator.NL
    if options.flag("crnl"):
        terminator = LineTerminator.CRNL
    elif options.flag("cr"):
        terminator = LineTerminator.CR
    return Side(
        stream,
        number,
        readbytes=options.integer("readbytes"),
        ignoreeof=options.flag("ignoreeof"),
        terminator=terminator,
        escape=options.integer("escape"),
        cool_write=writer.options.flag("cool-write"),
        end_close=writer.options.flag("end-close"),
    )


async def _with_retry(address: Address, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` with the address's ``retry``/``interval``/``forever`` policy."""
    options = address.options
    forever = options.flag("forever")
    retries = options.integer("retry", 0) or 0
    interval = options.seconds("interval", DEFAULT_RETRY_INTERVAL) or 0.0
    attempt_number = 0
    while True:
        try:
            return await attempt()
        except OpenError as exc:
            if not forever and attempt_number >= retries:
                raise
            attempt_number += 1
            logger.warning("%s", exc)
            logger.log(NOTICE, "retrying in %s seconds", _format_seconds(interval))
            await asyncio.sleep(interval)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}"
