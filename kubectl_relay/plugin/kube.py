"""The cluster as the plugin sees it: kubeconfig loading, an async API client, target lookup.

The kubeconfig is read by the kubernetes client's loader (contexts, tokens,
client certificates, exec plugins), with kubectl's flags on top: ``--context``,
``-n``, ``--as``/``--as-group`` (impersonation headers) and
``--request-timeout``. Requests then go through one ``aiohttp`` session on the
plugin's event loop, not through the kubernetes client's synchronous
``ApiClient``: a tunnel has a listener, port-forwards, a followed log and pod
checks running at once, and each of them must stop the moment the user presses
Ctrl-C. The synchronous client blocks a thread per call, cannot be
interrupted, and its port-forward drops every header but ``Authorization``, so
``--as`` would not apply to the tunnel itself.

``Cluster.resolve`` turns a parsed ``Target`` into the ``Endpoint`` the relay
connects to: a Service's cluster IP and port (by number or name), a pod's IP
and port (a container port's name allowed), a Deployment's ready pod, or a host
name left for the cluster's DNS.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, cast
from urllib.parse import quote, urlsplit

import aiohttp
import yaml

from .errors import (
    AccessDenied,
    ApiError,
    ClusterError,
    ConfigError,
    PortNotFound,
    TargetNotFound,
)
from .targets import Kind, Target

# -- the API objects the plugin reads (only the fields it uses) ---------------------------------


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    creationTimestamp: str
    deletionTimestamp: str
    ownerReferences: list[dict[str, str]]


class ContainerPort(TypedDict, total=False):
    name: str
    containerPort: int
    protocol: str


class Container(TypedDict, total=False):
    name: str
    image: str
    ports: list[ContainerPort]


class PodSpec(TypedDict, total=False):
    containers: list[Container]
    nodeName: str


class ContainerState(TypedDict, total=False):
    waiting: dict[str, str]
    running: dict[str, str]
    terminated: dict[str, Any]


class ContainerStatus(TypedDict, total=False):
    name: str
    ready: bool
    state: ContainerState
    restartCount: int


class Condition(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str


class PodStatus(TypedDict, total=False):
    phase: str
    podIP: str
    conditions: list[Condition]
    containerStatuses: list[ContainerStatus]
    initContainerStatuses: list[ContainerStatus]
    reason: str
    message: str


class Pod(TypedDict):
    metadata: ObjectMeta
    spec: NotRequired[PodSpec]
    status: NotRequired[PodStatus]


class ServicePort(TypedDict, total=False):
    name: str
    port: int
    targetPort: int | str
    protocol: str


class ServiceSpec(TypedDict, total=False):
    clusterIP: str
    ports: list[ServicePort]
    selector: dict[str, str]


class Service(TypedDict):
    metadata: ObjectMeta
    spec: NotRequired[ServiceSpec]


class LabelSelector(TypedDict, total=False):
    matchLabels: dict[str, str]


class DeploymentSpec(TypedDict, total=False):
    selector: LabelSelector


class Deployment(TypedDict):
    metadata: ObjectMeta
    spec: NotRequired[DeploymentSpec]


class Event(TypedDict, total=False):
    type: str
    reason: str
    message: str
    count: int
    lastTimestamp: str


# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeOptions:
    """kubectl's connection flags."""

    #: ``--kubeconfig`` (default: ``$KUBECONFIG``, then ``~/.kube/config``).
    kubeconfig: str | None = None
    #: ``--context`` (default: the kubeconfig's current context).
    context: str | None = None
    #: ``-n/--namespace`` (default: the context's namespace, then ``default``).
    namespace: str | None = None
    #: ``--as``: the user to impersonate.
    as_user: str | None = None
    #: ``--as-group``: groups to impersonate.
    as_groups: tuple[str, ...] = ()
    #: ``--request-timeout`` in seconds for single requests (None: 30 s).
    request_timeout: float | None = None


