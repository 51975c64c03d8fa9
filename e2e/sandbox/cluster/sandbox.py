"""``Sandbox`` and ``SandboxThread``: the API server and the cluster behind it, started together.

See the package ``e2e.sandbox`` for the overview.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from e2e.kubeclient import api_client_for

from ..api import ApiServer, NotFound, Store
from .cluster import Cluster
from .images import ImageRun
from .jobs import job_finished
from .objects import Body, find_condition, pod_is_ready
from .settings import ClusterSettings

__all__ = ["RELAY_IMAGE", "Sandbox", "SandboxThread", "WaitTimeout"]

T = TypeVar("T")

#: The project's relay image, as manifests name it (any tag; any name containing
#: ``kubectl-relay`` runs the engine too).
RELAY_IMAGE = "ghcr.io/kubectl-relay/relay:latest"

#: How often the wait helpers look at the store.
POLL = 0.05


class WaitTimeout(AssertionError):
    """A wait helper gave up; the message says what it waited for and what it last saw."""


class Sandbox:
    """The API server and the cluster behind it, on the running event loop."""

    def __init__(
        self,
        *,
        kubeconfig: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        workdir: str | Path | None = None,
        settings: ClusterSettings | None = None,
        namespace: str = "default",
    ) -> None:
        """``kubeconfig``: where to write it (default: in ``workdir``, a new temporary dir)."""
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kubectl-relay-sandbox-"))
        self.kubeconfig = Path(kubeconfig) if kubeconfig else self.workdir / "kubeconfig"
        self.namespace = namespace
        self.api = ApiServer(host=host, port=port)
        self.cluster = Cluster(
            self.api.store,
            workdir=self.workdir / "cluster",
            settings=settings,
            kubeconfig=str(self.kubeconfig),
        )
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving, write the kubeconfig, start the cluster."""
        try:
            await self.api.start()
            self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            self.api.write_kubeconfig(self.kubeconfig, namespace=self.namespace)
            await self.cluster.start()
            self.api.backend = self.cluster.kubelet
            self._started = True
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every pod's processes, the controllers and the API server; remove the workdir."""
        self._started = False
        try:
            await self.cluster.stop()
        finally:
            await self.api.stop()
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what tests use ---------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The API server's store (in-process access, on this loop only)."""
        return self.api.store

    @property
    def url(self) -> str:
        """The API server's URL."""
        return self.api.url

    def register_image(
        self, name: str, run: ImageRun, *, env: dict[str, str] | None = None
    ) -> None:
        """Make image ``name`` runnable: a command line (the ENTRYPOINT) or a module-level function.

        A function is called in the pod's process with the container's
        ``command`` + ``args`` as a list; it may be ``async``. Pods waiting for
        the image with ErrImagePull start as soon as it is registered.
        """
        self.cluster.images.register(name, run, env=env)

    def kill_pod(
        self, namespace: str, name: str, sig: int = signal.SIGKILL, container: str | None = None
    ) -> int:
        """Send ``sig`` to the pod's container processes (all, or one); how many got it."""
        return self.cluster.kubelet.kill(namespace, name, sig, container)

    def pod_ip(self, namespace: str, name: str) -> str | None:
        """The pod's IP (None before it has one)."""
        return self.cluster.kubelet.pod_ip(namespace, name)

    async def wait_for(
        self, what: str, check: Callable[[], Awaitable[T | None]], timeout: float = 15.0
    ) -> T:
        """Poll ``check`` until it returns something other than None (or False).

        ``timeout`` is multiplied by ``RELAY_TEST_TIMEOUT_SCALE``, as the tests' own.
        """
        timeout *= float(os.environ.get("RELAY_TEST_TIMEOUT_SCALE", "1"))
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                result = await check()
            except NotFound as exc:
                result, last = None, exc
            if result is not None and result is not False:
                return result
            if time.monotonic() > deadline:
                raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what} (last: {last})")
            await asyncio.sleep(POLL)

    async def wait_pod(
        self,
        namespace: str,
        name: str,
        *,
        ready: bool = True,
        phase: str | None = None,
        timeout: float = 15.0,
    ) -> Body:
        """Wait until the pod is ready (or in ``phase``); return it."""

        async def check() -> Body | None:
            pod = await self.store.get("v1", "pods", namespace, name)
            if phase is not None:
                return pod if (pod.get("status") or {}).get("phase") == phase else None
            return pod if pod_is_ready(pod) or not ready else None

        return await self.wait_for(f"pod {namespace}/{name}", check, timeout)

    async def wait_deployment(self, namespace: str, name: str, timeout: float = 15.0) -> Body:
        """Wait until the Deployment is rolled out, as ``kubectl rollout status`` decides."""

        async def check() -> Body | None:
            d = await self.store.get("apps/v1", "deployments", namespace, name)
            status = d.get("status") or {}
            replicas = int((d.get("spec") or {}).get("replicas", 1))
            done = (
                status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
                and status.get("updatedReplicas", 0) >= replicas
                and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
                and status.get("availableReplicas", 0) >= status.get("updatedReplicas", 0)
                and (find_condition(d, "Available") or {}).get("status") == "True"
            )
            return d if done else None

        return await self.wait_for(f"deployment {namespace}/{name} rollout", check, timeout)

    async def wait_job(self, namespace: str, name: str, timeout: float = 15.0) -> Body:
        """Wait until the Job is Complete or Failed; return it."""

        async def check() -> Body | None:
            job = await self.store.get("batch/v1", "jobs", namespace, name)
            return job if job_finished(job) else None

        return await self.wait_for(f"job {namespace}/{name}", check, timeout)

    async def pods_gone(self, namespace: str, timeout: float = 15.0) -> None:
        """Wait until no pod of ``namespace`` has a process left (after deleting them)."""

        async def check() -> bool:
            return not any(w.namespace == namespace for w in self.cluster.kubelet.workers.values())

        await self.wait_for(f"the pods of {namespace} to end", check, timeout)


