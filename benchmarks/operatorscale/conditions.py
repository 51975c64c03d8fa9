"""The conditions of an object as JSON (a node, a CRD, a tunnel): ``{type: status}``."""

from __future__ import annotations

from collections.abc import Mapping


def conditions(obj: Mapping[str, object] | None) -> dict[str, str]:
    """``status.conditions`` by type; empty when the object or its status has none."""
    status = obj.get("status") if obj is not None else None
    found = status.get("conditions") if isinstance(status, Mapping) else None
    return {str(c.get("type")): str(c.get("status"))
            for c in (found if isinstance(found, list) else ()) if isinstance(c, Mapping)}
