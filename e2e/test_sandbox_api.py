"""The sandbox API server, driven by the official kubernetes Python client (and raw HTTP).

The server runs on its own loop in a thread (:class:`ServerThread`), as the client blocks.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi
from kubernetes.stream import portforward

from e2e.cluster import sandbox_only
from e2e.sandbox.api.testing import FakePods, ServerThread

pytestmark = sandbox_only("tests the sandbox itself, not kubectl-relay")

SCALE = float(os.environ.get("RELAY_TEST_TIMEOUT_SCALE", "1"))
NS = "default"

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "socattunnels.relay.example.io"},
    "spec": {
        "group": "relay.example.io",
        "scope": "Namespaced",
        "names": {"plural": "socattunnels", "singular": "socattunnel", "kind": "SocatTunnel",
                  "shortNames": ["st"], "categories": ["relay"]},
        "versions": [{
            "name": "v1alpha1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "Listen", "type": "string", "jsonPath": ".spec.listen"},
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            ],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object", "required": ["listen"],
                        "properties": {
                            "listen": {"type": "string", "minLength": 1},
                            "mode": {"type": "string", "enum": ["tcp", "udp"], "default": "tcp"},
                            "replicas": {"type": "integer", "minimum": 0, "default": 1},
                            "port": {"x-kubernetes-int-or-string": True},
                            "options": {"type": "object",
                                        "additionalProperties": {"type": "string"}},
                        },
                    },
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }},
        }],
    },
}
GROUP, VERSION, PLURAL = "relay.example.io", "v1alpha1", "socattunnels"


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def pods() -> FakePods:
    return FakePods()


@pytest.fixture
def sandbox(pods: FakePods) -> Iterator[ServerThread]:
    with ServerThread(backend=pods) as running:
        yield running


def client_for(sandbox: ServerThread, path: Path, user: str = "admin") -> ApiClient:
    sandbox.server.write_kubeconfig(path, user=user)
    return kubernetes.config.new_client_from_config(config_file=str(path))


@pytest.fixture
def api(sandbox: ServerThread, tmp_path: Path) -> Iterator[ApiClient]:
    client = client_for(sandbox, tmp_path / "kubeconfig")
    yield client
    client.close()


@pytest.fixture
def core(api: ApiClient) -> CoreV1Api:
    return CoreV1Api(api)


@pytest.fixture
def crs(api: ApiClient) -> CustomObjectsApi:
    kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(CRD)
    return CustomObjectsApi(api)


def cm(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}, **meta}, "data": {"k": "v"}}


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec}}


def raw(sandbox: ServerThread, path: str, *, method: str = "GET", body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """A plain HTTP request (no token: admin on plain HTTP); returns (status, decoded JSON)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(sandbox.server.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5 * SCALE) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def status_of(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


# ---------------------------------------------------------------- objects and metadata


def test_create_fills_server_metadata_and_answers_201(sandbox: ServerThread) -> None:
    code, body = raw(sandbox, "/api/v1/namespaces/default/configmaps", method="POST",
                     body=cm("one"))
    assert code == 201
    meta = body["metadata"]
    assert meta["namespace"] == "default" and len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z") and int(meta["resourceVersion"]) > 0
    code, again = raw(sandbox, "/api/v1/namespaces/default/configmaps", method="POST",
                      body=cm("two"))
    assert int(again["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


def test_crud_with_the_client(core: CoreV1Api) -> None:
    created = core.create_namespaced_config_map(NS, cm("web"))
    assert created.metadata.uid and created.metadata.resource_version
    fetched = core.read_namespaced_config_map("web", NS)
    assert fetched.metadata.uid == created.metadata.uid

    stale = cm("web", resourceVersion=created.metadata.resource_version)
    core.patch_namespaced_config_map("web", NS, {"data": {"k": "changed"}})
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map("web", NS, stale)
    assert info.value.status == 409
    assert status_of(info.value)["message"] == (
        'Operation cannot be fulfilled on configmaps "web": the object has been modified; '
        "please apply your changes to the latest version and try again")

    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(NS, cm("web"))
    assert info.value.status == 409
    assert status_of(info.value)["reason"] == "AlreadyExists"

    core.delete_namespaced_config_map("web", NS)
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("web", NS)
    body = status_of(info.value)
    assert (info.value.status, body["kind"], body["reason"], body["message"]) == (
        404, "Status", "NotFound", 'configmaps "web" not found')
    assert body["details"] == {"name": "web", "kind": "configmaps"}


def test_generate_name_and_missing_namespace(core: CoreV1Api) -> None:
    made = core.create_namespaced_config_map(NS, cm("", generateName="gen-"))
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) == 9
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("nowhere", cm("x"))
    assert info.value.status == 404
    assert status_of(info.value)["message"] == 'namespaces "nowhere" not found'
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(NS, cm("Bad_Name"))
    assert info.value.status == 422


def test_builtin_namespaces_exist(core: CoreV1Api) -> None:
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system"} <= names


# ---------------------------------------------------------------- selectors, lists, patches


def test_label_and_field_selectors(core: CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("a", {"app": "web", "tier": "front"}))
    core.create_namespaced_config_map(NS, cm("b", {"app": "db"}))
    core.create_namespaced_config_map(NS, cm("c", {"app": "web"}))

    def names(**kwargs: str) -> list[str]:
        return sorted(i.metadata.name for i in core.list_namespaced_config_map(NS, **kwargs).items)

    assert names(label_selector="app=web") == ["a", "c"]
    assert names(label_selector="app==web,tier") == ["a"]
    assert names(label_selector="app!=web") == ["b"]
    assert names(label_selector="app in (db, web),!tier") == ["b", "c"]
    assert names(label_selector="app notin (web)") == ["b"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b,metadata.namespace=default") == ["a", "c"]
    with pytest.raises(ApiException) as info:
        names(field_selector="data.k=v")
    assert info.value.status == 400
    assert status_of(info.value)["message"] == "field label not supported: data.k"


def test_pod_status_phase_selector_and_status_subresource(core: CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("p1"))
    core.create_namespaced_pod(NS, pod("p2"))
    assert core.read_namespaced_pod("p1", NS).status.phase == "Pending"
    # A status change through the main resource is ignored; through /status it is kept.
    core.patch_namespaced_pod("p1", NS, {"status": {"phase": "Running"}})
    assert core.read_namespaced_pod("p1", NS).status.phase == "Pending"
    core.patch_namespaced_pod_status("p1", NS, {"status": {"phase": "Running"}})
    running = core.list_namespaced_pod(NS, field_selector="status.phase=Running").items
    assert [p.metadata.name for p in running] == ["p1"]
    # ...and /status changes nothing but the status.
    core.patch_namespaced_pod_status("p1", NS, {"metadata": {"labels": {"x": "y"}}})
    assert not core.read_namespaced_pod("p1", NS).metadata.labels


def test_generation_moves_on_spec_changes_only(crs: CustomObjectsApi) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SocatTunnel",
            "metadata": {"name": "t"}, "spec": {"listen": "TCP-LISTEN:80"}}
    made = crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert made["metadata"]["generation"] == 1
    patched = crs.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "t", {"status": {"phase": "Ready"}, "spec": {"listen": "x"}})
    assert patched["status"] == {"phase": "Ready"} and patched["spec"]["listen"] == "TCP-LISTEN:80"
    labelled = crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "t", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    changed = crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "t", {"spec": {"replicas": 3}, "status": {"phase": "no"}})
    assert changed["metadata"]["generation"] == 2 and changed["status"] == {"phase": "Ready"}
    # A patch that changes nothing keeps the resourceVersion (no event either).
    same = crs.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "t",
                                              {"spec": {"replicas": 3}})
    assert same["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]


def test_json_patch_and_failed_test_is_422(core: CoreV1Api) -> None:
    made = core.create_namespaced_config_map(NS, cm("j"))
    version = made.metadata.resource_version
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": version},
           {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}]
    assert core.patch_namespaced_config_map("j", NS, ops).metadata.finalizers == ["x/y"]
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map("j", NS, ops)  # the version moved: the test fails
    assert info.value.status == 422
    core.patch_namespaced_config_map("j", NS, [{"op": "remove", "path": "/metadata/finalizers"}])


