"""kopf 1.45, running in-process, against the sandbox API server.

The operator is started and stopped inside the test (kopf cancels the tasks created after it
started when it stops). It uses a fresh registry, logs in through the kubernetes client and the
sandbox's kubeconfig, and runs standalone (no peering resource).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi

from e2e.cluster import sandbox_only
from e2e.sandbox.api.testing import ServerThread

pytestmark = sandbox_only("tests the sandbox itself, not kubectl-relay")

SCALE = float(os.environ.get("RELAY_TEST_TIMEOUT_SCALE", "1"))
GROUP, VERSION, PLURAL, NS = "relay.example.io", "v1alpha1", "socattunnels", "default"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP, "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "socattunnel", "kind": "SocatTunnel"},
        "versions": [{
            "name": VERSION, "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"listen": {"type": "string"}}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            }}},
        }],
    },
}


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    """A sandbox whose kubeconfig is the default one of the kubernetes client (for kopf)."""
    with ServerThread() as running:
        path = tmp_path / "kubeconfig"
        running.server.write_kubeconfig(path)
        monkeypatch.setenv("KUBECONFIG", str(path))
        # The client reads KUBECONFIG when it is imported; kopf's login reads this global.
        monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION",
                            str(path))
        default = kubernetes.client.Configuration.get_default_copy()
        try:
            yield running
        finally:
            kubernetes.client.Configuration.set_default(default)


@pytest.fixture
def api(sandbox: ServerThread, tmp_path: Path) -> Iterator[ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
    kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(CRD)
    yield client
    client.close()


async def eventually(check: Callable[[], Any], timeout: float = 10 * SCALE) -> Any:
    """Poll ``check`` until it returns something truthy without raising; return that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (ApiException, AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(0.05)


def build_registry(core: CoreV1Api, calls: list[tuple[str, str]]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    # Every handler is async: kopf runs sync ones in a thread pool that outlives the test.

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 5

    @kopf.on.create(GROUP, VERSION, PLURAL, id="create_fn", registry=registry)
    async def create_fn(body: kopf.Body, name: str, namespace: str, spec: kopf.Spec,
                  patch: kopf.Patch, **_: Any) -> dict[str, str]:
        calls.append(("create", name))
        child = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": f"{name}-config"}, "data": {"listen": spec["listen"]}}
        kopf.adopt(child, owner=body)
        # A quick blocking call: the sandbox serves it from its own thread.
        try:
            core.create_namespaced_config_map(namespace, child)
        except ApiException as e:
            raise kopf.TemporaryError(f"cannot create the child: {e.status}", delay=0.2) from e
        patch.status["phase"] = "Ready"
        kopf.info(body, reason="ChildCreated", message=f"created {child['metadata']['name']}")
        return {"child": child["metadata"]["name"]}

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="delete_fn", registry=registry)
    async def delete_fn(name: str, **_: Any) -> None:
        calls.append(("delete", name))

    return registry


async def test_kopf_operator_handles_a_custom_resource(sandbox: ServerThread,
                                                       api: ApiClient) -> None:
    core, crs = CoreV1Api(api), CustomObjectsApi(api)
    calls: list[tuple[str, str]] = []
    registry = build_registry(core, calls)
    stop, ready = asyncio.Event(), asyncio.Event()
    operator = asyncio.create_task(kopf.operator(
        registry=registry, standalone=True, namespaces=[NS], stop_flag=stop, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10 * SCALE)
        crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "SocatTunnel",
            "metadata": {"name": "web"}, "spec": {"listen": "TCP-LISTEN:8080"}})

        def handled() -> dict[str, Any]:
            obj = crs.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "web")
            status = obj.get("status", {})
            assert status.get("create_fn") == {"child": "web-config"}, status
            assert status.get("phase") == "Ready"
            assert obj["metadata"].get("finalizers") == [FINALIZER]
            return obj

        obj = await eventually(handled)
        child = core.read_namespaced_config_map("web-config", NS)
        ref = child.metadata.owner_references[0]
        assert (ref.kind, ref.name, ref.uid) == ("SocatTunnel", "web", obj["metadata"]["uid"])
        assert child.data == {"listen": "TCP-LISTEN:8080"}

        # Changes that are not spec changes (and kopf's own patches) must not re-run creation.
        crs.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "web",
                                           {"metadata": {"labels": {"touched": "yes"}}})
        await asyncio.sleep(1 * SCALE)
        assert calls == [("create", "web")]
        # kopf posts events in the background, as core v1 Events created with generateName.
        def posted() -> bool:
            events = core.list_namespaced_event(NS, field_selector="involvedObject.name=web")
            return [(e.reason, e.message) for e in events.items] == [
                ("ChildCreated", "created web-config")]

        await eventually(posted)

        crs.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "web")

        def gone() -> bool:
            try:
                crs.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "web")
            except ApiException as e:
                return e.status == 404
            return False

        await eventually(gone)
        assert calls == [("create", "web"), ("delete", "web")]
        assert core.list_namespaced_config_map(NS).items == []  # the child was collected
    finally:
        stop.set()
        await asyncio.wait_for(operator, 10 * SCALE)


async def test_kopf_survives_dropped_watches_and_api_errors(sandbox: ServerThread,
                                                            api: ApiClient) -> None:
    core, crs = CoreV1Api(api), CustomObjectsApi(api)
    calls: list[tuple[str, str]] = []
    registry = build_registry(core, calls)
    stop, ready = asyncio.Event(), asyncio.Event()
    operator = asyncio.create_task(kopf.operator(
        registry=registry, standalone=True, namespaces=[NS], stop_flag=stop, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10 * SCALE)
        await asyncio.sleep(0.5 * SCALE)  # let the watch stream open
        sandbox.call(sandbox.server.faults.drop_watches)
        # The first attempt to create the child fails: kopf retries the handler.
        sandbox.server.faults.fail("POST", r"/configmaps$", status=500, times=1)
        crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "SocatTunnel",
            "metadata": {"name": "again"}, "spec": {"listen": "TCP-LISTEN:1"}})
        await eventually(lambda: core.read_namespaced_config_map("again-config", NS),
                         timeout=30 * SCALE)
        assert calls.count(("create", "again")) == 2
    finally:
        stop.set()
        await asyncio.wait_for(operator, 10 * SCALE)
