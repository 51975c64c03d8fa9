"""What the API server does with a CRD's schema, for the subset the SocatTunnel CRD uses.

- ``structural_problems``: the rules of a structural schema
  (kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/
  #specifying-a-structural-schema): a type on every node (except int-or-string
  nodes), no ``additionalProperties`` beside ``properties``, ``metadata``
  restricted to ``name`` and ``generateName``, defaults that validate.
- ``to_json_schema``: the OpenAPI v3 subset turned into JSON Schema, with
  ``additionalProperties: false`` wherever the API server would prune, which
  is what ``kubectl apply``'s strict field validation (the default since
  1.27) turns into an error.
- ``apply_defaults``: defaulting as the API server does it: a missing field
  with a ``default`` gets it, inside objects that are present.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema

Schema = Mapping[str, Any]

_EXTENSIONS_TO_DROP = (
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "nullable",
    "format",  # int32, int64, date-time: informational for the checks here
)


def _walk(schema: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _walk(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def structural_problems(schema: Schema) -> list[str]:
    problems: list[str] = []
    for path, node in _walk(schema, ""):
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        if "type" not in node and not int_or_string:
            problems.append(f"{path or '.'}: no type")
        if int_or_string and "type" in node:
            problems.append(f"{path}: int-or-string with a type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        for keyword in ("anyOf", "oneOf", "allOf"):
            for branch in node.get(keyword) or []:
                # Value validation only, in branches: no new structure there.
                if set(branch) - {"type", "pattern", "minimum", "maximum", "enum"}:
                    problems.append(f"{path}: {keyword} branch declares structure")
        if "default" in node:
            try:
                jsonschema.Draft7Validator(to_json_schema(node)).validate(node["default"])
            except jsonschema.ValidationError as exc:
                problems.append(f"{path}: default does not validate: {exc.message}")
    metadata = (schema.get("properties") or {}).get("metadata") or {}
    extra = set(metadata.get("properties") or {}) - {"name", "generateName"}
    if extra:
        problems.append(f".metadata: restricts {sorted(extra)}")
    return problems


def to_json_schema(schema: Schema) -> dict[str, Any]:
    """The schema as JSON Schema (draft 7), unknown fields refused."""
    node = {k: copy.deepcopy(v) for k, v in schema.items() if k not in _EXTENSIONS_TO_DROP}
    node.pop("description", None)
    node.pop("default", None)
    if "properties" in node:
        node["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
        node.setdefault("additionalProperties", False)
    if isinstance(node.get("additionalProperties"), Mapping):
        node["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if "items" in node:
        node["items"] = to_json_schema(node["items"])
    for keyword in ("anyOf", "oneOf", "allOf"):
        if keyword in node:
            node[keyword] = [to_json_schema(branch) for branch in node[keyword]]
    if node.get("type") == "object" and "properties" not in node:
        node.setdefault("additionalProperties", True)
    return node


def apply_defaults(schema: Schema, value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults filled in."""
    if isinstance(value, Mapping) and schema.get("type") == "object":
        result = dict(value)
        for name, child in (schema.get("properties") or {}).items():
            if name not in result and "default" in child:
                result[name] = copy.deepcopy(child["default"])
            if name in result:
                result[name] = apply_defaults(child, result[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name in set(result) - set(schema.get("properties") or {}):
                result[name] = apply_defaults(extra, result[name])
        return result
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def validator(crd: Schema, version: str = "v1alpha1") -> jsonschema.Draft7Validator:
    """A validator for objects of the CRD's ``version``."""
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = to_json_schema(served["schema"]["openAPIV3Schema"])
    # ObjectMeta is never pruned; the schema only restricts the name.
    schema["properties"]["metadata"]["additionalProperties"] = True
    return jsonschema.Draft7Validator(schema)