#: Timeout of a single API request when ``--request-timeout`` is not given.
DEFAULT_REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Endpoint:
    """Where the relay connects: a host (IP or DNS name) and port, as the pod sees them.

    ``backend`` is the pod picked for a Deployment (checked while the tunnel
    runs); ``description`` says in words what was resolved, for progress lines.
    """

    host: str
    port: int
    description: str
    backend: str | None = None

    @property
    def address(self) -> str:
        """``host:port`` with an IPv6 host in brackets, as engine addresses write it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# -- the client --------------------------------------------------------------------------------


class Cluster:
    """An API server, reached with the credentials of a kubeconfig context.

    Use ``await Cluster.connect(options)`` and ``await cluster.aclose()``.
    """

    def __init__(
        self,
        *,
        server: str,
        namespace: str,
        user: str,
        headers: Mapping[str, str],
        ssl_context: ssl.SSLContext | bool,
        configuration: Any,
        request_timeout: float,
        proxy: str | None = None,
        groups: Sequence[str] = (),
    ) -> None:
        self.server = server.rstrip("/")
        self.namespace = namespace
        #: Who the requests act as (``--as``, else the context's user), for labels.
        self.user = user
        self._headers = dict(headers)
        self._ssl = ssl_context
        self._configuration = configuration
        self.request_timeout = request_timeout
        self._proxy = proxy
        self._groups = tuple(groups)
        self._session: aiohttp.ClientSession | None = None
        #: Why port-forwards go over the WebSocket: the SPDY upgrade was refused ("" if not).
        self.spdy_refused = ""

    @classmethod
    def from_options(cls, options: KubeOptions) -> Cluster:
        """Read the kubeconfig; raise ``ConfigError`` when it cannot be used."""
        from kubernetes import client, config  # noqa: PLC0415 - slow import, only when needed

        path = kubeconfig_path(options.kubeconfig)
        configuration = client.Configuration()
        try:
            contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=path
            )
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path,
                context=options.context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (config.ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as exc:
            fix = "check --kubeconfig and --context (kubectl config get-contexts)"
            reason = " ".join(str(exc).split()).rstrip(". ")  # YAML errors span lines
            raise ConfigError(f"cannot use the kubeconfig {path}: {reason}", fix) from None
        chosen = current
        if options.context is not None:
            chosen = next((c for c in contexts if c.get("name") == options.context), current)
        context = (chosen or {}).get("context") or {}
        namespace = options.namespace or context.get("namespace") or "default"
        user = options.as_user or str(context.get("user") or "unknown")
        headers: dict[str, str] = {}
        if options.as_user:
            headers["Impersonate-User"] = options.as_user
        timeout = options.request_timeout or DEFAULT_REQUEST_TIMEOUT
        return cls(
            server=configuration.host,
            namespace=namespace,
            user=user,
            headers=headers,
            ssl_context=_ssl_context(configuration),
            configuration=configuration,
            request_timeout=timeout,
            proxy=configuration.proxy or None,
            groups=options.as_groups,
        )

    # -- HTTP ---------------------------------------------------------------------------------

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.request_timeout),
            )
        return self._session

    def headers(self) -> dict[str, str]:
        """The request headers: credentials (refreshed if the kubeconfig says so) and ``--as``."""
        headers = dict(self._headers)
        # The loader files a bearer token as "BearerToken" (recent clients) or
        # "authorization" (older ones); an exec plugin's hook refreshes it.
        token = self._configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or self._configuration.get_api_key_with_prefix("authorization")
        if token:
            headers["Authorization"] = token
        elif self._configuration.username and self._configuration.password:
            headers["Authorization"] = aiohttp.BasicAuth(
                self._configuration.username, self._configuration.password
            ).encode()
        return headers

    def _header_items(self) -> list[tuple[str, str]]:
        items = list(self.headers().items())
        items.extend(("Impersonate-Group", group) for group in self._groups)
        return items

    def url(self, path: str) -> str:
        """The URL of an API path."""
        return self.server + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One API request; the decoded JSON answer, or ``ApiError``/``ClusterError``."""
        session = self._session_now()
        data = None if body is None else json.dumps(body)
        headers = self._header_items()
        if data is not None:
            headers.append(("Content-Type", content_type))
        try:
            async with asyncio.timeout(self.request_timeout):
                async with session.request(
                    method,
                    self.url(path),
                    params=params,
                    data=data,
                    headers=headers,
                    proxy=self._proxy,
                ) as response:
                    text = await response.text()
                    if response.status >= 400:
                        raise api_error(response.status, text, self.namespace)
        except TimeoutError:
            raise ClusterError(
                f"the API server at {self.server} did not answer {method} {path} "
                f"within {self.request_timeout:g}s",
                "check the cluster's health, or raise --request-timeout",
            ) from None
        except aiohttp.ClientError as exc:
            raise unreachable(self.server, exc) from None
        return cast(dict[str, Any], json.loads(text)) if text else {}

    async def follow_log(
        self, namespace: str, pod: str, container: str, *, follow: bool = True
    ) -> AsyncIterator[bytes]:
        """The container's output as it comes (``pods/log?follow=true``), until it ends.

        ``follow=False``: what the container wrote so far (an ended container's whole log).
        """
        session = self._session_now()
        path = f"/api/v1/namespaces/{namespace}/pods/{quote(pod)}/log"
        params = {"container": container, "follow": "true" if follow else "false"}
        try:
            async with session.get(
                self.url(path), params=params, headers=self._header_items(), proxy=self._proxy
            ) as response:
                if response.status >= 400:
                    raise api_error(response.status, await response.text(), namespace)
                async for chunk in response.content.iter_any():
                    yield chunk
        except aiohttp.ClientError as exc:
            raise unreachable(self.server, exc) from None

    async def websocket(
        self, path: str, params: Mapping[str, str], protocols: Sequence[str]
    ) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket to an API path (``pods/portforward``); ``ApiError`` if refused."""
        session = self._session_now()
        try:
            async with asyncio.timeout(self.request_timeout):
                return await session.ws_connect(
                    self.url(path),
                    params=params,
                    headers=self._header_items(),
                    protocols=tuple(protocols),
                    proxy=self._proxy,
                    autoping=True,
                    heartbeat=None,
                    max_msg_size=0,
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise api_error(exc.status, exc.message, self.namespace) from None
        except TimeoutError:
            raise self._not_opened(path) from None
        except aiohttp.ClientError as exc:
            raise unreachable(self.server, exc) from None

    def _not_opened(self, path: str) -> ClusterError:
        return ClusterError(
            f"the API server at {self.server} did not open {path} within "
            f"{self.request_timeout:g}s",
            "check the cluster's health, or raise --request-timeout",
        )

    async def upgrade(
        self, path: str, upgrade: str, protocol: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection switched to ``upgrade`` by ``POST path`` (``pods/portforward`` over SPDY).

        aiohttp upgrades only to WebSockets, so this request is written by hand,
        with the session's TLS settings and headers. ``ApiError`` when the API
        server answers anything but ``101`` naming ``protocol``, ``ClusterError``
        when it cannot be reached. Not through a proxy (``proxy_uses_websocket``).
        """
        url = urlsplit(self.server)
        port = url.port or (443 if url.scheme == "https" else 80)
        request = "".join([
            f"POST {url.path.rstrip('/')}{path} HTTP/1.1\r\nHost: {url.netloc}\r\n",
            *(f"{name}: {value}\r\n" for name, value in self._header_items()),
            f"X-Stream-Protocol-Version: {protocol}\r\nConnection: Upgrade\r\n",
            f"Upgrade: {upgrade}\r\nContent-Length: 0\r\n\r\n",
        ])
        writer: asyncio.StreamWriter | None = None
        try:
            try:
                async with asyncio.timeout(self.request_timeout):
                    reader, writer = await asyncio.open_connection(
                        url.hostname, port, ssl=self._ssl or None
                    )
                    writer.write(request.encode())
                    status, headers = await _response_head(reader)
                    length = 0 if status == 101 else int(headers.get("content-length") or 0)
                    body = await reader.readexactly(min(length, 1 << 16)) if length else b""
            except TimeoutError:
                raise self._not_opened(path) from None
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                raise unreachable(self.server, exc) from None
            if status != 101:
                raise api_error(status, body.decode(errors="replace"), self.namespace)
            if headers.get("x-stream-protocol-version") != protocol:
                raise ApiError(101, "", f"the API server switched {path} to protocol "
                               f"{headers.get('x-stream-protocol-version')!r}, not {protocol}")
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        return reader, writer

    @property
    def proxy_uses_websocket(self) -> bool:
        """Whether a proxy stands before the API server: only aiohttp's WebSockets go through it."""
        return self._proxy is not None

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- objects ------------------------------------------------------------------------------

    async def get(self, path: str) -> dict[str, Any] | None:
        """An object, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        """A pod, or None."""
        return cast(Pod | None, await self.get(pod_path(namespace, name)))

    async def list_items(
        self, path: str, *, labels: str | None = None, fields: str | None = None
    ) -> list[dict[str, Any]]:
        """The items of a list request with selectors."""
        params = {}
        if labels:
            params["labelSelector"] = labels
        if fields:
            params["fieldSelector"] = fields
        answer = await self.request("GET", path, params=params)
        return list(answer.get("items") or [])

    async def delete(self, path: str, *, propagation: str | None = None) -> bool:
        """Delete an object; False when it was already gone."""
        body = None if propagation is None else {"propagationPolicy": propagation}
        try:
            await self.request("DELETE", path, body=body)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def merge_patch(self, path: str, patch: Mapping[str, object]) -> dict[str, Any]:
        """Change an object with a JSON merge patch; ``ApiError`` (404 too) when refused."""
        return await self.request(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def pod_events(self, namespace: str, name: str) -> list[Event]:
        """The events about a pod, oldest first."""
        items = await self.list_items(
            f"/api/v1/namespaces/{namespace}/events",
            fields=f"involvedObject.kind=Pod,involvedObject.name={name}",
        )
        events = [cast(Event, item) for item in items]
        return sorted(events, key=lambda e: e.get("lastTimestamp") or "")

    # -- targets ------------------------------------------------------------------------------

    async def resolve(self, target: Target, namespace: str, *, by_name: bool = False) -> Endpoint:
        """Where the relay pod must connect for ``target``; ``TargetNotFound``/``PortNotFound``.

        ``by_name``: reach a Service by its DNS name (``NAME.NAMESPACE.svc``)
        rather than its cluster IP, so that a TLS certificate for that name
        verifies.
        """
        if target.kind is Kind.HOST:
            return Endpoint(target.name, int(target.port), f"{target} (resolved in the cluster)")
        if target.kind is Kind.SERVICE:
            return await self._resolve_service(target, namespace, by_name)
        if target.kind is Kind.POD:
            pod = await self.get_pod(namespace, target.name)
            if pod is None:
                raise _not_found(target, "pod", namespace, "kubectl get pods")
            return _pod_endpoint(target, pod, namespace)
        return await self._resolve_deployment(target, namespace)

    async def _resolve_service(self, target: Target, namespace: str, by_name: bool) -> Endpoint:
        found = await self.get(f"/api/v1/namespaces/{namespace}/services/{quote(target.name)}")
        if found is None:
            raise _not_found(target, "service", namespace, "kubectl get services")
        service = cast(Service, found)
        spec = service.get("spec") or {}
        ports = spec.get("ports") or []
        match = next((p for p in ports if target.port in (p.get("name"), p.get("port"))), None)
        if match is None:
            known = ", ".join(_port_text(p.get("name"), p.get("port")) for p in ports) or "none"
            raise PortNotFound(
                f'service "{target.name}" in namespace "{namespace}" has no port {target.port}',
                f"use one of its ports: {known}",
            )
        port = int(match.get("port") or 0)
        cluster_ip = spec.get("clusterIP") or ""
        if cluster_ip and cluster_ip != "None" and not by_name:
            host = cluster_ip
        else:  # headless: the cluster's DNS answers with the pods
            host = f"{target.name}.{namespace}.svc"
        return Endpoint(host, port, f"service {namespace}/{target.name} ({host}:{port})")

    async def _resolve_deployment(self, target: Target, namespace: str) -> Endpoint:
        found = await self.get(
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{quote(target.name)}"
        )
        if found is None:
            raise _not_found(target, "deployment", namespace, "kubectl get deployments")
        deployment = cast(Deployment, found)
        selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        labels = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
        items = await self.list_items(f"/api/v1/namespaces/{namespace}/pods", labels=labels)
        pods = sorted(
            (cast(Pod, item) for item in items if pod_ready(cast(Pod, item))),
            key=lambda p: p["metadata"].get("creationTimestamp") or "",
            reverse=True,
        )
        if not pods:
            raise TargetNotFound(
                f'deployment "{target.name}" in namespace "{namespace}" has no ready pod',
                f"check kubectl rollout status deployment/{target.name} -n {namespace}",
            )
        # The newest ready pod: during a rollout that is a pod of the new version.
        endpoint = _pod_endpoint(target, pods[0], namespace)
        name = pods[0]["metadata"].get("name", "")
        return Endpoint(
            endpoint.host,
            endpoint.port,
            f"deployment {namespace}/{target.name}, pod {name} ({endpoint.address})",
            backend=name,
        )


# -- helpers -------------------------------------------------------------------------------------


def kubeconfig_path(explicit: str | None) -> str:
    """The kubeconfig kubectl would read: ``--kubeconfig``, ``$KUBECONFIG``'s first, or
    ``~/.kube/config``."""
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return explicit or first or os.path.expanduser("~/.kube/config")


def pod_path(namespace: str, name: str) -> str:
    """The API path of a pod."""
    return f"/api/v1/namespaces/{namespace}/pods/{quote(name)}"


def job_path(namespace: str, name: str) -> str:
    """The API path of a Job."""
    return f"/apis/batch/v1/namespaces/{namespace}/jobs/{quote(name)}"


def pod_ready(pod: Pod) -> bool:
    """Whether the pod is Running with its Ready condition true (and not being deleted)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


