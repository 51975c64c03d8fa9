"""The sandbox's kubelet: runs pods as local processes; serves ``pods/log`` and port-forward.

Each pod gets a loopback address of its own (``ipam``), a directory
(volumes, logs, a home), and one process per container (``containers``).
The kubelet follows pods through an informer: a new pod starts, a deleted pod
is stopped (SIGTERM, then SIGKILL after the grace period) and forgotten.

It implements the API server's ``PodBackend``: ``logs`` reads a container's
log file, ``connect`` opens a TCP connection to the pod's IP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..api.errors import ApiError, BadRequest, NotFound
from .containers import ContainerRunner, ContainerStatus, RestartPolicy
from .controller import ClusterContext
from .dns import DnsTableFile
from .images import ImageRegistry
from .informer import cancel_and_wait
from .ipam import AddressPool
from .logs import read_log
from .objects import Body, is_terminating, meta, namespace_of, now
from .podspec import Launch, base_env, container_env, launch
from .podstatus import ContainerView, conditions, phase
from .volumes import VolumeError, materialize, mounts_for

log = logging.getLogger("sandbox.kubelet")

COMPONENT = "kubelet"


class PodWorker:
    """Runs one pod from its creation to its deletion."""

    def __init__(self, kubelet: Kubelet, pod: Body) -> None:
        self.kubelet = kubelet
        self.pod = pod
        self.uid = str(meta(pod)["uid"])
        self.namespace = str(namespace_of(pod))
        self.name = str(meta(pod)["name"])
        self.dir = kubelet.workdir / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.pod_ip: str | None = None
        self.start_time = now()
        spec = pod.get("spec") or {}
        self.restart_policy: RestartPolicy = spec.get("restartPolicy", "Always")
        self.containers: list[ContainerRunner] = []
        self.init_containers: list[ContainerRunner] = []
        self.initialized = not spec.get("initContainers")
        self.init_failed = False
        self.waiting: dict[
            str, dict[str, Any]
        ] = {}  # container -> waiting state before a runner exists
        self._conditions: list[dict[str, Any]] = []
        self._stopping = asyncio.Event()
        self._dirty = asyncio.Event()
        self._gone = False
        self._task: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._volumes: dict[str, Path] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start running the pod."""
        self._task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")
        self._task.add_done_callback(self._report_failure)
        self._publisher = asyncio.create_task(self._publish_loop(), name=f"status {self.name}")

    async def stop(self, grace: float, *, gone: bool) -> None:
        """Stop every container (SIGTERM, SIGKILL after ``grace``); ``gone``: pod deleted."""
        self._gone = self._gone or gone
        self._stopping.set()
        # _run creates no runner once _stopping is set, but may have created some
        # while earlier ones were stopping: loop until every runner got its stop.
        stopped: set[int] = set()
        while True:
            runners = [r for r in (*self.init_containers, *self.containers) if id(r) not in stopped]
            if not runners:
                break
            stopped.update(id(r) for r in runners)
            await asyncio.gather(*(r.stop(grace) for r in runners))
        for task in (self._task, self._publisher):  # in this order: the pod loop first
            if task is not None:
                await cancel_and_wait([task])
        self._publisher = None
        if not self._gone:
            await self._publish()

    def _report_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "pod %s/%s failed in the kubelet",
                self.namespace,
                self.name,
                exc_info=task.exception(),
            )
            self.event("Warning", "Failed", f"sandbox kubelet error: {task.exception()}")

    def changed(self) -> None:
        """Something in the pod's state moved: write the status soon."""
        self._dirty.set()

    def event(self, kind: str, reason: str, message: str) -> None:
        """Post an event about this pod."""
        self.kubelet.ctx.events.post(self.pod, kind, reason, message, COMPONENT)

    async def _run(self) -> None:
        spec = self.pod.get("spec") or {}
        self.pod_ip = self.kubelet.pod_ips.allocate()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.kubelet.publish_hostname(self, self.pod_ip)
        await self._bind_to_node()
        self.event(
            "Normal",
            "Scheduled",
            f"Successfully assigned {self.namespace}/{self.name} to "
            f"{self.kubelet.ctx.settings.node_name}",
        )
        self.changed()
        all_specs = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        if not await self._pull_images(all_specs):
            return
        if not await self._mount_volumes():
            return
        for init_spec in spec.get("initContainers") or []:
            if self._stopping.is_set():
                return
            runner = self._runner(
                init_spec, "Never" if self.restart_policy == "Never" else "OnFailure"
            )
            self.init_containers.append(runner)
            self.changed()
            await runner.run()
            terminated = runner.status.terminated or {}
            if self._stopping.is_set():
                return
            if terminated.get("exitCode") != 0:
                self.init_failed = True
                self.changed()
                return
        if self._stopping.is_set():
            return
        self.initialized = True
        for container_spec in spec.get("containers") or []:
            self.containers.append(self._runner(container_spec, self.restart_policy))
        self.waiting.clear()
        self.changed()
        await asyncio.gather(*(r.run() for r in self.containers))
        self.changed()

    async def _bind_to_node(self) -> None:
        """Record the node in ``spec.nodeName``, as the scheduler's binding does."""
        node = self.kubelet.ctx.settings.node_name
        if (self.pod.get("spec") or {}).get("nodeName") == node:
            return
        with contextlib.suppress(ApiError):
            await self.kubelet.ctx.store.patch(
                "v1",
                "pods",
                self.namespace,
                self.name,
                {"spec": {"nodeName": node}},
                patch_type="merge",
            )

    def _runner(self, container_spec: dict[str, Any], policy: RestartPolicy) -> ContainerRunner:
        assert self.pod_ip is not None
        pod_ip = self.pod_ip

        async def prepare() -> Launch:
            image = self.kubelet.images.resolve(str(container_spec.get("image", "")))
            assert image is not None  # checked by _pull_images
            own = await container_env(self.pod, container_spec, self.kubelet.fetch)
            base = base_env(
                self.pod,
                pod_ip=pod_ip,
                dns_table=str(self.kubelet.dns.path),
                bindir=str(self.kubelet.bindir),
                home=str(self.dir),
                kubeconfig=self.kubelet.kubeconfig,
            )
            mounts = mounts_for(container_spec, self._volumes)
            return launch(
                image, container_spec, base=base, own_env=own, mounts=mounts, cwd=self.dir
            )

        return ContainerRunner(
            container_spec,
            pod_dir=self.dir,
            pod_ip=pod_ip,
            prepare=prepare,
            restart_policy=policy,
            settings=self.kubelet.ctx.settings,
            on_change=self.changed,
            on_event=self.event,
        )

    async def _pull_images(self, specs: list[dict[str, Any]]) -> bool:
        """Wait until every image is known; report ErrImagePull / ImagePullBackOff meanwhile."""
        attempts = 0
        while not self._stopping.is_set():
            missing = [
                s for s in specs if self.kubelet.images.resolve(str(s.get("image", ""))) is None
            ]
            for s in specs:
                if s not in missing:
                    self.waiting[s["name"]] = {"reason": "ContainerCreating"}
            if not missing:
                for s in specs:
                    self.event(
                        "Normal",
                        "Pulled",
                        f'Container image "{s.get("image")}" already present on machine',
                    )
                return True
            for s in missing:
                image = s.get("image")
                if attempts == 0:
                    message = (
                        f'failed to pull and unpack image "{image}": failed to resolve '
                        f'reference "{image}": {image}: not found'
                    )
                    self.waiting[s["name"]] = {"reason": "ErrImagePull", "message": message}
                    self.event("Normal", "Pulling", f'Pulling image "{image}"')
                    self.event("Warning", "Failed", f'Failed to pull image "{image}": {message}')
                    self.event("Warning", "Failed", "Error: ErrImagePull")
                else:
                    self.waiting[s["name"]] = {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}"',
                    }
                    if attempts == 1:
                        self.event("Normal", "BackOff", f'Back-off pulling image "{image}"')
                        self.event("Warning", "Failed", "Error: ImagePullBackOff")
            attempts += 1
            self.changed()
            await self.kubelet.wait_for_images(
                self._stopping, self.kubelet.ctx.settings.image_pull_retry
            )
        return False

    async def _mount_volumes(self) -> bool:
        """Write the volumes; retry while a Secret or ConfigMap is missing."""
        reported = False
        while not self._stopping.is_set():
            try:
                self._volumes = await materialize(
                    self.pod,
                    self.dir / "volumes",
                    self.kubelet.fetch,
                    claims_root=self.kubelet.workdir / "claims",
                )
                return True
            except VolumeError as exc:
                if not reported:
                    self.event("Warning", "FailedMount", str(exc))
                    reported = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), self.kubelet.ctx.settings.image_pull_retry
                )
        return False

    # -- status -----------------------------------------------------------------------------

    def _views(self) -> list[ContainerView]:
        """The containers for the status; placeholders (waiting) before the runners exist."""
        if self.initialized and self.containers:
            return [ContainerView(r.status, r.done.is_set()) for r in self.containers]
        views = []
        for spec in (self.pod.get("spec") or {}).get("containers") or []:
            waiting = self.waiting.get(spec["name"], {"reason": "ContainerCreating"})
            placeholder = ContainerStatus(
                spec["name"], str(spec.get("image", "")), state={"waiting": waiting}
            )
            views.append(ContainerView(placeholder, final=False))
        return views

    def status(self) -> dict[str, Any]:
        """The pod's ``status`` as of now."""
        spec = self.pod.get("spec") or {}
        views = self._views()
        pod_phase = phase(views, initialized=self.initialized, init_failed=self.init_failed)
        statuses = [v.status.to_dict() for v in views]
        self._conditions = conditions(
            self._conditions,
            views,
            has_ip=self.pod_ip is not None,
            initialized=self.initialized,
            pod_phase=pod_phase,
        )
        status: dict[str, Any] = {
            "phase": pod_phase,
            "conditions": self._conditions,
            "hostIP": self.kubelet.ctx.networks.node_ip,
            "hostIPs": [{"ip": self.kubelet.ctx.networks.node_ip}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        }
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if spec.get("initContainers"):
            init = {r.name: r.status for r in self.init_containers}
            status["initContainerStatuses"] = [
                (
                    init.get(c["name"])
                    or ContainerStatus(
                        c["name"],
                        str(c.get("image", "")),
                        state={
                            "waiting": self.waiting.get(c["name"], {"reason": "PodInitializing"})
                        },
                    )
                ).to_dict()
                for c in spec["initContainers"]
            ]
        return status

    async def _publish(self) -> None:
        if self._gone:
            return
        try:
            await self.kubelet.ctx.store.patch(
                "v1",
                "pods",
                self.namespace,
                self.name,
                {"status": self.status()},
                patch_type="merge",
                subresource="status",
            )
        except NotFound:
            self._gone = True
        except ApiError as exc:
            log.warning("status of pod %s/%s not written: %s", self.namespace, self.name, exc)

    async def _publish_loop(self) -> None:
        while not self._gone:
            await self._dirty.wait()
            self._dirty.clear()
            await self._publish()

    # -- queries -----------------------------------------------------------------------------

    def container(self, name: str | None) -> ContainerRunner:
        """A container by name (the only one when ``name`` is None); BadRequest otherwise."""
        names = [c["name"] for c in (self.pod.get("spec") or {}).get("containers") or []]
        inits = [c["name"] for c in (self.pod.get("spec") or {}).get("initContainers") or []]
        if name is None:
            if len(names) != 1:
                raise BadRequest(
                    f"a container name must be specified for pod {self.name}, "
                    f"choose one of: [{' '.join(names)}]"
                )
            name = names[0]
        for runner in [*self.containers, *self.init_containers]:
            if runner.name == name:
                return runner
        if name in names or name in inits:
            reason = self.waiting.get(name, {}).get("reason", "ContainerCreating")
            raise BadRequest(
                f'container "{name}" in pod "{self.name}" is waiting to start: {reason}'
            )
        raise BadRequest(f"container {name} is not valid for pod {self.name}")


class Kubelet:
    """Runs the pods of the sandbox; the API server's ``PodBackend``."""

    def __init__(
        self,
        ctx: ClusterContext,
        *,
        images: ImageRegistry,
        dns: DnsTableFile,
        workdir: Path,
        kubeconfig: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.images = images
        self.dns = dns
        self.workdir = workdir
        self.bindir = workdir / "bin"
        self.kubeconfig = kubeconfig
        self.pod_ips = AddressPool(ctx.networks.pods)
        self.workers: dict[str, PodWorker] = {}
        self._images_changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._stopping: list[asyncio.Task[None]] = []
        images.on_change = self._on_images_changed
        ctx.informers.get("v1", "pods").add_handler(self._on_pod)

    # -- lifecycle ------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop every pod (short grace) and wait for the processes to end."""
        grace = min(1.0, self.ctx.settings.max_grace_seconds)
        await asyncio.gather(*(w.stop(grace, gone=True) for w in list(self.workers.values())))
        await asyncio.gather(*self._stopping, return_exceptions=True)
        for worker in list(self.workers.values()):
            for runner in (*worker.init_containers, *worker.containers):
                if runner.process is not None and runner.process.returncode is None:
                    runner.process.kill_now()  # last resort: never leave a process behind
            self._forget(worker)

    def _on_images_changed(self) -> None:
        # register_image may be called from another thread than the sandbox's loop.
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._images_changed.set)

    async def wait_for_images(self, stopping: asyncio.Event, timeout: float) -> None:
        """Sleep until an image is registered, the pod stops, or ``timeout`` passes."""
        waiters = [
            asyncio.ensure_future(self._images_changed.wait()),
            asyncio.ensure_future(stopping.wait()),
        ]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        self._images_changed.clear()

    def _on_pod(self, kind: str, pod: Body) -> None:
        uid = str(meta(pod).get("uid", ""))
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                self._stop_worker(worker, gone=True)
            return
        if worker is None:
            if is_terminating(pod) or (pod.get("status") or {}).get("phase") in (
                "Succeeded",
                "Failed",
            ):
                return  # not ours to start (finished before this kubelet, or already going)
            node = (pod.get("spec") or {}).get("nodeName")
            if node and node != self.ctx.settings.node_name:
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            worker.start()
            return
        worker.pod = pod
        if is_terminating(pod):
            self._stop_worker(worker, gone=False)

    def _stop_worker(self, worker: PodWorker, *, gone: bool) -> None:
        spec = worker.pod.get("spec") or {}
        grace = float(spec.get("terminationGracePeriodSeconds", 30))
        if meta(worker.pod).get("deletionGracePeriodSeconds") not in (None, 0):
            grace = float(meta(worker.pod)["deletionGracePeriodSeconds"])
        grace = min(grace, self.ctx.settings.max_grace_seconds)

        async def stop() -> None:
            await worker.stop(grace, gone=gone)
            if gone:
                self._forget(worker)

        task = asyncio.create_task(stop(), name=f"stop pod {worker.name}")
        self._stopping.append(task)
        task.add_done_callback(self._stopping.remove)

    def _forget(self, worker: PodWorker) -> None:
        if self.workers.get(worker.uid) is worker:
            del self.workers[worker.uid]
            self.pod_ips.release(worker.pod_ip)
            self.publish_hostname(worker, None)
            shutil.rmtree(worker.dir, ignore_errors=True)

    def publish_hostname(self, worker: PodWorker, address: str | None) -> None:
        """Publish ``hostname.subdomain.ns.svc`` for pods that ask for it."""
        spec = worker.pod.get("spec") or {}
        if spec.get("subdomain"):
            hostname = spec.get("hostname") or worker.name
            self.dns.set_host(worker.namespace, spec["subdomain"], hostname, address)

    async def fetch(self, plural: str, namespace: str, name: str) -> Body | None:
        """A Secret or ConfigMap for volumes and env, or None when missing."""
        try:
            return await self.ctx.store.get("v1", plural, namespace, name)
        except NotFound:
            return None

    # -- lookups -----------------------------------------------------------------------------

    def worker(self, namespace: str, name: str) -> PodWorker:
        """The worker of a pod; NotFound as the API words it."""
        for worker in self.workers.values():
            if worker.namespace == namespace and worker.name == name and not worker._gone:
                return worker
        raise NotFound(f'pods "{name}" not found', name=name, kind="pods")

    def pod_ip(self, namespace: str, name: str) -> str | None:
        """The pod's IP, once it has one."""
        return self.worker(namespace, name).pod_ip

    # -- PodBackend ----------------------------------------------------------------------------

    async def logs(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        *,
        follow: bool,
        tail_lines: int | None = None,
    ) -> AsyncIterator[bytes]:
        """The container's output; with ``follow``, until the container's current run ends."""
        runner = self.worker(namespace, pod).container(container)
        async for chunk in read_log(
            runner.current_log, follow=follow, tail_lines=tail_lines, finished=runner.finished_run
        ):
            yield chunk

    async def connect(
        self, namespace: str, pod: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to ``port`` on the pod's IP; ConnectionError if nothing listens."""
        try:
            address = self.pod_ip(namespace, pod)
        except NotFound as exc:
            raise ConnectionError(str(exc)) from None
        if address is None:
            raise ConnectionError(f"pod {namespace}/{pod} has no IP address yet")
        return await asyncio.open_connection(address, port)

    # -- fault injection -----------------------------------------------------------------------

    def kill(
        self, namespace: str, name: str, sig: int = signal.SIGKILL, container: str | None = None
    ) -> int:
        """Send ``sig`` to the pod's container processes; how many got it."""
        worker = self.worker(namespace, name)
        runners = [r for r in worker.containers if container in (None, r.name)]
        return sum(r.send_signal(sig) for r in runners)
