"""The object store: CRUD with the real server's metadata rules, watches, finalizers and GC.

All objects are plain JSON-shaped dicts. A stored dict is never modified after it is stored (a
write stores a new dict), so the history and the watchers share it safely, and every caller
gets a deep copy. The methods do all their work without awaiting, so each call is atomic on the
event loop, as one etcd transaction is.

Two entry points per operation: the ``async`` methods of the sandbox's public API take an
``api_version`` and a plural (``store.create("apps/v1", "deployments", "default", body)``); the
HTTP layer resolves the :class:`ResourceType` once and calls the synchronous ``*_rt`` methods.
Deletion, finalizers, garbage collection and namespace termination are in :mod:`.lifecycle`.

``watch()`` raises :class:`Gone` (410) at its first iteration when asked to resume from a
resourceVersion older than the recorded history; it ends when :meth:`close_watches` is called
(the server's ``stop()`` does), or when its resource's CRD is deleted.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Literal

from . import lifecycle, objects, patching
from .errors import (
    MODIFIED,
    BadRequest,
    Cause,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
    already_exists,
    conflict,
    invalid,
    not_found,
)
from .objects import FieldValidation
from .resources import Registry, ResourceType, from_crd
from .selectors import FieldSelector, LabelSelector, parse_field_selector, parse_label_selector
from .watch import INITIAL_EVENTS_END, Change, Filter, History, Subscription, WatchEvent

PatchType = Literal["merge", "json", "strategic", "apply"]
Obj = dict[str, Any]
ObjList = list[Obj]

#: The namespaces every cluster starts with.
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Store:
    """All objects of the sandbox cluster, and the watches on them."""

    def __init__(self, *, history_size: int = 10_000, bookmark_interval: float = 5.0) -> None:
        """``history_size``: how many changes a watch can resume across (older: 410 Gone);
        ``bookmark_interval``: how long a watch with bookmarks stays silent at most.
        """
        self.registry = Registry()
        #: How long a watch with ``allowWatchBookmarks`` stays idle before a BOOKMARK.
        self.bookmark_interval = bookmark_interval
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        self._rv = 0
        self._history = History(history_size)
        self._subs: set[Subscription] = set()
        #: Set while the garbage collector runs (it must not re-enter itself).
        self.gc_running = False
        ns_type = self.registry.find("", "v1", "namespaces")
        for name in INITIAL_NAMESPACES:
            self.create_rt(ns_type, None, {"metadata": {"name": name}})

    # ------------------------------------------------------------------ bookkeeping

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        return str(self._rv)

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: older watches get 410 Gone."""
        self._history.compact(self._rv)

    def close_watches(self) -> None:
        """End every open watch (gracefully: the streams finish)."""
        for sub in list(self._subs):
            sub.queue.put_nowait(None)

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(rt.key, {})

    def stored(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        """The stored (shared, not to be modified) object, or None."""
        return self._bucket(rt).get((namespace or "", name))

    def items(self, key: tuple[str, str] | None = None) -> Iterator[tuple[ResourceType, Obj]]:
        """All stored objects (shared), with their storage's resource type."""
        for rt in self.registry.storages():
            if key is None or rt.key == key:
                for obj in list(self._bucket(rt).values()):
                    yield rt, obj

    def uid_exists(self, uid: str) -> bool:
        return uid in self._uids

    def out(self, rt: ResourceType, obj: Mapping[str, Any]) -> Obj:
        """A caller's copy, in the requested version (conversion strategy ``None``)."""
        result = copy.deepcopy(dict(obj))
        result["apiVersion"] = rt.api_version
        result["kind"] = rt.kind
        return result

    def commit(
        self, rt: ResourceType, obj: Obj, kind: Literal["ADDED", "MODIFIED", "DELETED"],
        old: Obj | None = None,
    ) -> Obj:
        """Store (or remove) a new object version with the next resourceVersion; notify watches."""
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        namespace = meta.get("namespace") if rt.namespaced else None
        slot = (namespace or "", meta["name"])
        if kind == "DELETED":
            self._bucket(rt).pop(slot, None)
            self._uids.pop(meta.get("uid", ""), None)
        else:
            self._bucket(rt)[slot] = obj
            self._uids[meta["uid"]] = (rt.key, namespace or "", meta["name"])
        change = Change(self._rv, rt.key, namespace, kind, obj, old)
        self._history.append(change)
        for sub in self._subs:
            if sub.wants(change):
                sub.queue.put_nowait(change)
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._crd_changed(obj, kind)
        return obj

    def _crd_changed(self, crd: Obj, kind: str) -> None:
        name = crd["metadata"]["name"]
        self.registry.remove_crd(name)
        if kind == "DELETED":
            group = crd["spec"]["group"]
            plural = crd["spec"]["names"]["plural"]
            for sub in list(self._subs):
                if sub.key == (group, plural):
                    sub.queue.put_nowait(None)
            self._objects.pop((group, plural), None)
            return
        for rt in from_crd(crd):
            self.registry.add(rt)

    # ------------------------------------------------------------------ reads

    def get_rt(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.stored(rt, namespace, name)
        if obj is None:
            raise not_found(objects.ref(rt, name))
        return self.out(rt, obj)

    def list_rt(
        self, rt: ResourceType, namespace: str | None, *,
        labels: LabelSelector | None = None, fields: FieldSelector | None = None,
        limit: int | None = None, continue_token: str | None = None,
    ) -> tuple[list[Obj], str, str, int | None]:
        """Matching objects sorted by namespace and name, one page at a time.

        Returns ``(items, resourceVersion, continue, remainingItemCount)``. The continue token
        names the last returned object; pages are cut from the current state (a real server
        serves them from the snapshot of the first page).
        """
        labels = labels or LabelSelector()
        fields = fields or FieldSelector()
        start: tuple[str, str] | None = None
        if continue_token:
            try:
                ns_name = json.loads(base64.urlsafe_b64decode(continue_token))["start"]
                start = (str(ns_name[0]), str(ns_name[1]))
            except (ValueError, KeyError, TypeError):
                raise BadRequest("continue key is not valid: illegal base64 data") from None
        found = []
        for slot in sorted(self._bucket(rt)):
            obj = self._bucket(rt)[slot]
            if rt.namespaced and namespace and slot[0] != namespace:
                continue
            if start is not None and slot <= start:
                continue
            if labels.matches(obj) and fields.matches(obj):
                found.append((slot, obj))
        token, remaining = "", None
        if limit and len(found) > limit:
            last = found[limit - 1][0]
            token = base64.urlsafe_b64encode(json.dumps({"start": list(last)}).encode()).decode()
            remaining = len(found) - limit
            found = found[:limit]
        return [self.out(rt, obj) for _, obj in found], self.resource_version, token, remaining

    # ------------------------------------------------------------------ writes

    def _namespace_for(self, rt: ResourceType, namespace: str | None, body: Obj) -> str | None:
        meta = body.setdefault("metadata", {})
        if not rt.namespaced:
            meta.pop("namespace", None)
            return None
        if namespace is None:
            namespace = meta.get("namespace")
        if not namespace:
            raise BadRequest("the namespace of the object must be set")
        if meta.get("namespace") not in (None, "", namespace):
            raise BadRequest("the namespace of the provided object does not match the namespace "
                             "sent on the request")
        meta["namespace"] = namespace
        ns_type = self.registry.find("", "v1", "namespaces")
        ns_obj = self.stored(ns_type, None, namespace)
        if ns_obj is None:
            raise not_found(objects.ref(ns_type, namespace))
        if ns_obj["metadata"].get("deletionTimestamp"):
            raise Forbidden(
                f'{rt.plural} "{meta.get("name") or meta.get("generateName", "")}" is forbidden: '
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated", reason="Forbidden", name=meta.get("name"), kind=rt.plural,
            )
        return namespace

    def _check_kind(self, rt: ResourceType, body: Obj) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version):
            raise BadRequest(f"the API version in the data ({api_version}) does not match the "
                             f"expected API version ({rt.api_version})"
                             if api_version != rt.api_version else
                             f"the kind in the data ({kind}) does not match the expected kind "
                             f"({rt.kind})")
        body["kind"], body["apiVersion"] = rt.kind, rt.api_version

    def create_rt(
        self, rt: ResourceType, namespace: str | None, body: Mapping[str, Any], *,
        field_validation: FieldValidation = "Ignore", warnings: list[str] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """POST: fill the server-side metadata, validate, store; Conflict if the name is taken."""
        if "create" not in rt.verbs:
            raise_method_not_allowed(rt, "create")
        obj = copy.deepcopy(dict(body))
        if not isinstance(obj.get("metadata", {}), dict):
            raise BadRequest("metadata must be an object")
        self._check_kind(rt, obj)
        namespace = self._namespace_for(rt, namespace, obj)
        meta = obj["metadata"]
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(objects.ref(rt), [Cause(
                    "metadata.name", "Required value: name or generateName is required",
                    "FieldValueRequired")])
            meta["name"] = objects.generated_name(meta["generateName"])
            while self.stored(rt, namespace, meta["name"]) is not None:
                meta["name"] = objects.generated_name(meta["generateName"])
        objects.check_name(rt, meta["name"])
        if self.stored(rt, namespace, meta["name"]) is not None:
            raise already_exists(objects.ref(rt, meta["name"]))
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "managedFields", "selfLink"):
            meta.pop(key, None)
        if rt.has_status:
            obj.pop("status", None)
        obj = self._prepare(rt, obj, field_validation, warnings, creating=True)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = objects.now()
        if rt.generation:
            meta["generation"] = 1
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            objects.check_crd(obj)
            obj["status"] = objects.crd_status(obj)
        if dry_run:
            return self.out(rt, obj)
        self.commit(rt, obj, "ADDED")
        lifecycle.collect_garbage(self)
        return self.out(rt, obj)

    def _prepare(
        self, rt: ResourceType, obj: Obj, field_validation: FieldValidation,
        warnings: list[str] | None, *, creating: bool,
    ) -> Obj:
        if rt.crd:
            obj = objects.custom_resource(rt, obj, field_validation, warnings if warnings is not
                                          None else [])
        else:
            objects.builtin_defaults(rt, obj, creating=creating)
            objects.builtin_validate(rt, obj)
        return obj

    def update_rt(
        self, rt: ResourceType, namespace: str | None, name: str, body: Mapping[str, Any], *,
        subresource: Literal["status"] | None = None, require_version: bool = True,
        field_validation: FieldValidation = "Ignore", warnings: list[str] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT (of the object or its status): optimistic concurrency on resourceVersion."""
        if "update" not in rt.verbs:
            raise_method_not_allowed(rt, "update")
        old = self.stored(rt, namespace, name)
        if old is None:
            raise not_found(objects.ref(rt, name))
        new = copy.deepcopy(dict(body))
        self._check_kind(rt, new)
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise BadRequest("metadata must be an object")
        if meta.get("name", name) != name:
            raise BadRequest(f"the name of the object ({meta.get('name')}) does not match the "
                             f"name on the URL ({name})")
        if rt.namespaced and meta.get("namespace", namespace) != namespace:
            raise BadRequest("the namespace of the provided object does not match the namespace "
                             "sent on the request")
        version = meta.get("resourceVersion")
        if version and version != old["metadata"]["resourceVersion"]:
            raise conflict(objects.ref(rt, name), MODIFIED)
        if not version and rt.crd and require_version:
            raise invalid(objects.ref(rt, name), [Cause(
                "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")])
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif rt.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new["metadata"]
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "namespace", "name", "generation"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        new = self._prepare(rt, new, field_validation, warnings, creating=False)
        lifecycle.check_finalizers(rt, old, new)
        if rt.generation and objects.spec_changed(rt, old, new):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions") and subresource is None:
            objects.check_crd(new)
            new["status"] = objects.crd_status(new)
        if objects.same_content(old, new) or dry_run:
            return self.out(rt, new if dry_run else old)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self.commit(rt, new, "DELETED", old)
            lifecycle.collect_garbage(self)
            return self.out(rt, new)
        self.commit(rt, new, "MODIFIED", old)
        lifecycle.collect_garbage(self)
        return self.out(rt, new)

    def patch_rt(
        self, rt: ResourceType, namespace: str | None, name: str, patch: Any,
        patch_type: PatchType, *, subresource: Literal["status"] | None = None,
        field_validation: FieldValidation = "Ignore", warnings: list[str] | None = None,
        dry_run: bool = False, field_manager: str | None = None,
    ) -> Obj:
        """PATCH in one of the three formats (or a simplified server-side apply)."""
        if "patch" not in rt.verbs:
            raise_method_not_allowed(rt, "patch")
        current = self.stored(rt, namespace, name)
        if current is None and patch_type == "apply" and subresource is None:
            if not isinstance(patch, dict):
                raise BadRequest("apply patch must be an object")
            return self.create_rt(rt, namespace, patch, field_validation=field_validation,
                                  warnings=warnings, dry_run=dry_run)
        if current is None:
            raise not_found(objects.ref(rt, name))
        base = self.out(rt, current)
        if patch_type == "json":
            new = patching.json_patch(base, patch)
        elif patch_type == "strategic":
            if rt.crd:
                raise UnsupportedMediaType(
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml")
            new = patching.strategic_merge_patch(base, patch, rt.kind)
        else:
            if not isinstance(patch, dict):
                raise BadRequest("merge patch must be a JSON object")
            new = patching.merge_patch(base, patch)
        if not isinstance(new, dict):
            raise BadRequest("the patched object is not a JSON object")
        return self.update_rt(rt, namespace, name, new, subresource=subresource,
                              require_version=False, field_validation=field_validation,
                              warnings=warnings, dry_run=dry_run)

    def delete_rt(
        self, rt: ResourceType, namespace: str | None, name: str, *,
        propagation: str | None = None, preconditions: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """DELETE: see :func:`.lifecycle.delete`."""
        if "delete" not in rt.verbs:
            raise_method_not_allowed(rt, "delete")
        return lifecycle.delete(self, rt, namespace, name, propagation=propagation,
                                preconditions=preconditions or {}, dry_run=dry_run)

    def delete_collection_rt(
        self, rt: ResourceType, namespace: str | None, *,
        labels: LabelSelector | None = None, fields: FieldSelector | None = None,
        propagation: str | None = None, dry_run: bool = False,
    ) -> list[Obj]:
        """DELETE on a collection: delete every matching object; return them."""
        items, *_ = self.list_rt(rt, namespace, labels=labels, fields=fields)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                deleted.append(self.delete_rt(rt, meta.get("namespace"), meta["name"],
                                              propagation=propagation, dry_run=dry_run))
            except NotFound:
                continue  # removed by the garbage collection of an earlier one
        return deleted

    # ------------------------------------------------------------------ watches

    async def watch_rt(
        self, rt: ResourceType, namespace: str | None, *, resource_version: str | None = None,
        labels: LabelSelector | None = None, fields: FieldSelector | None = None,
        send_initial_events: bool = False, bookmarks: bool = False,
    ) -> AsyncIterator[WatchEvent]:
        """The events of one resource after ``resource_version``.

        Without a resourceVersion (or with ``"0"``), or with ``send_initial_events``, the stream
        starts with synthetic ADDED events for the current objects; with
        ``send_initial_events`` a BOOKMARK annotated ``k8s.io/initial-events-end`` follows them.
        With ``bookmarks``, an idle stream gets a BOOKMARK every :attr:`bookmark_interval`.
        Raises Gone (410) if the resourceVersion is older than the history.
        """
        filt = Filter(labels or LabelSelector(), fields or FieldSelector())
        sub = Subscription(rt.key, namespace if rt.namespaced else None)
        initial: list[WatchEvent] = []
        if send_initial_events or resource_version in (None, "", "0"):
            items, *_ = self.list_rt(rt, namespace, labels=filt.labels, fields=filt.fields)
            initial = [WatchEvent("ADDED", item) for item in items]
        else:
            try:
                since = int(resource_version or "0")
            except ValueError:
                raise BadRequest(f"invalid resource version: {resource_version}") from None
            for change in self._history.since(since, self._rv):
                seen = filt.translate(change) if sub.wants(change) else None
                if seen is not None:
                    initial.append(WatchEvent(seen[0], self.out(rt, seen[1])))
        self._subs.add(sub)
        try:
            for event in initial:
                yield event
            if send_initial_events:
                yield self._bookmark(rt, {INITIAL_EVENTS_END: "true"})
            while True:
                try:
                    async with asyncio.timeout(self.bookmark_interval if bookmarks else None):
                        next_change = await sub.queue.get()
                except TimeoutError:
                    yield self._bookmark(rt)
                    continue
                if next_change is None:
                    return
                change = next_change
                seen = filt.translate(change)
                if seen is not None:
                    yield WatchEvent(seen[0], self.out(rt, seen[1]))
        finally:
            self._subs.discard(sub)

    def _bookmark(self, rt: ResourceType, annotations: dict[str, str] | None = None) -> WatchEvent:
        meta: Obj = {"resourceVersion": self.resource_version}
        if annotations:
            meta["annotations"] = annotations
        return WatchEvent("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                       "metadata": meta})

    # ------------------------------------------------------------------ the public async API

    async def create(self, api_version: str, plural: str, namespace: str | None,
                     body: Mapping[str, Any]) -> Obj:
        """Create an object; fills uid, resourceVersion, generation, creationTimestamp."""
        return self.create_rt(self.registry.resolve(api_version, plural), namespace, body)

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Obj:
        """One object; NotFound if absent."""
        return self.get_rt(self.registry.resolve(api_version, plural), namespace, name)

    async def list(
        self, api_version: str, plural: str, namespace: str | None = None, *,
        label_selector: str | None = None, field_selector: str | None = None,
    ) -> tuple[ObjList, str]:
        """Matching objects (all namespaces if ``namespace`` is None) and the list's version."""
        rt = self.registry.resolve(api_version, plural)
        items, version, _, _ = self.list_rt(
            rt, namespace, labels=parse_label_selector(label_selector),
            fields=parse_field_selector(field_selector, rt.group, rt.plural))
        return items, version

    async def replace(self, api_version: str, plural: str, namespace: str | None, name: str,
                      body: Mapping[str, Any]) -> Obj:
        """PUT semantics: a stale ``metadata.resourceVersion`` is a Conflict."""
        rt = self.registry.resolve(api_version, plural)
        return self.update_rt(rt, namespace, name, body, require_version=False)

    async def replace_status(self, api_version: str, plural: str, namespace: str | None,
                             name: str, body: Mapping[str, Any]) -> Obj:
        """PUT of the status subresource: only ``status`` changes."""
        rt = self.registry.resolve(api_version, plural)
        return self.update_rt(rt, namespace, name, body, subresource="status",
                              require_version=False)

    async def patch(
        self, api_version: str, plural: str, namespace: str | None, name: str,
        patch: Mapping[str, Any] | Sequence[Any], *,
        patch_type: Literal["merge", "json", "strategic"],
        subresource: Literal["status"] | None = None,
    ) -> Obj:
        """Patch an object or its status."""
        rt = self.registry.resolve(api_version, plural)
        return self.patch_rt(rt, namespace, name, patch, patch_type, subresource=subresource)

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str, *,
                     propagation: str = "Background") -> Obj | None:
        """Delete; returns the object, or None if it is gone already (not kept by finalizers)."""
        rt = self.registry.resolve(api_version, plural)
        obj = self.delete_rt(rt, namespace, name, propagation=propagation)
        return obj if self.stored(rt, namespace, name) is not None else None

    async def delete_collection(
        self, api_version: str, plural: str, namespace: str | None = None, *,
        label_selector: str | None = None, field_selector: str | None = None,
    ) -> ObjList:
        """Delete every matching object."""
        rt = self.registry.resolve(api_version, plural)
        return self.delete_collection_rt(
            rt, namespace, labels=parse_label_selector(label_selector),
            fields=parse_field_selector(field_selector, rt.group, rt.plural))

    def watch(
        self, api_version: str, plural: str, namespace: str | None = None, *,
        resource_version: str | None = None, label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Watch one resource (see :meth:`watch_rt`); ends when the store closes its watches."""
        rt = self.registry.resolve(api_version, plural)
        return self.watch_rt(
            rt, namespace, resource_version=resource_version,
            labels=parse_label_selector(label_selector),
            fields=parse_field_selector(field_selector, rt.group, rt.plural))


def raise_method_not_allowed(rt: ResourceType, verb: str) -> None:
    """405, as for ``update`` of a resource that only supports ``create``."""
    raise MethodNotAllowed(f"{verb} is not supported on resources of kind "
                           f'"{rt.plural}.{rt.group}"' if rt.group else
                           f'{verb} is not supported on resources of kind "{rt.plural}"')
