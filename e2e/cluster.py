""" "A cluster" for the end-to-end tests: the sandbox by default, or a real one.

``RELAY_E2E_KUBECONFIG`` (a path) switches the e2e suite to a real cluster
(kind, AKS...): no sandbox starts, every test talks to the cluster that
kubeconfig names. ``RELAY_E2E_IMAGE`` names the relay image that cluster can
run (default: the project's ``ghcr.io/kubectl-relay/relay:<version>``); the
tests pass it to ``kubectl relay --image`` and to the operator's manifests.

``Cluster`` is what a test needs in both modes: the kubeconfig, the relay
image, a kubernetes ``ApiClient``, namespaces, and waits done through the API.
What only the sandbox can do (register a local image, kill a pod's process,
inject API faults, reach the store) is there too, and skips the test with the
reason on a real cluster. Tests that need such a thing throughout are marked
``sandbox_only(reason)`` and skip at collection time.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from e2e.kubeclient import api_client_for
from kubectl_relay import __version__
from tests.conftest import scaled
from tests.support import free_port

T = TypeVar("T")

ENV_KUBECONFIG = "RELAY_E2E_KUBECONFIG"
ENV_IMAGE = "RELAY_E2E_IMAGE"

#: The project's relay image, as ``kubectl relay`` and manifests/ name it by default.
DEFAULT_RELAY_IMAGE = f"ghcr.io/kubectl-relay/relay:{__version__}"


def real_kubeconfig() -> Path | None:
    """The real cluster's kubeconfig, when ``RELAY_E2E_KUBECONFIG`` names one."""
    value = os.environ.get(ENV_KUBECONFIG, "").strip()
    return Path(value).expanduser() if value else None


#: Whether this run is against a real cluster (not the sandbox).
REAL_CLUSTER = real_kubeconfig() is not None


def sandbox_only(reason: str) -> pytest.MarkDecorator:
    """Skip on a real cluster: the test needs what only the sandbox can do (``reason``)."""
    return pytest.mark.skipif(
        REAL_CLUSTER, reason=f"sandbox only ({ENV_KUBECONFIG} is set): {reason}"
    )


