"""Files and pipes: ``PIPE``, ``PIPE:<path>``, ``OPEN``, ``GOPEN``, ``CREATE``.

Also ``FdStream``, the stream over descriptors this process opened itself,
which the process transport reuses for ``EXEC``/``SYSTEM`` with ``pipes``.

How reading and writing avoid stalling the event loop: pipes, FIFOs,
terminals and most character devices are pollable, so they are switched to
non-blocking mode (they are ours, nobody else shares them) and wait on the
loop. Regular files, block devices and the few character devices that epoll
refuses (``/dev/null``, ``/dev/zero``) cannot be polled but never wait for a
peer either: one read or write of a transfer block is served from the page
cache or a single disk request, so we call ``read``/``write`` directly on
the loop's thread. A helper thread per call would cost more than the call
itself and could not be interrupted any better than the call.
"""

from __future__ import annotations

import array
import asyncio
import errno
import fcntl
import mmap
import os
import select
import stat
from collections.abc import Callable

from ..addresses import Address
from ..errors import OpenError
from ..log import NOTICE, logger
from ..options import Options
from .base import OpenContext, Stream, wait_readable, wait_writable
from .tcp import address_text, expect_params, strerror
from .unix import connect as unix_connect
from .unix import mode_option, remove_path, unlink_early

#: socat's default permissions for files and FIFOs it creates (before umask).
DEFAULT_MODE = 0o666

#: ``fs-*`` options: the file attribute each sets (linux/fs.h ``FS_*_FL``, as chattr(1) sets them).
FS_ATTRIBUTES = {
    "fs-secrm": 0x1, "fs-unrm": 0x2, "fs-compr": 0x4, "fs-sync": 0x8,
    "fs-immutable": 0x10, "fs-append": 0x20, "fs-nodump": 0x40, "fs-noatime": 0x80,
    "fs-journal-data": 0x4000, "fs-notail": 0x8000, "fs-dirsync": 0x10000,
    "fs-topdir": 0x20000,
}  # fmt: skip
#: linux/fs.h ``FS_IOC_GETFLAGS``/``FS_IOC_SETFLAGS`` on 64-bit Linux (``_IOR('f', 1, long)``).
_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS = 0x80086601, 0x40086602
#: O_DIRECT wants buffers aligned to the device's block; a page is aligned for every device.
_DIRECT_ALIGNMENT = mmap.PAGESIZE

#: socat's ``ddirection[]`` words, for "... for reading and writing".
_DIRECTIONS = {
    (True, False): "reading",
    (False, True): "writing",
    (True, True): "reading and writing",
}


def file_type_name(mode: int | None) -> str:
    """socat's ``filetypenames[]`` entry for a ``st_mode`` (``undef`` when missing)."""
    if mode is None:
        return "undef"
    names = {
        stat.S_IFIFO: "named pipe",
        stat.S_IFCHR: "character device",
        stat.S_IFDIR: "directory",
        stat.S_IFBLK: "block device",
        stat.S_IFREG: "regular file",
        stat.S_IFLNK: "symbolic link",
        stat.S_IFSOCK: "socket",
    }
    return names.get(stat.S_IFMT(mode), "undef")


