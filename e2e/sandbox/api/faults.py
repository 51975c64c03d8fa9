"""Fault injection: failing requests, delays, dropped watches, broken port-forwards.

Rules match a request by method (``"*"`` for any) and a regular expression searched in the
request's path and in its path with the query string (``r"/pods$"`` or ``r"watch=true"`` both
work). Each rule fires ``times`` times (``None``: forever), oldest rule first.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ApiError

#: The reason the real server gives with each status code (for Status bodies of failures).
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


@dataclass
class _Rule:
    method: str
    pattern: re.Pattern[str]
    times: int | None
    status: int = 0
    reason: str = ""
    message: str = ""
    delay: float = 0.0
    retry_after: int | None = None

    def matches(self, method: str, path: str, path_qs: str) -> bool:
        return (self.method in ("*", method.upper())
                and (self.pattern.search(path) is not None
                     or self.pattern.search(path_qs) is not None))


@dataclass
class Faults:
    """The fault-injection controls of one :class:`ApiServer` (``server.faults``)."""

    _rules: list[_Rule] = field(default_factory=list)
    _watch_droppers: set[Callable[[], None]] = field(default_factory=set)
    _forward_breakers: set[Callable[[], None]] = field(default_factory=set)
    #: How many requests each rule has failed or delayed so far, for assertions.
    fired: int = 0

    def fail(
        self, method: str, path_regex: str, *, status: int = 500, times: int | None = 1,
        reason: str | None = None, message: str | None = None, retry_after: int | None = None,
    ) -> None:
        """Make matching requests fail with a ``kind: Status`` body of ``status``."""
        self._rules.append(_Rule(
            method.upper(), re.compile(path_regex), times, status=status,
            reason=reason or _REASONS.get(status, "InternalError"),
            message=message or f"injected fault: {status}", retry_after=retry_after,
        ))

    def delay(self, method: str, path_regex: str, seconds: float, *, times: int | None = 1) -> None:
        """Delay matching requests by ``seconds`` before serving them."""
        self._rules.append(_Rule(method.upper(), re.compile(path_regex), times, delay=seconds))

    def clear(self) -> None:
        """Remove every pending rule."""
        self._rules.clear()

    def drop_watches(self) -> None:
        """End every open watch stream abruptly (the connection is closed mid-stream)."""
        for drop in list(self._watch_droppers):
            drop()

    def break_portforwards(self) -> None:
        """Close every open port-forward websocket."""
        for breaker in list(self._forward_breakers):
            breaker()

    # -- used by the HTTP layer

    async def apply(self, method: str, path: str, path_qs: str) -> None:
        """Delay or fail a request as the first matching rules say."""
        for rule in list(self._rules):
            if not rule.matches(method, path, path_qs):
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self._rules.remove(rule)
            self.fired += 1
            if rule.delay:
                await asyncio.sleep(rule.delay)
                continue
            raise ApiError(rule.message, reason=rule.reason, code=rule.status,
                           retry_after=rule.retry_after)

    def track_watch(self, drop: Callable[[], None]) -> Callable[[], None]:
        """Register an open watch's drop function; returns its unregister function."""
        self._watch_droppers.add(drop)
        return lambda: self._watch_droppers.discard(drop)

    def track_forward(self, breaker: Callable[[], None]) -> Callable[[], None]:
        """Register an open port-forward's break function; returns its unregister function."""
        self._forward_breakers.add(breaker)
        return lambda: self._forward_breakers.discard(breaker)
