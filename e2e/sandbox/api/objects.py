"""What the server does to an object's body before storing it, apart from storage itself.

Names and ``generateName``, timestamps, the built-in kinds' defaults and their few validations
that the sandbox relies on, the schema pass of custom resources (prune, default, validate), and
the comparison that decides whether ``metadata.generation`` moves.
"""

from __future__ import annotations

import copy
import datetime
import random
import re
from collections.abc import Mapping
from typing import Any, Literal

from . import schema
from .errors import BadRequest, Cause, Ref, invalid
from .resources import ResourceType

FieldValidation = Literal["Strict", "Warn", "Ignore"]

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
#: Name rules per kind: (regex, max length, message head).
_NAME_RULES = {
    "subdomain": (
        _SUBDOMAIN, 253,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
        "'-' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'example.com', regex used for validation is '" + _SUBDOMAIN + "')",
    ),
    "label": (
        _LABEL, 63,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
        "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
        "regex used for validation is '" + _LABEL + "')",
    ),
    "dns1035": (
        _DNS1035, 63,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
        "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
        "'abc-123', regex used for validation is '" + _DNS1035 + "')",
    ),
}
_NAME_KIND = {("", "namespaces"): "label", ("", "services"): "dns1035"}

#: The alphabet of generated name suffixes (no vowels, as the real server: no accidental words).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    """An RFC 3339 timestamp with seconds, as the server writes ``creationTimestamp``."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ref(rt: ResourceType, name: str = "") -> Ref:
    return Ref(plural=rt.plural, group=rt.group, kind=rt.kind, name=name)


def generated_name(prefix: str) -> str:
    return prefix + "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(5))


def check_name(rt: ResourceType, name: str) -> None:
    """Refuse names the real server refuses (422, ``metadata.name: Invalid value``)."""
    pattern, limit, text = _NAME_RULES[_NAME_KIND.get(rt.key, "subdomain")]
    problems = []
    if len(name) > limit:
        problems.append(f"must be no more than {limit} characters")
    if not re.fullmatch(pattern, name):
        problems.append(text)
    if problems:
        raise invalid(ref(rt, name), [
            Cause("metadata.name", f'Invalid value: "{name}": {"; ".join(problems)}')
        ])


def without(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


def spec_changed(rt: ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``generation`` moves: any change outside metadata (and status, if a subresource)."""
    ignored = ("metadata", "status") if rt.has_status else ("metadata",)
    return without(old, *ignored) != without(new, *ignored)


def same_content(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether an update changes nothing but resourceVersion (then it is a no-op)."""
    strip = ("resourceVersion", "managedFields")
    return (without(old, "metadata") == without(new, "metadata")
            and without(old["metadata"], *strip) == without(new["metadata"], *strip))


def custom_resource(
    rt: ResourceType, obj: dict[str, Any], validation: FieldValidation, warnings: list[str],
) -> dict[str, Any]:
    """Prune, default and validate a custom resource against its CRD schema."""
    if rt.schema is None:
        return obj
    pruned, unknown = schema.prune(obj, rt.schema)
    if unknown and validation == "Strict":
        fields = ", ".join(f'unknown field "{f}"' for f in unknown)
        raise BadRequest(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                         f"strict decoding error: {fields}")
    if unknown and validation == "Warn":
        warnings.extend(f'unknown field "{f}"' for f in unknown)
    pruned = schema.apply_defaults(pruned, rt.schema)
    causes = schema.validate(pruned, rt.schema)
    if causes:
        raise invalid(ref(rt, obj.get("metadata", {}).get("name", "")), causes)
    return dict(pruned)


def _default_container(container: dict[str, Any]) -> None:
    container.setdefault("imagePullPolicy", "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(container, dict):
            _default_container(container)


def builtin_defaults(rt: ResourceType, obj: dict[str, Any], *, creating: bool) -> None:
    """The defaults of the real types that the sandbox and its clients read back."""
    spec = obj.get("spec")
    if rt.key == ("", "namespaces"):
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        if creating:
            obj["status"] = {"phase": "Active"}
    elif rt.key == ("", "pods") and isinstance(spec, dict):
        _default_pod_spec(spec)
        if creating:
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif rt.key == ("", "services") and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    elif rt.key in (("apps", "deployments"), ("apps", "replicasets")) and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        if rt.plural == "deployments":
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": "25%", "maxUnavailable": "25%"}})
        _default_pod_spec((spec.get("template") or {}).get("spec") or {})
    elif rt.key == ("batch", "jobs") and isinstance(spec, dict):
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        _default_pod_spec((spec.get("template") or {}).get("spec") or {})


def builtin_validate(rt: ResourceType, obj: Mapping[str, Any]) -> None:
    """The few validations of real types whose absence would hide bugs in the sandbox's users."""
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    if rt.key == ("", "pods"):
        causes += _containers(spec, "spec")
    elif rt.key in (("apps", "deployments"), ("apps", "replicasets")):
        if not spec.get("selector"):
            causes.append(Cause("spec.selector", "Required value", "FieldValueRequired"))
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and replicas < 0:
            causes.append(Cause("spec.replicas", f"Invalid value: {replicas}: must be greater "
                                                 "than or equal to 0"))
        causes += _containers((spec.get("template") or {}).get("spec") or {}, "spec.template.spec")
    elif rt.key == ("batch", "jobs"):
        causes += _containers((spec.get("template") or {}).get("spec") or {}, "spec.template.spec")
    if causes:
        raise invalid(ref(rt, obj.get("metadata", {}).get("name", "")), causes)


def _containers(pod_spec: Mapping[str, Any], where: str) -> list[Cause]:
    containers = pod_spec.get("containers")
    if not containers:
        return [Cause(f"{where}.containers", "Required value", "FieldValueRequired")]
    causes = []
    for i, c in enumerate(containers):
        if not isinstance(c, Mapping) or not c.get("name"):
            causes.append(Cause(f"{where}.containers[{i}].name", "Required value",
                                "FieldValueRequired"))
        elif not c.get("image"):
            causes.append(Cause(f"{where}.containers[{i}].image", "Required value",
                                "FieldValueRequired"))
    return causes


def crd_status(crd: Mapping[str, Any]) -> dict[str, Any]:
    """The status a CRD gets once registered: names accepted, established."""
    stamp = now()
    spec = crd.get("spec") or {}
    names = copy.deepcopy(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    return {
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": stamp},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": stamp},
        ],
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }


def check_crd(crd: Mapping[str, Any]) -> None:
    """The CRD validations that keep the registry consistent."""
    from .resources import BUILTINS  # noqa: PLC0415  (only for the name check)
    crd_rt = next(rt for rt in BUILTINS if rt.plural == "customresourcedefinitions")
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = (crd.get("metadata") or {}).get("name", "")
    causes = []
    for field in ("group",):
        if not spec.get(field):
            causes.append(Cause(f"spec.{field}", "Required value", "FieldValueRequired"))
    for field in ("plural", "kind"):
        if not names.get(field):
            causes.append(Cause(f"spec.names.{field}", "Required value", "FieldValueRequired"))
    if not spec.get("versions"):
        causes.append(Cause("spec.versions", "Invalid value: null: must have exactly one "
                                             "version marked as storage version"))
    expected = f"{names.get('plural', '')}.{spec.get('group', '')}"
    if name != expected:
        causes.append(Cause("metadata.name", f'Invalid value: "{name}": must be spec.names.plural'
                                             f'+"."+spec.group'))
    if causes:
        raise invalid(ref(crd_rt, name), causes)
