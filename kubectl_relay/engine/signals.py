"""Which signals a run catches (``-S<sigmask>``), caught from the start.

As in socat, bit N of the mask stands for signal N; the default is socat's
(socat.c ``socat_opts.log_sigs``): HUP, INT, QUIT, ILL, ABRT, BUS, FPE, SEGV
and TERM. A caught signal ends the run with ``exiting on signal N`` (socat's
levels: a notice for INT and HUP, a warning for TERM, an error for the rest)
and status 128 + N; one not caught ends the relay the system's way, silently.

Never caught, whatever the mask: SIGKILL and SIGSTOP (they cannot be),
SIGCHLD (the event loop watches children with it), SIGPIPE (ignored, as
socat does), SIGUSR1 (the statistics), and the faults SIGILL, SIGBUS, SIGFPE
and SIGSEGV: a Python handler only notes a signal and returns, so a real
fault would recur forever.

A signal that an ``EXEC``/``SYSTEM``/``SHELL`` address was told to pass on
(``sighup``, ``sigint``, ``sigquit``) goes to its child instead, and the relay
goes on (``pass_on``, ``forward``); the child's end then ends the session.

``catch_early`` installs plain handlers as soon as the command line is
parsed, before the engine's imports and the event loop (tens of
milliseconds on a busy machine): a signal in that time is noted and ends the
run as soon as it starts, instead of killing the relay silently. socat
installs its handlers about as early, and scripts (socat's test.sh among
them) signal a relay a fraction of a second after starting it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType

#: socat's default ``-S`` mask.
DEFAULT_MASK = sum(
    1 << signum
    for signum in (
        signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGILL, signal.SIGABRT,
        signal.SIGBUS, signal.SIGFPE, signal.SIGSEGV, signal.SIGTERM,
    )
)  # fmt: skip

#: Signals no mask makes the relay catch (see the module docstring).
NEVER_CAUGHT = frozenset(
    (
        signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGUSR1,
        signal.SIGILL, signal.SIGBUS, signal.SIGFPE, signal.SIGSEGV,
    )
)  # fmt: skip

#: Signals received before the event loop took over, in order.
_early: list[int] = []

#: Children to pass a signal on to, by signal.
_passed_on: dict[int, set[int]] = {}


def caught(mask: int | None) -> list[signal.Signals]:
    """The signals a run catches for the ``-S`` ``mask`` (None: socat's default)."""
    mask = DEFAULT_MASK if mask is None else mask
    return [
        signum
        for signum in sorted(signal.valid_signals())
        if mask >> signum & 1 and signum not in NEVER_CAUGHT
    ]


def exit_log_level(signum: int) -> int:
    """The level of the ``exiting on signal N`` line for ``signum`` (socat.c ``socat_signal``)."""
    # ``log`` is imported here: ``catch_early`` runs before the log is set up
    # (and before a TCP listener binds), where ``logging`` would cost its import.
    from .log import ERROR, NOTICE, WARNING  # noqa: PLC0415

    levels: dict[int, int] = {signal.SIGTERM: WARNING, signal.SIGINT: NOTICE, signal.SIGHUP: NOTICE}
    return levels.get(signum, ERROR)


def catch_early(mask: int | None) -> None:
    """Note the signals of ``mask`` until the event loop takes them over (``take_early``)."""
    wanted = caught(mask)
    if signal.SIGINT not in wanted:
        # Python turns SIGINT into KeyboardInterrupt; uncaught, it must end us as it ends socat.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    for signum in wanted:
        signal.signal(signum, _note)


def take_early() -> int | None:
    """The first signal noted by ``catch_early``'s handlers, if any."""
    first = _early[0] if _early else None
    _early.clear()
    return first


def _note(signum: int, _frame: FrameType | None) -> None:
    _early.append(signum)


def pass_on(pid: int, signums: tuple[int, ...]) -> None:
    """From now on, ``signums`` go to the child ``pid`` instead of ending the relay."""
    for signum in signums:
        _passed_on.setdefault(signum, set()).add(pid)


def stop_passing_on(pid: int) -> None:
    """The child ``pid`` has exited: nothing more goes to it."""
    for pids in _passed_on.values():
        pids.discard(pid)


def forward(signum: int) -> bool:
    """Send ``signum`` to the children that take it; False when none does."""
    pids = sorted(_passed_on.get(signum, ()))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    return bool(pids)