#: What a user of ``kubectl relay`` needs in the relay pods' namespace.
RIGHTS_NEEDED = (
    "ask for rights to create, patch and delete jobs, to create "
    "pods/portforward, to read pods and pods/log and to delete pods"
)


def api_error(status: int, text: str, namespace: str) -> ApiError:
    """The error for a failed request, from its ``Status`` body when there is one."""
    reason, message = "", text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or message)
    if status == 403:
        return AccessDenied(
            status,
            reason,
            message,
            f'{RIGHTS_NEEDED} in namespace "{namespace}", or pick another namespace with -n',
        )
    if status == 401:
        return ApiError(
            status, reason, message or "Unauthorized", "log in again or check the kubeconfig's user"
        )
    return ApiError(status, reason, message, "")


async def _response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """An HTTP response's status and headers (names in lower case); ``ValueError`` if malformed."""
    parts = (await reader.readline()).split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ValueError(f"not an HTTP response: {b' '.join(parts)[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def unreachable(server: str, exc: BaseException) -> ClusterError:
    """The error for an API server that cannot be reached."""
    return ClusterError(
        f"cannot reach the API server at {server}: {exc}",
        "check --kubeconfig, --context and the network",
    )


def _ssl_context(configuration: Any) -> ssl.SSLContext | bool:
    """An SSL context from the kubeconfig's CA, client certificate and verification setting."""
    if not str(configuration.host).startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


def _not_found(target: Target, what: str, namespace: str, command: str) -> TargetNotFound:
    return TargetNotFound(
        f'{what} "{target.name}" not found in namespace "{namespace}"',
        f"check the name ({command} -n {namespace}) or pick the namespace with -n",
    )


def _port_text(name: str | None, number: int | None) -> str:
    return f"{number} ({name})" if name else str(number)


def _pod_endpoint(target: Target, pod: Pod, namespace: str) -> Endpoint:
    name = pod["metadata"].get("name", target.name)
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise TargetNotFound(
            f'pod "{name}" in namespace "{namespace}" has no IP yet',
            f"wait until it runs (kubectl get pod {name} -n {namespace})",
        )
    if isinstance(target.port, int):
        port = target.port
    else:
        ports = [
            p for c in (pod.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []
        ]
        match = next((p for p in ports if p.get("name") == target.port), None)
        if match is None:
            known = ", ".join(_port_text(p.get("name"), p.get("containerPort")) for p in ports)
            raise PortNotFound(
                f'pod "{name}" in namespace "{namespace}" has no container port named '
                f'"{target.port}"',
                f"use a port number or one of its named ports: {known or 'none'}",
            )
        port = int(match.get("containerPort") or 0)
    return Endpoint(ip, port, f"pod {namespace}/{name} ({ip}:{port})", backend=name)
