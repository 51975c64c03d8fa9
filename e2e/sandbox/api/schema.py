"""Structural OpenAPI v3 schemas of custom resources: pruning, defaulting and validation.

The server handles a custom resource's body in this order, as the real API server does:
prune the fields the schema does not declare (recording them for ``fieldValidation``), drop
``null`` values of non-nullable fields, apply ``default`` values, then validate. The subset is the
one CRDs use: ``type``, ``properties``, ``required``, ``enum``, ``minimum``/``maximum`` (and the
exclusive forms), ``minLength``/``maxLength``, ``pattern``, ``minItems``/``maxItems``, ``items``,
``additionalProperties``, ``default``, ``nullable``, ``x-kubernetes-preserve-unknown-fields``,
``x-kubernetes-int-or-string`` and ``x-kubernetes-embedded-resource``.

Messages follow the real server (kube-openapi's validators), e.g.
``spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import Cause

Schema = Mapping[str, Any]

#: Keys every object keeps at its root whatever its schema says.
_ROOT_KEYS = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    """A value as the server prints it in messages (Go's %v of JSON values, strings quoted)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "null" if value is None else str(value)


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def prune(obj: Any, schema: Schema, path: str = "", *, root: bool = True) -> tuple[Any, list[str]]:
    """Remove undeclared fields; return the pruned copy and the unknown fields' paths.

    Objects below ``x-kubernetes-preserve-unknown-fields: true`` keep unknown fields; maps
    (``additionalProperties``) keep every key and prune inside the values.
    """
    unknown: list[str] = []

    def walk(value: Any, sch: Schema, where: str, at_root: bool) -> Any:
        if isinstance(value, dict):
            props: Mapping[str, Any] = sch.get("properties") or {}
            extra = sch.get("additionalProperties")
            preserve = bool(sch.get("x-kubernetes-preserve-unknown-fields"))
            embedded = bool(sch.get("x-kubernetes-embedded-resource"))
            result = {}
            for key, item in value.items():
                if (at_root or embedded) and key in _ROOT_KEYS:
                    result[key] = item
                elif key in props:
                    result[key] = walk(item, props[key], _join(where, key), False)
                elif isinstance(extra, Mapping):
                    result[key] = walk(item, extra, f"{where}[{key}]", False)
                elif extra is True or preserve:
                    result[key] = item
                else:
                    unknown.append(_join(where, key))
            return result
        if isinstance(value, list) and isinstance(sch.get("items"), Mapping):
            return [walk(v, sch["items"], f"{where}[{i}]", False) for i, v in enumerate(value)]
        return value

    return walk(obj, schema, path, root), unknown


def apply_defaults(obj: Any, schema: Schema) -> Any:
    """Drop nulls of non-nullable fields, then fill missing properties from ``default``."""
    if isinstance(obj, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        for key in list(obj):
            sub = props.get(key)
            if sub is not None and obj[key] is None and not sub.get("nullable"):
                del obj[key]
        for key, sub in props.items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = apply_defaults(obj[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key in obj:
                if key not in props:
                    obj[key] = apply_defaults(obj[key], extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), Mapping):
        return [apply_defaults(v, schema["items"]) for v in obj]
    return obj


def validate(obj: Any, schema: Schema, path: str = "") -> list[Cause]:
    """Check a (pruned, defaulted) value against the schema; return the failures."""
    causes: list[Cause] = []
    _validate(obj, schema, path, causes, root=True)
    return causes


def _invalid(causes: list[Cause], path: str, value: Any, text: str) -> None:
    causes.append(Cause(path, f"Invalid value: {_show(value)}: {path} in body {text}"))


def _validate(
    value: Any, sch: Schema, path: str, causes: list[Cause], *, root: bool = False,
) -> None:
    if value is None:
        if not sch.get("nullable") and not root and sch.get("type"):
            causes.append(Cause(path, f'Invalid value: "null": {path} in body must be of type '
                                      f'{sch["type"]}: "null"', "FieldValueTypeInvalid"))
        return
    wanted = sch.get("type")
    actual = _type_of(value)
    if sch.get("x-kubernetes-int-or-string"):
        if actual not in ("integer", "string"):
            causes.append(Cause(path, f"Invalid value: {_show(actual)}: {path} in body must be "
                                      f"of type integer or string: {_show(actual)}",
                                "FieldValueTypeInvalid"))
            return
    elif wanted and not (actual == wanted or (wanted == "number" and actual == "integer")):
        causes.append(Cause(path, f'Invalid value: "{actual}": {path} in body must be of type '
                                  f'{wanted}: "{actual}"', "FieldValueTypeInvalid"))
        return

    if "enum" in sch and value not in sch["enum"]:
        supported = ", ".join(_show(v) for v in sch["enum"])
        causes.append(Cause(path, f"Unsupported value: {_show(value)}: supported values: "
                                  f"{supported}", "FieldValueNotSupported"))
    if actual in ("integer", "number"):
        _check_number(value, sch, path, causes)
    elif actual == "string":
        if "minLength" in sch and len(value) < sch["minLength"]:
            _invalid(causes, path, value, f"should be at least {sch['minLength']} chars long")
        if "maxLength" in sch and len(value) > sch["maxLength"]:
            causes.append(Cause(path, f"Too long: may not be more than {sch['maxLength']} bytes",
                                "FieldValueTooLong"))
        if "pattern" in sch and re.search(sch["pattern"], value) is None:
            _invalid(causes, path, value, f"should match '{sch['pattern']}'")
    elif actual == "array":
        if "minItems" in sch and len(value) < sch["minItems"]:
            _invalid(causes, path, len(value), f"should have at least {sch['minItems']} items")
        if "maxItems" in sch and len(value) > sch["maxItems"]:
            causes.append(Cause(path, f"Too many: {len(value)}: must have at most "
                                      f"{sch['maxItems']} items", "FieldValueTooMany"))
        items = sch.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                _validate(item, items, f"{path}[{i}]", causes)
    elif actual == "object":
        _check_object(value, sch, path, causes, root=root)


def _check_number(value: float, sch: Schema, path: str, causes: list[Cause]) -> None:
    if "minimum" in sch:
        if sch.get("exclusiveMinimum") and value <= sch["minimum"]:
            _invalid(causes, path, value, f"should be greater than {_show(sch['minimum'])}")
        elif value < sch["minimum"]:
            _invalid(causes, path, value,
                     f"should be greater than or equal to {_show(sch['minimum'])}")
    if "maximum" in sch:
        if sch.get("exclusiveMaximum") and value >= sch["maximum"]:
            _invalid(causes, path, value, f"should be less than {_show(sch['maximum'])}")
        elif value > sch["maximum"]:
            _invalid(causes, path, value,
                     f"should be less than or equal to {_show(sch['maximum'])}")


def _check_object(
    value: dict[str, Any], sch: Schema, path: str, causes: list[Cause], *, root: bool,
) -> None:
    for key in sch.get("required") or ():
        if key not in value:
            causes.append(Cause(_join(path, key), "Required value", "FieldValueRequired"))
    props: Mapping[str, Any] = sch.get("properties") or {}
    extra = sch.get("additionalProperties")
    for key, item in value.items():
        if root and key in _ROOT_KEYS:
            continue
        if key in props:
            _validate(item, props[key], _join(path, key), causes)
        elif isinstance(extra, Mapping):
            _validate(item, extra, f"{path}[{key}]", causes)
