"""One wave: N tunnels created at once, watched until Valid and Ready, then deleted.

Times are taken on this machine's monotonic clock, per tunnel, from the
moment its create returned to the first watch event that shows the
condition (``Valid=True``, ``Ready=True``), so the API server's one-second
timestamps do not round them. The relay Deployments are watched too: the
moment a Deployment has a ready replica is the cluster's share of a tunnel's
time to Ready (scheduler, controller manager, kwok); what comes after it is
the operator's, turning that into the tunnel's status.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch

from relay_operator.builders import GROUP, TUNNEL_LABEL, VERSION
from relay_operator.client import Kube, path
from relay_operator.reconcile import PLURAL

from .conditions import conditions
from .kwok import tunnel_placement

#: Every tunnel of the benchmark carries it (the watches select on it).
BENCH_LABEL = "relay.kubectl-relay.io/bench"
PROBE = "probe"


def tunnel_body(name: str, namespace: str) -> dict[str, object]:
    """A plain tunnel: a TCP listener relaying to a Service name, with its own Service."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SocatTunnel",
        "metadata": {"name": name, "namespace": namespace, "labels": {BENCH_LABEL: "1"}},
        "spec": {
            "listen": "TCP-LISTEN:8080,fork,reuseaddr",
            "connect": f"TCP:backend.{namespace}.svc:80",
            "pod": tunnel_placement(),
        },
    }


@dataclass
class Timeline:
    """When each tunnel reached each point (``time.monotonic()``), by tunnel name."""

    created: dict[str, float] = field(default_factory=dict)
    first_status: dict[str, float] = field(default_factory=dict)
    valid: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    pods_ready: dict[str, float] = field(default_factory=dict)

    def since_created(self, moments: Mapping[str, float], *, probe: bool = False) -> list[float]:
        """Seconds from creation to ``moments`` for the wave's tunnels (or the probe alone)."""
        return [moments[name] - self.created[name] for name in moments
                if name in self.created and (name == PROBE) == probe]


class Watcher(threading.Thread):
    """Watches one kind of object in the namespace and records first sightings."""

    def __init__(self, api: Any, namespace: str, group: str, version: str, plural: str,
                 record: Callable[[Mapping[str, Any], float], None]) -> None:
        super().__init__(name=f"watch-{plural}", daemon=True)
        self._objects = client.CustomObjectsApi(api)
        self._where = (group, version, namespace, plural)
        self._record = record
        self.stopping = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        version: str | None = None
        while not self.stopping.is_set():
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    self._objects.list_namespaced_custom_object, *self._where,
                    label_selector=BENCH_LABEL if self._where[3] == PLURAL else TUNNEL_LABEL,
                    resource_version=version, timeout_seconds=5,
                ):
                    obj = event["object"]
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(obj, time.monotonic())
                    if self.stopping.is_set():
                        break
            except client.ApiException as exc:
                if exc.status == 410:  # too old: list again
                    version = None
                    continue
                self.error = f"watch of {self._where[3]} failed: {exc.status} {exc.reason}"
                return
            finally:
                stream.stop()  # type: ignore[no-untyped-call]


def watchers(api: Any, namespace: str, timeline: Timeline) -> list[Watcher]:
    """A watch of the tunnels (status) and one of their Deployments (ready replicas)."""
    def tunnel(obj: Mapping[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        found = conditions(obj)
        if found:
            timeline.first_status.setdefault(name, now)
        if found.get("Valid") == "True":
            timeline.valid.setdefault(name, now)
        if found.get("Ready") == "True":
            timeline.ready.setdefault(name, now)

    def deployment(obj: Mapping[str, Any], now: float) -> None:
        name = obj["metadata"].get("labels", {}).get(TUNNEL_LABEL)
        status = obj.get("status") or {}
        if name and (status.get("readyReplicas") or 0) >= 1:
            timeline.pods_ready.setdefault(name, now)

    return [
        Watcher(api, namespace, GROUP, VERSION, PLURAL, tunnel),
        Watcher(api, namespace, "apps", "v1", "deployments", deployment),
    ]


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def create_wave(kube: Kube, namespace: str, count: int, timeline: Timeline) -> float:
    """Create ``count`` tunnels at once (and the probe once half are created); the seconds
    the creates took. The client's thread pool bounds how many are in flight."""
    url = path(f"{GROUP}/{VERSION}", PLURAL, namespace)
    halfway = asyncio.Event()

    async def create(name: str) -> None:
        await kube.create(url, tunnel_body(name, namespace))
        timeline.created[name] = time.monotonic()
        if len(timeline.created) >= count // 2:
            halfway.set()

    async def probe() -> None:
        await halfway.wait()
        await create(PROBE)

    started = time.monotonic()
    await asyncio.gather(probe(), *(create(f"t{index:04d}") for index in range(count)))
    return time.monotonic() - started


async def wait_for(what: str, done: Callable[[], int], total: int, deadline: float,
                   watches: list[Watcher]) -> bool:
    """Until ``done()`` reaches ``total`` (True) or the deadline passes (False)."""
    shown = -1
    while time.monotonic() < deadline:
        for watcher in watches:
            if watcher.error:
                raise RuntimeError(watcher.error)
        reached = done()
        if reached >= total:
            return True
        if reached != shown and int(time.monotonic()) % 5 == 0:
            _progress(f"  {what}: {reached}/{total}")
            shown = reached
        await asyncio.sleep(0.2)
    return False


async def delete_wave(kube: Kube, namespace: str, names: list[str],
                      deadline: float) -> tuple[float | None, float | None]:
    """Delete every tunnel (one request each, as ``kubectl delete`` does); seconds until the
    tunnels are gone, and until their relay pods are (None: not within the deadline)."""
    started = time.monotonic()
    base = path(f"{GROUP}/{VERSION}", PLURAL, namespace)
    await asyncio.gather(*(kube.delete(f"{base}/{name}") for name in names))
    tunnels_gone = pods_gone = None
    pods = path("v1", "pods", namespace) + f"?labelSelector={TUNNEL_LABEL}&limit=1"
    tunnels = f"{base}?labelSelector={BENCH_LABEL}&limit=1"
    while time.monotonic() < deadline and pods_gone is None:
        if tunnels_gone is None and not await _any(kube, tunnels):
            tunnels_gone = time.monotonic() - started
        if tunnels_gone is not None and not await _any(kube, pods):
            pods_gone = time.monotonic() - started
        await asyncio.sleep(0.5)
    return tunnels_gone, pods_gone


async def _any(kube: Kube, url: str) -> bool:
    found = await kube.get(url)
    return bool(found and found.get("items"))
