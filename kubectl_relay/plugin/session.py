"""One ``kubectl relay`` invocation: local listeners, relay pods, port-forwards, traces, cleanup.

The order of side effects is the point of this module:

1. bind every local listener (a port in use fails before anything exists in
   the cluster);
2. resolve every target (read-only: a wrong name or port fails here too);
3. delete this user's finished relay pods in the namespace (cheap hygiene);
4. per tunnel, create the relay Job, wait until its pod runs and the relay
   listens (reporting why it waits, and the pod's warning events when it is
   stuck), then forward connections and stream the relay's trace;
5. whatever ends the session (Ctrl-C, a signal, an error), delete every Job,
   pod and Secret it created, even when cancelled; when that fails (a user
   without the right to delete Jobs), ``CleanupError`` says what is left and
   which right is missing, so that the command does not exit 0.

A ``HOST:PORT`` target is resolved from the relay pod itself (its init
container) before the tunnel is announced: a name the cluster's DNS does not
know fails with ``TargetNotFound`` and leaves nothing behind.

While a tunnel runs, its relay pods' leases are renewed (``relaypod.LEASE_SECONDS``):
a client killed with SIGKILL, or asleep, leaves a relay pod that the cluster
ends within the lease.

While a tunnel runs it checks its relay pod every ``CHECK_PERIOD`` seconds: a
pod that disappeared or failed is replaced at once, a pod that exited because
it was idle is replaced by the next connection, and for a Deployment target a
backend pod that is gone or no longer ready makes the tunnel move to a ready
one (a new relay pod for the new backend).

Nothing here prints: progress and traces go to the ``on_event`` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from . import proxying, relaypod
from .connections import Connections
from .errors import (
    ApiError,
    CleanupError,
    ImagePullError,
    PluginError,
    PodNotReady,
    PortForwardError,
    RelayPodError,
    TargetNotFound,
    Unschedulable,
    first_error,
)
from .events import (
    EventSink,
    Listening,
    Notice,
    PodCreating,
    PodDeleted,
    PodEvent,
    PodReplaced,
    PodWaiting,
    TunnelReady,
)
from .inventory import delete_finished
from .kube import Cluster, Endpoint, Pod, job_path, pod_path, pod_ready
from .lifecycle import ApiWatch, cleanup_error
from .muxforward import SharedPortForward, uses_mux
from .podstatus import container_state, start_error, termination, waiting_reason
from .portforward import UDP_SESSION_IDLE, Forwarder, bind, bound_text
from .relaypod import ClientInfo, Mode, PodSettings, TLSSettings, TraceLevel
from .targets import Kind, ListenAddress, Target
from .tracing import LogLine, TraceMode, TraceParser

#: How often a running tunnel checks its relay pod (and a Deployment's backend).
CHECK_PERIOD = 1.0
#: How often a starting relay pod is looked at.
START_POLL = 0.25
#: After this long pending, the pod's warning events are shown.
EVENTS_AFTER = 3.0
#: Bound for deleting what a session created when it ends.
CLEANUP_TIMEOUT = 15.0
#: Waiting reasons of a container that will not start by itself.
FATAL_WAITING = {
    "ErrImagePull": ImagePullError,
    "ImagePullBackOff": ImagePullError,
    "InvalidImageName": ImagePullError,
    "CreateContainerConfigError": PodNotReady,
    "CreateContainerError": PodNotReady,
}
_TRACE_MODES: Mapping[TraceLevel, TraceMode] = {
    "quiet": "text",
    "text": "text",
    "hex": "hex",
    "rows": "rows",
}


@dataclass(frozen=True)
class TunnelSpec:
    """One tunnel of a session.

    ``tcp``/``udp``/``tls``: ``target`` and ``listen`` are set. ``run``:
    ``run_args`` is the engine command line, and ``listen`` (optional)
    forwards to ``run_port``, the port of its listening first address.
    ``proxy``: ``proxy`` and ``listen`` are set (``proxying.py``).
    """

    mode: Mode
    target: Target | None = None
    listen: ListenAddress | None = None
    tls: TLSSettings | None = None
    #: Local files for a TLS tunnel: Secret key -> content (a temporary Secret carries them).
    tls_files: Mapping[str, bytes] = field(default_factory=dict)
    run_args: tuple[str, ...] = ()
    run_port: int | None = None
    proxy: proxying.ProxySettings | None = None
    #: ``udp``: a sender's session ends after this long with no datagram either way.
    session_idle: float = UDP_SESSION_IDLE

    def shown_target(self) -> str:
        """What the tunnel reaches, as its messages and the Job's annotation say."""
        if self.proxy is not None:
            return proxying.DESCRIPTION
        return str(self.target) if self.target else " ".join(self.run_args)