def test_strategic_merge_patch_merges_containers_by_name(core: CoreV1Api) -> None:
    spec = {"containers": [
        {"name": "a", "image": "one", "ports": [{"containerPort": 80}],
         "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "two"}]}
    core.create_namespaced_pod(NS, pod("s", **spec))
    patch = {"spec": {"containers": [{"name": "a", "image": "uno",
                                      "env": [{"name": "Y", "value": "2"}]}]},
             "metadata": {"finalizers": ["a/b"]}}
    got = core.patch_namespaced_pod("s", NS, patch)
    a, b = got.spec.containers
    assert (a.name, a.image, b.name, b.image) == ("a", "uno", "b", "two")
    assert [(e.name, e.value) for e in a.env] == [("X", "1"), ("Y", "2")]
    assert a.ports[0].container_port == 80
    deleted = core.patch_namespaced_pod(
        "s", NS, {"spec": {"containers": [{"name": "b", "$patch": "delete"}]},
                  "metadata": {"$deleteFromPrimitiveList/finalizers": ["a/b"]}})
    assert [c.name for c in deleted.spec.containers] == ["a"]
    assert not deleted.metadata.finalizers


def test_pagination_with_limit_and_continue(core: CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map(NS, cm(f"page-{i}"))
    first = core.list_namespaced_config_map(NS, limit=2)
    assert [i.metadata.name for i in first.items] == ["page-0", "page-1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_config_map(NS, limit=10, _continue=first.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["page-2", "page-3", "page-4"]
    assert not rest.metadata._continue


def test_deletecollection_with_a_selector(core: CoreV1Api) -> None:
    for name, app in (("d1", "x"), ("d2", "x"), ("d3", "y")):
        core.create_namespaced_config_map(NS, cm(name, {"app": app}))
    core.delete_collection_namespaced_config_map(NS, label_selector="app=x")
    assert [i.metadata.name for i in core.list_namespaced_config_map(NS).items] == ["d3"]


# ---------------------------------------------------------------- watches


def test_watch_resumes_from_a_resource_version(core: CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("before"))
    version = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, cm("w", {"app": "web"}))
    core.patch_namespaced_config_map("w", NS, {"data": {"k": "2"}})
    core.delete_namespaced_config_map("w", NS)
    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(core.list_namespaced_config_map, NS, resource_version=version,
                              timeout_seconds=2):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            watch.stop()
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_watch_applies_selectors_to_both_states(sandbox: ServerThread, core: CoreV1Api) -> None:
    version = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, cm("s", {"app": "other"}))
    core.patch_namespaced_config_map("s", NS, {"metadata": {"labels": {"app": "web"}}})
    core.patch_namespaced_config_map("s", NS, {"metadata": {"labels": {"app": "gone"}}})
    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(core.list_namespaced_config_map, NS, resource_version=version,
                              label_selector="app=web", timeout_seconds=2):
        seen.append(event["type"])
        if len(seen) == 2:
            watch.stop()
    assert seen == ["ADDED", "DELETED"]


def test_watch_from_a_compacted_version_is_410_gone(sandbox: ServerThread,
                                                     core: CoreV1Api) -> None:
    version = core.create_namespaced_config_map(NS, cm("old")).metadata.resource_version
    core.patch_namespaced_config_map("old", NS, {"data": {"k": "new"}})
    sandbox.call(sandbox.server.store.compact)
    url = (f"{sandbox.server.url}/api/v1/namespaces/default/configmaps?watch=true"
           f"&resourceVersion={version}")
    with urllib.request.urlopen(url, timeout=5 * SCALE) as response:
        assert response.status == 200
        event = json.loads(response.readline())
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    assert event["object"]["message"].startswith(f"too old resource version: {version} (")
    with pytest.raises(ApiException) as info:
        for _ in kubernetes.watch.Watch().stream(core.list_namespaced_config_map, NS,
                                                 resource_version=version, timeout_seconds=1):
            pass
    assert info.value.status == 410


def test_watch_bookmarks_initial_events_and_timeout(sandbox: ServerThread,
                                                    core: CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("here"))
    sandbox.server.store.bookmark_interval = 0.2
    url = (f"{sandbox.server.url}/api/v1/namespaces/default/configmaps?watch=true"
           "&allowWatchBookmarks=true&sendInitialEvents=true"
           "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1")
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=5 * SCALE) as response:
        events = [json.loads(line) for line in response]
    assert time.monotonic() - started < 3 * SCALE
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "here"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert {e["type"] for e in events[2:]} == {"BOOKMARK"} and len(events) > 2


def test_legacy_watch_path_of_one_object(sandbox: ServerThread, core: CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("x"))
    core.create_namespaced_config_map(NS, cm("y"))
    url = f"{sandbox.server.url}/api/v1/watch/namespaces/default/configmaps/y?timeoutSeconds=1"
    with urllib.request.urlopen(url, timeout=5 * SCALE) as response:
        names = [json.loads(line)["object"]["metadata"]["name"] for line in response]
    assert names == ["y"]


# ---------------------------------------------------------------- deletion


def test_finalizers_hold_the_object_until_released(core: CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("f", finalizers=["example.com/hold"]))
    core.delete_namespaced_config_map("f", NS)
    held = core.read_namespaced_config_map("f", NS)
    assert held.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map("f", NS, {"metadata": {"finalizers": ["x", "y"]}})
    assert info.value.status == 422
    core.patch_namespaced_config_map("f", NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("f", NS)
    assert info.value.status == 404


def owned(name: str, owner: Any) -> dict[str, Any]:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name,
           "uid": owner.metadata.uid, "controller": True, "blockOwnerDeletion": True}
    return cm(name, ownerReferences=[ref])


def test_garbage_collection_follows_owner_uids(core: CoreV1Api) -> None:
    owner = core.create_namespaced_config_map(NS, cm("owner"))
    core.create_namespaced_config_map(NS, owned("child", owner))
    grandchild_owner = core.read_namespaced_config_map("child", NS)
    core.create_namespaced_config_map(NS, owned("grandchild", grandchild_owner))
    core.delete_namespaced_config_map("owner", NS)
    assert core.list_namespaced_config_map(NS).items == []


def test_orphan_and_foreground_propagation(core: CoreV1Api) -> None:
    owner = core.create_namespaced_config_map(NS, cm("o1"))
    core.create_namespaced_config_map(NS, owned("kept", owner))
    core.delete_namespaced_config_map("o1", NS, propagation_policy="Orphan")
    assert not core.read_namespaced_config_map("kept", NS).metadata.owner_references

    owner = core.create_namespaced_config_map(NS, cm("o2"))
    core.create_namespaced_config_map(NS, owned("held", owner))
    core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": ["x/y"]}})
    core.delete_namespaced_config_map("o2", NS, propagation_policy="Foreground")
    waiting = core.read_namespaced_config_map("o2", NS)
    assert waiting.metadata.finalizers == ["foregroundDeletion"]
    assert core.read_namespaced_config_map("held", NS).metadata.deletion_timestamp
    core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
    names = [i.metadata.name for i in core.list_namespaced_config_map(NS).items]
    assert names == ["kept"]


def test_deleting_a_namespace_deletes_its_objects(core: CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_config_map("team", cm("inside"))
    core.delete_namespace("team")
    with pytest.raises(ApiException) as info:
        core.read_namespace("team")
    assert info.value.status == 404
    leftovers = core.list_config_map_for_all_namespaces(field_selector="metadata.name=inside")
    assert leftovers.items == []


# ---------------------------------------------------------------- custom resources


def tunnel(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SocatTunnel",
            "metadata": {"name": name}, "spec": spec}


def test_crd_registration_shows_in_discovery(sandbox: ServerThread, crs: CustomObjectsApi) -> None:
    _, resources = raw(sandbox, f"/apis/{GROUP}/{VERSION}")
    main, status = resources["resources"]
    assert main["name"] == "socattunnels" and main["kind"] == "SocatTunnel"
    assert main["shortNames"] == ["st"] and main["categories"] == ["relay"]
    assert {"list", "watch", "create", "patch"} <= set(main["verbs"])
    assert status["name"] == "socattunnels/status"
    _, groups = raw(sandbox, "/apis")
    assert {"name": GROUP, "versions": [{"groupVersion": f"{GROUP}/{VERSION}",
                                         "version": VERSION}],
            "preferredVersion": {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION},
            } in groups["groups"]


def test_custom_resource_defaults_pruning_and_validation(crs: CustomObjectsApi) -> None:
    made = crs.create_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL,
        tunnel("t", listen="TCP-LISTEN:80", unknown=1, port="http", options={"a": "b"}))
    assert made["spec"] == {"listen": "TCP-LISTEN:80", "mode": "tcp", "replicas": 1,
                            "port": "http", "options": {"a": "b"}}
    cases = [
        (tunnel("bad", listen="x", replicas=-1),
         'SocatTunnel.relay.example.io "bad" is invalid: spec.replicas: Invalid value: -1: '
         "spec.replicas in body should be greater than or equal to 0"),
        (tunnel("bad", replicas=1),
         'SocatTunnel.relay.example.io "bad" is invalid: spec.listen: Required value'),
        (tunnel("bad", listen="x", mode="sctp"),
         'SocatTunnel.relay.example.io "bad" is invalid: spec.mode: Unsupported value: "sctp": '
         'supported values: "tcp", "udp"'),
        (tunnel("bad", listen="x", replicas="two"),
         'SocatTunnel.relay.example.io "bad" is invalid: spec.replicas: Invalid value: "string": '
         'spec.replicas in body must be of type integer: "string"'),
        (tunnel("bad", listen=""),
         'SocatTunnel.relay.example.io "bad" is invalid: spec.listen: Invalid value: "": '
         "spec.listen in body should be at least 1 chars long"),
    ]
    for body, message in cases:
        with pytest.raises(ApiException) as info:
            crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        assert info.value.status == 422
        assert status_of(info.value)["message"] == message


def test_strict_field_validation_names_unknown_fields(sandbox: ServerThread,
                                                      crs: CustomObjectsApi) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    code, body = raw(sandbox, path + "?fieldValidation=Strict", method="POST",
                     body=tunnel("s", listen="x", bogus=1))
    assert code == 400
    assert body["message"] == ('SocatTunnel in version "v1alpha1" cannot be handled as a '
                               'SocatTunnel: strict decoding error: unknown field "spec.bogus"')
    request = urllib.request.Request(
        sandbox.server.url + path + "?fieldValidation=Warn", method="POST",
        data=json.dumps(tunnel("w", listen="x", bogus=1)).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5 * SCALE) as response:
        assert response.headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'


def test_tables_for_kubectl_get(sandbox: ServerThread, crs: CustomObjectsApi) -> None:
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, tunnel("t", listen="L"))
    code, table = raw(sandbox, f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}",
                      headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert code == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Listen", "Replicas"]
    assert table["rows"][0]["cells"] == ["t", "L", 1]
    assert table["rows"][0]["object"]["metadata"]["name"] == "t"


def test_deleting_a_crd_removes_its_resources(sandbox: ServerThread, api: ApiClient,
                                              crs: CustomObjectsApi) -> None:
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, tunnel("t", listen="L"))
    kubernetes.client.ApiextensionsV1Api(api).delete_custom_resource_definition(
        CRD["metadata"]["name"])
    code, _ = raw(sandbox, f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}")
    assert code == 404


