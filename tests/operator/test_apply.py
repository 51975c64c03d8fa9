"""Applying desired objects: ownership, drift detection, merge patches that remove what was dropped."""

from __future__ import annotations

import json
from typing import Any

from relay_operator.apply import (
    LAST_APPLIED_ANNOTATION,
    contains,
    controller_of,
    is_controlled_by,
    merge_patch,
    patch_for,
    with_last_applied,
)


def desired(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "team", "labels": {"a": "1"}},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80}], **spec},
    }


def live_from(applied: dict[str, Any]) -> dict[str, Any]:
    """What the server returns: the applied object plus defaults and other controllers' keys."""
    obj = json.loads(json.dumps(with_last_applied(applied)))
    obj["metadata"]["uid"] = "u-svc"
    obj["metadata"]["annotations"]["other.example/x"] = "kept"
    obj["spec"]["clusterIP"] = "10.0.0.1"
    obj["spec"]["ports"][0]["protocol"] = "TCP"
    return obj


def test_unchanged_object_needs_no_patch() -> None:
    assert patch_for(live_from(desired()), desired()) is None


def test_server_defaults_are_not_drift() -> None:
    assert contains({"a": 1, "b": [{"x": 1, "y": 2}]}, {"b": [{"x": 1}]})
    assert not contains({"b": [{"x": 1}, {"x": 2}]}, {"b": [{"x": 1}]})
    assert not contains({"a": "1"}, {"a": 1})


def test_changed_field_is_patched_and_recorded() -> None:
    patch = patch_for(live_from(desired()), desired(type="NodePort"))
    assert patch is not None
    assert patch["spec"]["type"] == "NodePort"
    assert "apiVersion" not in patch and "kind" not in patch
    record = json.loads(patch["metadata"]["annotations"][LAST_APPLIED_ANNOTATION])
    assert record == desired(type="NodePort")


def test_dropped_fields_are_deleted_and_others_kept() -> None:
    before = desired(externalTrafficPolicy="Local")
    before["metadata"]["annotations"] = {"service.beta.kubernetes.io/internal": "true"}
    patch = patch_for(live_from(before), desired())
    assert patch is not None
    assert patch["spec"]["externalTrafficPolicy"] is None
    annotations = patch["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/internal"] is None
    assert "other.example/x" not in annotations  # another controller's: left alone
    assert "clusterIP" not in patch["spec"]


def test_drift_made_by_hand_is_repaired() -> None:
    live = live_from(desired())
    live["spec"]["ports"] = [{"port": 8080, "protocol": "TCP"}]
    patch = patch_for(live, desired())
    assert patch is not None and patch["spec"]["ports"] == [{"port": 80}]


def test_object_without_the_annotation_is_patched_once() -> None:
    live = live_from(desired())
    del live["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
    assert patch_for(live, desired()) is not None


def test_merge_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 2}}) == {
        "a": {"b": 2, "c": None}, "d": None}
    assert merge_patch(None, {"a": [1]}) == {"a": [1]}


def test_controller() -> None:
    owned = {"metadata": {"ownerReferences": [
        {"kind": "Other", "name": "o", "uid": "u-0"},
        {"kind": "SocatTunnel", "name": "web", "uid": "u-1", "controller": True},
    ]}}
    assert controller_of(owned) == ("SocatTunnel", "web", "u-1")
    assert is_controlled_by(owned, "u-1") and not is_controlled_by(owned, "u-0")
    assert controller_of({"metadata": {}}) is None
