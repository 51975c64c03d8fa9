"""The descriptor budget of a forking listener: accept only what can be served.

socat forks a child per connection and, out of descriptors, simply does not
accept until it can: the kernel keeps further peers in the listen backlog
and they are served late, not refused. A relay that accepts regardless must
then fail the session, and under uvloop the event loop itself resets every
pending connection once ``accept()`` reports EMFILE (libuv's way out). So
the listeners here ask first: a new session needs a few descriptors (its
peer, its upstream), and some are kept for everything else the process
opens (the metrics endpoint, name lookups, log files).

It also remembers which descriptors the process inherited, so that ``FD:<n>``
reaches only those (recorded first thing at start-up, before the event loop).
"""

from __future__ import annotations

import os
import resource
import sys
import time

#: Descriptors a session of the fast path takes (its peer and its upstream).
SOCKET_SESSION = 2
#: What a general-path session is counted for: its peer and address 2. A
#: process (EXEC) takes more; should that run out, its session fails alone
#: with its own E line, as any session that cannot open address 2.
ANY_SESSION = 2
#: Kept free for what is not a session: the metrics endpoint serves up to 8
#: connections, plus name lookups, a trace or log file, a child's pipes.
RESERVED = 16
#: The most often the shortage is said.
FULL_WARNING_EVERY = 10.0


class DescriptorBudget:
    """Whether one more session fits under ``RLIMIT_NOFILE``.

    Sessions count for the descriptors they may take from the moment they
    are accepted, before they open them (a session opening its upstream
    has not taken the descriptor yet): the budget is what the process had
    open when serving began, plus ``per_session`` for each running session.
    """

    def __init__(self, per_session: int) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.limit: int | None = None if soft == resource.RLIM_INFINITY else soft
        self.per_session = per_session
        self.base = open_descriptors()
        self.sessions = 0
        self._warned = -FULL_WARNING_EVERY  # when the shortage was last said

    def has_room(self, more: int = 0) -> bool:
        """Whether a new session's descriptors (and ``more``) fit, with ``RESERVED`` to spare."""
        if self.limit is None:
            return True
        needed = self.base + self.per_session * (self.sessions + 1) + RESERVED + more
        room = needed <= self.limit
        if more:
            return room
        # A listener at its limit runs short again at each session that frees room:
        # said once a while, not per session (it was 22 lines for 30 sessions).
        if not room and time.monotonic() - self._warned >= FULL_WARNING_EVERY:
            # Imported here: ``cli`` records the inherited descriptors before
            # it knows whether it will log at all (``-V`` loads no ``logging``).
            from .log import logger  # noqa: PLC0415

            logger.warning(
                "open files limit (%d) reached: not accepting until a session ends", self.limit
            )
            self._warned = time.monotonic()
        return room

    def session_started(self) -> None:
        """A session was accepted: its descriptors are spoken for."""
        self.sessions += 1

    def session_ended(self) -> None:
        """A session ended: its descriptors are free again."""
        self.sessions -= 1


def open_descriptors() -> int:
    """How many descriptors this process has open."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own
    except OSError:
        return 3


#: macOS refuses a soft RLIMIT_NOFILE of RLIM_INFINITY, its usual hard limit; its
#: setrlimit(2) asks for ``min(OPEN_MAX, rlim_max)`` instead, OPEN_MAX being 10,240
#: (``<sys/syslimits.h>``). Its shells give 256.
DARWIN_OPEN_MAX = 10240


def raise_open_files_limit() -> tuple[int, int] | None:
    """Raise the soft descriptor limit to the hard one; ``(before, after)`` if it rose.

    A soft limit of 1,024 is kept for programs that use ``select()``; this
    one uses epoll. Under it a forking listener serves about 500 sessions at
    once (two descriptors each) and leaves the others in the backlog. It is
    what containers get from containerd 2 (1,024 soft, 524,288 hard: AKS
    nodes with containerd 2, Docker 29), whose notes ask software that needs
    more to raise its own soft limit; Go programs do it at start-up, and
    HAProxy sets it from its ``maxconn``. On macOS, to ``DARWIN_OPEN_MAX``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard
    if sys.platform == "darwin":
        wanted = DARWIN_OPEN_MAX if hard == resource.RLIM_INFINITY else min(hard, DARWIN_OPEN_MAX)
    # An "unlimited" hard limit on Linux is more than setrlimit grants a process
    # (fs.nr_open): left as it is (Go's same attempt fails there).
    if resource.RLIM_INFINITY in (soft, wanted) or soft >= wanted:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError):
        return None  # refused (a sandbox): the budget works within the old limit
    return soft, wanted


#: The descriptors this process was started with (``record_inherited_descriptors``);
#: ``None`` until recorded (the engine used as a library: any descriptor goes).
_inherited_fds: frozenset[int] | None = None


def record_inherited_descriptors() -> None:
    """Remember which descriptors are open now, before relay opens any of its own.

    ``FD:<n>`` and the standard streams then take only those: ``FD:3`` when 3
    was not inherited would otherwise reach whatever relay opened there (its
    event loop's epoll descriptor, a log file) and relay its own internals.
    """
    global _inherited_fds
    try:
        listed = os.listdir("/proc/self/fd")
    except OSError:
        listed = [str(fd) for fd in range(3)]
    # The listing's own directory descriptor is closed again by now: keep only
    # the descriptors that are still open.
    _inherited_fds = frozenset(fd for fd in map(int, listed) if _is_open(fd))


def was_inherited(fd: int) -> bool:
    """Whether ``fd`` was open when the process started (True before anything was recorded)."""
    return _inherited_fds is None or fd in _inherited_fds


def _is_open(fd: int) -> bool:
    try:
        os.get_inheritable(fd)  # fcntl(fd, F_GETFD): EBADF when fd is not open
    except OSError:
        return False
    return True