# ---------------------------------------------------------------- authorization


def test_restricted_users_get_403_with_the_real_wording(sandbox: ServerThread,
                                                        tmp_path: Path) -> None:
    sandbox.server.add_user("alice", namespaces={"team"}, verbs={"get", "list"})
    client = client_for(sandbox, tmp_path / "alice", user="alice")
    try:
        core = CoreV1Api(client)
        with pytest.raises(ApiException) as info:
            core.list_namespaced_pod("default")
        assert info.value.status == 403
        assert status_of(info.value)["message"] == (
            'pods is forbidden: User "alice" cannot list resource "pods" in API group "" '
            'in the namespace "default"')
        with pytest.raises(ApiException) as info:
            core.create_namespaced_config_map("team", cm("x"))
        assert status_of(info.value)["message"] == (
            'configmaps is forbidden: User "alice" cannot create resource "configmaps" in API '
            'group "" in the namespace "team"')
        with pytest.raises(ApiException) as info:
            core.list_namespace()
        assert status_of(info.value)["message"] == (
            'namespaces is forbidden: User "alice" cannot list resource "namespaces" in API '
            'group "" at the cluster scope')
        assert core.list_namespaced_pod("team").items == []
    finally:
        client.close()
    code, body = raw(sandbox, "/api/v1/namespaces/team/pods",
                     headers={"Authorization": "Bearer wrong"})
    assert (code, body["reason"]) == (401, "Unauthorized")
    code, body = raw(sandbox, "/api/v1/namespaces/default/pods",
                     headers={"Impersonate-User": "alice"})
    assert code == 403


