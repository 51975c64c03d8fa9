"""Two replicas of the operator under kopf peering, against the sandbox: one serves at a time.

Each replica is a ``relay-operator`` process (two kopf operators cannot share
one event loop: each owns its loop's signal handling and, on stop, cancels
what its loop started after it), run as the chart runs them: the same peering
name, ``POD_ID`` as their identity, the chart's peering CRDs, and a
``KopfPeering`` in the served namespace (where kopf looks for it when it serves
some namespaces). Priorities are fixed, so the test knows which one serves.

What the API sees tells who acted: the peering object's status lists the live
replicas; each replica's log (``--verbose``) has every request it sent, so
the URLs of a tunnel's reads and writes show who handled it; events are
posted once per handled change.
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from e2e.conftest import namespace, sandbox  # noqa: F401 - fixtures
from e2e.sandbox import SandboxThread
from tests.conftest import scaled
from tests.operator.sandboxed import API_VERSION, install_crd, tunnel

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
PEERING_CRDS = ROOT / "charts" / "kubectl-relay" / "crds" / "kopfpeerings.yaml"
PEERING = "relay-operator"
RELAY_OPERATOR = Path(sys.executable).with_name("relay-operator")
#: What kopf logs when a replica starts serving (it starts paused).
RESUMING = "Resuming operations after the pause"


@pytest.fixture(autouse=True)
def crds(sandbox: SandboxThread) -> None:  # noqa: F811
    install_crd(sandbox)
    install_crd(sandbox, PEERING_CRDS)


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {result!r}")
        time.sleep(0.1)


class Replica:
    """One ``relay-operator`` process, its log in a file."""

    def __init__(self, sandbox: SandboxThread, namespace: str, identity: str,  # noqa: F811
                 priority: int, log: Path) -> None:
        self.identity = identity
        self.log_path = log
        environ = {**os.environ, "POD_ID": identity}
        for name in list(environ):
            if name.startswith("RELAY_OPERATOR_"):
                del environ[name]
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [str(RELAY_OPERATOR), "--kubeconfig", str(sandbox.kubeconfig),
                 "--namespace", namespace, "--peering", PEERING, "--priority", str(priority),
                 "--health-port", "0", "--metrics-port", "0", "--verbose"],
                stdout=output, stderr=subprocess.STDOUT, env=environ,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def handled(self, namespace: str, name: str) -> bool:  # noqa: F811
        """Whether the replica sent a request about the tunnel (``--verbose`` logs each one).

        Watches and lists name no object: only a replica handling the
        tunnel reads or writes it by name.
        """
        return f"/namespaces/{namespace}/socattunnels/{name}" in self.log()

    def stop(self) -> int:
        """SIGTERM, as the kubelet stops a pod; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture
def replicas(sandbox: SandboxThread, namespace: str,  # noqa: F811
             tmp_path: Path) -> Iterator[Callable[[str, int], Replica]]:
    """Start replicas with ``start(identity, priority)``; all are stopped after the test."""
    started: list[Replica] = []

    def start(identity: str, priority: int) -> Replica:
        replica = Replica(sandbox, namespace, identity, priority, tmp_path / f"{identity}.log")
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop()


def get(sandbox: SandboxThread, api_version: str, plural: str,  # noqa: F811
        namespace: str | None, name: str) -> Any:  # noqa: F811
    async def read() -> Any:
        try:
            return await sandbox.sandbox.store.get(api_version, plural, namespace, name)
        except Exception:  # NotFound
            return None

    return sandbox.run(read())


def peers(sandbox: SandboxThread, namespace: str) -> set[str]:  # noqa: F811
    """Identities of the replicas with a live keep-alive in the namespace's KopfPeering."""
    body = get(sandbox, "kopf.dev/v1", "kopfpeerings", namespace, PEERING) or {}
    return set(body.get("status") or {})


def events(sandbox: SandboxThread, namespace: str, name: str) -> list[tuple[str, str]]:  # noqa: F811
    async def read() -> list[Any]:
        items, _ = await sandbox.sandbox.store.list("v1", "events", namespace)
        return list(items)

    found = [e for e in sandbox.run(read()) if e.get("involvedObject", {}).get("name") == name]
    return [(e.get("reason", ""), e.get("message", "")) for e in found]


def create_tunnel(sandbox: SandboxThread, namespace: str, name: str) -> None:  # noqa: F811
    body = tunnel(name, {"listen": "TCP-LISTEN:8080,fork,reuseaddr", "connect": "TCP:target:80"})
    sandbox.run(sandbox.sandbox.store.create(API_VERSION, "socattunnels", namespace, body))


def reconciled(sandbox: SandboxThread, namespace: str, name: str) -> bool:  # noqa: F811
    """The tunnel's children exist and its status reports on them."""
    deployment = get(sandbox, "apps/v1", "deployments", namespace, name)
    body = get(sandbox, API_VERSION, "socattunnels", namespace, name) or {}
    return deployment is not None and bool((body.get("status") or {}).get("conditions"))


def test_one_replica_serves_and_the_other_takes_over(
    sandbox: SandboxThread, namespace: str,  # noqa: F811
    replicas: Callable[[str, int], Replica],
) -> None:
    body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
            "metadata": {"name": PEERING, "namespace": namespace}}
    sandbox.run(sandbox.sandbox.store.create("kopf.dev/v1", "kopfpeerings", namespace, body))

    # Peering is mandatory when named: each replica starts paused and resumes
    # only once the peering object shows no replica of a higher priority.
    active = replicas("operator-a", 20)
    wait_until("operator-a in the peering", lambda: "operator-a" in peers(sandbox, namespace))
    wait_until("operator-a to serve", lambda: RESUMING in active.log())
    standby = replicas("operator-b", 10)
    wait_until("both in the peering", lambda: peers(sandbox, namespace) == {
        "operator-a", "operator-b"})
    wait_until("operator-b's paused watches", lambda: "(paused)" in standby.log())

    names = ["first", "second"]
    for name in names:
        create_tunnel(sandbox, namespace, name)
    for name in names:
        wait_until(f"{name} reconciled", functools.partial(reconciled, sandbox, namespace, name))
        wait_until(f"operator-a's log of {name}", functools.partial(active.handled, namespace, name))
    # Give a second replica acting by mistake time to show in its log and in events.
    time.sleep(scaled(2))
    for name in names:
        assert not standby.handled(namespace, name), standby.log()
        posted = events(sandbox, namespace, name)
        assert posted
        assert [e for e, n in collections.Counter(posted).items() if n > 1] == []
        deployment = get(sandbox, "apps/v1", "deployments", namespace, name)
        assert deployment["metadata"]["generation"] == 1
    assert RESUMING not in standby.log()
    assert "Pausing operations" not in active.log()

    # A clean stop (SIGTERM: a rolling update, a drain) takes the replica out of the
    # peering at once: the standby resumes without waiting for the keep-alive to expire.
    assert active.stop() == 0
    assert peers(sandbox, namespace) == {"operator-b"}
    wait_until("operator-b to serve", lambda: RESUMING in standby.log())
    create_tunnel(sandbox, namespace, "third")
    wait_until("third reconciled", lambda: reconciled(sandbox, namespace, "third"))
    assert standby.handled(namespace, "third")
    assert not active.handled(namespace, "third")
