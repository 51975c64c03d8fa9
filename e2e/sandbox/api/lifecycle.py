"""Deletion: finalizers, propagation policies, owner-reference GC and namespace termination.

The rules of the real control plane, run synchronously after every write so that tests see a
settled state as soon as a call returns:

* Deleting an object with finalizers only sets ``deletionTimestamp`` (and
  ``deletionGracePeriodSeconds: 0``); the update that removes its last finalizer removes it.
  No finalizer may be added once the deletion has started.
* ``propagationPolicy``: ``Background`` (the default) removes the owner now and lets the garbage
  collector delete the dependents; ``Foreground`` keeps the owner with the ``foregroundDeletion``
  finalizer until its dependents are gone; ``Orphan`` strips the owner's references from them.
* Garbage collection: an object whose owner references all name uids that no longer exist is
  deleted (background). Owners are found by uid, as the real collector does.
* Deleting a namespace marks it ``Terminating``, deletes everything in it, and removes the
  namespace once nothing is left (objects with finalizers keep it until they are released).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import objects
from .errors import BadRequest, Cause, conflict, invalid, not_found
from .resources import ResourceType

if TYPE_CHECKING:
    from .store import Obj, Store

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
_POLICIES = ("Background", "Foreground", "Orphan")
#: How many rounds the collector may take before the state is declared settled.
_MAX_ROUNDS = 1000


def check_finalizers(rt: ResourceType, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Refuse new finalizers on an object being deleted (as the real server does)."""
    if not old["metadata"].get("deletionTimestamp"):
        return
    before = set(old["metadata"].get("finalizers") or ())
    added = [f for f in new["metadata"].get("finalizers") or () if f not in before]
    if added:
        listed = ", ".join(f'"{f}"' for f in added)
        raise invalid(objects.ref(rt, old["metadata"]["name"]), [Cause(
            "metadata.finalizers",
            f"Forbidden: no new finalizers can be added if the object is being deleted, "
            f"found new finalizers []string{{{listed}}}", "FieldValueForbidden")])


def _dependents(store: Store, uid: str) -> list[tuple[ResourceType, Obj]]:
    return [
        (rt, obj) for rt, obj in store.items()
        if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or ())
    ]


def delete(
    store: Store, rt: ResourceType, namespace: str | None, name: str, *,
    propagation: str | None, preconditions: Mapping[str, Any], dry_run: bool = False,
) -> Obj:
    """Delete one object (or start its deletion); return its last state."""
    old = store.stored(rt, namespace, name)
    if old is None:
        raise not_found(objects.ref(rt, name))
    meta = old["metadata"]
    if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
        raise conflict(objects.ref(rt, name), f"Precondition failed: UID in precondition: "
                                              f"{preconditions['uid']}, UID in object meta: "
                                              f"{meta['uid']}")
    wanted_rv = preconditions.get("resourceVersion")
    if wanted_rv and wanted_rv != meta["resourceVersion"]:
        raise conflict(objects.ref(rt, name), f"Precondition failed: ResourceVersion in "
                                              f"precondition: {wanted_rv}, ResourceVersion in "
                                              f"object meta: {meta['resourceVersion']}")
    policy = propagation or "Background"
    if policy not in _POLICIES:
        raise BadRequest(f"Unsupported propagationPolicy: {policy!r}: supported values: "
                         + ", ".join(f'"{p}"' for p in _POLICIES))
    if dry_run:
        return store.out(rt, old)
    if policy == "Orphan":
        _orphan_dependents(store, meta["uid"])
    new = copy.deepcopy(old)
    finalizers = list(new["metadata"].get("finalizers") or ())
    if policy == "Foreground" and _dependents(store, meta["uid"]) and FOREGROUND not in finalizers:
        finalizers.append(FOREGROUND)
    if rt.key == ("", "namespaces"):
        new.setdefault("status", {})["phase"] = "Terminating"
    if finalizers or rt.key == ("", "namespaces"):
        if finalizers:
            new["metadata"]["finalizers"] = finalizers
        if not meta.get("deletionTimestamp"):
            new["metadata"]["deletionTimestamp"] = objects.now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
        if not objects.same_content(old, new):
            store.commit(rt, new, "MODIFIED", old)
    else:
        store.commit(rt, new, "DELETED", old)
    collect_garbage(store)
    return store.out(rt, new)


def _orphan_dependents(store: Store, uid: str) -> None:
    for dep_rt, dep in _dependents(store, uid):
        new = copy.deepcopy(dep)
        refs = [r for r in new["metadata"]["ownerReferences"] if r.get("uid") != uid]
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            del new["metadata"]["ownerReferences"]
        store.commit(dep_rt, new, "MODIFIED", dep)


def _release(store: Store, rt: ResourceType, obj: Obj, finalizer: str) -> None:
    """Remove one finalizer from an object being deleted (removing it if it was the last)."""
    new = copy.deepcopy(obj)
    new["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != finalizer]
    if not new["metadata"]["finalizers"]:
        del new["metadata"]["finalizers"]
        store.commit(rt, new, "DELETED", obj)
    else:
        store.commit(rt, new, "MODIFIED", obj)


def _one_round(store: Store) -> bool:
    """One pass of the collector and the namespace controller; whether it changed anything."""
    foreground = {
        obj["metadata"]["uid"] for _, obj in store.items()
        if obj["metadata"].get("deletionTimestamp")
        and FOREGROUND in (obj["metadata"].get("finalizers") or ())
    }
    for rt, obj in store.items():
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or ()
        if not refs or meta.get("deletionTimestamp"):
            continue
        owner_uids = {r.get("uid") for r in refs}
        if not any(store.uid_exists(u) for u in owner_uids) or owner_uids & foreground:
            delete(store, rt, meta.get("namespace"), meta["name"], propagation="Background",
                   preconditions={})
            return True
    for rt, obj in store.items():
        meta = obj["metadata"]
        if meta["uid"] in foreground and not _dependents(store, meta["uid"]):
            _release(store, rt, obj, FOREGROUND)
            return True
    ns_type = store.registry.find("", "v1", "namespaces")
    for _, ns in store.items(ns_type.key):
        if not ns["metadata"].get("deletionTimestamp"):
            continue
        name = ns["metadata"]["name"]
        contents = [(rt, obj) for rt, obj in store.items()
                    if rt.namespaced and obj["metadata"].get("namespace") == name]
        pending = [(rt, obj) for rt, obj in contents
                   if not obj["metadata"].get("deletionTimestamp")]
        if pending:
            for rt, obj in pending:
                if store.stored(rt, name, obj["metadata"]["name"]) is not None:
                    delete(store, rt, name, obj["metadata"]["name"], propagation="Background",
                           preconditions={})
            return True
        if not contents and not ns["metadata"].get("finalizers"):
            store.commit(ns_type, copy.deepcopy(ns), "DELETED", ns)
            return True
    return False


def collect_garbage(store: Store) -> None:
    """Run the collector until nothing changes any more.

    The deletions it makes call it again; the inner calls return at once and the outer loop
    picks up their consequences, so the recursion stays shallow.
    """
    if store.gc_running:
        return
    store.gc_running = True
    try:
        for _ in range(_MAX_ROUNDS):
            if not _one_round(store):
                return
    finally:
        store.gc_running = False