# ---------------------------------------------------------------- faults


def test_injected_failures_are_status_bodies(sandbox: ServerThread, core: CoreV1Api) -> None:
    sandbox.server.faults.fail("POST", r"/configmaps$", status=500, times=1)
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(NS, cm("f"))
    assert info.value.status == 500 and status_of(info.value)["reason"] == "InternalError"
    core.create_namespaced_config_map(NS, cm("f"))  # only once
    # A 429 with Retry-After: urllib3 (under the client) waits and retries by itself.
    sandbox.server.faults.fail("GET", r"/configmaps/f$", status=429, times=1, retry_after=1)
    fired = sandbox.server.faults.fired
    assert core.read_namespaced_config_map("f", NS).metadata.name == "f"
    assert sandbox.server.faults.fired == fired + 1
    sandbox.server.faults.fail("GET", r"/configmaps/f$", status=429, times=1, retry_after=1)
    code, body = raw(sandbox, "/api/v1/namespaces/default/configmaps/f")
    assert (code, body["reason"], body["details"]) == (429, "TooManyRequests",
                                                       {"retryAfterSeconds": 1})


def test_dropped_watches_end_abruptly(sandbox: ServerThread, core: CoreV1Api) -> None:
    url = f"{sandbox.server.url}/api/v1/namespaces/default/configmaps?watch=true"
    with urllib.request.urlopen(url, timeout=5 * SCALE) as response:
        core.create_namespaced_config_map(NS, cm("seen"))
        assert json.loads(response.readline())["type"] == "ADDED"
        sandbox.call(sandbox.server.faults.drop_watches)
        with pytest.raises(Exception) as info:  # http.client's error type varies
            response.read()
    assert "Incomplete" in type(info.value).__name__ or isinstance(info.value, OSError)


