"""The event loop the engine and the plugin run on: uvloop's, where it is installed.

uvloop is a dependency everywhere but Windows; without it, asyncio's own loop
serves (``None`` as a runner's ``loop_factory``).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_factory() -> LoopFactory | None:
    """``uvloop.new_event_loop``, or ``None`` where uvloop cannot be imported."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def stop_handling(loop: asyncio.AbstractEventLoop, signums: Iterable[int]) -> None:
    """Take ``signums`` back from the loop: from then on, one ends the process at once.

    The run has ended and the relay exits. asyncio gives SIGINT back to
    Python's handler, whose KeyboardInterrupt, raised by a second Ctrl-C in
    the loop's teardown, printed a traceback (and sometimes exit status 1);
    SIGINT's default ends the process as SIGTERM's does, without a word.
    """
    for signum in signums:
        loop.remove_signal_handler(signum)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
