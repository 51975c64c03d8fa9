"""The ``/scale`` subresource (``autoscaling/v1`` Scale) of Deployments, ReplicaSets and CRDs.

``kubectl scale`` reads and patches it; the replicas live where the resource type says
(``.spec.replicas`` for the built-ins, ``specReplicasPath`` for custom resources).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .errors import BadRequest
from .resources import ResourceType
from .tables import json_path


def _selector_text(selector: Any) -> str:
    if isinstance(selector, str):
        return selector
    if isinstance(selector, Mapping):
        labels = selector.get("matchLabels") or {}
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return ""


def scale_of(rt: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The Scale view of an object."""
    meta = obj["metadata"]
    status: dict[str, Any] = {"replicas": json_path(obj, rt.scale_status_path) or 0}
    if rt.scale_selector_path:
        status["selector"] = _selector_text(json_path(obj, rt.scale_selector_path))
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": json_path(obj, rt.scale_spec_path) or 0},
        "status": status,
    }


def apply_scale(rt: ResourceType, obj: Mapping[str, Any], scale: Any) -> dict[str, Any]:
    """The object with the replicas a Scale body asks for."""
    if not isinstance(scale, Mapping) or not isinstance(scale.get("spec"), Mapping):
        raise BadRequest("the body must be an autoscaling/v1 Scale")
    replicas = scale["spec"].get("replicas", 0)
    new = copy.deepcopy(dict(obj))
    version = (scale.get("metadata") or {}).get("resourceVersion")
    new["metadata"]["resourceVersion"] = version or obj["metadata"]["resourceVersion"]
    node = new
    keys = [k for k in rt.scale_spec_path.split(".") if k]
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = replicas
    return new
