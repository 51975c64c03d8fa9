"""The change history and the watch subscriptions behind ``?watch=true``.

Every write gets the next value of one global counter as its ``resourceVersion`` (as etcd's
revision) and is recorded in a bounded :class:`History`. A watch that resumes from a
``resourceVersion`` replays the recorded changes after it; one older than the oldest recorded
change is answered like the real server: ``410 Gone`` with reason ``Expired``
("too old resource version").

Selectors apply to the old and the new state of each change, as the real watch cache does: an
object that stops matching is reported DELETED, one that starts matching ADDED.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import Gone
from .selectors import FieldSelector, LabelSelector

EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]

#: The annotation of the bookmark that ends the initial events of ``sendInitialEvents=true``.
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass(frozen=True)
class WatchEvent:
    """One event of a watch stream; ``object`` is the caller's own copy."""

    type: EventType
    object: dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One write, as recorded: the stored objects are shared and never modified afterwards."""

    rv: int
    key: tuple[str, str]
    namespace: str | None
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    obj: Mapping[str, Any]
    old: Mapping[str, Any] | None = None


class History:
    """The last ``size`` changes of all resources, oldest first."""

    def __init__(self, size: int) -> None:
        self._changes: collections.deque[Change] = collections.deque()
        self._size = size
        #: Every change with a resourceVersion above this one is still recorded.
        self.floor = 0

    def append(self, change: Change) -> None:
        self._changes.append(change)
        while len(self._changes) > self._size:
            self.floor = self._changes.popleft().rv

    def compact(self, rv: int) -> None:
        """Forget every change up to ``rv`` (as etcd compaction does)."""
        while self._changes and self._changes[0].rv <= rv:
            self._changes.popleft()
        self.floor = max(self.floor, rv)

    def since(self, rv: int, current: int) -> list[Change]:
        """The changes after ``rv``; Gone if some of them are no longer recorded."""
        if rv < self.floor:
            raise Gone(f"too old resource version: {rv} ({current})")
        return [c for c in self._changes if c.rv > rv]


@dataclass(eq=False)
class Subscription:
    """One open watch: the store puts every change of its resource into ``queue``."""

    key: tuple[str, str]
    namespace: str | None
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)

    def wants(self, change: Change) -> bool:
        return change.key == self.key and self.namespace in (None, change.namespace)


@dataclass(frozen=True)
class Filter:
    """The selectors of one watch, applied to both states of a change."""

    labels: LabelSelector
    fields: FieldSelector

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        return obj is not None and self.labels.matches(obj) and self.fields.matches(obj)

    def translate(self, change: Change) -> tuple[EventType, Mapping[str, Any]] | None:
        """The event this watcher sees for a change, or None if it sees nothing."""
        now = self.matches(change.obj)
        if change.type != "MODIFIED":
            return (change.type, change.obj) if now else None
        before = self.matches(change.old)
        if now and before:
            return ("MODIFIED", change.obj)
        if now:
            return ("ADDED", change.obj)
        if before:
            return ("DELETED", change.obj)
        return None
