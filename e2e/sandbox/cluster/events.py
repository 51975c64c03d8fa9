"""Events, as the kubelet and the controllers post them (``kubectl describe`` shows them).

``post`` never blocks and never fails: events are written in order by one
background task; a repeated event (same object, reason and message) bumps the
``count`` of the first one, as the real event recorder aggregates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from ..api.errors import ApiError
from .informer import StoreLike
from .objects import meta, namespace_of, now

log = logging.getLogger("sandbox.cluster")

#: How many distinct events are remembered for aggregation.
_REMEMBERED = 4096


class EventRecorder:
    """Posts ``v1`` Events about objects."""

    def __init__(self, store: StoreLike, *, host: str) -> None:
        self.store = store
        self.host = host
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str, str] | None] = (
            asyncio.Queue()
        )
        self._seen: dict[tuple[str, str, str], tuple[str, str, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._writer(), name="event recorder")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def post(
        self, obj: Mapping[str, Any], kind: str, reason: str, message: str, component: str
    ) -> None:
        """Queue an event about ``obj`` (``kind`` is Normal or Warning)."""
        involved = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", ""),
            "name": meta(obj).get("name", ""),
            "namespace": namespace_of(obj),
            "uid": meta(obj).get("uid", ""),
            "resourceVersion": meta(obj).get("resourceVersion", ""),
        }
        if self._task is not None:
            self._queue.put_nowait((involved, kind, reason, message, component))

    async def _writer(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            try:
                await self._write(*item)
            except ApiError as exc:  # the namespace is going away, the object is gone...
                log.debug("event not written: %s", exc)

    async def _write(
        self, involved: dict[str, Any], kind: str, reason: str, message: str, component: str
    ) -> None:
        namespace = involved["namespace"]
        stamp = now()
        key = (involved["uid"], reason, message)
        seen = self._seen.get(key)
        if seen is not None:
            event_ns, name, count = seen
            patch = {"count": count + 1, "lastTimestamp": stamp}
            try:
                await self.store.patch("v1", "events", event_ns, name, patch, patch_type="merge")
                self._seen[key] = (event_ns, name, count + 1)
                return
            except ApiError:
                self._seen.pop(key, None)
        name = f"{involved['name']}.{secrets.token_hex(8)}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": component, "host": self.host},
            "reportingComponent": component,
            "reportingInstance": self.host,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self.store.create("v1", "events", namespace, body)
        if len(self._seen) >= _REMEMBERED:
            self._seen.clear()
        self._seen[key] = (namespace, name, 1)