@dataclass(frozen=True)
class SessionOptions:
    """What applies to every tunnel of a session."""

    trace: TraceLevel = "text"
    pod: PodSettings = field(default_factory=PodSettings)
    #: ``--relay-namespace``: where relay pods go (default: the targets' namespace).
    relay_namespace: str | None = None
    #: Where targets are looked up (default: the cluster's namespace, ``-n``); a tunnel
    #: file's ``namespace`` sets both.
    target_namespace: str | None = None
    #: ``--pod-timeout``: how long a relay pod may take to start.
    pod_timeout: float = 120.0
    #: ``--summary``: a line per HTTP exchange or connection instead of the raw trace.
    summary: bool = False


@dataclass
class RelayPod:
    """One relay Job and its pod, as the tunnel tracks it."""

    job: str
    namespace: str
    endpoint: Endpoint | None
    pod: str = ""
    started: float = field(default_factory=time.monotonic)
    last_use: float = field(default_factory=time.monotonic)
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    deleted: bool = False
    #: Why it stopped serving, once it did ("" while it serves).
    gone: str = ""
    exit_code: int | None = None


class Session:
    """Runs the tunnels of one invocation; see the module docstring."""

    def __init__(
        self,
        cluster: Cluster,
        tunnels: list[TunnelSpec],
        options: SessionOptions,
        on_event: EventSink,
    ) -> None:
        self.cluster = cluster
        self.specs = tunnels
        self.options = options
        self.on_event = on_event
        self.namespace = options.relay_namespace or cluster.namespace
        self.client = ClientInfo(
            user=cluster.user,
            session=secrets.token_hex(4),
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now(UTC),
        )
        self.tunnels: list[Tunnel] = []
        self._created_secrets: list[str] = []
        self.api = ApiWatch(on_event)

    async def run(self) -> int:
        """Run until cancelled (tunnels) or until the relay ends (``run``); the exit status.

        Raises ``CleanupError`` when what it created could not be deleted,
        unless another error ended it (that one is raised, the cleanup's is
        shown as a warning).
        """
        try:
            status = await self._run()
        except asyncio.CancelledError:
            await self._finish(raise_failure=True)
            raise
        except BaseException:
            await self._finish(raise_failure=False)
            raise
        await self._finish(raise_failure=True)
        return status

    async def _finish(self, *, raise_failure: bool) -> None:
        failure = await asyncio.shield(self._cleanup())
        if failure is None:
            return
        if raise_failure:
            raise failure
        self.on_event(Notice(str(failure), warning=True))

    def bind(self) -> None:
        """Bind every local listener (``LocalPortInUse``); ``run`` does it first unless done."""
        for index, spec in enumerate(self.specs[len(self.tunnels) :], len(self.tunnels)):
            self.tunnels.append(Tunnel(self, index, spec))
            self.tunnels[-1].bind()

    async def _run(self) -> int:
        self.bind()
        for tunnel in self.tunnels:
            await tunnel.resolve()
        with contextlib.suppress(PluginError):
            removed = await delete_finished(self.cluster, self.namespace, self.cluster.user)
            if removed:
                self.on_event(Notice(f"removed {removed} finished relay pod(s) of yours"))
        for tunnel in self.tunnels:
            await tunnel.prepare()
        try:
            async with asyncio.TaskGroup() as group:
                runs = [group.create_task(tunnel.run()) for tunnel in self.tunnels]
        except BaseExceptionGroup as failures:
            raise first_error(failures) from None
        return max((task.result() for task in runs), default=0)

    async def _cleanup(self) -> CleanupError | None:
        """Delete everything created, close the listeners (bounded); what could not be deleted."""
        failures: list[tuple[str, str, BaseException]] = []
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                for tunnel in self.tunnels:
                    failures += await tunnel.delete_all()
                for name in self._created_secrets:
                    path = f"/api/v1/namespaces/{self.namespace}/secrets/{name}"
                    try:
                        await self.cluster.delete(path)
                    except PluginError as exc:
                        failures.append((f"secret/{name}", "secrets", exc))
        except TimeoutError as exc:
            failures.append(("the rest", "", exc))
        finally:
            for tunnel in self.tunnels:
                tunnel.close()
        if not failures:
            return None
        return cleanup_error(failures, self.namespace, self.cluster.user,
                             self.options.pod.lease)

    async def create_secret(self, tunnel: int, files: Mapping[str, bytes]) -> str:
        """A temporary Secret with ``files`` for a TLS tunnel; deleted at the end."""
        name = f"kubectl-relay-{self.client.session}-{tunnel}-tls"
        body = relaypod.tls_secret(
            name=name, namespace=self.namespace, files=files, client=self.client, tunnel=tunnel
        )
        path = f"/api/v1/namespaces/{self.namespace}/secrets"
        await self.cluster.request("POST", path, body=body)
        self._created_secrets.append(name)
        return name