def poll(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll ``check`` (exceptions count as "not yet") until it is true; fail after ``timeout``."""
    deadline = time.monotonic() + scaled(timeout)
    last: Any = None
    while True:
        try:
            result = check()
        except Exception as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {scaled(timeout):g}s waiting for {what} (last: {last})")
        time.sleep(0.1)


class Cluster:
    """The cluster under test: the sandbox (``sandbox`` given) or the one a kubeconfig names."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        relay_image: str = DEFAULT_RELAY_IMAGE,
        sandbox: Any = None,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.relay_image = relay_image
        self._sandbox = sandbox

    @classmethod
    def real(cls) -> Cluster:
        """The cluster of ``RELAY_E2E_KUBECONFIG`` and ``RELAY_E2E_IMAGE``."""
        kubeconfig = real_kubeconfig()
        assert kubeconfig is not None, f"{ENV_KUBECONFIG} is not set"
        if not kubeconfig.is_file():
            pytest.exit(f"{ENV_KUBECONFIG}={kubeconfig}: no such file", returncode=4)
        image = os.environ.get(ENV_IMAGE, "").strip() or DEFAULT_RELAY_IMAGE
        return cls(kubeconfig=kubeconfig, relay_image=image)

    @property
    def is_sandbox(self) -> bool:
        """Whether the sandbox runs in this process (its internals are reachable)."""
        return self._sandbox is not None

    @property
    def image_args(self) -> list[str]:
        """``kubectl relay`` options for the relay image: none when it is the default."""
        return [] if self.relay_image == DEFAULT_RELAY_IMAGE else ["--image", self.relay_image]

    # -- the API -----------------------------------------------------------------------------

    def api_client(self) -> contextlib.AbstractContextManager[Any]:
        """A ``kubernetes.client.ApiClient`` for this cluster, closed afterwards."""
        return api_client_for(self.kubeconfig)

    def _read(self, call: Callable[[Any], Any]) -> dict[str, Any]:
        """``call(ApiClient)``'s object as the API's JSON (camelCase keys)."""
        with self.api_client() as api_client:
            result: dict[str, Any] = api_client.sanitize_for_serialization(call(api_client))
            return result

    def create_namespace(self, name: str) -> str:
        """Create namespace ``name``."""
        from kubernetes import client  # noqa: PLC0415

        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        with self.api_client() as api_client:
            client.CoreV1Api(api_client).create_namespace(body)
        return name

    def delete_namespace(self, name: str, timeout: float = 120.0) -> None:
        """Delete namespace ``name``; wait (bounded) until it and its pods' processes are gone."""
        from kubernetes import client  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        with self.api_client() as api_client:
            core = client.CoreV1Api(api_client)
            try:
                core.delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise

            def gone() -> bool:
                try:
                    core.read_namespace(name)
                except ApiException as exc:
                    if exc.status == 404:
                        return True
                    raise
                return False

            if self._sandbox is not None:
                self._sandbox.pods_gone(name, timeout=scaled(timeout))
            poll(f"namespace {name} to be deleted", gone, timeout)

    def pods_gone(self, namespace: str, timeout: float = 30.0) -> None:
        """Wait until no pod of ``namespace`` is left (in the sandbox: no process either)."""
        if self._sandbox is not None:
            self._sandbox.pods_gone(namespace, timeout=scaled(timeout))
            return
        from kubernetes import client  # noqa: PLC0415

        with self.api_client() as api_client:
            core = client.CoreV1Api(api_client)
            poll(
                f"the pods of {namespace} to end",
                lambda: not core.list_namespaced_pod(namespace).items,
                timeout,
            )

    def wait_pod(self, namespace: str, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the pod is Ready; return it (the API's JSON)."""
        if self._sandbox is not None:
            pod: dict[str, Any] = self._sandbox.wait_pod(namespace, name, timeout=timeout)
            return pod
        from kubernetes import client  # noqa: PLC0415

        def ready() -> dict[str, Any] | None:
            pod = self._read(lambda c: client.CoreV1Api(c).read_namespaced_pod(name, namespace))
            conditions = (pod.get("status") or {}).get("conditions") or []
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            return pod if ok else None

        return poll(f"pod {namespace}/{name} to be ready", ready, timeout)

    def wait_deployment(self, namespace: str, name: str, timeout: float = 60.0) -> None:
        """Wait until the Deployment is rolled out (``kubectl rollout status``)."""
        if self._sandbox is not None:
            self._sandbox.wait_deployment(namespace, name, timeout)
            return
        result = self.kubectl(
            "rollout",
            "status",
            "-n",
            namespace,
            f"deployment/{name}",
            f"--timeout={int(scaled(timeout))}s",
            timeout=timeout + 10,
            check=False,
        )
        assert result.returncode == 0, f"deployment {namespace}/{name}: {result.stderr}"

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig ... ARGS`` (bounded); assert success if ``check``."""
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=scaled(timeout),
            check=False,
        )
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result

    # -- reaching cluster addresses from the test ---------------------------------------------

    @contextlib.contextmanager
    def reach(
        self, namespace: str, target: str, port: int, protocol: str = "tcp"
    ) -> Iterator[tuple[str, int]]:
        """A ``(host, port)`` this process can connect to that reaches ``target:port``.

        ``target`` is ``svc/NAME`` or ``pod/NAME``. In the in-process sandbox
        cluster IPs and pod IPs are loopback addresses: the address itself. On
        a real cluster (or a sandbox of another process) they are not
        reachable from here: a ``kubectl relay tcp|udp`` tunnel, as a user
        would open, stands in front of them for the block.
        """
        if self._sandbox is not None:
            yield self._address(namespace, target), port
            return
        local = free_port(kind=socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM)
        home = Path(os.environ.get("TMPDIR", "/tmp")) / f"relay-e2e-home-{os.getpid()}"
        home.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        proc = subprocess.Popen(
            [
                "kubectl",
                "relay",
                protocol,
                *self.image_args,
                "-q",
                f"{target}:{port}",
                "--listen",
                str(local),
                "-n",
                namespace,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_output(proc, "Press Ctrl-C", timeout=60)
            yield "127.0.0.1", local
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(scaled(30))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()

    def _address(self, namespace: str, target: str) -> str:
        from kubernetes import client  # noqa: PLC0415

        kind, _, name = target.partition("/")
        with self.api_client() as api_client:
            core = client.CoreV1Api(api_client)
            if kind == "svc":
                return str(core.read_namespaced_service(name, namespace).spec.cluster_ip)
            assert kind == "pod", target
            return str(core.read_namespaced_pod(name, namespace).status.pod_ip)

    # -- sandbox only ---------------------------------------------------------------------------

    @property
    def sandbox(self) -> Any:
        """The in-process ``SandboxThread``; skips the test on a real cluster."""
        if self._sandbox is None:
            pytest.skip(f"sandbox only ({ENV_KUBECONFIG} is set): needs the sandbox's internals")
        return self._sandbox

    def _only(self, what: str) -> Any:
        if self._sandbox is None:
            pytest.skip(f"sandbox only ({ENV_KUBECONFIG} is set): {what}")
        return self._sandbox

    def register_image(self, name: str, run: Any, **options: Any) -> None:
        """Make a local program an image (sandbox only: a real cluster pulls from registries)."""
        self._only(f"image {name} is a local program registered in the sandbox").register_image(
            name, run, **options
        )

    def kill_pod(self, namespace: str, name: str, *args: Any) -> int:
        """Signal a pod's processes (sandbox only: a real cluster's processes are on its nodes)."""
        count: int = self._only("kills a pod's processes from the test").kill_pod(
            namespace, name, *args
        )
        return count

    @property
    def faults(self) -> Any:
        """The sandbox API server's fault injection (sandbox only)."""
        return self._only("injects API server faults").sandbox.api.faults

    @property
    def store(self) -> Any:
        """The sandbox API server's store (sandbox only)."""
        return self._only("reads the API server's store directly").sandbox.store


def _wait_output(proc: subprocess.Popen[bytes], text: str, timeout: float) -> str:
    """Read ``proc``'s stdout until ``text`` appears (bounded); everything read."""
    assert proc.stdout is not None
    deadline = time.monotonic() + scaled(timeout)
    out = b""
    while text.encode() not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {text!r} from {proc.args}:\n{out.decode(errors='replace')}")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                proc.wait(scaled(10))
                pytest.fail(f"{proc.args} ended:\n{out.decode(errors='replace')}")
            out += chunk
    return out.decode(errors="replace")
