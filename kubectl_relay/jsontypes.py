"""Typing for raw Kubernetes objects: JSON-shaped values, as the API sends them."""

from __future__ import annotations

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]
JSONObject = dict[str, JSONValue]
