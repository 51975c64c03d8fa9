"""The three patch formats of the API: JSON merge, JSON patch and strategic merge.

* JSON merge patch (RFC 7386, ``application/merge-patch+json``): objects merge, ``null`` deletes,
  anything else (lists included) replaces.
* JSON patch (RFC 6902, ``application/json-patch+json``): a list of operations; a failed
  ``test`` makes the whole patch fail (kopf relies on it to guard its finalizer edits with
  ``test /metadata/resourceVersion``).
* Strategic merge patch (``application/strategic-merge-patch+json``, built-in kinds only): like a
  merge patch, but lists of structs with a merge key are merged element by element (containers
  by ``name``, container ports by ``containerPort``, service ports by ``port``...) and
  ``metadata.finalizers`` merges as a set. Directives: ``$patch`` (``merge``, ``replace``,
  ``delete``), ``$retainKeys``, ``$setElementOrder/<list>`` and ``$deleteFromPrimitiveList/<list>``,
  which ``kubectl apply`` sends.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .errors import BadRequest, Invalid


class PatchFailed(Invalid):
    """A JSON patch operation could not be applied (a failed ``test`` included): 422."""


# ---------------------------------------------------------------- JSON merge patch (RFC 7386)

def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch; return the new value (``target`` is not modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------- JSON patch (RFC 6902)

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchFailed(f"invalid JSON pointer {path!r}: must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, for_add: bool = False) -> int:
    if token == "-" and for_add:
        return len(container)
    if not token.isdigit():
        raise PatchFailed(f"invalid array index {token!r} in {path!r}")
    index = int(token)
    limit = len(container) if for_add else len(container) - 1
    if index > limit:
        raise PatchFailed(f"array index {index} out of bounds in {path!r}")
    return index


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchFailed(f"doc is missing path: {path!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path)]
        else:
            raise PatchFailed(f"doc is missing path: {path!r}")
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchFailed(f"doc is missing path: {path!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path)]
    raise PatchFailed(f"doc is missing path: {path!r}")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, for_add=True), value)
    else:
        raise PatchFailed(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchFailed("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchFailed(f"unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, path))
    raise PatchFailed(f"doc is missing path: {path!r}")


def json_patch(target: Any, operations: Any) -> Any:
    """Apply a JSON patch; return the new document (``target`` is not modified)."""
    if not isinstance(operations, list):
        raise BadRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise BadRequest(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "test":
            try:
                current = _get(doc, path)
            except PatchFailed:
                current = None
            if current != op.get("value"):
                raise PatchFailed(f"the server rejected our request due to an error in our "
                                  f"request: testing value {path} failed: test failed")
        elif kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            doc, _ = _remove(doc, path) if _pointer(path) else (doc, None)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = op.get("from", "")
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                doc, _ = _remove(doc, source)
            doc = _add(doc, path, value)
        else:
            raise BadRequest(f"Unexpected kind: {kind}")
    return doc


# ---------------------------------------------------------------- strategic merge patch

#: Lists of structs merged by a key, by field name (``patchMergeKey`` of the Go types).
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "imagePullSecrets": "name", "resourceClaims": "name",
    "volumeMounts": "mountPath", "volumeDevices": "devicePath", "conditions": "type",
    "ownerReferences": "uid", "hostAliases": "ip", "topologySpreadConstraints": "topologyKey",
}
#: Lists of scalars merged as sets.
_SET_LISTS = {"finalizers"}


def _merge_key(field: str, kind: str, path: tuple[str, ...]) -> str | None:
    if field == "ports":
        # Service.spec.ports merge by port; container ports by containerPort.
        return "port" if kind == "Service" and path == ("spec",) else "containerPort"
    return _MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any, kind: str) -> Any:
    """Apply a strategic merge patch to an object of a built-in ``kind``."""
    if not isinstance(patch, dict):
        raise BadRequest("strategic merge patch must be a JSON object")
    return _smp_map(copy.deepcopy(target) if isinstance(target, dict) else {}, patch, kind, ())


def _smp_map(
    original: dict[str, Any], patch: Mapping[str, Any], kind: str, path: tuple[str, ...],
) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = original
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(
                result[key] if isinstance(result.get(key), dict) else {}, value, kind, (*path, key)
            )
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, key, kind, path)
        else:
            result[key] = copy.deepcopy(value)
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"] or [])
        result = {k: v for k, v in result.items() if k in keep}
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, _merge_key(field, kind, path))
    return result


def _smp_list(
    original: Any, patch: list[Any], field: str, kind: str, path: tuple[str, ...],
) -> list[Any]:
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    current = list(original) if isinstance(original, list) else []
    if field in _SET_LISTS:
        return current + [v for v in patch if v not in current]
    key = _merge_key(field, kind, path)
    if key is None:
        return copy.deepcopy(patch)
    for item in patch:
        if not isinstance(item, dict):
            raise BadRequest(f"strategic merge patch: {field} elements must be objects")
        index = next((i for i, old in enumerate(current)
                      if isinstance(old, dict) and old.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del current[index]
        elif index is None:
            current.append(_smp_map({}, item, kind, (*path, field)))
        else:
            current[index] = _smp_map(current[index], item, kind, (*path, field))
    return current


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Sort merged elements as ``$setElementOrder`` says; unlisted ones keep their place last."""
    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v
    wanted = [ident(v) for v in order]
    listed = [v for w in wanted for v in items if ident(v) == w]
    return listed + [v for v in items if ident(v) not in wanted]
