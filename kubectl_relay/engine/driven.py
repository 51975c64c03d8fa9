"""Running a coroutine on its futures' callbacks, without a task (connects, accepts)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Driven(Generic[T]):
    """A coroutine run on its futures' callbacks, without a task: the direct connect, an accept.

    A task costs its creation, its registration among the loop's tasks and a
    loop iteration per step; a connect or an accept per connection needs none of that,
    only to be resumed when the future it awaits is done. ``cancel`` cancels
    that future, so the coroutine sees ``CancelledError`` as under a task.
    The coroutine must not need ``asyncio.current_task()`` (no timeouts).
    """

    __slots__ = ("coroutine", "ended", "waiting")

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, T],
        ended: Callable[[T | BaseException], None],
    ) -> None:
        self.coroutine = coroutine
        self.ended = ended  # given the result, or the exception that ended it
        self.waiting: asyncio.Future[Any] | None = None

    def step(self, _: object = None) -> None:
        """Run the coroutine up to its next await (or its end)."""
        self.waiting = None
        try:
            awaited = self.coroutine.send(None)
        except StopIteration as stop:
            self.ended(stop.value)
        except BaseException as exc:  # handed to ``ended``, which re-raises defects
            self.ended(exc)
        else:
            if awaited is None:  # a bare yield (sleep(0)): go on at the next iteration
                asyncio.get_running_loop().call_soon(self.step)
                return
            awaited._asyncio_future_blocking = False
            self.waiting = awaited
            awaited.add_done_callback(self.step)

    def cancel(self) -> None:
        """Cancel what the coroutine awaits: it resumes with ``CancelledError``."""
        if self.waiting is not None:
            self.waiting.cancel()
