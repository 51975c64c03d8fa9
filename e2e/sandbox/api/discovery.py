"""Discovery documents (``/version``, ``/api``, ``/apis``...) and minimal OpenAPI v3 documents.

The documents are the legacy (unaggregated) discovery: kubectl asks for the aggregated form
first but falls back to these when the response is plain ``application/json``.

The OpenAPI v3 documents carry only what clients read from them here: one PATCH operation per
kind with the ``x-kubernetes-group-version-kind`` extension and the ``fieldValidation``
parameter. With them kubectl (``--validate=strict``, its default) leaves field validation to the
server (``?fieldValidation=Strict``) instead of validating against downloaded schemas.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import Registry, ResourceType

#: The version the sandbox claims; kubectl 1.32 warns about a skew of more than one minor.
VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc",
    "platform": "linux/amd64",
}

#: Subresources' discovery entries: kind, verbs, and group/version when they differ.
_SUBRESOURCES: dict[str, dict[str, Any]] = {
    "status": {"verbs": ["get", "patch", "update"]},
    "scale": {"group": "autoscaling", "version": "v1", "kind": "Scale",
              "verbs": ["get", "patch", "update"]},
    "log": {"verbs": ["get"]},
    "portforward": {"kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
    "eviction": {"group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]},
}


def api_versions(host: str) -> dict[str, Any]:
    """``GET /api``."""
    return {
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    """``GET /apis``."""
    return {
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in registry.group_versions().items() if g],
    }


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    """``GET /apis/GROUP``, or None if the group is not served."""
    versions = registry.group_versions().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def _entries(rt: ResourceType) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
        "kind": rt.kind, "verbs": list(rt.verbs),
        "storageVersionHash": hashlib.sha256(
            f"{rt.group}/{rt.version}/{rt.kind}".encode()).hexdigest()[:12],
    }
    if rt.short_names:
        main["shortNames"] = list(rt.short_names)
    if rt.categories:
        main["categories"] = list(rt.categories)
    result = [main]
    for sub in sorted(rt.subresources):
        extra = dict(_SUBRESOURCES[sub])
        result.append({"name": f"{rt.plural}/{sub}", "singularName": "",
                       "namespaced": rt.namespaced, "kind": extra.pop("kind", rt.kind), **extra})
    return result


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``/apis/GROUP/VERSION``, or None if not served."""
    types = [rt for rt in registry if rt.group == group and rt.version == version]
    if not types:
        return None
    return {
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for rt in types for entry in _entries(rt)],
    }


# ---------------------------------------------------------------- OpenAPI v3


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_gv(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """``GET /openapi/v3/api/v1`` (or ``apis/G/V``): one PATCH operation per kind."""
    types = [rt for rt in registry if rt.group == group and rt.version == version]
    if not types:
        return None
    paths: dict[str, Any] = {}
    for rt in types:
        root = f"/{_gv_path(group, version)}"
        ns = "/namespaces/{namespace}" if rt.namespaced else ""
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        params = [
            {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for name in ("dryRun", "fieldManager", "fieldValidation", "force")
        ]
        paths[f"{root}{ns}/{rt.plural}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{rt.kind}", "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }


def openapi_root(registry: Registry) -> dict[str, Any]:
    """``GET /openapi/v3``: one entry per group version, with a hash of its document."""
    paths = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            doc = openapi_gv(registry, group, version)
            digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest.upper()}"}
    return {"paths": paths}
