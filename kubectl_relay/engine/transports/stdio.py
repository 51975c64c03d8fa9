"""Inherited descriptors: ``STDIO`` (``-``), ``STDIN``, ``STDOUT``, ``STDERR`` and ``FD:<n>``.

socat: "STDIO: Uses file descriptor 0 for reading, and 1 for writing";
"STDIN: Uses file descriptor 0"; "STDOUT: Uses file descriptor 1";
"STDERR: Uses file descriptor 2"; "FD:<fdnum>: Uses the file descriptor
<fdnum>. It must already exist as valid UN*X file descriptor."

These descriptors are shared: with the shell that started us and the other
commands of a pipeline, with a terminal, and with the rest of this process
(log lines, later sessions of a ``fork`` listener). That decides the design:

- Their flags are never changed. ``O_NONBLOCK`` lives in the open file
  description, so setting it on our stdin would also change it for the shell
  or the other programs on the same terminal or pipe, which then fail with
  ``EAGAIN``. uvloop's ``add_reader`` sets ``O_NONBLOCK`` on the descriptor
  it watches (libuv's ``uv_poll_init``), so these descriptors never go to the
  loop: each direction has a private epoll instance that watches the
  descriptor, and the loop watches that epoll instance.
- A read or write happens only once readiness was seen, like socat's
  ``select()`` then ``read()``: nothing is pending when a session ends, so a
  cancelled read loses no data, and there is no helper thread that could keep
  the process from exiting. Sockets need no readiness first: ``MSG_DONTWAIT``
  makes one call non-blocking without touching the descriptor's flags.
- Pipes and terminals are written in ``PIPE_BUF`` pieces: once a pipe is
  writable it has room for at least that much, so ``write()`` returns at once.
- Regular files and devices that epoll refuses (``/dev/null``) are read and
  written directly: they never wait for a peer.
- They are never closed. ``shutdown_write`` half-closes a socket, which its
  peer sees as EOF; a pipe, terminal or file stays open until the process
  exits, as with socat 1.7.4.4 (its stdout reaches EOF only at exit, checked).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import select
import socket
import stat
from collections.abc import Callable

from ..addresses import Address
from ..descriptors import was_inherited
from ..errors import OpenError
from ..log import NOTICE, logger
from ..options import Options
from .base import OpenContext, Stream
from .tcp import address_text, strerror

#: The keyword's descriptors: (read fd, write fd, name in socat's log line).
_STANDARD: dict[str, tuple[int | None, int | None, str]] = {
    "STDIO": (0, 1, "stdio"),
    "STDIN": (0, None, "stdin"),
    "STDOUT": (None, 1, "stdout"),
    "STDERR": (None, 2, "stderr"),
}


class _Channel:
    """One direction over an inherited descriptor, without changing its flags."""

    def __init__(self, fd: int, events: int) -> None:
        self.fd = fd
        self.sock: socket.socket | None = None
        self.epoll: select.epoll | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._watching = False
        mode = os.fstat(fd).st_mode
        if stat.S_ISSOCK(mode):
            # A duplicate for send/recv with MSG_DONTWAIT; closing it leaves fd open.
            self.sock = socket.socket(fileno=os.dup(fd))
        if stat.S_ISREG(mode) or stat.S_ISBLK(mode) or stat.S_ISDIR(mode):
            return
        epoll = select.epoll()
        try:
            epoll.register(fd, events)
        except PermissionError:
            # Not pollable (/dev/null, /dev/zero): such devices never wait.
            epoll.close()
            return
        self.epoll = epoll

    async def ready(self) -> None:
        """Wait until the descriptor is ready (or at EOF or in error).

        Several waits may overlap (a cancelled read whose cleanup has not run
        yet, and the next read): they share one loop registration, which is
        removed only when the last of them is gone.
        """
        assert self.epoll is not None
        loop = asyncio.get_running_loop()
        while not self.epoll.poll(0):
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            if not self._watching:
                loop.add_reader(self.epoll.fileno(), self._wake)
                self._watching = True
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
                if not self._waiters and self._watching:
                    loop.remove_reader(self.epoll.fileno())
                    self._watching = False

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def read_into(self, buffer: memoryview) -> int:
        if self.sock is not None:
            while True:
                try:
                    return self.sock.recv_into(buffer, len(buffer), socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    await self.ready()
        if self.epoll is None:
            return os.readv(self.fd, [buffer])
        while True:
            await self.ready()
            try:
                return os.readv(self.fd, [buffer])
            except (BlockingIOError, InterruptedError):
                # Another reader of the same pipe took the data first, or the
                # descriptor was already non-blocking: wait again.
                continue

    async def write(self, data: memoryview) -> None:
        while data:
            if self.sock is not None:
                try:
                    written = self.sock.send(data, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    await self.ready()
                    continue
            elif self.epoll is not None:
                await self.ready()
                try:
                    written = os.write(self.fd, data[: select.PIPE_BUF])
                except (BlockingIOError, InterruptedError):
                    continue
            else:
                written = os.write(self.fd, data)
            data = data[written:]

    def close(self) -> None:
        if self.epoll is not None:
            if self._watching:
                asyncio.get_running_loop().remove_reader(self.epoll.fileno())
                self._watching = False
            self.epoll.close()
        if self.sock is not None:
            self.sock.close()


class InheritedStream(Stream):
    """A stream over descriptors we inherited: read from one, write to another (or the same)."""

    def __init__(
        self,
        read_fd: int | None,
        write_fd: int | None,
        label: str,
        restore_terminal: Callable[[], None] | None = None,
    ) -> None:
        self.label = label
        #: Puts back the settings of a terminal we changed (terminal.py).
        self._restore_terminal = restore_terminal
        self.env = {}
        self.readable = read_fd is not None
        self.writable = write_fd is not None
        self._reader = None if read_fd is None else _Channel(read_fd, select.EPOLLIN)
        try:
            self._writer = None if write_fd is None else _Channel(write_fd, select.EPOLLOUT)
        except BaseException:
            if self._reader is not None:
                self._reader.close()
            raise
        self._write_shut = False

    def descriptors(self) -> tuple[int | None, int | None]:
        return (
            None if self._reader is None else self._reader.fd,
            None if self._writer is None else self._writer.fd,
        )

    async def read_into(self, buffer: memoryview) -> int:
        if self._reader is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return await self._reader.read_into(buffer)

    async def write(self, data: memoryview) -> None:
        if self._writer is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        await self._writer.write(data)

    async def shutdown_write(self) -> None:
        """Half-close a socket; leave a pipe, terminal or file open (shared with the process)."""
        if self._write_shut or self._writer is None:
            return
        self._write_shut = True
        if self._writer.sock is not None:
            with contextlib.suppress(OSError):
                self._writer.sock.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        if self._restore_terminal is not None:
            self._restore_terminal()
            self._restore_terminal = None
        for channel in (self._reader, self._writer):
            if channel is not None:
                channel.close()
        self._reader = self._writer = None


def _check_fd(fd: int, text: str) -> int:
    """The descriptor's open flags; socat-style error when it is not open (or not inherited)."""
    if not was_inherited(fd):
        raise OpenError(text, f"fcntl({fd}, F_GETFL): Bad file descriptor (not inherited by relay)")
    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as exc:
        raise OpenError(text, f"fcntl({fd}, F_GETFL): {strerror(exc)}") from exc


