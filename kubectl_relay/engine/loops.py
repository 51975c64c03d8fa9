"""The event loop the engine and the plugin run on: uvloop's, where it is installed.

uvloop is a dependency everywhere but Windows; without it, asyncio's own loop
serves (``None`` as a runner's ``loop_factory``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_factory() -> LoopFactory | None:
    """``uvloop.new_event_loop``, or ``None`` where uvloop cannot be imported."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory
