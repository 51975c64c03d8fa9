"""What a running tunnel reports to whoever shows it (the CLI renders these; nothing prints here).

The library calls one callback, ``on_event(event)``, with these frozen values;
trace events (``tracing.TraceEvent``) are wrapped in ``Traced`` with the
tunnel they belong to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .summary import Exchange
from .tracing import TraceEvent


@dataclass(frozen=True)
class Listening:
    """A local listener is bound (before anything is created in the cluster)."""

    tunnel: int
    address: str
    protocol: str


@dataclass(frozen=True)
class PodCreating:
    """A relay pod is being created for ``target``."""

    tunnel: int
    pod: str
    namespace: str
    target: str
    endpoint: str


@dataclass(frozen=True)
class PodWaiting:
    """The relay pod is not running yet; ``reason`` is why (Pending, ContainerCreating...)."""

    tunnel: int
    pod: str
    reason: str
    message: str = ""


@dataclass(frozen=True)
class PodEvent:
    """A Kubernetes event about a relay pod that is taking long (scheduling, image pulls)."""

    tunnel: int
    pod: str
    kind: str
    reason: str
    message: str


@dataclass(frozen=True)
class TunnelReady:
    """The tunnel works: ``listen`` forwards through ``pod`` to ``endpoint``."""

    tunnel: int
    listen: str
    target: str
    endpoint: str
    pod: str
    namespace: str


@dataclass(frozen=True)
class ConnectionOpened:
    """A local client connected (or, for UDP, a new sender appeared)."""

    tunnel: int
    number: int
    peer: str


@dataclass(frozen=True)
class ConnectionClosed:
    """A local connection ended; byte counts as relayed through the tunnel."""

    tunnel: int
    number: int
    sent: int
    received: int
    error: str = ""


@dataclass(frozen=True)
class ForwardRetry:
    """Opening the port-forward failed; the next attempt comes after ``delay`` seconds."""

    tunnel: int
    reason: str
    delay: float
    #: The local connection waiting for it.
    connection: int | None = None


@dataclass(frozen=True)
class PodReplaced:
    """The relay pod went away (or its backend did); a new one takes over."""

    tunnel: int
    old: str
    reason: str


@dataclass(frozen=True)
class PodDeleted:
    """A relay pod (and its Job) was deleted by the client."""

    tunnel: int
    pod: str


@dataclass(frozen=True)
class Traced:
    """A line or block of the relay's trace, from ``pod``; ``connection``: the local
    connection its session serves (None: not known, or not about one connection)."""

    tunnel: int
    pod: str
    event: TraceEvent
    connection: int | None = None


@dataclass(frozen=True)
class Summarized:
    """A ``--summary`` line: one HTTP request and its response, or one connection."""

    tunnel: int
    exchange: Exchange


@dataclass(frozen=True)
class Exposed:
    """``kubectl relay expose``: Service ``namespace/service:port`` reaches ``local``."""

    tunnel: int
    service: str
    namespace: str
    port: int
    local: str
    pod: str


@dataclass(frozen=True)
class Notice:
    """Anything else worth a line (cleanup of old pods, warnings)."""

    text: str
    warning: bool = False


SessionEvent = (
    Listening
    | PodCreating
    | PodWaiting
    | PodEvent
    | TunnelReady
    | ConnectionOpened
    | ConnectionClosed
    | ForwardRetry
    | PodReplaced
    | PodDeleted
    | Traced
    | Summarized
    | Exposed
    | Notice
)

#: The callback a session reports through.
EventSink = Callable[[SessionEvent], None]
