"""The ordered components of the local cluster: ``up`` starts them, ``down`` stops them.

``COMPONENTS`` is the one list of what runs, in start order. Each entry is a
factory (a class) taking the ``ClusterSettings`` and returning a
``component.Component``. To add a component, import its class here and put it
in the list where its dependencies are already up; ``down`` stops in reverse.

``up`` starts each component, polls its ``ready()`` (bounded by its
``ready_timeout``) and prints a line with the duration; when one fails, the
ones already started are stopped in reverse order and the error says which
failed and shows the tail of its log. ``down`` stops every component of the
list, whether it runs or not, so it is safe twice and after a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from e2e.localcluster.apiserver import ApiServer
from e2e.localcluster.component import (
    ClusterError,
    Component,
    ComponentFactory,
    wait_until,
)
from e2e.localcluster.containerd import Containerd
from e2e.localcluster.controllers import ControllerManager, Scheduler
from e2e.localcluster.dns import ClusterDns
from e2e.localcluster.etcd import Etcd
from e2e.localcluster.images import ImageImport
from e2e.localcluster.kubeconfig import Credentials
from e2e.localcluster.kubelet import Kubelet
from e2e.localcluster.netpolicy import KubeRouterFirewall
from e2e.localcluster.network import Network
from e2e.localcluster.proxy import KubeProxy
from e2e.localcluster.settings import ClusterSettings

#: Start order of ``up`` (``down`` runs it backwards). See the module docstring.
COMPONENTS: list[ComponentFactory] = [
    Credentials,  # PKI and kubeconfigs: everything below reads them
    Network,  # the bridge (198.18.0.1, advertised by the API server) and the guard rules
    Etcd,
    ApiServer,
    ControllerManager,
    Scheduler,
    Containerd,
    ImageImport,
    Kubelet,
    KubeProxy,
    ClusterDns,
    KubeRouterFirewall,  # NetworkPolicy: kube-router's firewall alone
]

#: Where progress lines go (``print`` by default; tests pass a list's ``append``).
Report = Callable[[str], None]


def build_components(
    settings: ClusterSettings, factories: Sequence[ComponentFactory] | None = None
) -> list[Component]:
    """The cluster's components for ``settings``, in start order."""
    return [factory(settings) for factory in (COMPONENTS if factories is None else factories)]


def up(
    settings: ClusterSettings,
    report: Report = print,
    factories: Sequence[ComponentFactory] | None = None,
    *,
    keep_on_failure: bool = False,
) -> float:
    """Start every component in order and wait for each; undo all on failure.

    ``keep_on_failure`` leaves what started running, to look into (``down``
    removes it). Returns the total duration in seconds.
    """
    started: list[Component] = []
    began = time.monotonic()
    try:
        for component in build_components(settings, factories):
            step = time.monotonic()
            report(f"  {component.name} ...")
            started.append(component)
            component.start()
            wait_until(component.name, component.ready, component.ready_timeout)
            report(f"  {component.name} ready ({time.monotonic() - step:.1f}s)")
    except BaseException as exc:
        if isinstance(exc, ClusterError):
            report(f"  failed: {exc}")
        if keep_on_failure and isinstance(exc, ClusterError):
            report("  left running as it is (--keep-on-failure); `down` removes it")
        else:
            report("  undoing what was started ...")
            _stop_all(reversed(started), report)
        raise
    return time.monotonic() - began


def down(
    settings: ClusterSettings,
    report: Report = print,
    factories: Sequence[ComponentFactory] | None = None,
) -> float:
    """Stop every component in reverse order, whatever its state. Returns the duration."""
    began = time.monotonic()
    errors = _stop_all(reversed(build_components(settings, factories)), report)
    if errors:
        raise ClusterError("down could not undo everything:\n" + "\n".join(errors))
    return time.monotonic() - began


def _stop_all(components: Iterable[Component], report: Report) -> list[str]:
    """Stop each component, going on past failures; return one line per failure."""
    errors: list[str] = []
    for component in components:
        step = time.monotonic()
        try:
            component.stop()
        except Exception as exc:
            errors.append(f"  {component.name}: {exc}")
            report(f"  {component.name} NOT stopped: {exc}")
            continue
        report(f"  {component.name} stopped ({time.monotonic() - step:.1f}s)")
    return errors
