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
aborted", "Time between consecutive attempts ... Default is 5 seconds",
"Performs an unlimited number of retry attempts".
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from . import bridge, framing
from .addresses import Address, AddressSpec, DualAddress
from .descriptors import ANY_SESSION, DescriptorBudget
from .errors import AcceptTimeout, OpenError, RelayError
from .log import NOTICE, logger
from .metrics import METRICS, serve_metrics
from .trace import TraceOutput, TraceSettings
from .transfer import LineTerminator, Side, TransferSettings, transfer
from .transports import LISTENERS, OPENERS
from .transports.base import Listener, OpenContext, Stream
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

#: socat's default ``interval``.
DEFAULT_RETRY_INTERVAL = 5.0


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

    async def aclose(self) -> None:
        try:
            await self.reader.aclose()
        finally:
            await self.writer.aclose()


def is_listening(spec: AddressSpec) -> bool:
    """Whether the address waits for peers (``TCP-LISTEN``, ``UDP-LISTEN``...)."""
    return isinstance(spec, Address) and spec.keyword in LISTENERS


class Relay:
    """One invocation of the engine: ``relay [options] ADDRESS1 ADDRESS2``."""

    def __init__(self, first: AddressSpec, second: AddressSpec, settings: RunSettings) -> None:
        self.first = first
        self.second = second
        self.settings = settings
        #: The transfer settings of each session (see ``udp_fork_idle_timeout``).
        self.transfer_settings = session_transfer_settings(first, settings)
        self.trace_output: TraceOutput | None = None

    async def run(self) -> int:
        """Relay until done; return socat's exit status (0, or 1 after an error)."""
        metrics_server = None
        try:
            if self.settings.metrics_address is not None:
                metrics_server = await serve_metrics(*self.settings.metrics_address)
            if self.settings.trace.enabled:
                self.trace_output = TraceOutput(self.settings.trace)
            if is_listening(self.first):
                assert isinstance(self.first, Address)
                return await self._listen_first(self.first)
            first = await self._open(self.first, OpenContext(family=self.settings.family))
            return await self._session(first)
        except RelayError as exc:
            logger.error("%s", exc)
            return 1
        finally:
            if self.trace_output is not None:
                self.trace_output.close()
            if metrics_server is not None:
                metrics_server.close()

    async def _listen_first(self, address: Address) -> int:
        listener = await _with_retry(
            address, lambda: LISTENERS[address.keyword](address, self._context())
        )
        try:
            if not address.options.flag("fork"):
                stream = await listener.accept()
                # socat closes the listening socket once its one peer is accepted.
                await listener.aclose()
                return await self._session(stream)
            if self._fast_path() and isinstance(listener, TcpListener):
                await bridge.serve(
                    listener,
                    self.second,
                    self._open_second,
                    self.settings.transfer,
                    self.settings.family,
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
        return bridge.eligible(
            self.first, self.second, self.settings.transfer, self.settings.trace.enabled
        )

    async def _open_second(self, env: Mapping[str, str]) -> Stream:
        return await self._open(self.second, self._context(env=env))

    async def _serve(self, address: Address, listener: Listener) -> None:
        limit = address.options.integer("max-children")
        slots = asyncio.Semaphore(limit) if limit else None
        try:
            await self._accept_loop(listener, slots)
        except* OpenError as failures:
            # The task group wraps a failed accept: report it as the one error it is.
            raise failures.exceptions[0] from None

    async def _accept_loop(self, listener: Listener, slots: asyncio.Semaphore | None) -> None:
        budget = DescriptorBudget(ANY_SESSION)
        async with asyncio.TaskGroup() as children:
            while True:
                if slots is not None:
                    await slots.acquire()
                # Out of descriptors, socat does not accept until it can: the
                # peers wait in the backlog instead of being failed.
                while not budget.has_room():
                    await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                try:
                    stream = await listener.accept()
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
        self, stream: Stream, slots: asyncio.Semaphore | None, budget: DescriptorBudget
    ) -> None:
        try:
            await self._session(stream)
        except Exception as exc:  # a fault in one session must never reach another
            logger.error("%s", exc)
        finally:
            budget.session_ended()
            if slots is not None:
                slots.release()

    async def _session(self, first: Stream) -> int:
        """Open address 2 for an open address 1 and transfer; return the exit status."""
        METRICS.sessions_total += 1
        METRICS.sessions_active += 1
        try:
            status = await self._relay_session(first)
        finally:
            METRICS.sessions_active -= 1
        if status:
            METRICS.session_errors_total += 1
        return status

    async def _relay_session(self, first: Stream) -> int:
        try:
            context = self._context(env=first.env)
            try:
                second = await self._open(self.second, context)
            except RelayError as exc:
                logger.error("%s", exc)
                return 1
            try:
                # frame= (a relay extension, framing.py) wraps either side.
                first, second = framing.apply(first, self.first), framing.apply(second, self.second)
                tracer = None if self.trace_output is None else self.trace_output.session()
                await transfer(
                    _side(first, self.first, 1),
                    _side(second, self.second, 2),
                    self.transfer_settings,
                    tracer,
                )
            except RelayError as exc:
                logger.error("%s", exc)
                return 1
            finally:
                await second.aclose()
        finally:
            await first.aclose()
        return 0

    async def _open(self, spec: AddressSpec, context: OpenContext) -> Stream:
        if isinstance(spec, DualAddress):
            reader = await self._open(spec.reader, context)
            try:
                writer = await self._open(spec.writer, context)
            except BaseException:
                await reader.aclose()
                raise
            return DualStream(reader, writer)
        address = spec
        if address.keyword in LISTENERS:
            # A listening second address accepts exactly one peer.
            listener = await _with_retry(
                address, lambda: LISTENERS[address.keyword](address, context)
            )
            try:
                return await listener.accept()
            finally:
                await listener.aclose()
        opener = OPENERS[address.keyword]
        return await _with_retry(address, lambda: opener(address, context))

    def _context(self, env: Mapping[str, str] | None = None) -> OpenContext:
        return OpenContext(env=dict(env or {}), family=self.settings.family)


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
        return dataclasses.replace(
            transfer_settings, idle_timeout=settings.udp_fork_idle_timeout
        )
    return transfer_settings


def _out_of_resources(exc: OpenError) -> bool:
    """Whether an accept failed for want of descriptors or memory, which comes back."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in TRANSIENT_ACCEPT_ERRORS


def _side(stream: Stream, spec: AddressSpec, number: int) -> Side:
    """The transfer options of one address (for ``A!!B``, those of the reading part)."""
    address = spec.reader if isinstance(spec, DualAddress) else spec
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
