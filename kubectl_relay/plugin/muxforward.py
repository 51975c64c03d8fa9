"""One port-forward per tunnel: every local TCP connection is a stream of the mux protocol.

``kubectl port-forward`` opens one upgraded connection and a stream pair per
local connection; opening a port-forward per connection (``portforward.py``)
costs a TLS handshake, an HTTP upgrade and the API server's and kubelet's
set-up each time. The relay pod of a ``tcp``, ``tls`` or ``proxy`` tunnel
therefore runs ``relay MUX-ACCEPT:8000,fork,... TCP:target`` (``OPENSSL:...``,
``PROXY-SERVER``; ``engine/transports/mux.py``) and the plugin keeps one
port-forward to it, the carrier of a ``MuxConnection``, opening a stream per
local connection (labelled with the client's address, which the relay logs
as it accepts the stream). Each
stream has its own half-close and credit window (``TUNNEL_WINDOW``, 1 MiB, growing to
``TUNNEL_MAX_WINDOW``, 4 MiB, while its reader keeps up), so a slow connection holds back
only itself.

- The carrier is opened by the first connection and again by the first
  connection after it broke (the API server restarted, the pod went away)
  or after the tunnel moved to another relay pod; the opener retries with
  the usual backoff (``Forwarder``), so new connections wait for the new
  carrier. Streams of a broken carrier end with the reason on their line.
- The plugin PINGs the relay, as the relay PINGs it: a port-forward that
  died without closing (a laptop that slept) is noticed.

A ``udp`` tunnel's relay runs ``MUX-ACCEPT:8000,fork,...,frame=len16 UDP:target``: each
local sender is a stream, its datagrams length-prefixed in it as they were on a
port-forward of their own.

``KUBECTL_RELAY_MUX=0`` in the environment turns this off: a port-forward
per connection again (for comparisons, and as a way around a problem).
"""

from __future__ import annotations

import asyncio
import functools
import os

from ..engine.mux import TUNNEL_MAX_WINDOW, TUNNEL_WINDOW
from ..engine.muxing import Channel, MuxConnection
from .events import EventSink, Notice
from .kube import Cluster
from .portforward import PodStream, open_port_forward

#: The environment variable that turns the shared port-forward off (``0``).
MUX_VARIABLE = "KUBECTL_RELAY_MUX"
#: The plugin's heartbeat of its carrier (the relay's is 10 s / 35 s too).
PING_SECONDS = 10.0
SILENCE_SECONDS = 35.0
#: How the reasons of the ends we decide start (the others are told).
_OUR_CLOSE = "the tunnel"


#: The tunnels whose connections are streams of the shared port-forward: ``udp`` ones a
#: stream per local sender, its datagrams framed (``frame=len16``) inside it; not ``run``,
#: the user's own relay command, whose first address is not a mux listener.
MUX_MODES = frozenset({"tcp", "tls", "proxy", "udp"})


def uses_mux(mode: str) -> bool:
    """Whether a tunnel of ``mode`` carries its connections as streams of one port-forward."""
    return mode in MUX_MODES and os.environ.get(MUX_VARIABLE, "1") != "0"


class SharedPortForward:
    """The one port-forward of a tunnel to its current relay pod's mux port."""

    def __init__(
        self, cluster: Cluster, namespace: str, port: int, on_event: EventSink | None = None
    ) -> None:
        self.cluster = cluster
        self.emit = on_event
        self.namespace = namespace
        self.port = port
        self.pod = ""
        self._connection: MuxConnection | None = None
        #: Every port-forward still running (the current one, and older ones with streams).
        self._running: dict[MuxConnection, asyncio.Task[str]] = {}
        self._lock = asyncio.Lock()

    async def open(self, pod: str, label: str) -> Channel:
        """A new stream to ``pod``; opens the port-forward first when there is none to it.

        Raises what ``open_port_forward`` raises, and ``ConnectionResetError``
        when the carrier ended just now (the caller retries).
        """
        async with self._lock:
            connection = self._connection
            if connection is None or connection.ended or self.pod != pod:
                if connection is not None and not connection.channels:
                    connection.close(f"{_OUR_CLOSE} moved to relay pod {pod}")
                # One with streams still running stays, as a connection of its own to
                # the old pod would: it ends when they do and that relay exits.
                stream = await open_port_forward(
                    self.cluster, self.namespace, pod, self.port, self.emit
                )
                connection = MuxConnection(
                    stream, listener=False, ping_interval=PING_SECONDS,
                    ping_timeout=SILENCE_SECONDS, window=TUNNEL_WINDOW,
                    max_window=TUNNEL_MAX_WINDOW,
                )
                self._connection, self.pod = connection, pod
                runner = asyncio.ensure_future(self._run(connection, pod))
                self._running[connection] = runner
                runner.add_done_callback(functools.partial(self._ended, connection))
        return await connection.open(label)

    async def _run(self, connection: MuxConnection, pod: str) -> str:
        reason = await connection.run()
        if self.emit is not None and not reason.startswith(_OUR_CLOSE):
            self.emit(Notice(f"the port-forward to {pod} ended ({reason}); the next "
                             "connection opens it again", warning=True))
        return reason

    def _ended(self, connection: MuxConnection, _: asyncio.Task[str]) -> None:
        self._running.pop(connection, None)

    @staticmethod
    def broke(channel: Channel) -> str:
        """Why ``channel`` ended, when it was the carrier that ended ("" otherwise)."""
        reason = channel.connection.ended
        return reason if reason and channel.reset_reason == reason else ""

    @staticmethod
    def refused(channel: Channel) -> bool:
        """Whether the carrier of ``channel`` ended as the pod refused it (nothing listens)."""
        carrier = channel.connection.carrier
        return isinstance(carrier, PodStream) and carrier.refused

    async def aclose(self) -> None:
        """Close the port-forward; its streams are reset."""
        runners = list(self._running.values())
        for connection in list(self._running):
            connection.close(f"{_OUR_CLOSE} is closing")
        await asyncio.gather(*runners, return_exceptions=True)
