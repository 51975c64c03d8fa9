""" "A cluster" for the end-to-end tests: the real one ``RELAY_E2E_KUBECONFIG`` names.

``RELAY_E2E_KUBECONFIG`` (a path) names the cluster of the e2e suite (kind,
AKS, ``./dev cluster up``): every test talks to the cluster that kubeconfig
names, and skips when it is unset. ``RELAY_E2E_IMAGE`` names the relay image
that cluster can run (default: the project's
``ghcr.io/kubectl-relay/relay:<version>``); the tests pass it to ``kubectl
relay --image`` and to the operator's manifests.

``Cluster`` is what a test needs: the kubeconfig, the relay image and the
test images (``test_image``), a kubernetes ``ApiClient``, namespaces, waits
done through the API, API faults through a fault-injecting proxy in front of
the API server (``fault_proxy``), and users with client certificates signed
through the CSR API (``user_kubeconfig``).
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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from e2e import users
from e2e.faultproxy import FaultProxyThread
from e2e.kubeclient import api_client_for
from kubectl_relay import __version__
from tests.conftest import scaled
from tests.support import free_port

T = TypeVar("T")

ENV_KUBECONFIG = "RELAY_E2E_KUBECONFIG"
ENV_IMAGE = "RELAY_E2E_IMAGE"

ENV_TEST_IMAGES = "RELAY_E2E_TEST_IMAGES"

#: The project's relay image, as ``kubectl relay`` and manifests/ name it by default.
DEFAULT_RELAY_IMAGE = f"ghcr.io/kubectl-relay/relay:{__version__}"

#: The project's manifests (CRD, RBAC, operator, examples).
MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"

#: Where the test images live: ``e2e/images/<name>/Containerfile``, each built FROM the
#: relay image and tagged ``<repository>/<name>:<version>`` (``TEST_IMAGE_REPOSITORY``, or
#: ``RELAY_E2E_TEST_IMAGES`` for a cluster that pulls them from a registry of its own).
TEST_IMAGES_DIR = Path(__file__).resolve().parent / "images"
TEST_IMAGE_REPOSITORY = "kubectl-relay-test"


def test_image_name(name: str) -> str:
    """The image built from ``e2e/images/NAME/Containerfile``, as pods name it."""
    if not (TEST_IMAGES_DIR / name / "Containerfile").is_file():
        raise ValueError(f"no test image {name!r}: no e2e/images/{name}/Containerfile")
    repository = os.environ.get(ENV_TEST_IMAGES, "").strip() or TEST_IMAGE_REPOSITORY
    return f"{repository}/{name}:{__version__}"


#: The Pod Security standard the restricted tests enforce on their namespaces.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def real_kubeconfig() -> Path | None:
    """The real cluster's kubeconfig, when ``RELAY_E2E_KUBECONFIG`` names one."""
    value = os.environ.get(ENV_KUBECONFIG, "").strip()
    return Path(value).expanduser() if value else None


