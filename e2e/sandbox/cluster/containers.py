"""One container of a pod: start, probe, exit, restart with backoff, stop.

A ``ContainerRunner`` owns the container's process and its status entry (the
``containerStatuses[]`` item). It tells its pod about every change through
``on_change``; the pod decides the phase and writes the status.

States, as the kubelet reports them::

    waiting(ContainerCreating) -> running -> terminated(Completed | Error)
                                     ^             |
                                     +-- waiting(CrashLoopBackOff) <- restart policy says so
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import probes
from .logs import log_path
from .objects import now
from .podspec import ContainerConfigError, Launch
from .processes import Process, SpawnError
from .procnet import write_pod_view
from .settings import ClusterSettings
from .volumes import rewrite

RestartPolicy = Literal["Always", "OnFailure", "Never"]

#: Exit status of a container that could not start (the runtime's StartError).
START_ERROR = 128


@dataclass
class ContainerStatus:
    """The status entry of one container, as ``status.containerStatuses[]`` holds it."""

    name: str
    image: str
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    container_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        body: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": f"sandbox://{self.image}" if self.container_id else "",
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
        }
        if self.container_id:
            body["containerID"] = self.container_id
        return body

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> dict[str, Any] | None:
        return self.state.get("terminated")


class ContainerRunner:
    """Runs one container until it ends for good or the pod stops it."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        pod_dir: Path,
        pod_ip: str,
        prepare: Callable[[], Awaitable[Launch]],
        restart_policy: RestartPolicy,
        settings: ClusterSettings,
        on_change: Callable[[], None],
        on_event: Callable[[str, str, str], None],
    ) -> None:
        self.spec = spec
        self.name = str(spec["name"])
        self.status = ContainerStatus(self.name, str(spec.get("image", "")))
        self._pod_dir = pod_dir
        self._pod_ip = pod_ip
        self._prepare = prepare
        self._restart_policy = restart_policy
        self._settings = settings
        self._on_change = on_change
        self._event = on_event
        self._launch: Launch | None = None
        self.process: Process | None = None
        self._stopping = asyncio.Event()
        self._run_index = 0
        #: Set when the container will not run again (ended for good, or stopped).
        self.done = asyncio.Event()

    # -- public -------------------------------------------------------------------------

    @property
    def current_log(self) -> Path:
        """The log file of the current (or last) run."""
        return log_path(self._pod_dir, self.name, max(self._run_index - 1, 0))

    def finished_run(self) -> bool:
        """Whether the run writing ``current_log`` has ended (``pods/log`` follow stops)."""
        return self.process is None or self.process.returncode is not None

    async def run(self) -> None:
        """Start the container, and restart it while the restart policy asks for it."""
        backoff = self._settings.restart_backoff
        try:
            while not self._stopping.is_set():
                started_at = time.monotonic()
                code = await self._run_once()
                if code is None or self._stopping.is_set():
                    break
                if not self._should_restart(code):
                    break
                if time.monotonic() - started_at > self._settings.backoff_reset_after:
                    backoff = self._settings.restart_backoff
                self.status.restart_count += 1
                self._set_waiting(
                    "CrashLoopBackOff",
                    f"back-off {backoff:g}s restarting failed container={self.name}",
                )
                self._event(
                    "Warning", "BackOff", f"Back-off restarting failed container {self.name} in pod"
                )
                await self._sleep_unless_stopped(backoff)
                backoff = min(backoff * 2, self._settings.restart_backoff_cap)
        finally:
            if self.process is not None and self.process.returncode is None:
                # Cancelled without a stop(): do not leave the process running.
                self.process.kill_group(signal.SIGKILL)
                self.process.send_signal(signal.SIGKILL)
            self.done.set()
            self._on_change()

    async def stop(self, grace: float) -> None:
        """Stop for good: SIGTERM, SIGKILL after ``grace``; no restart."""
        self._stopping.set()
        if self.process is not None and self.process.returncode is None:
            self._event("Normal", "Killing", f"Stopping container {self.name}")
            await self.process.terminate(grace)

    def send_signal(self, sig: int) -> bool:
        """Signal the running process (fault injection); False when none runs."""
        if self.process is None or self.process.returncode is not None:
            return False
        self.process.send_signal(sig)
        return True

    async def run_exec(self, command: list[str], timeout: float) -> int:
        """Run ``command`` as an exec probe does: with the container's environment and cwd."""
        launch = self._launch
        if launch is None or not command:
            return START_ERROR
        # The pod's own socket tables, for probes that grep /proc/net (see procnet).
        tables = write_pod_view(self._pod_dir / "proc-net", self._pod_ip)
        command = [rewrite(arg, tables) for arg in command]
        # The container's PATH starts with the shim's wrappers, so ``socat ...`` finds the engine.
        try:
            process = Process.spawn(command, env=launch.env, cwd=launch.cwd)
        except SpawnError:
            return START_ERROR
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            return await process.terminate(0)
        finally:
            if process.returncode is None:
                await process.terminate(0)

    # -- one run --------------------------------------------------------------------------

    def _should_restart(self, code: int) -> bool:
        if self._restart_policy == "Always":
            return True
        return self._restart_policy == "OnFailure" and code != 0

    async def _run_once(self) -> int | None:
        """Start once and wait for the exit; None when stopped before starting."""
        while True:
            try:
                self._launch = await self._prepare()
                break
            except ContainerConfigError as exc:
                self._set_waiting(exc.reason, exc.message)
                self._event("Warning", "Failed", f"Error: {exc.message}")
                await self._sleep_unless_stopped(self._settings.image_pull_retry)
                if self._stopping.is_set():
                    return None
        output = log_path(self._pod_dir, self.name, self._run_index)
        output.parent.mkdir(parents=True, exist_ok=True)
        self._run_index += 1
        started = now()
        try:
            self.process = Process.spawn(
                self._launch.argv, env=self._launch.env, cwd=self._launch.cwd, output=output
            )
        except SpawnError as exc:
            message = f"failed to start container {self.name!r}: exec: {exc.strerror}"
            self._terminate_state(START_ERROR, "StartError", started, message)
            self._event("Warning", "Failed", f"Error: {message}")
            return START_ERROR
        self.status.container_id = f"sandbox://{self.process.pid}"
        self.status.state = {"running": {"startedAt": started}}
        self.status.started = True
        self._event("Normal", "Created", f"Created container {self.name}")
        self._event("Normal", "Started", f"Started container {self.name}")
        readiness = self.spec.get("readinessProbe")
        self.status.ready = not readiness
        self._on_change()
        tasks = []
        if readiness:
            tasks.append(asyncio.create_task(self._probe(readiness, "Readiness")))
        liveness = self.spec.get("livenessProbe")
        if liveness:
            tasks.append(asyncio.create_task(self._probe(liveness, "Liveness")))
        try:
            code = await self.process.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        reason = "Completed" if code == 0 else "Error"
        self._terminate_state(code, reason, started)
        return code

    def _terminate_state(self, code: int, reason: str, started: str, message: str = "") -> None:
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now(),
        }
        if self.process is not None and self.process.signal:
            terminated["signal"] = self.process.signal
        if message:
            terminated["message"] = message
        if self.status.container_id:
            terminated["containerID"] = self.status.container_id
        # lastState keeps the run before this one (moved there at the restart).
        self.status.state = {"terminated": terminated}
        self.status.ready = False
        self.status.started = False
        self._on_change()

    def _set_waiting(self, reason: str, message: str) -> None:
        if self.status.terminated:
            self.status.last_state = {"terminated": self.status.terminated}
        self.status.state = {"waiting": {"reason": reason, "message": message}}
        self.status.ready = False
        self._on_change()

    async def _probe(self, probe: Mapping[str, Any], kind: str) -> None:
        process = self.process

        async def once() -> tuple[bool, str]:
            return await probes.check(
                probe, pod_ip=self._pod_ip, container=self.spec, run_exec=self.run_exec
            )

        def changed(ok: bool, message: str) -> None:
            if kind == "Readiness":
                self.status.ready = ok
                self._on_change()
            if not ok:
                self._event("Warning", "Unhealthy", f"{kind} probe failed: {message}")
            if kind == "Liveness" and not ok and process is not None:
                self._event(
                    "Normal",
                    "Killing",
                    f"Container {self.name} failed liveness probe, will be restarted",
                )
                process.send_signal(signal.SIGTERM)
                loop = asyncio.get_running_loop()
                grace = self._settings.max_grace_seconds
                loop.call_later(grace, process.kill_group, signal.SIGKILL)

        await probes.probe_loop(probe, once, changed, self._settings, initial=(kind == "Liveness"))

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
