"""The operator's requests to the API server: get, create, merge-patch, delete, by path.

The kubernetes client is synchronous; its calls run on a small thread pool
of this module's own, so kopf's event loop never blocks, and the pool is
shut down with the operator (no thread outlives it). The client is used
for what it does well: reading a kubeconfig or the in-cluster service
account (with token refresh, exec plugins such as AKS's kubelogin), TLS and
authentication. Bodies stay plain JSON dicts, as the builders make them.

Failures become ``ApiError``; those that retrying may cure (no answer, 429,
5xx, a timeout) become ``TransientApiError``, which the handlers turn into a
retry with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import kubernetes
import urllib3

from kubectl_relay.jsontypes import JSONObject

from .errors import ApiError, TransientApiError

MERGE_PATCH = "application/merge-patch+json"
#: The statuses worth retrying: throttled, server errors, gateway timeouts.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def path(
    api_version: str,
    plural: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The URL path of a collection or an object: ``/apis/apps/v1/namespaces/ns/deployments/x``."""
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [root]
    if namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


@dataclass(frozen=True)
class Credentials:
    """What kopf's login needs, read from the same configuration as this client's."""

    server: str
    ca_path: str | None
    insecure: bool
    scheme: str | None
    token: str | None
    certificate_path: str | None
    private_key_path: str | None


def load_configuration(kubeconfig: str | None, context: str | None = None) -> Any:
    """A client ``Configuration``: from ``kubeconfig`` if given, else in-cluster, else the default.

    The default kubeconfig is ``$KUBECONFIG`` (read now, not when the client
    was imported) or ``~/.kube/config``.
    """
    config = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=config
            )
            return config
        except kubernetes.config.ConfigException:
            kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig,
        context=context,
        client_configuration=config,
        persist_config=False,
    )
    return config


class Kube:
    """Async access to the API server through the kubernetes client and a thread pool."""

    def __init__(self, configuration: Any, *, timeout: float = 30.0, workers: int = 4) -> None:
        self._configuration = configuration
        # One kept connection per thread: with fewer, urllib3 opens a new
        # connection (a TLS handshake) for each request beyond them, then drops it.
        configuration.connection_pool_maxsize = max(
            workers, configuration.connection_pool_maxsize or 0
        )
        self._client = kubernetes.client.ApiClient(configuration)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="relay-api")
        self._timeout = timeout

    def close(self) -> None:
        """Wait for running requests, then stop the threads and close the connections."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()  # type: ignore[no-untyped-call]

    def credentials(self) -> Credentials:
        """The server and credentials, for kopf's login handler."""
        config = self._configuration
        # As kopf's login_via_client: the client keeps a bearer token (possibly
        # refreshed from a file or an exec plugin) behind this call.
        header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
            "authorization"
        )
        parts = header.split(" ", 1) if header else []
        scheme, token = (None, None)
        if len(parts) == 1:
            token = parts[0]
        elif len(parts) == 2:
            scheme, token = parts
        return Credentials(
            server=config.host,
            ca_path=config.ssl_ca_cert,
            insecure=not config.verify_ssl,
            scheme=scheme,
            token=token,
            certificate_path=config.cert_file,
            private_key_path=config.key_file,
        )

    # -- requests -------------------------------------------------------------------------

    async def get(self, url: str) -> JSONObject | None:
        """The object at ``url``, or None when it does not exist."""
        try:
            return await self._request("GET", url)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, url: str, body: Mapping[str, object]) -> JSONObject:
        """POST ``body`` to the collection at ``url``."""
        return await self._request("POST", url, body)

    async def patch(self, url: str, patch: Mapping[str, object]) -> JSONObject:
        """A JSON merge patch (RFC 7386): objects merge, lists are replaced, null deletes."""
        return await self._request("PATCH", url, patch, content_type=MERGE_PATCH)

    async def delete(self, url: str) -> bool:
        """Delete the object at ``url`` (in the background); False when it was gone already."""
        try:
            await self._request("DELETE", url, {"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _request(
        self,
        method: str,
        url: str,
        body: Mapping[str, object] | None = None,
        *,
        content_type: str = "application/json",
    ) -> JSONObject:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._call, method, url, body, content_type)
        try:
            return await loop.run_in_executor(self._pool, call)
        except RuntimeError as exc:  # the pool is shut down: the operator is stopping
            raise TransientApiError(method, url, 0, "ShuttingDown", str(exc)) from exc

    def _call(
        self, method: str, url: str, body: Mapping[str, object] | None, content_type: str
    ) -> JSONObject:
        """One request, in a pool thread."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            serialized = self._client.param_serialize(
                method=method,
                resource_path=url,
                header_params=headers,
                body=dict(body) if body is not None else None,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(*serialized[:4], _request_timeout=self._timeout)
            data = response.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.ApiException as exc:
            # Raised without an answer (status 0): TLS failures and the like.
            raise TransientApiError(method, url, exc.status or 0, "NoAnswer", str(exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientApiError(method, url, 0, "NoAnswer", str(exc)) from exc
        decoded: object = json.loads(data) if data else {}
        result = decoded if isinstance(decoded, dict) else {}
        if 200 <= response.status < 300:
            return cast(JSONObject, result)
        reason = str(result.get("reason") or response.reason or "")
        message = str(result.get("message") or data[:200].decode(errors="replace"))
        details = result.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        field = None
        if isinstance(causes, list) and causes and isinstance(causes[0], dict):
            field = causes[0].get("field")
        error = TransientApiError if response.status in TRANSIENT_STATUSES else ApiError
        raise error(method, url, response.status, reason, message, field)