def set_noatime(fd: int, text: str) -> None:
    """``o-noatime`` on an inherited descriptor: ``fcntl(F_SETFL)`` adds O_NOATIME."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NOATIME)
    except OSError as exc:
        raise OpenError(text, f"fcntl({fd}, F_SETFL, O_NOATIME): {strerror(exc)}") from exc


def _inherited(
    read_fd: int | None, write_fd: int | None, label: str, options: Options, text: str
) -> Stream:
    restore = None
    if options:  # the terminal module only when there may be terminal options
        from .terminal import terminal_restorer  # noqa: PLC0415

        fd = read_fd if read_fd is not None else write_fd
        assert fd is not None
        restore = terminal_restorer(fd, options, text)
    try:
        return InheritedStream(read_fd, write_fd, label, restore)
    except OSError as exc:
        if restore is not None:
            restore()
        raise OpenError(text, f"{label}: {strerror(exc)}") from exc


async def open_stdio(address: Address, ctx: OpenContext) -> Stream:
    """``STDIO``, ``STDIN``, ``STDOUT`` or ``STDERR``."""
    text = address_text(address)
    if address.params:
        raise OpenError(
            text,
            f"{address.keyword}: wrong number of parameters ({len(address.params)} instead of 0)",
        )
    read_fd, write_fd, name = _STANDARD[address.keyword]
    for fd in (read_fd, write_fd):
        if fd is not None:
            _check_fd(fd, text)
    if address.options.flag("o-noatime") and read_fd is not None:
        set_noatime(read_fd, text)
    if read_fd is not None and write_fd is not None:
        logger.log(NOTICE, "reading from and writing to stdio")
    else:
        logger.log(NOTICE, "using %s for %s", name, "reading" if read_fd is not None else "writing")
    return _inherited(read_fd, write_fd, name, address.options, text)


async def open_fd(address: Address, ctx: OpenContext) -> Stream:
    """``FD:<n>``: both directions over one inherited descriptor, as its access mode allows."""
    text = address_text(address)
    if len(address.params) != 1:
        raise OpenError(
            text, f"FD: wrong number of parameters ({len(address.params)} instead of 1)"
        )
    try:
        fd = int(address.params[0], 0)
    except ValueError:
        raise OpenError(text, f'FD: "{address.params[0]}" is not a file descriptor') from None
    if fd < 0:
        raise OpenError(text, f'FD: "{address.params[0]}" is not a file descriptor')
    access = _check_fd(fd, text) & os.O_ACCMODE
    if address.options.flag("o-noatime"):
        set_noatime(fd, text)
    readable = access in (os.O_RDONLY, os.O_RDWR)
    writable = access in (os.O_WRONLY, os.O_RDWR)
    direction = {
        (True, True): "reading and writing",
        (True, False): "reading",
        (False, True): "writing",
    }.get((readable, writable), "reading and writing")
    logger.log(NOTICE, "using file descriptor %d for %s", fd, direction)
    return _inherited(
        fd if readable else None, fd if writable else None, f"FD {fd}", address.options, text
    )