# ---------------------------------------------------------------- logs and port-forward


def running_pod(sandbox: ServerThread, core: CoreV1Api, name: str) -> None:
    core.create_namespaced_pod(NS, pod(name))
    core.patch_namespaced_pod_status(name, NS, {"status": {"phase": "Running"}})


def test_pod_logs_follow_and_refusals(sandbox: ServerThread, pods: FakePods,
                                      core: CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("web"))
    with pytest.raises(ApiException) as info:
        core.read_namespaced_pod_log("web", NS)
    assert info.value.status == 400
    assert status_of(info.value)["message"] == (
        'container "main" in pod "web" is waiting to start: ContainerCreating')
    core.patch_namespaced_pod_status("web", NS, {"status": {"phase": "Running"}})
    sandbox.call(pods.emit, NS, "web", b"one\n")
    sandbox.call(pods.emit, NS, "web", b"two\n")
    assert core.read_namespaced_pod_log("web", NS, tail_lines=1) == "two\n"
    stream = core.read_namespaced_pod_log("web", NS, follow=True, _preload_content=False)
    try:
        assert stream.read(8) == b"one\ntwo\n"
        sandbox.call(pods.emit, NS, "web", b"three\n")
        sandbox.call(pods.finish, NS, "web")
        assert stream.read() == b"three\n"
    finally:
        stream.release_conn()
    with pytest.raises(ApiException) as info:
        core.read_namespaced_pod_log("web", NS, container="nope")
    assert status_of(info.value)["message"] == "container nope is not valid for pod web"


