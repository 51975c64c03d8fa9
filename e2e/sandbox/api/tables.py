"""Server-side printing: ``meta.k8s.io/v1`` Tables for ``kubectl get``.

kubectl asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the columns
the server chooses. Custom resources get Name, their ``additionalPrinterColumns`` (or Age when
they declare none); the built-ins get the usual columns of the real server.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .resources import Column, ResourceType

Cell = Callable[[Mapping[str, Any]], Any]


def human_duration(seconds: float) -> str:
    """Go's ``duration.HumanDuration``: 5s, 3m20s, 45m, 5h10m, 2d3h, 40d, 3y."""
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def _age(stamp: Any) -> str:
    if not isinstance(stamp, str) or not stamp:
        return "<unknown>"
    when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return human_duration((datetime.datetime.now(datetime.UTC) - when).total_seconds())


# ---------------------------------------------------------------- JSONPath (printer columns)

_STEP = re.compile(
    r"\.([A-Za-z0-9_$-]+)"  # .field
    r"|\[(\d+)\]"  # [0]
    r"|\[\?\(@\.([A-Za-z0-9_.]+)\s*==\s*[\"']([^\"']*)[\"']\)\]"  # [?(@.type=="Ready")]
)


def json_path(obj: Any, path: str) -> Any:
    """The subset of kubectl's JSONPath used by printer columns: ``.a.b``, ``[0]``, filters.

    ``.status.conditions[?(@.type=="Ready")].status`` is the usual form.
    """
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    values = [obj]
    for m in _STEP.finditer(path):
        key, index, fkey, fvalue = m.groups()
        found = []
        for value in values:
            if key is not None and isinstance(value, Mapping) and key in value:
                found.append(value[key])
            elif index is not None and isinstance(value, list) and int(index) < len(value):
                found.append(value[int(index)])
            elif fkey is not None and isinstance(value, list):
                found.extend(v for v in value if str(json_path(v, "." + fkey)) == fvalue)
        values = found
    return values[0] if values else None


# ---------------------------------------------------------------- columns of the built-ins

def _get(*keys: str) -> Cell:
    def cell(obj: Mapping[str, Any]) -> Any:
        value: Any = obj
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value
    return cell


def _count(*keys: str) -> Cell:
    return lambda obj: len(_get(*keys)(obj) or {})


def _pod_ready(pod: Mapping[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: Mapping[str, Any]) -> str:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    for s in status.get("containerStatuses") or []:
        waiting = (s.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    return str(status.get("reason") or status.get("phase") or "Unknown")


def _restarts(pod: Mapping[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def _ports(svc: Mapping[str, Any]) -> str:
    ports = (svc.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _replicas(path: str, want: str = "replicas") -> Cell:
    def cell(obj: Mapping[str, Any]) -> str:
        ready = (obj.get("status") or {}).get(path) or 0
        return f"{ready}/{(obj.get('spec') or {}).get(want, 0)}"
    return cell


def _job_completions(job: Mapping[str, Any]) -> str:
    done = (job.get("status") or {}).get("succeeded") or 0
    return f"{done}/{(job.get('spec') or {}).get('completions', 1)}"


def _or_none(cell: Cell) -> Cell:
    return lambda obj: cell(obj) or "<none>"


_S, _I = "string", "integer"
_BUILTIN_COLUMNS: dict[tuple[str, str], list[tuple[Column, Cell]]] = {
    ("", "pods"): [
        (Column("Ready", _S, ""), _pod_ready),
        (Column("Status", _S, ""), _pod_status),
        (Column("Restarts", _I, ""), _restarts),
        (Column("IP", _S, "", priority=1), _or_none(_get("status", "podIP"))),
        (Column("Node", _S, "", priority=1), _or_none(_get("spec", "nodeName"))),
    ],
    ("", "services"): [
        (Column("Type", _S, ""), _get("spec", "type")),
        (Column("Cluster-IP", _S, ""), _or_none(_get("spec", "clusterIP"))),
        (Column("External-IP", _S, ""), lambda o: "<none>"),
        (Column("Port(s)", _S, ""), _ports),
    ],
    ("", "namespaces"): [(Column("Status", _S, ""), _get("status", "phase"))],
    ("", "configmaps"): [(Column("Data", _I, ""), _count("data"))],
    ("", "secrets"): [(Column("Type", _S, ""), _get("type")), (Column("Data", _I, ""),
                                                               _count("data"))],
    ("apps", "deployments"): [
        (Column("Ready", _S, ""), _replicas("readyReplicas")),
        (Column("Up-to-date", _I, ""), lambda o: (o.get("status") or {}).get("updatedReplicas", 0)),
        (Column("Available", _I, ""),
         lambda o: (o.get("status") or {}).get("availableReplicas", 0)),
    ],
    ("apps", "replicasets"): [
        (Column("Desired", _I, ""), lambda o: (o.get("spec") or {}).get("replicas", 0)),
        (Column("Current", _I, ""), lambda o: (o.get("status") or {}).get("replicas", 0)),
        (Column("Ready", _I, ""), lambda o: (o.get("status") or {}).get("readyReplicas", 0)),
    ],
    ("batch", "jobs"): [(Column("Completions", _S, ""), _job_completions)],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        (Column("Created At", "date", ""), _get("metadata", "creationTimestamp")),
    ],
}


def _columns(rt: ResourceType) -> list[tuple[Column, Cell]]:
    name_col = (Column("Name", "string", ".metadata.name", "Name must be unique within a "
                       "namespace.", format="name"), _get("metadata", "name"))
    age_col = (Column("Age", "date", ".metadata.creationTimestamp", "CreationTimestamp"),
               lambda o: _age(_get("metadata", "creationTimestamp")(o)))
    if rt.crd:
        if not rt.columns:
            return [name_col, age_col]
        return [name_col] + [(c, _crd_cell(c)) for c in rt.columns]
    if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        return [name_col, *_BUILTIN_COLUMNS[rt.key]]
    return [name_col, *_BUILTIN_COLUMNS.get(rt.key, []), age_col]


def _crd_cell(column: Column) -> Cell:
    def cell(obj: Mapping[str, Any]) -> Any:
        value = json_path(obj, column.json_path)
        if value is None:
            return None
        if column.type == "date":
            return _age(value)
        if column.type == "integer" and isinstance(value, (int, float)):
            return int(value)
        if column.type == "string" and not isinstance(value, str):
            return str(value).lower() if isinstance(value, bool) else str(value)
        return value
    return cell


def table(
    rt: ResourceType, items: Sequence[Mapping[str, Any]], resource_version: str, *,
    include_object: str = "PartialObjectMetadata", continue_token: str = "",
    with_columns: bool = True,
) -> dict[str, Any]:
    """A Table of the given objects: one row each, in order."""
    columns = _columns(rt)
    rows = []
    for item in items:
        row: dict[str, Any] = {"cells": [cell(item) for _, cell in columns]}
        if include_object == "Object":
            row["object"] = item
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": item.get("metadata", {})}
        rows.append(row)
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    result: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    if with_columns:
        result["columnDefinitions"] = [
            {"name": c.name, "type": c.type, "format": c.format, "description": c.description,
             "priority": c.priority} for c, _ in columns
        ]
    result["rows"] = rows
    return result


def wants_table(accept: str) -> bool:
    """Whether an Accept header asks for a meta.k8s.io Table (kubectl get does)."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if "as=Table" in params and "g=meta.k8s.io" in params:
            return True
    return False
