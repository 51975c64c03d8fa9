"""Helpers for running the operator in-process against a real cluster.

The cluster is the one ``RELAY_E2E_KUBECONFIG`` names (``./dev cluster up``
makes one here; see ``e2e/README.md``), through e2e's ``cluster`` and
``namespace`` fixtures: each test has a namespace of its own. The operator
runs on the test's event loop (``running_operator``), started and stopped
inside the test, as kopf requires. Reads and writes from the test go through
the operator's own ``Kube`` client (raw dicts, ``Cluster``); the relay pods
really run on the cluster's node, and the test reaches their Services and
pods through ``kubectl relay`` tunnels (``reach``), as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from e2e.cluster import Cluster as E2ECluster
from e2e.cluster import poll
from e2e.conftest import SHARED_OPERATOR
from relay_operator import handlers
from relay_operator.client import Kube, load_configuration, path
from relay_operator.reconcile import Reconciler
from relay_operator.settings import Settings
from tests.conftest import scaled

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests" / "crd" / "socattunnels.yaml"
API_VERSION = "relay.kubectl-relay.io/v1alpha1"


def install_crd(cluster: E2ECluster, crds: Path = CRD) -> None:
    """Create the CRDs of a file (default: the SocatTunnel CRD of manifests/) that the cluster
    lacks, and wait until they are served.

    CRDs are cluster-wide and other test runs may use them at the same time:
    they are created if missing and never deleted.
    """
    from kubernetes import client  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    bodies = [body for body in yaml.safe_load_all(crds.read_text()) if body]
    with cluster.api_client() as api_client:
        extensions = client.ApiextensionsV1Api(api_client)
        for body in bodies:
            try:
                extensions.create_custom_resource_definition(body)
            except ApiException as exc:
                if exc.status != 409:  # already there
                    raise
        for body in bodies:
            name = body["metadata"]["name"]

            def established(name: str = name) -> bool:
                crd: Any = extensions.read_custom_resource_definition(name)
                return any(c.type == "Established" and c.status == "True"
                           for c in crd.status.conditions or ())

            poll(f"CRD {name} to be established", established, 30)


#: The labels of the operator's pods as manifests/ and the chart install them.
INSTALLED_OPERATOR = "app.kubernetes.io/name=kubectl-relay,app.kubernetes.io/component=operator"


def no_installed_operator(cluster: E2ECluster) -> None:
    """Remove e2e's shared installed operator; fail when another runs on the cluster: it
    serves every namespace, so it would reconcile the test's tunnels too (children created
    behind the test's operator, events told twice)."""
    from kubernetes import client  # noqa: PLC0415

    SHARED_OPERATOR.remove()

    with cluster.api_client() as api_client:
        pods = client.CoreV1Api(api_client).list_pod_for_all_namespaces(
            label_selector=INSTALLED_OPERATOR).items
    if pods:
        running = ", ".join(f"{p.metadata.namespace}/{p.metadata.name}" for p in pods)
        pytest.fail(f"an installed relay-operator runs on this cluster ({running}) and serves "
                    "every namespace: the in-process operator must be the only one; run these "
                    "tests when it is gone", pytrace=False)


def settings_for(cluster: E2ECluster, namespace: str, **changes: Any) -> Settings:
    """Settings for an operator serving ``namespace`` with the cluster's relay image, with
    delays short enough for tests."""
    fields: dict[str, Any] = {
        "namespaces": (namespace,),
        "relay_image": cluster.relay_image,
        "retry_delay": 0.2,
        "retry_delay_max": 1.0,
        "secret_recheck": 0.5,
        "api_timeout": 10.0,
        **changes,
    }
    return Settings(**fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Operator:
    """A running operator: its client, reconciler (metrics) and metrics address."""

    def __init__(self, kube: Kube, reconciler: Reconciler, metrics_port: int) -> None:
        self.kube = kube
        self.reconciler = reconciler
        self.metrics_port = metrics_port


@contextlib.asynccontextmanager
async def running_operator(kubeconfig: Path, settings: Settings) -> AsyncIterator[Operator]:
    """Run the operator with ``kubeconfig``'s credentials until the block ends; every task and
    thread of it ends with it."""
    kube = Kube(load_configuration(str(kubeconfig)), timeout=settings.api_timeout)
    reconciler = Reconciler(kube, settings)
    stop, ready = asyncio.Event(), asyncio.Event()
    port = free_port()
    task = asyncio.create_task(
        handlers.run(
            settings,
            kube,
            stop_flag=stop,
            ready_flag=ready,
            metrics_address=("127.0.0.1", port),
            reconciler=reconciler,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), scaled(15))
        yield Operator(kube, reconciler, port)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, scaled(20))
            # kopf's aiohttp watch connections are closed as the task ends, but an
            # asyncio transport only lets go of its socket on a later loop iteration
            # (aiohttp issue 1115); without these, the garbage collector reports them
            # as unclosed in whichever test runs next.
            for _ in range(10):
                await asyncio.sleep(0.01)
        finally:
            kube.close()


async def eventually(
    what: str, check: Callable[[], Awaitable[T | None]], timeout: float = 30.0
) -> T:
    """Poll ``check`` until it returns something true; fail with ``what`` and the last value."""
    deadline = time.monotonic() + scaled(timeout)
    last: Any = None
    while True:
        try:
            result = await check()
        except AssertionError as exc:
            result, last = None, exc
        if result:
            return result
        if result is not None:
            last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.1)


def tunnel(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "SocatTunnel",
        "metadata": {"name": name, **metadata},
        "spec": spec,
    }