class SandboxThread:
    """A ``Sandbox`` on its own event loop in a background thread, for synchronous callers.

    ::

        with SandboxThread() as sandbox:
            subprocess.run(["kubectl", "--kubeconfig", sandbox.kubeconfig, "get", "pods"])
            sandbox.run(sandbox.sandbox.wait_pod("default", "web"))

    The thread is joined on exit; every pod process is stopped before.
    """

    def __init__(self, **options: Any) -> None:
        """``options`` are ``Sandbox``'s."""
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="sandbox")
        self._sandbox: Sandbox | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def sandbox(self) -> Sandbox:
        """The Sandbox (use it through ``run`` / ``call``: it lives on the thread's loop)."""
        assert self._sandbox is not None, "the sandbox runs only inside the with block"
        return self._sandbox

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The sandbox's event loop."""
        return self._loop

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig for kubectl, kopf and the kubernetes client."""
        return self.sandbox.kubeconfig

    @property
    def url(self) -> str:
        """The API server's URL."""
        return self.sandbox.url

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the sandbox's loop; wait for its result (bounded by ``timeout``).

        The wait helpers bound themselves; so do the store's calls.
        """
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Call a plain function on the sandbox's loop (the store is not thread-safe)."""

        async def wrapper() -> T:
            return function(*args)

        return self.run(wrapper())

    def register_image(
        self, name: str, run: ImageRun, *, env: dict[str, str] | None = None
    ) -> None:
        """See ``Sandbox.register_image``."""
        self.call(lambda: self.sandbox.register_image(name, run, env=env))

    def kill_pod(
        self, namespace: str, name: str, sig: int = signal.SIGKILL, container: str | None = None
    ) -> int:
        """See ``Sandbox.kill_pod``."""
        return self.call(self.sandbox.kill_pod, namespace, name, sig, container)

    def pod_ip(self, namespace: str, name: str) -> str | None:
        """See ``Sandbox.pod_ip``."""
        return self.call(self.sandbox.pod_ip, namespace, name)

    def wait_pod(self, namespace: str, name: str, **options: Any) -> Body:
        """See ``Sandbox.wait_pod``."""
        return self.run(self.sandbox.wait_pod(namespace, name, **options))

    def wait_deployment(self, namespace: str, name: str, timeout: float = 15.0) -> Body:
        """See ``Sandbox.wait_deployment``."""
        return self.run(self.sandbox.wait_deployment(namespace, name, timeout))

    def wait_job(self, namespace: str, name: str, timeout: float = 15.0) -> Body:
        """See ``Sandbox.wait_job``."""
        return self.run(self.sandbox.wait_job(namespace, name, timeout))

    def pods_gone(self, namespace: str, timeout: float = 15.0) -> None:
        """See ``Sandbox.pods_gone``."""
        self.run(self.sandbox.pods_gone(namespace, timeout))

    def api_client(self) -> contextlib.AbstractContextManager[Any]:
        """A ``kubernetes.client.ApiClient`` for this sandbox, closed afterwards."""
        return api_client_for(self.kubeconfig)

    def __enter__(self) -> SandboxThread:
        self._thread.start()

        async def start() -> Sandbox:
            sandbox = Sandbox(**self._options)
            await sandbox.start()
            return sandbox

        try:
            self._sandbox = self.run(start(), timeout=60)
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._sandbox is not None:
                self.run(self._sandbox.stop(), timeout=60)
        finally:
            self._sandbox = None
            self._shutdown()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()
