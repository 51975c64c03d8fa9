"""Label and field selectors, parsed once and matched against plain-dict objects.

Label selectors (``labelSelector=``) follow ``k8s.io/apimachinery/pkg/labels``: comma-separated
requirements ``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k>1``, ``k<1``. As there, ``k!=v`` and ``notin`` also match objects without the label.

Field selectors (``fieldSelector=``) support ``=``, ``==`` and ``!=`` on the fields the real server
indexes for each kind; any other field is refused with ``field label not supported``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import BadRequest

LabelOp = Literal["exists", "!exists", "=", "!=", "in", "notin", ">", "<"]

_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[^\s!=<>,()]+)\s*"
    r"(?:(?P<op>==|=|!=|>|<|\s+in\s+|\s+notin\s+)\s*(?P<rest>.*?))?\s*$"
)


@dataclass(frozen=True)
class LabelRequirement:
    """One requirement of a label selector."""

    key: str
    op: LabelOp
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfies this requirement."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        # ">" and "<" compare integers; a label that is not an integer never matches.
        try:
            number = int(value) if value is not None else None
        except ValueError:
            return False
        if number is None:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == ">" else number < bound


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector; the empty selector matches everything."""

    requirements: tuple[LabelRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object's ``metadata.labels`` satisfy every requirement."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _check_key(key: str, text: str) -> None:
    if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise BadRequest(f"unable to parse requirement: invalid label key {key!r} in {text!r}")


def _check_value(value: str, text: str) -> None:
    if len(value) > 63 or not _VALUE.match(value):
        raise BadRequest(f"unable to parse requirement: invalid label value {value!r} in {text!r}")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a ``labelSelector`` query value; raise BadRequest on a malformed one."""
    if not text or not text.strip():
        return LabelSelector()
    requirements = []
    for part in _split_top_level(text):
        if not part.strip():
            raise BadRequest(
                f"unable to parse requirement: found '', expected: identifier in {text!r}")
        m = _REQUIREMENT.match(part)
        if m is None:
            raise BadRequest(f"unable to parse requirement: {part.strip()!r}")
        key, raw_op, rest = m["key"], (m["op"] or "").strip(), m["rest"] or ""
        _check_key(key, text)
        if m["neg"]:
            if raw_op:
                raise BadRequest(f"unable to parse requirement: {part.strip()!r}")
            requirements.append(LabelRequirement(key, "!exists"))
            continue
        if not raw_op:
            requirements.append(LabelRequirement(key, "exists"))
            continue
        if raw_op in ("in", "notin"):
            rest = rest.strip()
            if not (rest.startswith("(") and rest.endswith(")")):
                raise BadRequest(f"unable to parse requirement: found {rest!r}, expected: '('")
            values = tuple(v.strip() for v in rest[1:-1].split(","))
            for value in values:
                _check_value(value, text)
            requirements.append(LabelRequirement(key, "in" if raw_op == "in" else "notin", values))
            continue
        if raw_op in (">", "<"):
            if not re.fullmatch(r"-?\d+", rest):
                raise BadRequest(
                    f"unable to parse requirement: for '{raw_op}', '{rest}' is not an integer")
            requirements.append(LabelRequirement(key, raw_op, (rest,)))  # type: ignore[arg-type]
            continue
        _check_value(rest, text)
        requirements.append(LabelRequirement(key, "=" if raw_op in ("=", "==") else "!=", (rest,)))
    return LabelSelector(tuple(requirements))


def _path(*keys: str) -> Callable[[Mapping[str, Any]], str]:
    def get(obj: Mapping[str, Any]) -> str:
        value: Any = obj
        for key in keys:
            if not isinstance(value, Mapping):
                return ""
            value = value.get(key)
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    return get


_COMMON_FIELDS = ("metadata.name", "metadata.namespace")

#: The fields each kind can be selected by (``GetAttrs`` of the real registries).
_FIELDS_BY_PLURAL: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): (
        "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
        "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName",
    ),
    ("", "events"): (
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
        "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
        "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
    ),
    ("events.k8s.io", "events"): (
        "regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
        "reason", "reportingController", "type",
    ),
    ("", "secrets"): ("type",),
    ("", "namespaces"): ("status.phase",),
    ("", "replicationcontrollers"): ("status.replicas",),
    ("apps", "replicasets"): ("status.replicas",),
    ("batch", "jobs"): ("status.successful",),
}


def _field_getter(field: str) -> Callable[[Mapping[str, Any]], str]:
    if field == "source":  # core events: "source" means source.component
        return _path("source", "component")
    return _path(*field.split("."))


@dataclass(frozen=True)
class FieldRequirement:
    """``field=value`` or ``field!=value``."""

    field: str
    value: str
    negated: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object's field (``""`` when absent) equals the value, or not."""
        return (_field_getter(self.field)(obj) == self.value) != self.negated


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector; the empty selector matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether every requirement holds for the object."""
        return all(r.matches(obj) for r in self.requirements)

    def exact_name(self) -> str | None:
        """The name if the selector pins ``metadata.name=X`` (kubectl wait and delete do)."""
        for r in self.requirements:
            if r.field == "metadata.name" and not r.negated:
                return r.value
        return None


def parse_field_selector(text: str | None, group: str, plural: str) -> FieldSelector:
    """Parse a ``fieldSelector`` for one resource; unsupported fields are a BadRequest."""
    if not text or not text.strip():
        return FieldSelector()
    allowed = _COMMON_FIELDS + _FIELDS_BY_PLURAL.get((group, plural), ())
    requirements = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if m is None:
            raise BadRequest(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = m.groups()
        if field not in allowed:
            raise BadRequest(f'field label not supported: {field}')
        requirements.append(FieldRequirement(field, value, op == "!="))
    return FieldSelector(tuple(requirements))