def is_pollable(fd: int) -> bool:
    """Whether epoll accepts ``fd`` (it refuses regular files and some devices)."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode) or stat.S_ISDIR(mode):
        return False
    with select.epoll() as probe:
        try:
            probe.register(fd, select.EPOLLIN)
        except PermissionError:
            return False
    return True


class FdStream(Stream):
    """A stream over one descriptor used both ways, or a read and a write descriptor.

    The stream owns its descriptors and closes them; ``unlink`` names a file
    we created (a FIFO) to remove on close while it is still ours.
    """

    def __init__(
        self,
        read_fd: int | None,
        write_fd: int | None,
        *,
        label: str,
        unlink: tuple[str, tuple[int, int]] | None = None,
        wait_before_first_read: bool = False,
        direct: bool = False,
        restore_terminal: Callable[[], None] | None = None,
    ) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd
        self.readable = read_fd is not None
        self.writable = write_fd is not None
        self.label = label
        self.env = {}
        self._unlink = unlink
        # A FIFO opened read-only before any writer: read() would report EOF
        # at once, while socat's blocking open() waits for the first writer.
        self._wait_first = wait_before_first_read
        self._write_closed = False
        self._closed = False
        # O_DIRECT (o-direct): the transfer's buffers are not aligned, so reads
        # and writes go through this page-aligned one (mmap memory is).
        self._aligned: mmap.mmap | None = None
        self._unread = b""
        self._direct = direct
        #: Puts back the settings of a terminal we changed (terminal.py).
        self._restore_terminal = restore_terminal
        for fd in {read_fd, write_fd} - {None}:
            assert fd is not None
            if is_pollable(fd):
                os.set_blocking(fd, False)

    async def read_into(self, buffer: memoryview) -> int:
        fd = self._read_fd
        if fd is None or self._closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if self._wait_first:
            if not await self._wait_readable(fd):
                return 0
            self._wait_first = False
        if self._direct:
            return self._read_direct(fd, buffer)
        while True:
            try:
                return os.readv(fd, [buffer])
            except (BlockingIOError, InterruptedError):
                if not await self._wait_readable(fd):
                    return 0

    def _aligned_buffer(self, size: int) -> memoryview:
        """A page-aligned buffer of at least ``size`` bytes, rounded up to whole pages."""
        pages = -(-max(size, 1) // _DIRECT_ALIGNMENT) * _DIRECT_ALIGNMENT
        if self._aligned is None or len(self._aligned) < pages:
            if self._aligned is not None:
                self._aligned.close()
            self._aligned = mmap.mmap(-1, pages)
        return memoryview(self._aligned)[:pages]

    def _read_direct(self, fd: int, buffer: memoryview) -> int:
        # Whole pages only: O_DIRECT needs an aligned length too. What does
        # not fit the caller's buffer waits in _unread for the next read.
        # Regular files only (open refuses O_DIRECT elsewhere): no waiting.
        if not self._unread:
            aligned = self._aligned_buffer(len(buffer))
            self._unread = bytes(aligned[: os.readv(fd, [aligned])])
        count = min(len(self._unread), len(buffer))
        buffer[:count] = self._unread[:count]
        self._unread = self._unread[count:]
        return count

    async def _wait_readable(self, fd: int) -> bool:
        """Wait until ``fd`` can be read; False ends the input instead (see process.py)."""
        await wait_readable(fd)
        return True

    async def write(self, data: memoryview) -> None:
        fd = self._write_fd
        if fd is None or self._write_closed or self._closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if self._direct:
            # The length stays the caller's: a length the device refuses is its EINVAL, as in socat.
            aligned = self._aligned_buffer(len(data))[: len(data)]
            aligned[:] = data
            data = aligned
        while data:
            try:
                written = os.write(fd, data)
            except (BlockingIOError, InterruptedError):
                await wait_writable(fd)
                continue
            data = data[written:]

    async def shutdown_write(self) -> None:
        """Close a separate write descriptor, so the reader at the other end sees EOF.

        One descriptor used both ways (a FIFO or file opened read-write) has
        no half-close: socat leaves it open until the address is closed.
        """
        if self._write_closed or self._write_fd is None:
            return
        self._write_closed = True
        if self._write_fd != self._read_fd:
            _close(self._write_fd)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._restore_terminal is not None:
            self._restore_terminal()
        if self._read_fd is not None:
            _close(self._read_fd)
        separate = self._write_fd is not None and self._write_fd != self._read_fd
        if separate and not self._write_closed:
            assert self._write_fd is not None
            _close(self._write_fd)
        self._write_closed = True
        if self._aligned is not None:
            self._aligned.close()
        if self._unlink is not None:
            path, identity = self._unlink
            self._unlink = None
            remove_path(path, identity)

    def fileno(self) -> int | None:
        if self._closed or self._read_fd != self._write_fd:
            return None
        return self._read_fd

    def descriptors(self) -> tuple[int | None, int | None]:
        return (None, None) if self._closed else (self._read_fd, self._write_fd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as exc:
        logger.info("close(%d): %s", fd, strerror(exc))


def _octal(value: int) -> str:
    """C's ``%#o``: ``02``, ``0666``, and ``0`` for zero."""
    return f"0{value:o}" if value else "0"


def _access(options: Options) -> tuple[int, bool]:
    """The access mode from ``rdonly``/``wronly``/``rdwr``; True when one was given."""
    if options.flag("rdonly"):
        return os.O_RDONLY, True
    if options.flag("wronly"):
        return os.O_WRONLY, True
    if options.flag("rdwr"):
        return os.O_RDWR, True
    return os.O_RDWR, False