#: Whether this run has a cluster (``RELAY_E2E_KUBECONFIG`` is set).
REAL_CLUSTER = real_kubeconfig() is not None


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
    """The cluster under test, the one a kubeconfig names."""

    def __init__(self, *, kubeconfig: Path, relay_image: str = DEFAULT_RELAY_IMAGE) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.relay_image = relay_image

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

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        """Create namespace ``name`` (with ``labels``, e.g. ``RESTRICTED``)."""
        from kubernetes import client  # noqa: PLC0415

        metadata: dict[str, Any] = {"name": name, "labels": dict(labels or {})}
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
        with self.api_client() as api_client:
            client.CoreV1Api(api_client).create_namespace(body)
        return name

    def delete_namespace(self, name: str, timeout: float = 120.0) -> None:
        """Delete namespace ``name``; wait (bounded) until it is gone."""
        self.start_namespace_deletion(name)
        self.wait_namespaces_gone([name], timeout)

    def start_namespace_deletion(self, name: str) -> None:
        """Ask for namespace ``name`` (and so everything in it) to be deleted."""
        from kubernetes import client  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        with self.api_client() as api_client:
            try:
                client.CoreV1Api(api_client).delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def wait_namespaces_gone(self, names: list[str], timeout: float = 120.0) -> None:
        """Wait (bounded) until every namespace of ``names`` is gone."""
        from kubernetes import client  # noqa: PLC0415

        wanted = set(names)
        with self.api_client() as api_client:
            core = client.CoreV1Api(api_client)

            def gone() -> bool:
                left = {item.metadata.name for item in core.list_namespace().items} & wanted
                return not left

            poll(f"namespaces {', '.join(sorted(wanted))} to be deleted", gone, timeout)

    def pods_gone(self, namespace: str, timeout: float = 30.0) -> None:
        """Wait until no pod of ``namespace`` is left."""
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
        from kubernetes import client  # noqa: PLC0415

        def ready() -> dict[str, Any] | None:
            pod = self._read(lambda c: client.CoreV1Api(c).read_namespaced_pod(name, namespace))
            conditions = (pod.get("status") or {}).get("conditions") or []
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            return pod if ok else None

        return poll(f"pod {namespace}/{name} to be ready", ready, timeout)

    def wait_routed(self, namespace: str, service: str, port: int, seconds: float = 15.0) -> None:
        """Wait (bounded) until Service ``service`` has an endpoint and kube-proxy routes ``port``.

        A Service's endpoints follow its pod's readiness, and kube-proxy writes its
        rules a moment after them: a pod that connects before is refused ("No route
        to host", the rule of a Service without endpoints). The rules serve
        connections from the node too, so where the tests run on the node (the local
        cluster) an accepted connection to the cluster IP says the route is there.
        Where they cannot reach cluster IPs, this gives up after ``seconds`` and the
        test goes on.
        """
        from kubernetes import client  # noqa: PLC0415

        def endpoint() -> bool:
            found = self._read(
                lambda c: client.CoreV1Api(c).read_namespaced_endpoints(service, namespace)
            )
            return any(subset.get("addresses") for subset in found.get("subsets") or [])

        poll(f"the {namespace}/{service} Service's endpoints", endpoint, seconds)
        found = self._read(
            lambda c: client.CoreV1Api(c).read_namespaced_service(service, namespace)
        )
        deadline = time.monotonic() + scaled(seconds)
        while time.monotonic() < deadline:
            try:
                socket.create_connection((found["spec"]["clusterIP"], port), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.2)

    def wait_deployment(self, namespace: str, name: str, timeout: float = 60.0) -> None:
        """Wait until the Deployment is rolled out (``kubectl rollout status``)."""
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

        ``target`` is ``svc/NAME`` or ``pod/NAME``. Cluster IPs and pod IPs
        are not reachable from here in general (AKS, kind): a ``kubectl relay
        tcp|udp`` tunnel, as a user would open, stands in front of them for
        the block.
        """
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

    # -- images, faults, users ------------------------------------------------------------------

    def test_image(self, name: str) -> str:
        """The test image ``e2e/images/NAME`` (built and loaded by the cluster's owner)."""
        return test_image_name(name)

    @contextlib.contextmanager
    def fault_proxy(self, workdir: Path) -> Iterator[FaultProxyThread]:
        """A fault-injecting proxy in front of this cluster's API server (``e2e/faultproxy.py``).

        Clients given its ``kubeconfig`` go through it; the others see no fault.
        """
        with FaultProxyThread(self.kubeconfig, workdir) as proxy:
            yield proxy

    def user_kubeconfig(
        self, name: str, directory: Path, *, namespaces: Iterable[str] = (),
        namespace: str = "default",
    ) -> Path:
        """A kubeconfig for a new user ``name`` with ``edit`` rights in ``namespaces`` only.

        The user is real: a client certificate signed through the CSR API
        (``e2e/users.py``), bound to the ``edit`` ClusterRole by one
        RoleBinding per namespace. ``namespace`` is the kubeconfig's namespace.
        """
        path = directory / f"{name}.kubeconfig"
        with self.api_client() as api_client:
            return users.user_kubeconfig(
                api_client, self.kubeconfig, name, path,
                namespaces=namespaces, namespace=namespace,
            )


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