class Cluster:
    """Raw-dict access to the cluster for one namespace, with the operator's client."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def url(self, api_version: str, plural: str, name: str | None = None,
            sub: str | None = None) -> str:
        return path(api_version, plural, self.namespace, name, sub)

    async def create(self, api_version: str, plural: str, body: dict[str, Any]) -> Any:
        return await self.kube.create(self.url(api_version, plural), body)

    async def get(self, api_version: str, plural: str, name: str) -> Any:
        return await self.kube.get(self.url(api_version, plural, name))

    async def patch(self, api_version: str, plural: str, name: str, patch: dict[str, Any]) -> Any:
        return await self.kube.patch(self.url(api_version, plural, name), patch)

    async def delete(self, api_version: str, plural: str, name: str) -> bool:
        return await self.kube.delete(self.url(api_version, plural, name))

    async def list(self, api_version: str, plural: str, selector: str = "") -> list[Any]:
        url = self.url(api_version, plural)
        if selector:
            url += f"?labelSelector={selector}"
        found = await self.kube.get(url)
        assert found is not None
        items = found.get("items") or []
        assert isinstance(items, list)
        return items

    async def tunnel(self, name: str) -> Any:
        return await self.get(API_VERSION, "socattunnels", name)

    async def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the events about tunnel ``name``, oldest first.

        Only the tunnel's: the controllers of a real cluster post their own
        about its Deployment of the same name (scaling, for one).
        """
        items = await self.list("v1", "events")
        found = [e for e in items if e.get("involvedObject", {}).get("name") == name
                 and e.get("involvedObject", {}).get("kind") == "SocatTunnel"]
        found.sort(key=lambda e: (e.get("metadata", {}).get("creationTimestamp", ""),
                                  e.get("metadata", {}).get("resourceVersion", "")))
        return [(e.get("type", ""), e.get("reason", ""), e.get("message", "")) for e in found]

    async def wait_event(self, name: str, event: tuple[str, str, str],
                         timeout: float = 30.0) -> None:
        """Wait until ``event`` (type, reason, message) about tunnel ``name`` is posted: kopf
        posts events from a queue of its own, so the status may show a change first."""
        async def posted() -> bool:
            seen = await self.events(name)
            assert event in seen, f"the events so far: {seen}"
            return True

        await eventually(f"event {event} about {name}", posted, timeout)

    async def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        obj = await self.tunnel(name)
        for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
            if condition.get("type") == kind:
                return dict(condition)
        return None

    async def wait_condition(self, name: str, kind: str, status: str,
                             timeout: float = 30.0, reason: str | None = None) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            condition = await self.condition(name, kind)
            if condition and condition.get("status") == status and (
                reason is None or condition.get("reason") == reason
            ):
                return condition
            return None

        return await eventually(f"{kind}={status} on {name}", check, timeout)

    async def wait_ready(self, name: str, timeout: float = 40.0) -> dict[str, Any]:
        await self.wait_condition(name, "Ready", "True", timeout)
        obj = await self.tunnel(name)
        assert obj is not None
        return dict(obj)


@contextlib.asynccontextmanager
async def reach(cluster: E2ECluster, namespace: str, target: str,
                port: int) -> AsyncIterator[tuple[str, int]]:
    """``Cluster.reach`` (a ``kubectl relay tcp`` tunnel to ``svc/NAME`` or ``pod/NAME``) from
    async code: opened and closed in a thread, so that the operator on this loop runs on."""
    stack = contextlib.ExitStack()
    opened = cluster.reach(namespace, target, port)
    address = await asyncio.to_thread(stack.enter_context, opened)
    try:
        yield address
    finally:
        await asyncio.to_thread(stack.close)


async def exchange(host: str, port: int, payload: bytes, *,
                   tls: ssl.SSLContext | None = None, server_hostname: str | None = None,
                   timeout: float = 10.0) -> bytes:
    """``exchange_once``, retried for a while when the connection is refused or reset, or
    closed with no answer to a payload.

    A Service's endpoints reach kube-proxy's rules a moment after its pods
    are Ready (and change during a rollout): the relay pod of the ``kubectl
    relay`` tunnel is refused, and the tunnel's connection closes empty. The
    last answer is returned, for the caller to check.
    """
    deadline = time.monotonic() + scaled(15)
    while True:
        try:
            answer = await exchange_once(host, port, payload, tls=tls,
                                         server_hostname=server_hostname, timeout=timeout)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            if time.monotonic() > deadline:
                raise
        else:
            if answer or not payload or time.monotonic() > deadline:
                return answer
        await asyncio.sleep(0.2)


async def exchange_once(host: str, port: int, payload: bytes, *,
                        tls: ssl.SSLContext | None = None, server_hostname: str | None = None,
                        timeout: float = 10.0) -> bytes:
    """Send ``payload``, half-close (or close_notify for TLS), read until the peer closes."""

    async def go() -> bytes:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=server_hostname if tls else None
        )
        try:
            writer.write(payload)
            await writer.drain()
            if tls is None:
                writer.write_eof()
            return await reader.read(-1) if tls is None else await _read_some(reader, payload)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    return await asyncio.wait_for(go(), scaled(timeout))


async def _read_some(reader: asyncio.StreamReader, payload: bytes) -> bytes:
    data = b""
    while len(data) < len(payload):
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    return data


async def http_get(host: str, port: int, target: str = "/") -> bytes:
    """One HTTP/1.0 GET over a fresh connection; the whole answer."""
    return await exchange(host, port, f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