class Tunnel:
    """One listener and the relay pods behind it (the ``PodRoute`` of its forwarder)."""

    def __init__(self, session: Session, index: int, spec: TunnelSpec) -> None:
        self.session = session
        self.cluster = session.cluster
        self.index = index
        self.spec = spec
        self.namespace = session.namespace  # the relay pods'
        self.options = session.options
        self.target_namespace = self.options.target_namespace or self.cluster.namespace
        self.emit = session.on_event
        self.sock: socket.socket | None = None
        self.endpoint: Endpoint | None = None
        self.tls = spec.tls
        self.pods: list[RelayPod] = []
        self.current: RelayPod | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        trace = self.options.trace
        self.connections = Connections(
            index,
            self.emit,
            # No connection to match without a local listener (``run``), nor for a proxy.
            matching=trace != "quiet" and not self.options.summary and spec.listen is not None
            and spec.proxy is None,
            text=trace == "text",
            summary=self.options.summary,
            by_session=spec.proxy is not None,
            quiet=trace == "quiet",
        )
        self._group: asyncio.TaskGroup | None = None
        self._mux = uses_mux(spec.mode)

    # -- setup ----------------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind the local listener (``LocalPortInUse``)."""
        listen = self.spec.listen
        if listen is None:
            return
        kind = socket.SOCK_DGRAM if self.spec.mode == "udp" else socket.SOCK_STREAM
        self.sock = bind(listen, kind)
        protocol = "udp" if self.spec.mode == "udp" else "tcp"
        self.emit(Listening(self.index, bound_text(self.sock), protocol))

    async def resolve(self) -> None:
        """Look the target up (``TargetNotFound``, ``PortNotFound``, ``AccessDenied``)."""
        if self.spec.target is not None:
            self.endpoint = await self.cluster.resolve(
                self.spec.target, self.target_namespace, by_name=self.spec.mode == "tls"
            )

    async def prepare(self) -> None:
        """Create what the relay pods share (a TLS Secret from local files), or check the Secret."""
        if self.tls is not None and self.tls.secret and not self.spec.tls_files:
            await self._use_secret(self.tls)
        if self.spec.tls_files:
            name = await self.session.create_secret(self.index, self.spec.tls_files)
            self.tls = dataclasses.replace(self.tls or TLSSettings(), secret=name)

    async def _use_secret(self, tls: TLSSettings) -> None:
        """Take the CA and client certificate from the user's Secret (the keys it has)."""
        path = f"/api/v1/namespaces/{self.namespace}/secrets/{tls.secret}"
        found = await self.cluster.get(path)
        if found is None:
            raise TargetNotFound(
                f'secret "{tls.secret}" not found in namespace "{self.namespace}"',
                "create it (kubectl create secret generic NAME --from-file=ca.crt=...) "
                "or pass local files with --cafile, --cert and --key",
            )
        keys = set((found.get("data") or {}).keys())
        self.tls = dataclasses.replace(
            tls,
            ca_key=tls.ca_key or ("ca.crt" if "ca.crt" in keys else None),
            cert_key=tls.cert_key or ("tls.crt" if "tls.crt" in keys else None),
            key_key=tls.key_key or ("tls.key" if "tls.key" in keys else None),
        )

    def close(self) -> None:
        """Close the local listener; show the connection lines still held."""
        self.connections.flush()
        if self.sock is not None:
            self.sock.close()

    # -- running ----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Start the first relay pod, then forward and watch until cancelled (or the relay ends)."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            leases = group.create_task(self._keep_leases())
            self.current = await self._start_pod(self.endpoint)
            listen = bound_text(self.sock) if self.sock is not None else ""
            self.emit(
                TunnelReady(
                    self.index,
                    listen,
                    self.spec.shown_target(),
                    self.current.endpoint.description if self.current.endpoint else "",
                    self.current.pod,
                    self.namespace,
                )
            )
            if self.spec.mode == "run":
                watcher = group.create_task(self._watch_run(self.current))
                if self.sock is not None and self.spec.run_port is not None:
                    forwarding = group.create_task(self._forwarder(self.spec.run_port).serve())
                    await watcher
                    forwarding.cancel()
                leases.cancel()
                return await watcher
            group.create_task(self._forwarder(relaypod.POD_PORT).serve())
            group.create_task(self._monitor())
        return 0

    def _forwarder(self, port: int) -> Forwarder:
        assert self.sock is not None
        return Forwarder(
            sock=self.sock,
            cluster=self.cluster,
            namespace=self.namespace,
            route=self,
            port=port,
            tunnel=self.index,
            on_event=self.emit,
            connections=self.connections,
            udp=self.spec.mode == "udp",
            udp_idle=self.spec.session_idle,
            framed=self.spec.mode != "run",
            mux=SharedPortForward(self.cluster, self.namespace, port, self.emit)
            if self._mux else None,
        )

    # -- PodRoute -------------------------------------------------------------------------------

    async def pod(self) -> str:
        """The pod new connections go to; a new one when the current one is gone or idle."""
        async with self._lock:
            current = self.current
            reason = ""
            if current is None:
                reason = "no relay pod"
            elif current.gone:
                reason = current.gone
            elif self._idle_expired(current):
                reason = "the relay pod has reached its idle timeout"
            if reason:
                if current is not None:
                    current.gone = current.gone or reason
                    self.emit(PodReplaced(self.index, current.pod, reason))
                endpoint = self.endpoint
                if self.spec.target is not None and self.spec.target.kind is not Kind.HOST:
                    endpoint = await self.cluster.resolve(
                        self.spec.target, self.target_namespace, by_name=self.spec.mode == "tls"
                    )
                    self.endpoint = endpoint
                self.current = current = await self._start_pod(endpoint)
            assert current is not None
            return current.pod

    def failed(self, pod: str, reason: str) -> None:
        """A connection to ``pod`` failed: the next check looks at it now."""
        for relay in self.pods:
            if relay.pod == pod and not relay.gone:
                relay.gone = f"pod {pod} stopped accepting connections: {reason}"

    def used(self, pod: str) -> None:
        """Restart the idle clock of ``pod`` (the relay's accept-timeout restarts too)."""
        for relay in self.pods:
            if relay.pod == pod:
                relay.last_use = time.monotonic()

    def _idle_expired(self, relay: RelayPod) -> bool:
        # The relay stops accepting ``idle_timeout`` seconds after its last
        # accepted connection; leave a margin for the connection in flight.
        idle = self.options.pod.idle_timeout
        margin = min(5.0, idle / 4)
        return time.monotonic() - relay.last_use > idle - margin

    # -- relay pods -------------------------------------------------------------------------------

    def _command(self, endpoint: Endpoint | None) -> list[str]:
        trace = self.options.trace
        if self.spec.mode == "run":
            return ["relay", *relaypod.trace_flags(trace), *relaypod.stop_flags(),
                    *self.spec.run_args]
        if self.spec.proxy is not None:
            return proxying.relay_command(
                trace, self.options.pod.idle_timeout, self.spec.proxy, mux=self._mux
            )
        assert endpoint is not None
        first = relaypod.listen_address(
            self.options.pod.idle_timeout, mux=self._mux, datagrams=self.spec.mode == "udp"
        )
        second = relaypod.target_address(self.spec.mode, endpoint.address, self.tls)
        patience = relaypod.close_timeout(self.spec.mode)
        return relaypod.relay_command(trace, first, second, close_timeout=patience)

    async def _start_pod(self, endpoint: Endpoint | None) -> RelayPod:
        """Create a relay Job and wait until its pod runs and its relay listens."""
        self._generation += 1
        name = relaypod.job_name(self.session.client.session, self.index, self._generation)
        command = self._command(endpoint)
        target = self.spec.shown_target()
        body = relaypod.relay_job(
            name=name,
            namespace=self.namespace,
            command=command,
            client=self.session.client,
            tunnel=self.index,
            target=target,
            settings=self.options.pod,
            tls=self.tls,
            port=relaypod.POD_PORT if self.spec.mode != "run" else self.spec.run_port,
            # Long enough to start; renewed by _keep_leases once it runs.
            lease=self.options.pod_timeout + self.options.pod.lease,
            check_host=self._host_to_check(endpoint),
        )
        relay = RelayPod(name, self.namespace, endpoint)
        self.emit(
            PodCreating(
                self.index, name, self.namespace, target, endpoint.description if endpoint else ""
            )
        )
        self.pods.append(relay)  # before the request: a cancelled create is still cleaned up
        try:
            await self.cluster.request(
                "POST", f"/apis/batch/v1/namespaces/{self.namespace}/jobs", body=body
            )
        except ApiError:
            self.pods.remove(relay)  # refused: nothing to delete
            raise
        deadline = time.monotonic() + self.options.pod_timeout
        await self._wait_running(relay)
        assert self._group is not None
        self._group.create_task(self._follow(relay))
        if self.spec.mode != "run" or self.spec.run_port is not None:
            await self._wait_listening(relay, deadline)
        # From now on the lease is short: a client killed at once leaves it soon.
        await self._renew(relay)
        relay.last_use = time.monotonic()
        return relay

    def _host_to_check(self, endpoint: Endpoint | None) -> str | None:
        """``HOST:PORT`` when the target is a name only the cluster's DNS can resolve."""
        target = self.spec.target
        if target is None or target.kind is not Kind.HOST or endpoint is None:
            return None
        return endpoint.address

    async def _unresolvable(self, relay: RelayPod, pod: Pod) -> TargetNotFound | None:
        """``TargetNotFound`` when the pod's resolve init container failed, with its error."""
        for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if status.get("name") != relaypod.RESOLVE_CONTAINER or not terminated:
                continue
            if not terminated.get("exitCode"):
                return None
            reason = await self._init_error(relay)
            target = self.spec.target
            return TargetNotFound(
                f'"{target}" cannot be resolved from relay pod {relay.pod} in namespace '
                f'"{relay.namespace}" ({reason})',
                "check the host name (the cluster's DNS resolves it from that namespace: "
                "NAME.NAMESPACE for a Service elsewhere) or name the Service as svc/NAME:PORT",
            )
        return None

    async def _init_error(self, relay: RelayPod) -> str:
        """The resolve container's error line, without the engine's timestamp and level."""
        text = b""
        with contextlib.suppress(PluginError):
            async with asyncio.timeout(5):
                async for chunk in self.cluster.follow_log(
                    relay.namespace, relay.pod, relaypod.RESOLVE_CONTAINER, follow=False
                ):
                    text += chunk
        parser = TraceParser()
        for event in [*parser.feed(text), *parser.close()]:
            if isinstance(event, LogLine) and event.level in "EF":
                return event.message
        return "the name did not resolve"

    async def _wait_running(self, relay: RelayPod) -> None:
        timeout = self.options.pod_timeout
        started = time.monotonic()
        shown_events: set[tuple[str, str]] = set()
        last_reason = ""
        while True:
            elapsed = time.monotonic() - started
            pod = await self._find_pod(relay)
            reason, message = "Pending", "waiting for the Job to create the pod"
            if pod is not None:
                relay.pod = pod["metadata"].get("name", "")
                status = pod.get("status") or {}
                phase = status.get("phase", "Pending")
                state = container_state(pod)
                unresolvable = await self._unresolvable(relay, pod)
                if unresolvable is not None:
                    raise unresolvable
                if phase == "Running" and "running" in state:
                    return
                if phase in ("Succeeded", "Failed") and self.spec.mode == "run":
                    return  # a short command already ran; its log is still there
                if phase in ("Succeeded", "Failed"):
                    raise PodNotReady(
                        relay.pod,
                        f"relay pod {relay.pod} ended before it was ready ({phase}: "
                        f"{termination(pod)})",
                        f"see kubectl logs {relay.pod} -n {relay.namespace}",
                    )
                reason, message = waiting_reason(pod)
                error = FATAL_WAITING.get(reason)
                if error is not None:
                    raise start_error(error, relay, reason, message, self.options.pod.image)
            if reason != last_reason:
                self.emit(PodWaiting(self.index, relay.pod or relay.job, reason, message))
                last_reason = reason
            if elapsed > EVENTS_AFTER:
                await self._show_events(relay, shown_events)
            if elapsed > timeout:
                unschedulable = reason == "Unschedulable"
                error_type = Unschedulable if unschedulable else PodNotReady
                raise error_type(
                    relay.pod or relay.job,
                    f"relay pod {relay.pod or relay.job} not running after {timeout:g}s "
                    f"({reason}{': ' + message if message else ''})",
                    f"check kubectl describe pod -n {relay.namespace} "
                    f"-l job-name={relay.job}, or raise --pod-timeout",
                )
            await asyncio.sleep(START_POLL)

    async def _wait_listening(self, relay: RelayPod, deadline: float) -> None:
        # The relay's "listening on" notice (it always runs with -d -d) says
        # when the first connection can come.
        waiters = [
            asyncio.ensure_future(relay.listening.wait()),
            asyncio.ensure_future(relay.finished.wait()),
        ]
        try:
            await asyncio.wait(
                waiters,
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if relay.listening.is_set():
            return
        if relay.finished.is_set():
            pod = await self.cluster.get_pod(relay.namespace, relay.pod)
            raise PodNotReady(
                relay.pod,
                f"the relay in pod {relay.pod} exited before it listened "
                f"({termination(pod) if pod else 'pod deleted'})",
                f"see its error above, or kubectl logs {relay.pod} -n {relay.namespace}",
            )
        raise PodNotReady(
            relay.pod,
            f"the relay in pod {relay.pod} did not start listening within "
            f"{self.options.pod_timeout:g}s",
            f"check --image (it must run the relay engine) and kubectl logs {relay.pod} "
            f"-n {relay.namespace}, or raise --pod-timeout",
        )

    async def _find_pod(self, relay: RelayPod) -> Pod | None:
        if relay.pod:
            return await self.cluster.get_pod(relay.namespace, relay.pod)
        items = await self.cluster.list_items(
            f"/api/v1/namespaces/{relay.namespace}/pods", labels=f"job-name={relay.job}"
        )
        pods = [cast(Pod, item) for item in items]
        return pods[0] if pods else None

    async def _show_events(self, relay: RelayPod, shown: set[tuple[str, str]]) -> None:
        if not relay.pod:
            return
        with contextlib.suppress(PluginError):
            for event in await self.cluster.pod_events(relay.namespace, relay.pod):
                key = (event.get("reason", ""), event.get("message", ""))
                if event.get("type") != "Warning" or key in shown:
                    continue
                shown.add(key)
                self.emit(PodEvent(self.index, relay.pod, "Warning", key[0], key[1]))

    async def _follow(self, relay: RelayPod) -> None:
        """Stream the relay's log as trace events until the pod ends."""
        parser = TraceParser(_TRACE_MODES[self.options.trace])
        try:
            while not relay.deleted:
                try:
                    async for chunk in self.cluster.follow_log(
                        relay.namespace, relay.pod, relaypod.CONTAINER
                    ):
                        for event in parser.feed(chunk):
                            self._traced(relay, event)
                    break  # the container ended
                except PluginError:
                    pod = await self.cluster.get_pod(relay.namespace, relay.pod)
                    phase = (pod.get("status") or {}).get("phase") if pod else None
                    if pod is None or phase in ("Succeeded", "Failed"):
                        break
                    await asyncio.sleep(START_POLL)
            for event in parser.close():
                self._traced(relay, event)
        except PluginError:
            pass
        finally:
            relay.finished.set()

    def _traced(self, relay: RelayPod, event: object) -> None:
        if isinstance(event, LogLine) and event.message.startswith("listening on "):
            relay.listening.set()
            return
        self.connections.traced(relay.pod, event)  # type: ignore[arg-type]

    async def _monitor(self) -> None:
        """Check the relay pods (and a Deployment's backend) while the tunnel runs."""
        while True:
            await asyncio.sleep(CHECK_PERIOD)
            for relay in list(self.pods):
                if relay.deleted:
                    continue
                try:
                    await self._check(relay)
                except RelayPodError:
                    raise  # a replacement that cannot start ends the tunnel
                except PluginError as exc:
                    # A failed check (the API server restarting) is tried again.
                    self.session.api.failed(exc)
                else:
                    self.session.api.answered()

    async def _keep_leases(self) -> None:
        """Renew the lease of every relay pod still in use (``relaypod.LEASE_SECONDS``)."""
        while True:
            await asyncio.sleep(relaypod.renew_period(self.options.pod.lease))
            for relay in list(self.pods):
                if not relay.deleted and relay.pod:
                    # A pod still starting has a lease as long as --pod-timeout.
                    await self._renew(relay)

    async def _renew(self, relay: RelayPod) -> None:
        """Push the Job's deadline to the lease from now (failures are told once)."""
        elapsed = time.monotonic() - relay.started
        deadline = relaypod.lease_deadline(elapsed + self.options.pod.lease, self.options.pod)
        patch = {"spec": {"activeDeadlineSeconds": deadline}}
        try:
            await self.cluster.merge_patch(job_path(relay.namespace, relay.job), patch)
        except ApiError as exc:
            if exc.status != 404:  # gone: the monitor replaces it
                self.session.api.failed(exc)
        except PluginError as exc:
            self.session.api.failed(exc)
        else:
            self.session.api.answered()

    async def _check(self, relay: RelayPod) -> None:
        pod = await self.cluster.get_pod(relay.namespace, relay.pod)
        phase = (pod.get("status") or {}).get("phase") if pod else None
        current = relay is self.current
        if pod is None or pod["metadata"].get("deletionTimestamp") or phase == "Failed":
            why = "was deleted" if phase != "Failed" else f"failed ({termination(pod)})"  # type: ignore[arg-type]
            relay.gone = relay.gone or f"relay pod {relay.pod} {why}"
            await self._delete(relay)
            if current:
                await self.pod()  # replace it now: the user is waiting for a working tunnel
            return
        if phase == "Succeeded":
            # It exited after its idle timeout: the next connection starts a new one.
            relay.gone = relay.gone or f"relay pod {relay.pod} exited after its idle timeout"
            await self._delete(relay)
            return
        if not current:
            return
        backend = relay.endpoint.backend if relay.endpoint else None
        if backend and self.spec.target and self.spec.target.kind is Kind.DEPLOYMENT:
            found = await self.cluster.get_pod(self.target_namespace, backend)
            if found is None or not pod_ready(found):
                relay.gone = f"backend pod {backend} is no longer ready"
        if relay.gone:
            await self.pod()
            await self._delete(relay)

    async def _watch_run(self, relay: RelayPod) -> int:
        """``run``: wait for the relay to end; its exit status."""
        await relay.finished.wait()
        for _ in range(40):
            pod = await self.cluster.get_pod(relay.namespace, relay.pod)
            if pod is None:
                raise PodNotReady(relay.pod, f"relay pod {relay.pod} was deleted", "run it again")
            terminated = container_state(pod).get("terminated")
            if isinstance(terminated, dict):
                return int(terminated.get("exitCode") or 0)
            await asyncio.sleep(START_POLL)
        raise PortForwardError(
            f"the log of relay pod {relay.pod} ended but the relay still runs",
            f"see kubectl logs {relay.pod} -n {relay.namespace}",
        )

    # -- cleanup ----------------------------------------------------------------------------------

    async def _delete(self, relay: RelayPod) -> None:
        if relay.deleted:
            return
        relay.deleted = True
        await self.cluster.delete(job_path(relay.namespace, relay.job), propagation="Background")
        if relay.pod:
            # The Job's deletion takes its pod with it (background propagation);
            # deleting the pod too only makes it go sooner, so a refusal is no failure.
            with contextlib.suppress(PluginError):
                await self.cluster.delete(pod_path(relay.namespace, relay.pod))
        self.emit(PodDeleted(self.index, relay.pod or relay.job))

    async def delete_all(self) -> list[tuple[str, str, BaseException]]:
        """Delete every relay Job and pod this tunnel created; (object, resource, error) left."""
        failures: list[tuple[str, str, BaseException]] = []
        for relay in self.pods:
            try:
                await self._delete(relay)
            except PluginError as exc:
                failures.append((f"job/{relay.job}", "jobs.batch", exc))
        return failures

