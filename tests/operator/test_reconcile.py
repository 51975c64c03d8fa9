"""The ``Reconciler`` over an in-memory store: restarts write nothing, failures leave a status.

The store below keeps objects the way the API server does for what the
``Reconciler`` uses: a JSON merge patch (RFC 7386) deletes a key given as
``null``, so a status written with ``expiresAt: null`` reads back without
the key. That is what made every resume (kopf's handler on a restart)
patch every tunnel's status. The real API server runs the same
reconciliations in ``test_handlers.py``.
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime
from typing import Any, cast

from relay_operator.apply import changes
from relay_operator.client import Kube
from relay_operator.errors import ApiError
from relay_operator.reconcile import Reconciler
from relay_operator.settings import Settings

NOW = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class Store:
    """Objects by URL path, and every write the reconciler sent."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self._uids = itertools.count(1)
        #: Collections whose POST the "API server" refuses with 403.
        self.forbidden: set[str] = set()

    async def get(self, url: str) -> dict[str, Any] | None:
        found = self.objects.get(url)
        return copy.deepcopy(found) if found is not None else None

    async def create(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("POST", url))
        if url in self.forbidden:
            raise ApiError("POST", url, 403, "Forbidden", "deployments.apps is forbidden")
        obj = copy.deepcopy(body)
        obj["metadata"]["uid"] = f"uid-{next(self._uids)}"
        obj["metadata"]["generation"] = 1
        self.objects[f"{url}/{obj['metadata']['name']}"] = obj
        return copy.deepcopy(obj)

    async def patch(self, url: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("PATCH", url))
        key = url.removesuffix("/status")
        self.objects[key] = merge(self.objects[key], patch)
        return copy.deepcopy(self.objects[key])

    async def delete(self, url: str) -> bool:
        self.writes.append(("DELETE", url))
        return self.objects.pop(url, None) is not None


def tunnel(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "relay.kubectl-relay.io/v1alpha1",
        "kind": "SocatTunnel",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"tunnel-{name}",
            "generation": 1,
            "creationTimestamp": "2026-12-06T16:00:00Z",
        },
        "spec": {"listen": "TCP-LISTEN:8080,fork", "connect": "TCP:web:80", **spec},
    }


TUNNELS = [
    tunnel("plain"),
    tunnel("exposed", service={"type": "ClusterIP"}),
    tunnel("temporary", ttl="2h"),
    tunnel("invalid", connect="TCP:169.254.169.254:80"),
]


async def test_a_restart_writes_no_status_for_unchanged_tunnels() -> None:
    store = Store()
    for body in TUNNELS:
        store.objects[Reconciler.tunnel_url("team", body["metadata"]["name"])] = body
    first = Reconciler(cast(Kube, store), Settings(), clock=lambda: NOW)
    for body in TUNNELS:
        await first.reconcile("team", body["metadata"]["name"])
    status_writes = [url for method, url in store.writes if url.endswith("/status")]
    assert len(status_writes) == len(TUNNELS)

    store.writes.clear()
    restarted = Reconciler(cast(Kube, store), Settings(), clock=lambda: NOW)
    outcomes = [await restarted.reconcile("team", b["metadata"]["name"]) for b in TUNNELS]
    assert store.writes == []
    assert [o.result for o in outcomes if o is not None] == [
        "unchanged", "unchanged", "unchanged", "invalid"
    ]  # fmt: skip


def test_null_in_a_merge_patch_means_absent() -> None:
    assert not changes({"phase": "Ready"}, {"phase": "Ready", "expiresAt": None})
    assert changes({"phase": "Ready", "expiresAt": "x"}, {"phase": "Ready", "expiresAt": None})
    assert changes({"phase": "Ready"}, {"phase": "Pending"})
    assert not changes({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}})


async def test_a_refused_request_is_said_in_the_status() -> None:
    store = Store()
    body = tunnel("plain")
    store.objects[Reconciler.tunnel_url("team", "plain")] = body
    store.forbidden.add("/apis/apps/v1/namespaces/team/deployments")
    outcome = await Reconciler(cast(Kube, store), Settings(), clock=lambda: NOW).reconcile(
        "team", "plain"
    )
    assert outcome is not None and outcome.error is not None
    status = store.objects[Reconciler.tunnel_url("team", "plain")]["status"]
    valid = {c["type"]: c for c in status["conditions"]}["Valid"]
    assert (valid["status"], valid["reason"]) == ("False", "ReconcileFailed")
    assert valid["message"] == (
        "the API server refused a request of the operator: POST "
        "/apis/apps/v1/namespaces/team/deployments: 403 Forbidden: deployments.apps is forbidden"
    )


class DeletedAfterRead(Store):
    """A store whose tunnels are deleted right after each read, as during a wave of deletes."""

    async def get(self, url: str) -> dict[str, Any] | None:
        found = await super().get(url)
        if "/socattunnels/" in url:
            self.objects.pop(url, None)
        return found

    async def patch(self, url: str, patch: dict[str, Any]) -> dict[str, Any]:
        if url.removesuffix("/status") not in self.objects:
            self.writes.append(("PATCH", url))
            raise ApiError("PATCH", url, 404, "NotFound", "socattunnels not found")
        return await super().patch(url, patch)


async def test_a_tunnel_deleted_before_its_status_is_written_is_left_alone() -> None:
    store = DeletedAfterRead()
    url = Reconciler.tunnel_url("team", "plain")
    body = tunnel("plain")
    body["status"] = {"conditions": [{"type": "Valid", "status": "True", "reason": "SpecValid",
                                      "message": "the spec is valid", "observedGeneration": 1}]}
    store.objects[url] = body
    outcome = await Reconciler(cast(Kube, store), Settings(), clock=lambda: NOW).refresh(
        "team", "plain")
    assert store.writes == [("PATCH", f"{url}/status")]  # tried, refused with 404
    assert outcome is not None and outcome.events == ()


def test_the_ttl_daemon_survives_any_ttl() -> None:
    reconciler = Reconciler(cast(Kube, Store()), Settings(), clock=lambda: NOW)
    for ttl, left in (("99999999999d", None), ("3000000d", None), ("2h", 3600.0)):
        assert reconciler.remaining(tunnel("t", ttl=ttl)) == left


class CountingReads(Store):
    """A store that also records what was read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get(self, url: str) -> dict[str, Any] | None:
        self.reads.append(url)
        return await super().get(url)


async def test_a_refresh_does_not_read_again_the_child_its_event_delivered() -> None:
    store = CountingReads()
    url = Reconciler.tunnel_url("team", "exposed")
    store.objects[url] = tunnel("exposed", service={"type": "ClusterIP"})
    reconciler = Reconciler(cast(Kube, store), Settings(), clock=lambda: NOW)
    await reconciler.reconcile("team", "exposed")
    deployment_url = Reconciler.child_url("Deployment", "team", "exposed")
    deployment = copy.deepcopy(store.objects[deployment_url])
    deployment["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                            "availableReplicas": 1, "observedGeneration": 1}
    store.reads.clear()
    outcome = await reconciler.refresh("team", "exposed", changed=("Deployment", deployment))
    assert store.reads == [url, Reconciler.child_url("Service", "team", "exposed")]
    assert outcome is not None
    assert outcome.phase == "Ready"  # from the delivered Deployment, not the stored one
