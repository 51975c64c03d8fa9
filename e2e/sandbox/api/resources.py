"""The resource types the sandbox serves: the built-in table and the ones CRDs add.

A :class:`ResourceType` carries everything discovery, routing, validation and printing need to
know about one ``group/version/plural``. Built-ins are declared in :data:`BUILTINS`; creating a
``CustomResourceDefinition`` registers one type per served version (:func:`from_crd`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import NotFound

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")


@dataclass(frozen=True)
class Column:
    """One printer column (``additionalPrinterColumns`` or a built-in's standard column)."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class ResourceType:
    """One served ``group/version/plural``."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    #: Subresources served: ``status``, ``scale``, ``log``, ``portforward``, ``eviction``.
    subresources: frozenset[str] = frozenset()
    verbs: tuple[str, ...] = ALL_VERBS
    #: Whether ``metadata.generation`` is kept (bumped on changes outside metadata and status).
    generation: bool = False
    #: The OpenAPI v3 schema of a custom resource (``None``: no validation, no pruning).
    schema: Mapping[str, Any] | None = field(default=None, compare=False)
    columns: tuple[Column, ...] = ()
    #: The name of the CRD that registered this type, or ``""`` for built-ins.
    crd: str = ""
    #: For ``/scale``: where the replicas and the label selector live.
    scale_spec_path: str = ".spec.replicas"
    scale_status_path: str = ".status.replicas"
    scale_selector_path: str = ""

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def key(self) -> tuple[str, str]:
        """Objects are stored per ``(group, plural)``: every version is one storage."""
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def url(self, namespace: str | None, name: str | None = None) -> str:
        """The request path of the collection or of one object."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        ns = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{root}{ns}/{self.plural}" + (f"/{name}" if name else "")


def _rt(
    api_version: str, plural: str, kind: str, *, namespaced: bool = True,
    short: tuple[str, ...] = (), categories: tuple[str, ...] = (),
    sub: tuple[str, ...] = (), generation: bool = False, verbs: tuple[str, ...] = ALL_VERBS,
    scale_selector: str = "",
) -> ResourceType:
    group, _, version = api_version.rpartition("/")
    return ResourceType(
        group=group, version=version, plural=plural, kind=kind, namespaced=namespaced,
        short_names=short, categories=categories, subresources=frozenset(sub), verbs=verbs,
        generation=generation, scale_selector_path=scale_selector,
    )


#: The built-in kinds: those kopf, the kubernetes client, kubectl and the sandbox cluster touch.
BUILTINS: tuple[ResourceType, ...] = (
    _rt("v1", "namespaces", "Namespace", namespaced=False, short=("ns",), sub=("status",)),
    _rt("v1", "pods", "Pod", short=("po",), categories=("all",),
        sub=("status", "log", "portforward", "eviction")),
    _rt("v1", "services", "Service", short=("svc",), categories=("all",), sub=("status",)),
    _rt("v1", "endpoints", "Endpoints", short=("ep",)),
    _rt("v1", "configmaps", "ConfigMap", short=("cm",)),
    _rt("v1", "secrets", "Secret"),
    _rt("v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _rt("v1", "events", "Event", short=("ev",)),
    _rt("v1", "nodes", "Node", namespaced=False, short=("no",), sub=("status",)),
    _rt("apps/v1", "deployments", "Deployment", short=("deploy",), categories=("all",),
        sub=("status", "scale"), generation=True, scale_selector=".spec.selector"),
    _rt("apps/v1", "replicasets", "ReplicaSet", short=("rs",), categories=("all",),
        sub=("status", "scale"), generation=True, scale_selector=".spec.selector"),
    _rt("batch/v1", "jobs", "Job", categories=("all",), sub=("status",), generation=True),
    _rt("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", short=("netpol",),
        generation=True),
    _rt("rbac.authorization.k8s.io/v1", "roles", "Role"),
    _rt("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", namespaced=False),
    _rt("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding",
        namespaced=False),
    _rt("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition",
        namespaced=False, short=("crd", "crds"), sub=("status",), generation=True),
    _rt("coordination.k8s.io/v1", "leases", "Lease"),
    _rt("events.k8s.io/v1", "events", "Event", short=("ev",)),
)


def _schema_of(version: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return ((version.get("schema") or {}).get("openAPIV3Schema")) or None


def from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves: one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    types = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale") or {}
        columns = tuple(
            Column(
                name=c.get("name", ""), type=c.get("type", "string"),
                json_path=c.get("jsonPath", ""), description=c.get("description", ""),
                priority=int(c.get("priority", 0)), format=c.get("format", ""),
            )
            for c in version.get("additionalPrinterColumns") or []
        )
        types.append(ResourceType(
            group=spec.get("group", ""), version=version.get("name", ""),
            plural=names.get("plural", ""), kind=names.get("kind", ""),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=frozenset(k for k in ("status", "scale") if k in subresources),
            generation=True, schema=_schema_of(version), columns=columns,
            crd=(crd.get("metadata") or {}).get("name", ""),
            scale_spec_path=scale.get("specReplicasPath", ".spec.replicas"),
            scale_status_path=scale.get("statusReplicasPath", ".status.replicas"),
            scale_selector_path=scale.get("labelSelectorPath", ""),
        ))
    return types


class Registry:
    """The served resource types, looked up by ``(group, version, plural)``."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in BUILTINS:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def remove_crd(self, crd_name: str) -> list[ResourceType]:
        """Unregister every type of one CRD; return them."""
        gone = [rt for rt in self._types.values() if rt.crd == crd_name]
        for rt in gone:
            del self._types[(rt.group, rt.version, rt.plural)]
        return gone

    def find(self, group: str, version: str, plural: str) -> ResourceType:
        """The type, or NotFound as the server answers for unknown paths."""
        try:
            return self._types[(group, version, plural)]
        except KeyError:
            raise NotFound("the server could not find the requested resource") from None

    def resolve(self, api_version: str, plural: str) -> ResourceType:
        """Look up by ``apiVersion`` (``v1``, ``apps/v1``) and plural."""
        group, _, version = api_version.rpartition("/")
        return self.find(group, version, plural)

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        """Look up by ``apiVersion`` and kind (owner references carry kinds)."""
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def storages(self) -> Iterator[ResourceType]:
        """One type per storage ``(group, plural)`` (the first version registered)."""
        seen: set[tuple[str, str]] = set()
        for rt in self._types.values():
            if rt.key not in seen:
                seen.add(rt.key)
                yield rt

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def group_versions(self) -> dict[str, list[str]]:
        """``{group: [versions...]}`` in registration order; ``""`` is the core group."""
        found: dict[str, list[str]] = {}
        for rt in self._types.values():
            versions = found.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return found