def _open_flags(options: Options) -> int:
    """``creat``, ``excl``, ``append``, ``trunc``, ``o-noatime``, ``o-direct``: ``open()`` flags."""
    flags = 0
    for name, flag in (
        ("creat", os.O_CREAT),
        ("excl", os.O_EXCL),
        ("append", os.O_APPEND),
        ("trunc", os.O_TRUNC),
        ("o-noatime", os.O_NOATIME),
        ("o-direct", os.O_DIRECT),
    ):
        if options.flag(name):
            flags |= flag
    return flags


def _set_attributes(fd: int, options: Options, text: str) -> None:
    """Add the ``fs-*`` attributes to the file open on ``fd`` (as ``chattr +X``)."""
    wanted = [
        FS_ATTRIBUTES[name] for name in options if name in FS_ATTRIBUTES and options.flag(name)
    ]
    if not wanted:
        return
    attributes = array.array("l", [0])
    try:
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, attributes, True)
        attributes[0] |= sum(wanted)
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, attributes, True)
    except OSError as exc:
        os.close(fd)
        raise OpenError(text, f"ioctl({fd}, FS_IOC_SETFLAGS, ...): {strerror(exc)}") from exc


def _stat_mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


async def _open(path: str, flags: int, mode: int, text: str, umask: int | None = None) -> int:
    """``open()`` without blocking the loop, worded like socat on failure.

    Every descriptor is opened non-blocking: opening a FIFO or a terminal
    would otherwise wait. A FIFO opened for writing only fails with ``ENXIO``
    until a reader comes; socat's blocking ``open()`` waits for that reader,
    so we retry with a growing pause.
    """
    pause = 0.001
    while True:
        # socat's umask option holds for the open() only: restored at once,
        # before anything else (a SYSTEM child, say) could see it.
        previous = os.umask(umask) if umask is not None else None
        try:
            return os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
        except OSError as exc:
            waiting_reader = exc.errno == errno.ENXIO and flags & os.O_ACCMODE == os.O_WRONLY
            if waiting_reader and stat.S_ISFIFO(_stat_mode(path) or 0):
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            raise OpenError(
                text, f'open("{path}", {_octal(flags)}, {_octal(mode)}): {strerror(exc)}'
            ) from exc
        finally:
            if previous is not None:
                os.umask(previous)


def _stream_for(
    fd: int,
    flags: int,
    label: str,
    *,
    unlink: tuple[str, tuple[int, int]] | None = None,
    wait_before_first_read: bool = False,
    options: Options | None = None,
    text: str = "",
) -> FdStream:
    """One descriptor as a stream, readable and writable as its access mode allows.

    ``options``: the address's, for the settings of a terminal (``OPEN:/dev/ttyS0,raw``).
    """
    access = flags & os.O_ACCMODE
    read_fd = fd if access in (os.O_RDONLY, os.O_RDWR) else None
    write_fd = fd if access in (os.O_WRONLY, os.O_RDWR) else None
    try:
        restore = None
        if options:  # the terminal module only when there may be terminal options
            from .terminal import terminal_restorer  # noqa: PLC0415

            restore = terminal_restorer(fd, options, text)
        return FdStream(
            read_fd,
            write_fd,
            label=label,
            unlink=unlink,
            wait_before_first_read=wait_before_first_read,
            direct=bool(flags & os.O_DIRECT),
            restore_terminal=restore,
        )
    except BaseException:
        os.close(fd)
        raise


async def open_pipe(address: Address, ctx: OpenContext) -> Stream:
    """``PIPE`` (an unnamed pipe that echoes) or ``PIPE:<path>`` (a named pipe)."""
    text = address_text(address)
    if not address.params:
        return _unnamed_pipe(text)
    (path,) = expect_params(address, 1, non_empty=True)
    options = address.options
    unlink_early(path, options, text)
    access, _ = _access(options)
    readable = access != os.O_WRONLY
    writable = access != os.O_RDONLY
    direction = _DIRECTIONS[(readable, writable)]
    unlink: tuple[str, tuple[int, int]] | None = None
    mode = _stat_mode(path)
    if mode is None:
        perm = mode_option(options, text, "perm", "mode")
        umask = mode_option(options, text, "umask")
        previous = os.umask(umask) if umask is not None else None
        try:
            os.mkfifo(path, DEFAULT_MODE if perm is None else perm)
        except OSError as exc:
            shown = DEFAULT_MODE if perm is None else perm
            raise OpenError(text, f"mkfifo({path}, {shown}): {strerror(exc)}") from exc
        finally:
            if previous is not None:
                os.umask(previous)
        logger.log(NOTICE, 'created named pipe "%s" for %s', path, direction)
        try:
            info = os.lstat(path)
        except OSError as exc:
            raise OpenError(text, f'lstat("{path}"): {strerror(exc)}') from exc
        # socat: "the named pipe is removed when the address is closed (but
        # see option unlink-close)"; only a pipe it created.
        if options.flag("unlink-close", True):
            unlink = (path, (info.st_dev, info.st_ino))
        mode = info.st_mode
    else:
        logger.log(NOTICE, 'opening %s "%s" for %s', file_type_name(mode), path, direction)
    try:
        # Read-write by default, as socat in a bidirectional context: the pipe
        # then never reports EOF while writers come and go.
        fd = await _open(path, access, DEFAULT_MODE, text)
    except BaseException:
        if unlink is not None:
            remove_path(*unlink)
        raise
    fifo_reader = access == os.O_RDONLY and stat.S_ISFIFO(mode)
    return _stream_for(
        fd,
        access,
        f'named pipe "{path}"',
        unlink=unlink,
        wait_before_first_read=fifo_reader,
    )


