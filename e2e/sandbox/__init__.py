"""A local Kubernetes for tests, e2e and the demo: an API server plus a cluster of local processes.

No container engine or real control plane runs here, so the sandbox provides
both halves in one process: ``api`` speaks the Kubernetes API (kubectl, kopf and
the kubernetes client work against it through a kubeconfig), and ``cluster``
runs what is stored there: pods as local processes on loopback addresses of
their own, Deployments, ReplicaSets, Jobs, Services with cluster IPs, DNS and
a userspace proxy.

Two ways to run it:

- ``Sandbox``, an async context manager on the current event loop::

      async with Sandbox() as sandbox:
          sandbox.register_image("example.com/echo", my_module.serve)
          ...kubectl --kubeconfig sandbox.kubeconfig ...

- ``SandboxThread``, the same on its own loop in a background thread, for
  synchronous code: the kubernetes client and kubectl block their caller, and
  an operator run in-process (kopf) cancels tasks of its own loop when it stops.
  The pytest fixture ``sandbox`` (``e2e/conftest.py``) is one of these.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster.sandbox import RELAY_IMAGE, Sandbox, SandboxThread, WaitTimeout
    from .cluster.settings import ClusterSettings
    from .cluster.workloads import ECHO_IMAGE, HTTP_IMAGE, TOOLBOX_IMAGE

__all__ = [
    "ECHO_IMAGE",
    "HTTP_IMAGE",
    "RELAY_IMAGE",
    "TOOLBOX_IMAGE",
    "ClusterSettings",
    "Sandbox",
    "SandboxThread",
    "WaitTimeout",
]

#: Where each export lives. Imported on first use: every pod's process imports
#: ``e2e.sandbox.cluster.podshim``, hence this package, and must not pay for
#: aiohttp and the API server it never uses.
_EXPORTS = {
    "ECHO_IMAGE": ".cluster.workloads",
    "HTTP_IMAGE": ".cluster.workloads",
    "RELAY_IMAGE": ".cluster.sandbox",
    "TOOLBOX_IMAGE": ".cluster.workloads",
    "ClusterSettings": ".cluster.settings",
    "Sandbox": ".cluster.sandbox",
    "SandboxThread": ".cluster.sandbox",
    "WaitTimeout": ".cluster.sandbox",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
