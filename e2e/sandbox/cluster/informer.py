"""Watch-backed caches and work queues: the machinery every controller of the sandbox shares.

An ``Informer`` lists one resource, then watches it from the list's
resourceVersion, and keeps a cache of every object; handlers hear about each
change. When a watch ends or fails (the store closed it, 410 Gone), it lists
again and reports what changed in between, as client-go's reflector does.

A ``WorkQueue`` holds keys to reconcile: a key queued twice before a worker
takes it is reconciled once, and a key is never reconciled by two workers at
the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

from .objects import Body, meta

log = logging.getLogger("sandbox.cluster")

#: Cache keys: (namespace, name); namespace is "" for cluster-scoped objects.
Key = tuple[str, str]

#: (event type, object) -> None; ``DELETED`` carries the last known state.
Handler = Callable[[str, Body], None]

#: Wait before listing again after a watch failed.
RELIST_DELAY = 0.2


class StoreLike(Protocol):
    """The part of the API server's Store the controllers use."""

    async def create(
        self, api_version: str, plural: str, namespace: str | None, body: Any
    ) -> Body: ...
    async def get(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> Body: ...
    async def list(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Body], str]: ...
    async def replace(
        self, api_version: str, plural: str, namespace: str | None, name: str, body: Any
    ) -> Body: ...
    async def replace_status(
        self, api_version: str, plural: str, namespace: str | None, name: str, body: Any
    ) -> Body: ...
    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: Any,
        subresource: Any = None,
    ) -> Body: ...
    async def delete(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
    ) -> Body | None: ...
    def watch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Any: ...


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended (its cancellation swallowed)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def key_of(obj: Body) -> Key:
    """The cache key of an object."""
    metadata = meta(obj)
    return (str(metadata.get("namespace") or ""), str(metadata.get("name", "")))


class Informer:
    """A live cache of one resource type, with change handlers."""

    def __init__(self, store: StoreLike, api_version: str, plural: str) -> None:
        self.store = store
        self.api_version = api_version
        self.plural = plural
        self.cache: dict[Key, Body] = {}
        self.synced = asyncio.Event()
        self._handlers: list[Handler] = []

    def add_handler(self, handler: Handler) -> None:
        """Call ``handler`` for every change (and for every cached object, right away)."""
        self._handlers.append(handler)
        for obj in list(self.cache.values()):
            handler("ADDED", obj)

    def get(self, namespace: str, name: str) -> Body | None:
        """The cached object, or None."""
        return self.cache.get((namespace, name))

    def items(self, namespace: str | None = None) -> list[Body]:
        """Cached objects, in one namespace or all."""
        return [o for (ns, _), o in self.cache.items() if namespace is None or ns == namespace]

    def _emit(self, kind: str, obj: Body) -> None:
        for handler in self._handlers:
            try:
                handler(kind, obj)
            except Exception:  # a handler's bug must not stop the cache
                log.exception("handler of %s failed", self.plural)

    async def run(self) -> None:
        """List and watch until cancelled."""
        while True:
            try:
                version = await self._relist()
                self.synced.set()
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Gone, a closed store...: start over from a list
                log.debug("watch of %s ended: %s", self.plural, exc)
            await asyncio.sleep(RELIST_DELAY)

    async def _relist(self) -> str:
        items, version = await self.store.list(self.api_version, self.plural)
        fresh = {key_of(o): o for o in items}
        for key in [k for k in self.cache if k not in fresh]:
            self._emit("DELETED", self.cache.pop(key))
        for key, obj in fresh.items():
            old = self.cache.get(key)
            self.cache[key] = obj
            if old is None:
                self._emit("ADDED", obj)
            elif meta(old).get("resourceVersion") != meta(obj).get("resourceVersion"):
                self._emit("MODIFIED", obj)
        return version

    async def _watch(self, version: str) -> None:
        stream = self.store.watch(self.api_version, self.plural, resource_version=version)
        try:
            async for event in stream:
                if event.type == "BOOKMARK":
                    continue
                obj = event.object
                key = key_of(obj)
                if event.type == "DELETED":
                    self.cache.pop(key, None)
                else:
                    self.cache[key] = obj
                self._emit(event.type, obj)
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()


class Informers:
    """One informer per resource type, shared by every controller."""

    def __init__(self, store: StoreLike) -> None:
        self.store = store
        self._informers: dict[tuple[str, str], Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def get(self, api_version: str, plural: str) -> Informer:
        """The informer of a resource type (created on first use, started by ``start``)."""
        key = (api_version, plural)
        if key not in self._informers:
            self._informers[key] = Informer(self.store, api_version, plural)
        return self._informers[key]

    async def start(self) -> None:
        """Start every informer and wait until each has listed once."""
        for key, informer in self._informers.items():
            self._tasks.append(asyncio.create_task(informer.run(), name=f"informer {key[1]}"))
        await asyncio.gather(*(i.synced.wait() for i in self._informers.values()))

    async def stop(self) -> None:
        """Stop every informer."""
        await cancel_and_wait(self._tasks)
        self._tasks.clear()


class WorkQueue:
    """Keys waiting to be reconciled, deduplicated; supports delayed re-adds."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}

    def add(self, key: Hashable) -> None:
        """Queue ``key`` (once, however often it is added before a worker takes it)."""
        if key in self._active:
            self._again.add(key)  # reconcile again after the running reconcile ends
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (an earlier timer for it is kept if sooner)."""
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        when = loop.time() + delay
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Hashable:
        """The next key; it stays active until ``done``."""
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Hashable) -> None:
        """The reconcile of ``key`` ended."""
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def close(self) -> None:
        """Cancel the pending timers."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
