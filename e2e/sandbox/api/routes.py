"""The HTTP API: one aiohttp handler that authenticates, injects faults and dispatches.

Resource requests map to verbs as the real server's request-info resolver does: GET on a
collection is ``list`` (``watch`` with ``?watch=true``), on an object ``get``; POST ``create``;
PUT ``update``; PATCH ``patch``; DELETE ``delete`` or ``deletecollection``. Errors become
``kind: Status`` bodies with the error's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import discovery, tables
from .auth import User
from .errors import ApiError, BadRequest, MethodNotAllowed, NotFound
from .paths import Params, Target, decode_body, parse_target, patch_type
from .resources import ResourceType
from .selectors import FieldRequirement, FieldSelector, parse_field_selector, parse_label_selector
from .streams import requested_ports, serve_logs, serve_portforward

if TYPE_CHECKING:
    from .server import ApiServer

_JSON = "application/json"


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(text=json.dumps(body), status=status, content_type=_JSON)
    for warning in warnings or ():
        response.headers.add("Warning", f'299 - {json.dumps(warning)}')
    return response


def error_response(error: ApiError) -> web.Response:
    response = _json(error.status(), error.status_code)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


class Routes:
    """The request handling of one :class:`ApiServer`."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.store = server.store

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The single entry point (a catch-all route)."""
        try:
            user = self.server.auth.authenticate(request.headers, secure=self.server.tls)
            await self.server.faults.apply(request.method, request.path, request.path_qs)
            return await self._dispatch(request, user)
        except ApiError as e:
            return error_response(e)

    async def _dispatch(self, request: web.Request, user: User) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        document = self._non_resource(request, path)
        if document is not None:
            if request.method != "GET":
                raise MethodNotAllowed(f"the server does not allow this method on {path}")
            self.server.auth.authorize_path(user, path)
            return document
        self.server.auth.authorize_path(user, path)
        target = parse_target(self.store.registry, path)
        if target is None:
            raise NotFound("the server could not find the requested resource")
        params = Params(request.query)
        verb = self._verb(request.method, target, params)
        resource = target.rt.plural + (f"/{target.subresource}" if target.subresource else "")
        self.server.auth.authorize(user, verb, resource=resource, group=target.rt.group,
                                   namespace=target.namespace, name=target.name)
        if target.subresource in ("log", "portforward", "eviction", "scale"):
            return await self._subresource(request, target, params)
        if verb in ("list", "watch", "get"):
            return await self._read(request, target, params, verb)
        return await self._write(request, target, params, verb)

    def _non_resource(self, request: web.Request, path: str) -> web.Response | None:
        registry = self.store.registry
        parts = path.strip("/").split("/")
        if path == "/version":
            return _json(discovery.VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            return _json(discovery.api_versions(f"{request.host}"))
        if path == "/apis":
            return _json(discovery.api_group_list(registry))
        if path == "/openapi/v3":
            return _json(discovery.openapi_root(registry))
        if path.startswith("/openapi/"):
            doc = None
            if parts[:3] == ["openapi", "v3", "api"] and len(parts) == 4:
                doc = discovery.openapi_gv(registry, "", parts[3])
            elif parts[:3] == ["openapi", "v3", "apis"] and len(parts) == 5:
                doc = discovery.openapi_gv(registry, parts[3], parts[4])
            if doc is None:
                raise NotFound("the server could not find the requested resource")
            return _json(doc)
        if parts[0] == "api" and len(parts) == 2:
            found = discovery.resource_list(registry, "", parts[1])
        elif parts[0] == "apis" and len(parts) == 2:
            found = discovery.api_group(registry, parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            found = discovery.resource_list(registry, parts[1], parts[2])
        else:
            return None
        if found is None:
            raise NotFound("the server could not find the requested resource")
        return _json(found)

    @staticmethod
    def _verb(method: str, target: Target, params: Params) -> str:
        if target.subresource == "portforward":
            return "create"
        if method == "GET":
            if target.legacy_watch or params.flag("watch"):
                return "watch"
            return "get" if target.name else "list"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "delete" if target.name else "deletecollection"
        raise MethodNotAllowed(f"the server does not allow this method ({method}) on the "
                               "requested resource")

    # ------------------------------------------------------------------ reads

    async def _read(
        self, request: web.Request, target: Target, params: Params, verb: str,
    ) -> web.StreamResponse:
        rt = target.rt
        table = tables.wants_table(request.headers.get("Accept", ""))
        if verb == "get":
            obj = self.store.get_rt(rt, target.namespace, target.name or "")
            if table:
                return _json(tables.table(rt, [obj], obj["metadata"]["resourceVersion"],
                                          include_object=params.get("includeObject") or ""))
            return _json(obj)
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"), rt.group, rt.plural)
        if target.name:  # /watch/.../NAME: a watch of one object
            fields = FieldSelector((*fields.requirements,
                                    FieldRequirement("metadata.name", target.name, False)))
        if verb == "watch":
            return await self._watch(request, target, params, labels, fields, table)
        items, version, token, remaining = self.store.list_rt(
            rt, target.namespace, labels=labels, fields=fields,
            limit=params.int("limit"), continue_token=params.get("continue"))
        if table:
            return _json(tables.table(rt, items, version, continue_token=token,
                                      include_object=params.get("includeObject") or ""))
        meta: dict[str, Any] = {"resourceVersion": version}
        if token:
            meta["continue"] = token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        return _json({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
                      "items": items})

    async def _watch(
        self, request: web.Request, target: Target, params: Params, labels: Any, fields: Any,
        table: bool,
    ) -> web.StreamResponse:
        rt = target.rt
        stream = self.store.watch_rt(
            rt, target.namespace, resource_version=params.get("resourceVersion"),
            labels=labels, fields=fields, send_initial_events=params.flag("sendInitialEvents"),
            bookmarks=params.flag("allowWatchBookmarks"))
        response = web.StreamResponse(headers={"Content-Type": _JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        dropped = asyncio.Event()
        untrack = self.server.faults.track_watch(dropped.set)
        include = params.get("includeObject") or ""

        async def pump() -> None:
            first = True
            try:
                async for event in stream:
                    obj = event.object
                    if table and event.type != "BOOKMARK":
                        obj = tables.table(rt, [obj], obj["metadata"]["resourceVersion"],
                                           include_object=include, with_columns=first)
                        first = False
                    line = json.dumps({"type": event.type, "object": obj}) + "\n"
                    await response.write(line.encode())
            except ApiError as e:  # 410 Gone and friends: an ERROR event, as the real server
                line = json.dumps({"type": "ERROR", "object": e.status()}) + "\n"
                await response.write(line.encode())
            finally:
                await stream.aclose()  # type: ignore[attr-defined]

        tasks = {asyncio.create_task(pump()), asyncio.create_task(dropped.wait())}
        try:
            await asyncio.wait(tasks, timeout=params.int("timeoutSeconds"),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            untrack()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        if dropped.is_set():
            # Abruptly: no terminating chunk, as when an apiserver or a proxy dies.
            if request.transport is not None:
                request.transport.close()
            return response
        for result in results:
            if isinstance(result, (ConnectionError, OSError)):
                return response
        with contextlib.suppress(ConnectionError, OSError):
            await response.write_eof()
        return response

    # ------------------------------------------------------------------ writes

    async def _body(self, request: web.Request) -> Any:
        return decode_body(await request.read(), request.headers.get("Content-Type", _JSON))

    async def _write(
        self, request: web.Request, target: Target, params: Params, verb: str,
    ) -> web.StreamResponse:
        rt, ns, name = target.rt, target.namespace, target.name or ""
        warnings: list[str] = []
        common = {"field_validation": params.field_validation, "warnings": warnings,
                  "dry_run": params.dry_run}
        status_sub = "status" if target.subresource == "status" else None
        if verb == "create":
            if target.name:
                raise MethodNotAllowed("the server does not allow this method on the requested "
                                       "resource")
            body = await self._body(request)
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            return _json(self.store.create_rt(rt, ns, body, **common), 201, warnings)  # type: ignore[arg-type]
        if verb == "update":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            obj = self.store.update_rt(rt, ns, name, body, subresource=status_sub, **common)  # type: ignore[arg-type]
            return _json(obj, 200, warnings)
        if verb == "patch":
            kind = patch_type(request.headers.get("Content-Type", ""))
            body = await self._body(request)
            existed = self.store.stored(rt, ns, name) is not None
            obj = self.store.patch_rt(rt, ns, name, body, kind, subresource=status_sub,  # type: ignore[arg-type]
                                      field_manager=params.get("fieldManager"), **common)  # type: ignore[arg-type]
            return _json(obj, 200 if existed else 201, warnings)
        options = await self._body(request) or {}
        if not isinstance(options, dict):
            raise BadRequest("DeleteOptions must be a JSON object")
        propagation = params.get("propagationPolicy") or options.get("propagationPolicy")
        orphan = params.get("orphanDependents") or options.get("orphanDependents")
        if propagation is None and str(orphan).lower() == "true":
            propagation = "Orphan"
        dry_run = params.dry_run or "All" in (options.get("dryRun") or ())
        if verb == "deletecollection":
            items = self.store.delete_collection_rt(
                rt, ns, labels=parse_label_selector(params.get("labelSelector")),
                fields=parse_field_selector(params.get("fieldSelector"), rt.group, rt.plural),
                propagation=propagation, dry_run=dry_run)
            return _json({"kind": rt.list_kind, "apiVersion": rt.api_version,
                          "metadata": {"resourceVersion": self.store.resource_version},
                          "items": items})
        obj = self.store.delete_rt(rt, ns, name, propagation=propagation,
                                   preconditions=options.get("preconditions"), dry_run=dry_run)
        return _json(obj)

    # ------------------------------------------------------------------ subresources

    async def _subresource(
        self, request: web.Request, target: Target, params: Params,
    ) -> web.StreamResponse:
        rt, ns, name = target.rt, target.namespace, target.name or ""
        if target.subresource == "scale":
            return await self._scale(request, rt, ns, name)
        obj = self.store.get_rt(rt, ns, name)
        if target.subresource == "log" and request.method == "GET":
            return await serve_logs(
                request, self.server.backend, obj, params.get("container"),
                follow=params.flag("follow"), tail_lines=params.int("tailLines"),
                limit_bytes=params.int("limitBytes"))
        if target.subresource == "portforward" and request.method == "GET":
            ports = requested_ports(request.query.getall("ports", []) +
                                    request.query.getall("port", []))
            return await serve_portforward(request, self.server.backend, obj, ports,
                                           self.server.faults)
        if target.subresource == "eviction" and request.method == "POST":
            self.store.delete_rt(rt, ns, name)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "code": 201}, 201)
        raise MethodNotAllowed(f"the server does not allow this method on {rt.plural}/"
                               f"{target.subresource}")

    async def _scale(
        self, request: web.Request, rt: ResourceType, ns: str | None, name: str,
    ) -> web.StreamResponse:
        from .scale import apply_scale, scale_of  # noqa: PLC0415 (a rarely used subresource)
        obj = self.store.get_rt(rt, ns, name)
        if request.method == "GET":
            return _json(scale_of(rt, obj))
        body = await self._body(request)
        if request.method == "PATCH":
            kind = patch_type(request.headers.get("Content-Type", ""))
            from . import patching  # noqa: PLC0415
            current = scale_of(rt, obj)
            if kind == "json":
                body = patching.json_patch(current, body)
            else:
                body = patching.merge_patch(current, body)
        elif request.method != "PUT":
            raise MethodNotAllowed("the server does not allow this method on the scale")
        updated = self.store.update_rt(rt, ns, name, apply_scale(rt, obj, body),
                                       require_version=False)
        return _json(scale_of(rt, updated))