@pytest.fixture
def echo(sandbox: ServerThread) -> Iterator[tuple[str, int]]:
    """A TCP echo server on the server's loop."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def start() -> asyncio.Server:
        return await asyncio.start_server(serve, "127.0.0.1", 0)

    server = sandbox.run(start())
    yield server.sockets[0].getsockname()[:2]

    async def stop() -> None:
        server.close()
        await server.wait_closed()
    sandbox.run(stop())


def test_portforward_over_the_v4_websocket(sandbox: ServerThread, pods: FakePods,
                                           core: CoreV1Api, echo: tuple[str, int]) -> None:
    running_pod(sandbox, core, "web")
    pods.ports[(NS, "web", 8080)] = echo
    forward = portforward(core.connect_get_namespaced_pod_portforward, "web", NS,
                          ports="8080,9090")
    try:
        sock = forward.socket(8080)
        sock.settimeout(5 * SCALE)
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        refused = forward.socket(9090)
        refused.settimeout(5 * SCALE)
        assert refused.recv(10) == b""  # the client closes a port whose error channel spoke
        assert "error forwarding port 9090" in (forward.error(9090) or "")
        sandbox.call(sandbox.server.faults.break_portforwards)
        assert sock.recv(10) == b""
        deadline = time.monotonic() + 5 * SCALE
        while forward.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not forward.connected
    finally:
        forward.close()
        # The client's proxy thread leaves the websocket's own socket open when the server
        # closes first: close it here so that no socket outlives the test.
        forward.websocket.shutdown()


def test_port_forward_to_a_pending_pod_is_refused(core: CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("idle"))
    with pytest.raises(ApiException):
        portforward(core.connect_get_namespaced_pod_portforward, "idle", NS, ports="80")


def test_server_stops_with_open_watches(pods: FakePods) -> None:
    """stop() ends open watches instead of waiting for them (bounded teardown)."""
    started = time.monotonic()
    with ServerThread(backend=pods) as running:
        sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=5 * SCALE)
        sock.sendall(b"GET /api/v1/namespaces/default/configmaps?watch=true HTTP/1.1\r\n"
                     b"Host: sandbox\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200 OK")
    with sock:
        received = b""
        while chunk := sock.recv(1024):
            received += chunk
    assert received.endswith(b"0\r\n\r\n")  # the stream was ended properly
    assert time.monotonic() - started < 3 * SCALE


def test_plain_http_socket_is_closed_after_stop(pods: FakePods) -> None:
    with ServerThread(backend=pods) as running:
        port = running.server.port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