def _unnamed_pipe(text: str) -> Stream:
    try:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    except OSError as exc:
        raise OpenError(text, f"pipe(...): {strerror(exc)}") from exc
    logger.log(NOTICE, "writing to and reading from unnamed pipe")
    try:
        return FdStream(read_fd, write_fd, label="unnamed pipe")
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise


async def open_file(address: Address, ctx: OpenContext) -> Stream:
    """``OPEN:<path>``, ``GOPEN:<path>`` or ``CREATE:<path>``."""
    text = address_text(address)
    (path,) = expect_params(address, 1, non_empty=True)
    options = address.options
    unlink_early(path, options, text)
    perm = mode_option(options, text, "perm", "mode")
    mode = DEFAULT_MODE if perm is None else perm
    umask = mode_option(options, text, "umask")
    existing = _stat_mode(path)
    if address.keyword == "CREATE":
        # socat: "Opens <filename> with creat() and uses the file descriptor
        # for writing" - creat() is O_CREAT|O_WRONLY|O_TRUNC.
        flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC | _open_flags(options)
        logger.log(NOTICE, 'creating regular file "%s" for writing', path)
        fd = await _open(path, flags, mode, text, umask)
        _set_attributes(fd, options, text)
        return _stream_for(fd, flags, f'file "{path}"')
    if address.keyword == "GOPEN":
        if existing is not None and stat.S_ISSOCK(existing):
            # socat: "In case of a UNIX domain socket, socat connects; if
            # connecting fails, socat assumes a datagram socket".
            return await unix_connect(Address("UNIX-CLIENT", (path,), options), ctx)
        # socat: "If the entry is not a socket, socat opens it applying the
        # O_APPEND flag. If it does not exist, it is opened with flag O_CREAT".
        extra = os.O_APPEND | (os.O_CREAT if existing is None else 0)
    else:
        extra = 0
    access, explicit = _access(options)
    flags = access | extra | _open_flags(options)
    direction = _DIRECTIONS[(access != os.O_WRONLY, access != os.O_RDONLY)]
    logger.log(NOTICE, 'opening %s "%s" for %s', file_type_name(existing), path, direction)
    try:
        fd = await _open(path, flags, mode, text, umask)
    except OpenError as exc:
        cause = exc.__cause__
        denied = isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EROFS)
        if explicit or not denied:
            raise
        # We do not know the transfer direction (socat opens read-only under
        # -u): a file we may only read, or only write, still serves that way.
        logger.info("%s", exc.reason)
        fd, flags = await _open_one_way(path, flags, mode, text, exc)
    _set_attributes(fd, options, text)
    kind = file_type_name(_stat_mode(path))
    fifo_reader = flags & os.O_ACCMODE == os.O_RDONLY and stat.S_ISFIFO(_stat_mode(path) or 0)
    return _stream_for(
        fd,
        flags,
        f'{kind} "{path}"',
        wait_before_first_read=fifo_reader,
        options=options,
        text=text,
    )


async def _open_one_way(
    path: str, flags: int, mode: int, text: str, failure: OpenError
) -> tuple[int, int]:
    """Retry a denied read-write open read-only, then write-only; else the first failure."""
    for access in (os.O_RDONLY, os.O_WRONLY):
        one_way = flags & ~os.O_ACCMODE | access
        try:
            return await _open(path, one_way, mode, text), one_way
        except OpenError:
            continue
    raise failure
