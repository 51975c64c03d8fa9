"""The interface every transport implements.

A transport opens an address and hands back a ``Stream`` (one open end of a
session) or a ``Listener`` (which yields ``Stream``s). Moving bytes between two
streams is not a transport's job: ``transfer.py`` does it once for all.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

#: Which way data flows through an address: socat opens the first address of
#: ``-u`` read-only and the second write-only (``-U`` the reverse), and the
#: reading and writing parts of ``A!!B`` the same way.
Direction = Literal["both", "read", "write"]


@dataclass(frozen=True)
class OpenContext:
    """What an opener needs beyond its own address.

    ``env`` holds the ``SOCAT_*`` variables describing the session's first
    address (peer and socket addresses, TLS certificate fields); EXEC and
    SYSTEM children get them. ``family`` is ``socket.AF_INET``/``AF_INET6``
    when ``-4``/``-6`` was given, else ``socket.AF_UNSPEC``. ``direction``
    says whether the relay reads from the address, writes to it, or both
    (EXEC and SYSTEM wire only the child's streams in use). ``peer``: the
    open first address, for a second address that talks to it before it
    connects (``PROXY-SERVER`` reads the proxy request there); else None.
    """

    env: Mapping[str, str] = field(default_factory=dict)
    family: int = 0
    direction: Direction = "both"
    peer: Stream | None = None


class Stream(abc.ABC):
    """One open end of a session: a byte stream or, if ``datagram``, a datagram channel.

    ``read_into`` returns 0 at end of input. For datagram streams one read is
    one datagram and one ``write`` sends one datagram, so the transfer loop
    keeps boundaries without knowing about them. A datagram stream's
    ``read_into`` writes into the buffer only in its last step, with no await
    after it: the transfer loop lends all datagram streams one shared buffer.
    """

    #: Short description for logs, e.g. ``"AF=2 127.0.0.1:5555"``.
    label: str = ""
    readable: bool = True
    writable: bool = True
    datagram: bool = False
    #: ``SOCAT_*`` variables this end contributes when it is address 1.
    env: Mapping[str, str] = {}

    @abc.abstractmethod
    async def read_into(self, buffer: memoryview) -> int:
        """Read up to ``len(buffer)`` bytes; return how many, 0 at end of input."""

    @abc.abstractmethod
    async def write(self, data: memoryview) -> None:
        """Write all of ``data`` (or send it as one datagram)."""

    async def shutdown_write(self) -> None:  # noqa: B027 - a deliberate no-op default
        """Half-close: tell the peer no more data comes. Default: nothing to do."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release everything; must be safe to call twice."""

    def unsent(self) -> int:
        """Bytes written that the kernel still holds for the peer (a TCP send queue).

        Closing while the peer still sends would turn into a reset that
        destroys them: ``transfer.linger`` waits for them first. Default: 0.
        """
        return 0

    def reset(self) -> None:  # noqa: B027 - a deliberate no-op default
        """Make the coming ``aclose`` abortive (a TCP reset), where the transport can.

        A session cut with bytes undelivered must not end in what looks like
        a clean end of stream to its peer. Default: nothing to do.
        """

    def fileno(self) -> int | None:
        """A kernel descriptor usable for a zero-copy path, or None."""
        return None

    def descriptors(self) -> tuple[int | None, int | None]:
        """The kernel descriptors this end reads from and writes to, where it has them.

        ``nofork`` hands them to a program, which then talks to the peer itself.
        """
        fd = self.fileno()
        return fd, fd

    @property
    def failed(self) -> bool:
        """Whether the far end failed in a way that fails the run (a child's non-zero exit).

        Meaningful once the stream is closed.
        """
        return False


class Listener(abc.ABC):
    """A passive address (``TCP-LISTEN``, ``UNIX-LISTEN``, ...) that yields sessions."""

    label: str = ""

    @abc.abstractmethod
    async def accept(self) -> Stream:
        """Wait for the next peer that passes the address's checks (``range``...)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop listening and release the socket (and unlink a UNIX socket file)."""


async def wait_readable(fd: int) -> None:
    """Wait until ``fd`` is readable, for transports built on non-blocking descriptors."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    loop.add_reader(fd, _wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_reader(fd)


async def wait_writable(fd: int) -> None:
    """Wait until ``fd`` is writable."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    loop.add_writer(fd, _wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_writer(fd)


class ReadinessWatch:
    """Waits, again and again, for one descriptor to become readable (or writable).

    ``wait_readable`` registers and unregisters the descriptor with the event
    loop on every wait: two ``epoll_ctl`` calls per relayed message. This
    keeps the registration between waits, and drops it only when the
    descriptor fires while nobody waits (epoll is level-triggered: a
    registration nobody consumes would spin).
    """

    def __init__(self, fd: int, *, writable: bool = False) -> None:
        self.fd = fd
        self.writable = writable
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        """Return once the descriptor is ready."""
        # The loop it is registered with, if any: get_running_loop() costs a getpid()
        # system call in Python 3.11, and this runs once per relayed message.
        loop = self._loop or asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        if self._loop is None:
            self._loop = loop
            if self.writable:
                loop.add_writer(self.fd, self._ready)
            else:
                loop.add_reader(self.fd, self._ready)
        try:
            await waiter
        finally:
            self._waiter = None

    def _ready(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()
        else:
            waiter.set_result(None)

    def close(self) -> None:
        """Stop watching; call before the descriptor is closed."""
        if self._loop is not None:
            if self.writable:
                self._loop.remove_writer(self.fd)
            else:
                self._loop.remove_reader(self.fd)
            self._loop = None


def _wake(waiter: asyncio.Future[None]) -> None:
    # The descriptor may fire again before the waiting task runs.
    if not waiter.done():
        waiter.set_result(None)
