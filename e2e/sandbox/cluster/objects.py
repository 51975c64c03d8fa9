"""Small pure helpers over raw Kubernetes bodies (plain dicts), shared by the controllers.

Nothing here talks to the Store: names, timestamps, label selectors, owner
references, status conditions and the pod-template hash.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

#: A raw Kubernetes object as the Store hands it out: JSON-like nested dicts.
Body = dict[str, Any]

#: The alphabet Kubernetes uses for generated name suffixes and hashes: no
#: vowels (no accidental words) and no look-alike characters.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    """The current time in the RFC 3339 form the API uses (second precision, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch for an RFC 3339 timestamp, or None."""
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def random_suffix(length: int = 5) -> str:
    """A random suffix like the one ``generateName`` and controllers add to pod names."""
    return "".join(secrets.choice(SAFE_ALPHABET) for _ in range(length))


def template_hash(template: Mapping[str, Any], collision_count: int = 0) -> str:
    """The ``pod-template-hash`` of a pod template: stable across runs, 10 safe characters.

    Kubernetes hashes the template with FNV and the Deployment's collision
    count; any stable hash serves, as long as the same template gives the same
    value and a changed template gives another.
    """
    text = json.dumps(template, sort_keys=True, separators=(",", ":")) + f"#{collision_count}"
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    chars = []
    for _ in range(10):
        digest, index = divmod(digest, len(SAFE_ALPHABET))
        chars.append(SAFE_ALPHABET[index])
    return "".join(chars)


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object's metadata (an empty dict when absent)."""
    value = obj.get("metadata") or {}
    assert isinstance(value, dict)
    return value


def name_of(obj: Mapping[str, Any]) -> str:
    """``metadata.name``."""
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Mapping[str, Any]) -> str:
    """``metadata.namespace`` (``default`` when absent)."""
    return str(meta(obj).get("namespace") or "default")


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """``metadata.labels`` (an empty dict when absent)."""
    return dict(meta(obj).get("labels") or {})


def is_terminating(obj: Mapping[str, Any]) -> bool:
    """True once ``metadata.deletionTimestamp`` is set."""
    return bool(meta(obj).get("deletionTimestamp"))


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to ``owner`` as the built-in controllers write it."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name_of(owner),
        "uid": meta(owner)["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controlling owner (``controller: true``), if any."""
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object's controlling ownerReference, if any."""
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` match a LabelSelector (``matchLabels`` and ``matchExpressions``).

    An empty or missing selector matches nothing, as for a workload controller
    (an empty selector that matched every pod would adopt the whole namespace).
    """
    if not selector:
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in expressions:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def map_selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` match a Service-style selector (a plain map; empty matches nothing)."""
    if not selector:
        return False
    return all(labels.get(key) == value for key, value in selector.items())


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: str,
    reason: str,
    message: str = "",
    *,
    with_update_time: bool = False,
) -> list[dict[str, Any]]:
    """Return ``conditions`` with the condition ``kind`` set.

    ``lastTransitionTime`` moves only when the status changes, as the API
    conventions ask; ``lastUpdateTime`` (Deployments only) moves on any change.
    """
    result = [copy.deepcopy(c) for c in conditions if c.get("type") != kind]
    old = next((c for c in conditions if c.get("type") == kind), None)
    stamp = now()
    condition: dict[str, Any] = {"type": kind, "status": status, "reason": reason}
    if message:
        condition["message"] = message
    unchanged = old is not None and old.get("status") == status
    condition["lastTransitionTime"] = (
        old.get("lastTransitionTime", stamp) if unchanged and old else stamp
    )
    if with_update_time:
        same = unchanged and old is not None and old.get("reason") == reason
        condition["lastUpdateTime"] = old.get("lastUpdateTime", stamp) if same and old else stamp
    result.append(condition)
    return result


def find_condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind``, if present."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's ``Ready`` condition is True (and it is not terminating)."""
    condition = find_condition(pod, "Ready")
    return bool(condition and condition.get("status") == "True") and not is_terminating(pod)


def pod_is_terminal(pod: Mapping[str, Any]) -> bool:
    """Whether the pod reached ``Succeeded`` or ``Failed``."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def sort_by_creation(objs: Iterable[Body]) -> list[Body]:
    """Objects oldest first (by creationTimestamp, then name)."""
    return sorted(objs, key=lambda o: (meta(o).get("creationTimestamp") or "", name_of(o)))
