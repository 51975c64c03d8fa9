"""``kubectl relay expose``: a Service in the cluster whose connections reach a local port.

The reverse of a tunnel. One relay pod runs
``relay TCP-LISTEN:8000,fork,reuseaddr MUX-LISTEN:4000`` (``engine/transports/mux.py``);
a Service selects it; the client opens one port-forward stream to the mux
port and, for every stream the relay opens on it (one per connection that
reached the Service), connects to ``127.0.0.1:LOCALPORT`` and splices the two
(``engine.muxing.splice``: half-close each way, a failure on one side resets
the other). A local connect that is refused resets the stream, so the
in-cluster client sees its connection reset, and the event says why.

The relay pod is an ordinary ``run`` tunnel of ``session.Session`` (restricted
Pod Security, the Job's lease, its trace, its cleanup); this module adds the
Service and the mux client. Order of side effects:

1. the name is checked: a Service of that name that exists is an error
   (``ServiceExists``), and nothing is created;
2. the relay Job and pod start (``Session``) and its mux port listens;
3. the Service is created with an ownerReference to the Job, so that the
   garbage collector deletes it with the Job (after a ``kill -9``, when the
   Job's lease ends and its TTL passes); the tunnel is announced once the
   Service's EndpointSlice has the pod ready (until then kube-proxy rejects
   connections to it);
4. the port-forward to the mux port carries every connection; a broken one
   is opened again (the relay takes the new peer and resets the old streams);
5. on exit (Ctrl-C, an error) the Service is deleted explicitly, then the
   Session deletes the Job and pod.

``ExposeSpec`` is the whole of what one expose tunnel needs, as a frozen
value: the command line builds it, and so can a tunnels file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..engine.muxing import SPLICE_READ_SIZE, Channel, MuxConnection, splice
from . import relaypod
from .errors import ApiError, ClusterError, PluginError, PortForwardError
from .events import ConnectionClosed, ConnectionOpened, EventSink, Exposed, Notice
from .kube import Cluster, job_path
from .portforward import BACKOFF_FIRST, BACKOFF_MAX, RETRY_FOR, open_port_forward
from .relaypod import ClientInfo
from .session import RelayPod, Session, SessionOptions, TunnelSpec

#: The relay's mux port in its pod (the client's port-forward goes there).
MUX_PORT = 4000
#: The port the Service sends connections to in the relay pod.
SERVICE_TARGET_PORT = relaypod.POD_PORT
#: The client's heartbeat of its mux connection (the relay pings too).
PING_SECONDS = 10.0
SILENCE_SECONDS = 35.0
#: How long the announcement waits for the Service's endpoint to be ready.
ENDPOINT_WAIT_SECONDS = 30.0
#: How often the start of the relay pod is looked at.
_START_POLL = 0.1
#: Bound for deleting the Service when the command ends.
_DELETE_TIMEOUT = 10.0


@dataclass(frozen=True)
class ExposeSpec:
    """One reverse tunnel: Service ``name`` (port ``service_port``) -> ``local_host:local_port``."""

    #: The local port that in-cluster connections reach.
    local_port: int
    #: The Service's name (a DNS-1035 label).
    name: str
    #: The Service's port.
    service_port: int = 80
    #: The local address connected to (loopback: the laptop's own server).
    local_host: str = "127.0.0.1"

    @property
    def local(self) -> str:
        """``HOST:PORT`` of the local end."""
        return f"{self.local_host}:{self.local_port}"


class ServiceExists(ClusterError):
    """The Service name is taken in the namespace; nothing was created."""


def relay_args() -> tuple[str, ...]:
    """The relay pod's command line: the Service's connections become streams on the mux port."""
    return (
        "-t",
        f"{relaypod.CLOSE_TIMEOUT:g}",
        relaypod.QUIET_SESSIONS,  # each connection shows on the client's side
        f"TCP-LISTEN:{SERVICE_TARGET_PORT},fork,reuseaddr",
        f"MUX-LISTEN:{MUX_PORT}",
    )


def tunnel_spec() -> TunnelSpec:
    """The relay pod of an expose tunnel, as a ``run`` tunnel whose first port is the mux port."""
    return TunnelSpec("run", run_args=relay_args(), run_port=MUX_PORT)


def exposed_service(
    spec: ExposeSpec,
    *,
    namespace: str,
    client: ClientInfo,
    tunnel: int,
    job: str,
    job_uid: str,
) -> dict[str, Any]:
    """The Service selecting the relay pod of ``tunnel``, owned by its Job."""
    labels = relaypod.labels(client, tunnel)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": spec.name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                relaypod.ANNOTATION_CLIENT: f"{client.host}:{client.pid}",
                relaypod.ANNOTATION_TARGET: f"{spec.local} on {client.host}",
            },
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": job_uid}
            ],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {
                relaypod.LABEL_MANAGED_BY: relaypod.MANAGER,
                relaypod.LABEL_SESSION: client.session,
                relaypod.LABEL_TUNNEL: str(tunnel),
            },
            "ports": [
                {
                    "name": "tcp",
                    "protocol": "TCP",
                    "port": spec.service_port,
                    "targetPort": SERVICE_TARGET_PORT,
                }
            ],
        },
    }


def clash(spec: ExposeSpec, namespace: str, found: Mapping[str, Any]) -> ServiceExists:
    """The error for an existing Service called ``spec.name``: whose it is, what to do."""
    metadata = found.get("metadata") or {}
    labels = metadata.get("labels") or {}
    where = f'service "{spec.name}" already exists in namespace "{namespace}"'
    if labels.get(relaypod.LABEL_MANAGED_BY) == relaypod.MANAGER:
        client = (metadata.get("annotations") or {}).get(relaypod.ANNOTATION_CLIENT, "unknown")
        return ServiceExists(
            f"{where}: another kubectl relay expose ({client}) serves it",
            "stop that one, wait for its lease to end if it was killed, or choose another --name",
        )
    return ServiceExists(
        f"{where} and is not kubectl relay's",
        "choose another --name (kubectl relay never replaces a Service it did not create)",
    )


class Exposer:
    """Runs one expose tunnel (see the module docstring); reports through ``on_event``."""

    def __init__(
        self,
        cluster: Cluster,
        spec: ExposeSpec,
        options: SessionOptions,
        on_event: EventSink,
        *,
        tunnel: int = 0,
    ) -> None:
        self.cluster = cluster
        self.spec = spec
        self.emit = on_event
        self.tunnel = tunnel
        self.namespace = options.relay_namespace or cluster.namespace
        self.session = Session(cluster, [tunnel_spec()], options, on_event)
        self._service_created = False
        self.connector = LocalConnector(spec, tunnel, on_event)

    async def run(self) -> int:
        """Expose until cancelled or the relay ends; the relay's exit status."""
        await self._check_name()
        running = asyncio.ensure_future(self.session.run())
        forwarding: asyncio.Future[None] | None = None
        try:
            relay = await self._started(running)
            await self._create_service(relay)
            await self._wait_endpoint()
            self.emit(Exposed(self.tunnel, self.spec.name, self.namespace,
                              self.spec.service_port, self.spec.local, relay.pod))
            forwarding = asyncio.ensure_future(self._forward(relay))
            await asyncio.wait({running, forwarding}, return_when=asyncio.FIRST_COMPLETED)
            if forwarding.done():
                forwarding.result()  # its error ends the tunnel
            return await running
        finally:
            if forwarding is not None:
                forwarding.cancel()
                with contextlib.suppress(asyncio.CancelledError, PluginError):
                    await forwarding
            await asyncio.shield(self._delete_service())
            if not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running

    async def _check_name(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/services/{self.spec.name}"
        found = await self.cluster.get(path)
        if found is not None:
            raise clash(self.spec, self.namespace, found)

    async def _started(self, running: asyncio.Future[int]) -> RelayPod:
        """The relay pod, once its mux port listens; the session's error if it ends first."""
        while True:
            tunnels = self.session.tunnels
            if tunnels and tunnels[0].current is not None:
                return tunnels[0].current
            if running.done():
                running.result()
                raise PortForwardError("the relay ended before it listened")
            await asyncio.wait({running}, timeout=_START_POLL)

    async def _create_service(self, relay: RelayPod) -> None:
        job = await self.cluster.get(job_path(relay.namespace, relay.job))
        uid = ((job or {}).get("metadata") or {}).get("uid", "")
        body = exposed_service(
            self.spec,
            namespace=self.namespace,
            client=self.session.client,
            tunnel=self.tunnel,
            job=relay.job,
            job_uid=uid,
        )
        path = f"/api/v1/namespaces/{self.namespace}/services"
        try:
            await self.cluster.request("POST", path, body=body)
        except ApiError as exc:
            if exc.status == 409:  # created by someone else since the check
                raise clash(self.spec, self.namespace, {}) from None
            raise
        self._service_created = True

    async def _wait_endpoint(self) -> None:
        """Until the Service's EndpointSlice lists the relay pod as ready (bounded).

        Before that, kube-proxy rejects connections to the Service ("No route
        to host"): the tunnel is announced once clients can use it. A user
        who may not read EndpointSlices gets the announcement at once.
        """
        path = f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices"
        labels = f"kubernetes.io/service-name={self.spec.name}"
        deadline = time.monotonic() + ENDPOINT_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                slices = await self.cluster.list_items(path, labels=labels)
            except PluginError:
                return
            for endpoint_slice in slices:
                for endpoint in endpoint_slice.get("endpoints") or []:
                    if (endpoint.get("conditions") or {}).get("ready"):
                        return
            await asyncio.sleep(_START_POLL * 2)
        self.emit(Notice(
            f"service {self.namespace}/{self.spec.name} has no ready endpoint after "
            f"{ENDPOINT_WAIT_SECONDS:g}s; in-cluster clients may be refused until it has",
            warning=True,
        ))

    async def _delete_service(self) -> None:
        if not self._service_created:
            return
        path = f"/api/v1/namespaces/{self.namespace}/services/{self.spec.name}"
        try:
            async with asyncio.timeout(_DELETE_TIMEOUT):
                await self.cluster.delete(path)
        except (PluginError, TimeoutError) as exc:
            self.emit(Notice(
                f"service {self.namespace}/{self.spec.name} could not be deleted ({exc}); "
                "the cluster deletes it with the relay's Job",
                warning=True,
            ))
            return
        self._service_created = False
        self.emit(Notice(f"deleted service {self.namespace}/{self.spec.name}"))

    # -- the mux client -------------------------------------------------------------------------

    async def _forward(self, relay: RelayPod) -> None:
        """Keep one mux connection to the relay; open it again when it breaks."""
        delay = BACKOFF_FIRST
        failing_since: float | None = None
        try:
            while True:
                try:
                    stream = await open_port_forward(
                        self.cluster, relay.namespace, relay.pod, MUX_PORT, self.emit
                    )
                except PluginError as exc:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > RETRY_FOR:
                        raise PortForwardError(
                            f"the port-forward to relay pod {relay.pod} failed for "
                            f"{RETRY_FOR:g}s: {exc}",
                            "check the API server and the pod",
                        ) from None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                failing_since, delay = None, BACKOFF_FIRST
                connection = MuxConnection(
                    stream,
                    listener=False,
                    on_open=self.connector.accept,
                    # A port-forward that died without closing (a laptop that slept)
                    # is noticed and opened again.
                    ping_interval=PING_SECONDS,
                    ping_timeout=SILENCE_SECONDS,
                )
                reason = await connection.run()
                self.emit(Notice(f"the tunnel's port-forward ended ({reason}); opening it again",
                                 warning=True))
        finally:
            await self.connector.aclose()


class LocalConnector:
    """The client's end of the mux streams: each one connected to the local port."""

    def __init__(self, spec: ExposeSpec, tunnel: int, on_event: EventSink) -> None:
        self.spec = spec
        self.tunnel = tunnel
        self.emit = on_event
        self._streams: set[asyncio.Task[None]] = set()

    def accept(self, channel: Channel) -> None:
        """Serve a stream the relay opened (``MuxConnection``'s ``on_open``)."""
        task = asyncio.ensure_future(self._serve(channel))
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)

    async def aclose(self) -> None:
        """Cut the streams still running."""
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)

    async def _serve(self, channel: Channel) -> None:
        """One in-cluster connection: connect to the local port and splice."""
        number = channel.id
        self.emit(ConnectionOpened(self.tunnel, number, channel.label or "the cluster"))
        try:
            reader, writer = await asyncio.open_connection(
                self.spec.local_host, self.spec.local_port, limit=SPLICE_READ_SIZE
            )
        except OSError as exc:
            # asyncio words it "Connect call failed (...)": say what the system said.
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            reason = f"connect to {self.spec.local}: {why}"
            channel.reset(reason)
            await channel.aclose()
            self.emit(ConnectionClosed(self.tunnel, number, 0, 0, f"{reason}; stream reset"))
            return
        counts = {">": 0, "<": 0}

        def record(direction: str, data: bytes) -> None:
            counts[direction] += len(data)

        problem = await splice(channel, reader, writer, record)
        self.emit(ConnectionClosed(self.tunnel, number, counts[">"], counts["<"], problem))
