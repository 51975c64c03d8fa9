"""How a desired object is brought onto the live one: ownership, drift, the merge patch.

Pure functions. The operator applies the way ``kubectl apply`` does, with
JSON merge patches and the last applied object kept in an annotation:

- a merge patch carrying the whole desired object sets every field the
  operator owns (lists, like ``containers``, are replaced whole), and leaves
  alone what the server or other controllers add (``clusterIP``, defaults,
  ``deployment.kubernetes.io/revision``);
- a field the operator set before and no longer wants (a node selector
  entry, ``externalTrafficPolicy``) is found in the last applied object and
  removed with ``null``.

A patch is sent only when the live object differs from the desired one in a
field the operator owns, so an unchanged tunnel costs reads only, and a
resumed operator changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from kubectl_relay.jsontypes import JSONObject, JSONValue

from .builders import GROUP

#: Annotation of each child: the JSON of the object as the operator last applied it.
LAST_APPLIED_ANNOTATION = f"{GROUP}/last-applied"


def controller_of(live: Mapping[str, object]) -> tuple[str, str, str] | None:
    """``(kind, name, uid)`` of the object's controller, from its owner references."""
    meta = live.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name")), str(ref.get("uid"))
    return None


def is_controlled_by(live: Mapping[str, object], uid: str) -> bool:
    controller = controller_of(live)
    return controller is not None and controller[2] == uid


def with_last_applied(desired: JSONObject) -> JSONObject:
    """``desired`` with its own JSON in the last-applied annotation (a fresh dict)."""
    meta = desired.get("metadata")
    assert isinstance(meta, dict)
    annotations = meta.get("annotations")
    record = json.dumps(desired, sort_keys=True, separators=(",", ":"))
    new_meta: JSONObject = {
        **meta,
        "annotations": {
            **(annotations if isinstance(annotations, dict) else {}),
            LAST_APPLIED_ANNOTATION: record,
        },
    }
    return {**desired, "metadata": new_meta}


def last_applied(live: Mapping[str, object]) -> JSONObject | None:
    """The object as last applied, from the annotation (None if absent or unreadable)."""
    meta = live.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    raw = annotations.get(LAST_APPLIED_ANNOTATION) if isinstance(annotations, Mapping) else None
    if not isinstance(raw, str):
        return None
    try:
        decoded = json.loads(raw)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def contains(live: JSONValue | object, desired: JSONValue) -> bool:
    """Whether ``live`` has every field of ``desired`` with the same value.

    Objects may have more keys (server defaults); lists must have the same
    length and contain the desired items in order (containers get defaults too).
    """
    if isinstance(desired, dict):
        return isinstance(live, Mapping) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return live == desired


def changes(live: JSONValue | object, patch: JSONValue) -> bool:
    """Whether applying the merge patch ``patch`` to ``live`` would change it.

    Unlike ``contains``, a ``null`` in the patch means "absent": the API
    server deletes the field, so the next read has no such key, and a
    status written with ``expiresAt: null`` must not count as changed then.
    """
    if not isinstance(patch, dict):
        return not contains(live, patch)
    if not isinstance(live, Mapping):
        return True
    for key, value in patch.items():
        if value is None:
            if live.get(key) is not None:
                return True
        elif key not in live or changes(live[key], value):
            return True
    return False


def merge_patch(previous: JSONValue | None, desired: JSONValue) -> JSONValue:
    """A merge patch that sets ``desired`` and deletes what ``previous`` had beyond it."""
    if not isinstance(desired, dict):
        return desired
    patch: JSONObject = {
        key: merge_patch(previous.get(key) if isinstance(previous, dict) else None, value)
        for key, value in desired.items()
    }
    if isinstance(previous, dict):
        for key in previous:
            if key not in desired:
                patch[key] = None
    return patch


def patch_for(live: Mapping[str, object], desired: JSONObject) -> JSONObject | None:
    """The merge patch that brings ``live`` to ``desired``, or None when nothing differs.

    ``desired`` is what the builders returned (without the annotation); the
    patch records it in the annotation too.
    """
    previous = last_applied(live)
    if previous == desired and contains(live, desired):
        return None
    patch = merge_patch(previous, with_last_applied(desired))
    assert isinstance(patch, dict)
    # apiVersion and kind cannot change; sending them is harmless but noisy.
    patch.pop("apiVersion", None)
    patch.pop("kind", None)
    return patch
