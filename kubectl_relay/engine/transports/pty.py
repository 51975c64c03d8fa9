"""``PTY``: a new pseudo terminal; the relay uses its master side.

socat's man page: "Generates a pseudo terminal (pty) and uses its master
side. Another process may open the pty's slave side using it like a serial
line or terminal." Like socat on Linux we open ``/dev/ptmx`` (POSIX
``posix_openpt``). A process that closes the slave does not end the session
in socat (1.7 and 1.8 both go on, and the next process to open the slave
takes over); we hold a slave descriptor of our own for the same effect (the
master would otherwise read ``EIO`` after a hangup, and epoll would report
that hangup over and over). With ``wait-slave`` socat holds none (its wait
needs the hangup), so the session ends when the process that opened the
slave closes it: so does ours.

Options:

- ``link=<filename>`` (``symbolic-link``) "Generates a symbolic link that
  points to the actual pseudo terminal (pty)"; removed again on close
  (``unlink-close``), if it is still ours.
- ``mode=`` sets the permissions of the slave device.
- ``wait-slave`` (``pty-wait-slave``) "Blocks the open phase until a process
  opens the slave side of the pty", checking every ``pty-interval`` seconds.
- Terminal settings (socat's TERMIOS group): see ``terminal``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger
from .base import OpenContext, Stream
from .files import FdStream
from .tcp import address_text, strerror
from .terminal import apply_terminal_options
from .unix import unlink_early


def new_master(text: str) -> tuple[int, str]:
    """A master descriptor from ``/dev/ptmx``, unlocked, and its slave's path (also for EXEC)."""
    # ctypes only here: every EXEC imports this module, few make a terminal.
    import ctypes  # noqa: PLC0415

    libc = ctypes.CDLL(None, use_errno=True)

    def failed(call: str) -> OpenError:
        return OpenError(text, f"{call}: {os.strerror(ctypes.get_errno())}")

    fd = libc.posix_openpt(os.O_RDWR | os.O_NOCTTY)
    if fd < 0:
        raise failed('open("/dev/ptmx", O_RDWR|O_NOCTTY)')
    try:
        if libc.grantpt(fd) != 0:
            raise failed(f"grantpt({fd})")
        if libc.unlockpt(fd) != 0:
            raise failed(f"unlockpt({fd})")
        name = ctypes.create_string_buffer(256)
        if libc.ptsname_r(fd, name, len(name)) != 0:
            raise failed(f"ptsname({fd})")
    except BaseException:
        os.close(fd)
        raise
    return fd, os.fsdecode(name.value)


class TerminalMaster(FdStream):
    """The master side of a terminal: EIO once the slave side's last holder closed it is EOF."""

    async def read_into(self, buffer: memoryview) -> int:
        try:
            return await super().read_into(buffer)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return 0
            raise


class PtyStream(TerminalMaster):
    """The master side, and the slave descriptor we hold (none with ``wait-slave``): see above."""

    def __init__(
        self,
        master: int,
        holder: int | None,
        *,
        label: str,
        unlink: tuple[str, tuple[int, int]] | None,
    ) -> None:
        super().__init__(master, master, label=label, unlink=unlink)
        self._holder: int | None = holder

    async def aclose(self) -> None:
        await super().aclose()
        if self._holder is not None:
            holder, self._holder = self._holder, None
            os.close(holder)


def open_slave(slave: str, text: str) -> int:
    """The slave side of a terminal, not as our controlling terminal; close-on-exec."""
    try:
        return os.open(slave, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise OpenError(text, f'open("{slave}", O_RDWR|O_NOCTTY): {strerror(exc)}') from exc


async def _wait_for_slave(master: int, slave: str, interval: float, text: str) -> None:
    """``wait-slave``: return once another process has opened the slave side.

    socat's way: open and close the slave once, which leaves the master in
    hang-up, then poll every ``pty-interval`` (default 1 s) until the hang-up
    is gone, which means that somebody opened the slave.
    """
    os.close(open_slave(slave, text))
    poller = select.poll()
    poller.register(master, select.POLLHUP)
    while any(events & select.POLLHUP for _, events in poller.poll(0)):
        await asyncio.sleep(interval)


async def open_pty(address: Address, ctx: OpenContext) -> Stream:
    """Open ``PTY``: make the terminal, set its options, announce it, link it."""
    text = address_text(address)
    options = address.options
    master, slave = new_master(text)
    owned_link: tuple[str, tuple[int, int]] | None = None
    holder: int | None = None
    try:
        apply_terminal_options(master, options, text)
        mode = options.integer("mode")
        if mode is not None:
            try:
                os.chmod(slave, mode)
            except OSError as exc:
                raise OpenError(text, f'chmod("{slave}", 0{mode:o}): {strerror(exc)}') from exc
        logger.log(NOTICE, "PTY is %s", slave)
        link = options.text("symbolic-link")
        if link is not None:
            unlink_early(link, options, text)
            try:
                os.symlink(slave, link)
                info = os.lstat(link)
            except OSError as exc:
                raise OpenError(text, f'symlink("{slave}", "{link}"): {strerror(exc)}') from exc
            if options.flag("unlink-close", True):
                owned_link = (link, (info.st_dev, info.st_ino))
        if options.flag("pty-wait-slave"):
            await _wait_for_slave(master, slave, options.seconds("pty-interval", 1.0) or 1.0, text)
        else:
            holder = open_slave(slave, text)
    except BaseException:
        os.close(master)
        if holder is not None:
            os.close(holder)
        raise
    return PtyStream(master, holder, label=slave, unlink=owned_link)
