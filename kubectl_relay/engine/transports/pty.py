"""``PTY``: a new pseudo terminal; the relay uses its master side.

socat's man page: "Generates a pseudo terminal (pty) and uses its master
side. Another process may open the pty's slave side using it like a serial
line or terminal." Like socat on Linux we open ``/dev/ptmx`` (POSIX
``posix_openpt``). A process that closes the slave does not end the session
in socat (1.7 and 1.8 both go on, and the next process to open the slave
takes over); we hold a slave descriptor of our own for the same effect (the
master would otherwise read ``EIO`` after a hangup, and epoll would report
that hangup over and over).

Options:

- ``link=<filename>`` (``symbolic-link``) "Generates a symbolic link that
  points to the actual pseudo terminal (pty)"; removed again on close
  (``unlink-close``), if it is still ours.
- ``mode=`` sets the permissions of the slave device.
- ``wait-slave`` (``pty-wait-slave``) "Blocks the open phase until a process
  opens the slave side of the pty", checking every ``pty-interval`` seconds.
- Terminal settings (socat's TERMIOS group), applied in the order written:
  ``raw`` ("Sets raw mode, thus passing input and output almost
  unprocessed"), ``rawer`` ("Makes terminal rawer than raw option. This option
  implicitly turns off echo"), ``cfmakeraw``, socat's boolean flags (``echo``,
  ``icanon``, ``isig``, ``opost``, ``icrnl``... ``options.TERMIOS_FLAGS``),
  and the line speeds ``ispeed=`` and ``ospeed=`` (a baud rate such as 19200,
  which socat hands to ``cfsetispeed()`` unconverted; we take the rate and set
  its ``B19200`` code, so the number means what it says). Linux keeps one line
  speed (glibc's ``cfsetispeed`` and ``cfsetospeed`` both set ``CBAUD``), so
  either option sets it, and the last one written wins, as in socat. On Linux
  master and slave share one set of settings, so setting them on the master is
  what the slave sees.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import termios
from collections.abc import Callable, Mapping
from typing import Any

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger
from ..options import TERMIOS_FLAGS, Options
from .base import OpenContext, Stream
from .files import FdStream
from .tcp import address_text, strerror
from .unix import unlink_early

_IFLAG, _OFLAG, _CFLAG, _LFLAG, _ISPEED, _OSPEED, _CC = 0, 1, 2, 3, 4, 5, 6
# termios' own type for tcgetattr()'s list: flag words, speeds and a list of bytes.
Attributes = list[Any]


def _raw(attributes: Attributes) -> None:
    # socat 1.8 xiotermios_spec(OPT_RAW).
    attributes[_IFLAG] = attributes[_IFLAG] & ~(
        termios.IGNBRK | termios.BRKINT | termios.IGNPAR | termios.PARMRK | termios.INPCK
        | termios.ISTRIP | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON
        | termios.IXOFF | termios.IUCLC | termios.IXANY | termios.IMAXBEL
    )  # fmt: skip
    attributes[_OFLAG] = attributes[_OFLAG] & ~termios.OPOST
    attributes[_LFLAG] = attributes[_LFLAG] & ~(termios.ISIG | termios.ICANON | termios.XCASE)
    _min_one_no_time(attributes)


def _rawer(attributes: Attributes) -> None:
    # socat 1.8 xiotermios_spec(OPT_TERMIOS_RAWER): everything off, 8 bits.
    attributes[_IFLAG] = attributes[_OFLAG] = attributes[_LFLAG] = 0
    attributes[_CFLAG] = termios.CREAD | termios.CS8
    _min_one_no_time(attributes)


def _cfmakeraw(attributes: Attributes) -> None:
    # The settings of Linux's cfmakeraw(3).
    attributes[_IFLAG] = attributes[_IFLAG] & ~(
        termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
        | termios.IGNCR | termios.ICRNL | termios.IXON
    )  # fmt: skip
    attributes[_OFLAG] = attributes[_OFLAG] & ~termios.OPOST
    attributes[_LFLAG] = attributes[_LFLAG] & ~(
        termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN
    )
    cflag = attributes[_CFLAG] & ~(termios.CSIZE | termios.PARENB)
    attributes[_CFLAG] = cflag | termios.CS8
    _min_one_no_time(attributes)


def _min_one_no_time(attributes: Attributes) -> None:
    cc = attributes[_CC]
    assert isinstance(cc, list)
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0


#: Terminal modes set by one option, by canonical option name.
MODES: Mapping[str, Callable[[Attributes], None]] = {
    "raw": _raw,
    "termios-rawer": _rawer,
    "termios-cfmakeraw": _cfmakeraw,
}

#: Boolean terminal flags: option -> (index of the flag word, bit).
_WORDS = {"iflag": _IFLAG, "oflag": _OFLAG, "cflag": _CFLAG, "lflag": _LFLAG}
FLAGS: Mapping[str, tuple[int, int]] = {
    name: (_WORDS[word], getattr(termios, name.upper()))
    for word, names in TERMIOS_FLAGS.items()
    for name in names
}


#: Line speed options (one speed on Linux: see the module docstring).
SPEEDS = frozenset(("ispeed", "ospeed"))

#: The baud rates the terminal driver knows: rate -> its ``B<rate>`` code.
BAUD_RATES: Mapping[int, int] = {
    int(name[1:]): getattr(termios, name)
    for name in dir(termios)
    if name[0] == "B" and name[1:].isdigit()
}


def _speed_code(name: str, rate: int, text: str) -> int:
    if rate not in BAUD_RATES:
        accepted = ", ".join(str(known) for known in sorted(BAUD_RATES))
        raise OpenError(text, f"{name}={rate}: not a baud rate; accepted: {accepted}")
    return BAUD_RATES[rate]


def apply_terminal_options(fd: int, options: Options, text: str) -> None:
    """Set the terminal options among ``options`` on ``fd``, in the order written."""
    names = [name for name in options if name in MODES or name in FLAGS or name in SPEEDS]
    if not names:
        return
    try:
        attributes: Attributes = termios.tcgetattr(fd)
    except termios.error as exc:
        raise OpenError(text, f"tcgetattr({fd}, ...): {exc.args[-1]}") from None
    for name in names:
        if name in MODES:
            MODES[name](attributes)
            continue
        if name in SPEEDS:
            code = _speed_code(name, options.integer(name) or 0, text)
            attributes[_ISPEED] = attributes[_OSPEED] = code
            continue
        index, bit = FLAGS[name]
        word = attributes[index]
        attributes[index] = word | bit if options.flag(name) else word & ~bit
    try:
        termios.tcsetattr(fd, termios.TCSANOW, attributes)
    except termios.error as exc:
        raise OpenError(text, f"tcsetattr({fd}, TCSANOW, ...): {exc.args[-1]}") from None


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
    """The master side, and the slave descriptor we hold so that the terminal never hangs up."""

    def __init__(
        self,
        master: int,
        holder: int,
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
        holder = open_slave(slave, text)
    except BaseException:
        os.close(master)
        if holder is not None:
            os.close(holder)
        raise
    return PtyStream(master, holder, label=slave, unlink=owned_link)
