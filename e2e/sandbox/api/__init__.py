"""A Kubernetes API server for the sandbox cluster: kopf, the kubernetes client and kubectl
work against it unchanged through the kubeconfig it writes.

Modules: ``store`` (objects, resourceVersions, watches), ``lifecycle`` (finalizers, GC,
namespaces), ``objects`` (metadata, defaults, validation), ``schema`` (CRD schemas),
``patching``, ``selectors``, ``watch``, ``resources`` (the served types), ``discovery``,
``tables``, ``paths``, ``routes`` (HTTP), ``streams`` (logs, port-forward), ``auth``,
``faults``, ``scale``, ``kubeconfig`` and ``server``.
"""

from .errors import ApiError, BadRequest, Conflict, Forbidden, Gone, Invalid, NotFound
from .faults import Faults
from .server import ApiServer
from .store import Store
from .streams import PodBackend
from .watch import WatchEvent

__all__ = [
    "ApiError",
    "ApiServer",
    "BadRequest",
    "Conflict",
    "Faults",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "PodBackend",
    "Store",
    "WatchEvent",
]
