"""Which local connection each relay session serves, and each connection's lines in order.

The relay numbers its sessions (``--trace-session-ids``: its trace headers
end in ``session=N``, its log lines start with ``session N:``), but it cannot
know the client's connection numbers: every connection reaches it through a
port-forward of its own, from an address inside the pod. The port-forward
protocol has no room for a tag, and the tunnel's bytes must stay the user's.
So a session is matched to a connection by its bytes: the first block a
session traces (offset ``from`` in one direction) must be the bytes that
connection sent (``>``) or received (``<``) at that offset, which the plugin
keeps (the first ``HEAD_BYTES`` of each direction). Among connections with
the same bytes (the same request on several connections) the oldest
unmatched one wins, which is also the order the relay accepted them in. A
session that traces no data (the relay could not reach the target) is given,
after ``MATCH_WAIT``, to the oldest unmatched connection of that pod, one
the relay has closed first.

Order: a connection's "closed" line waits (at most ``CLOSE_HOLD`` seconds)
until the relay's trace has shown as many bytes as the connection carried,
so that its trace blocks come between its "connection N from" and its
"connection N closed". When the relay reported an error for the session, the
bytes sent are those its trace shows going to the target (what reached it),
not those the client wrote into the tunnel.

With ``--summary``, the connection lines and the trace blocks give way to
``summary.Exchange`` lines, made from the local bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .events import ConnectionClosed, ConnectionOpened, EventSink, Summarized, Traced
from .summary import ConnectionSummary, Exchange
from .tracing import Accepted, Block, LogLine, TraceEvent

#: Bytes of each direction kept per connection to recognise its session.
HEAD_BYTES = 4096
#: Longest wait of a closed connection's last line for its trace.
CLOSE_HOLD = 2.0
#: Longest wait of a session's lines for the local bytes that identify it.
MATCH_WAIT = 1.0

_DOT = 0x2E
T = TypeVar("T")


@dataclass
class Flow:
    """One local connection through the tunnel, as its lines are put in order."""

    number: int
    peer: str
    pod: str = ""
    sent: int = 0
    received: int = 0
    heads: dict[str, bytearray] = field(
        default_factory=lambda: {">": bytearray(), "<": bytearray()}
    )
    #: The relay session serving it, once matched.
    session: int | None = None
    #: Bytes of each direction the relay's trace has shown for it.
    traced: dict[str, int] = field(default_factory=lambda: {">": 0, "<": 0})
    #: The relay's error for its session ("" if none).
    relay_error: str = ""
    #: Its "closed" line, held until the trace caught up.
    closing: ConnectionClosed | None = None
    summary: ConnectionSummary | None = None

    def caught_up(self) -> bool:
        """Whether the trace shows everything the connection carried (or its session failed)."""
        return bool(self.relay_error) or (
            self.traced[">"] >= self.sent and self.traced["<"] >= self.received
        )


class Connections:
    """Puts one tunnel's local connection events and relay trace in per-connection order.

    ``matching``: the relay numbers its sessions and traces data (else the
    trace is passed on as it comes). ``text``: the trace is ``-v`` text,
    whose unprintable bytes show as dots. ``summary``: ``--summary``.
    ``by_session``: without matching, number the trace by the relay's
    sessions (a proxy's: its trace starts after the proxy request, which
    the local bytes hold, so bytes cannot match them). ``quiet``: ``-q``,
    no trace: the relay's accept notices are dropped (each connection has
    its own lines), its errors and warnings shown.
    """

    def __init__(
        self,
        tunnel: int,
        emit: EventSink,
        *,
        matching: bool = True,
        text: bool = True,
        summary: bool = False,
        match_wait: float = MATCH_WAIT,
        close_hold: float = CLOSE_HOLD,
        by_session: bool = False,
        quiet: bool = False,
    ) -> None:
        self.tunnel = tunnel
        self.match_wait = match_wait
        self.close_hold = close_hold
        self.emit = emit
        self.matching = matching
        self.text = text
        self.summary = summary
        self.by_session = by_session
        self.quiet = quiet
        self._flows: list[Flow] = []  # unmatched or not yet closed, oldest first
        self._sessions: dict[tuple[str, int], Flow] = {}
        self._pending: dict[tuple[str, int], list[TraceEvent]] = {}
        self._timers: list[asyncio.TimerHandle] = []

    # -- the local side --------------------------------------------------------------------

    def opened(self, number: int, peer: str) -> Flow:
        """A local connection was accepted."""
        flow = Flow(number, peer)
        if self.summary:
            flow.summary = ConnectionSummary(number, peer, time.monotonic())
        else:
            self.emit(ConnectionOpened(self.tunnel, number, peer))
        if self.matching:
            self._flows.append(flow)
        return flow

    def routed(self, flow: Flow, pod: str) -> None:
        """The connection's port-forward to ``pod`` is open."""
        flow.pod = pod
        self._match_all()

    def data(self, flow: Flow, direction: str, data: bytes) -> None:
        """``data`` went through the tunnel (``>``: towards the target)."""
        if direction == ">":
            flow.sent += len(data)
        else:
            flow.received += len(data)
        head = flow.heads[direction]
        if len(head) < HEAD_BYTES and self.matching:
            head += data[: HEAD_BYTES - len(head)]
        if flow.summary is not None:
            now = time.monotonic()
            if direction == ">":
                self._summarize(flow.summary.sent_data(data, now))
            else:
                self._summarize(flow.summary.received_data(data, now))
        if self._pending:
            self._match_all()

    def closed(self, flow: Flow, error: str) -> None:
        """The local connection ended (``error``: why, if it failed)."""
        flow.closing = ConnectionClosed(self.tunnel, flow.number, flow.sent, flow.received, error)
        if flow.summary is not None:
            self._summarize(flow.summary.closed(time.monotonic()))
            if error:  # the summary line has no room for it
                self.emit(flow.closing)
            return
        if not self.matching or flow.caught_up():
            self._release(flow)
            return
        self._later(self.close_hold, self._release, flow)
        if self._pending:
            self._match_all()

    # -- the relay's trace -----------------------------------------------------------------

    def traced(self, pod: str, event: TraceEvent) -> None:
        """A trace event of relay pod ``pod``."""
        session = event.session if isinstance(event, Block | LogLine) else None
        if not self.matching or session is None:
            if self.quiet and isinstance(event, Accepted):
                return
            if not self.summary or isinstance(event, LogLine):
                self.emit(Traced(self.tunnel, pod, event, session if self.by_session else None))
            return
        key = (pod, session)
        flow = self._sessions.get(key)
        if flow is not None:
            self._deliver(flow, pod, event)
            return
        self._pending.setdefault(key, []).append(event)
        if len(self._pending[key]) == 1:
            self._later(self.match_wait, self._give_up_matching, key)
        self._match(key)

    def flush(self) -> None:
        """The tunnel ends: show what is held, cancel the timers."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for key in list(self._pending):
            self._give_up_matching(key)
        for flow in list(self._flows):
            if flow.closing is not None:
                self._release(flow)

    # -- matching ----------------------------------------------------------------------------

    def _match_all(self) -> None:
        for key in list(self._pending):
            self._match(key)

    def _match(self, key: tuple[str, int], *, last_chance: bool = False) -> None:
        pod, _ = key
        events = self._pending.get(key)
        if not events:
            return
        candidates = [f for f in self._flows if f.session is None and f.pod == pod]
        block = next((e for e in events if isinstance(e, Block)), None)
        chosen = None
        if block is not None:
            verdicts = [(flow, self._consistent(flow, block)) for flow in candidates]
            chosen = next((flow for flow, verdict in verdicts if verdict), None)
            if chosen is None and last_chance:
                chosen = next((flow for flow, verdict in verdicts if verdict is None), None)
        elif last_chance and candidates:
            # No data traced (the target was not reached): a connection the relay closed.
            closed = [flow for flow in candidates if flow.closing is not None]
            chosen = (closed or candidates)[0]
        if chosen is None:
            return
        del self._pending[key]
        chosen.session = key[1]
        self._sessions[key] = chosen
        for event in events:
            self._deliver(chosen, pod, event)

    def _consistent(self, flow: Flow, block: Block) -> bool | None:
        """Whether ``block`` is ``flow``'s bytes at its offset; None: not known yet."""
        head = flow.heads[block.direction]
        start = block.start
        if start >= HEAD_BYTES:
            return None
        wanted = block.data[: HEAD_BYTES - start]
        seen = head[start : start + len(wanted)]
        if len(seen) < len(wanted):
            return False if flow.closing is not None else None
        if self.text:
            return all(a in (b, _DOT) for a, b in zip(wanted, seen, strict=True))
        return bytes(seen) == wanted

    def _give_up_matching(self, key: tuple[str, int]) -> None:
        self._match(key, last_chance=True)
        events = self._pending.pop(key, None)
        for event in events or ():
            if not self.summary or isinstance(event, LogLine):
                self.emit(Traced(self.tunnel, key[0], event))

    def _deliver(self, flow: Flow, pod: str, event: TraceEvent) -> None:
        if isinstance(event, Block):
            direction = event.direction
            flow.traced[direction] = max(flow.traced[direction], event.start + event.length)
        elif isinstance(event, LogLine) and event.level in "EF":
            flow.relay_error = event.message
        if not self.summary or isinstance(event, LogLine):
            self.emit(Traced(self.tunnel, pod, event, flow.number))
        if flow.closing is not None and flow.caught_up():
            self._release(flow)

    def _release(self, flow: Flow) -> None:
        closing, flow.closing = flow.closing, None
        if flow in self._flows:
            self._flows.remove(flow)
        if flow.session is not None:
            self._sessions.pop((flow.pod, flow.session), None)
        if closing is None:
            return  # already shown
        if flow.relay_error:
            # What reached the target is what the relay's trace shows it sent there.
            closing = ConnectionClosed(
                closing.tunnel,
                closing.number,
                flow.traced[">"],
                closing.received,
                closing.error or "the relay reported an error",
            )
        self.emit(closing)

    def _summarize(self, lines: list[Exchange]) -> None:
        for line in lines:
            self.emit(Summarized(self.tunnel, line))

    def _later(self, delay: float, callback: Callable[[T], None], argument: T) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > now]
        self._timers.append(loop.call_later(delay, callback, argument))
