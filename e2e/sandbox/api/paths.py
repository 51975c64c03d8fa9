"""Request paths and query parameters of the resource API, parsed once.

``/api/v1[/watch][/namespaces/NS]/PLURAL[/NAME[/SUBRESOURCE]]`` and the same under
``/apis/GROUP/VERSION``. ``/api/v1/namespaces/NAME[/status]`` is the namespace object itself.
The legacy ``/watch/`` prefix turns a GET into a watch (and a named one into a watch with a
``metadata.name`` field selector).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from . import protobuf
from .errors import BadRequest, NotFound, UnsupportedMediaType
from .objects import FieldValidation
from .resources import Registry, ResourceType

_NOT_FOUND = "the server could not find the requested resource"


@dataclass(frozen=True)
class Target:
    """What a resource request addresses."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    legacy_watch: bool = False


def parse_target(registry: Registry, path: str) -> Target | None:
    """The resource a path names, None for a group-version root; NotFound for unknown ones."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise NotFound(_NOT_FOUND)
    if not rest:
        return None
    watch = rest[0] == "watch"
    if watch:
        rest = rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        try:
            candidate = registry.find(group, version, rest[2])
        except NotFound:
            candidate = None
        # /api/v1/namespaces/NAME/status is the namespace's status, not a plural "status".
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise NotFound(_NOT_FOUND)
    rt = registry.find(group, version, rest[0])
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in rt.subresources:
        raise NotFound(_NOT_FOUND)
    if rt.namespaced and name is not None and namespace is None:
        raise NotFound(_NOT_FOUND)
    return Target(rt, namespace, name, sub, watch)


@dataclass(frozen=True)
class Params:
    """The query parameters the handlers read."""

    raw: Mapping[str, str]

    def flag(self, name: str) -> bool:
        return self.raw.get(name, "").lower() in ("true", "1")

    def int(self, name: str) -> int | None:
        value = self.raw.get(name)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise BadRequest(f"invalid value for {name}: {value!r}") from None

    def get(self, name: str) -> str | None:
        return self.raw.get(name) or None

    @property
    def dry_run(self) -> bool:
        return self.raw.get("dryRun") == "All"

    @property
    def field_validation(self) -> FieldValidation:
        value = self.raw.get("fieldValidation") or "Warn"
        if value not in ("Strict", "Warn", "Ignore"):
            raise BadRequest(f"invalid fieldValidation directive: {value}")
        return value  # type: ignore[return-value]


_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


def patch_type(content_type: str) -> str:
    """The patch format of a Content-Type; 415 for anything else."""
    kind = _PATCH_TYPES.get(content_type.split(";", maxsplit=1)[0].strip().lower())
    if kind is None:
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(_PATCH_TYPES)}")
    return kind


def decode_body(raw: bytes, content_type: str) -> Any:
    """JSON (or YAML for server-side apply) request bodies, and kubectl's protobuf ones."""
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media == "application/vnd.kubernetes.protobuf":
        return protobuf.decode(raw)
    if not raw.strip():
        return None
    try:
        if "yaml" in media:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise BadRequest(f"the body of the request could not be decoded: {e}") from None
