"""The base of the sandbox's controllers: informers in, reconcile per key, requeue on failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ..api.errors import ApiError, Conflict, NotFound
from .events import EventRecorder
from .informer import Informers, Key, StoreLike, WorkQueue, cancel_and_wait
from .ipam import Networks
from .objects import Body, controller_ref, name_of, namespace_of
from .settings import ClusterSettings

log = logging.getLogger("sandbox.cluster")

#: Retry delay after a failed reconcile (a conflict retries sooner).
RETRY_DELAY = 0.5
CONFLICT_DELAY = 0.05


@dataclass
class ClusterContext:
    """What every controller and the kubelet share."""

    store: StoreLike
    informers: Informers
    settings: ClusterSettings
    events: EventRecorder
    networks: Networks


class Controller:
    """Reconciles keys from a work queue with a few workers.

    Subclasses register informer handlers in ``__init__`` (mapping changes to
    keys with ``self.queue.add``) and implement ``reconcile``, which returns a
    delay to look again after, or None.
    """

    name: ClassVar[str] = "controller"
    workers: ClassVar[int] = 4

    def __init__(self, ctx: ClusterContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.settings = ctx.settings
        self.queue = WorkQueue()
        self._tasks: list[asyncio.Task[None]] = []

    async def reconcile(self, key: Key) -> float | None:
        """Bring one object to its desired state."""
        raise NotImplementedError

    def enqueue(self, kind: str, obj: Body) -> None:
        """Informer handler: look at the changed object itself."""
        self.queue.add((namespace_of(obj), name_of(obj)))

    def enqueue_owner(self, owner_kind: str) -> Callable[[str, Body], None]:
        """An informer handler that looks at the ``owner_kind`` controlling a changed child."""

        def handler(kind: str, child: Body) -> None:
            ref = controller_ref(child)
            if ref and ref.get("kind") == owner_kind:
                self.queue.add((namespace_of(child), str(ref["name"])))

        return handler

    def start(self) -> None:
        """Start the workers (after the informers have synced)."""
        for index in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"{self.name} {index}"))

    async def stop(self) -> None:
        """Stop the workers."""
        self.queue.close()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            assert isinstance(key, tuple)
            try:
                again = await self.reconcile(key)
            except NotFound:
                again = None  # the object (or its owner) is gone: nothing left to do
            except Conflict:
                again = CONFLICT_DELAY
            except ApiError as exc:
                log.warning("%s %s/%s: %s", self.name, key[0], key[1], exc)
                again = RETRY_DELAY
            except Exception:
                log.exception("%s %s/%s failed", self.name, key[0], key[1])
                again = RETRY_DELAY
            finally:
                self.queue.done(key)
            if again is not None:
                self.queue.add_after(key, again)
