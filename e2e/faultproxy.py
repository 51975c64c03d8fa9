"""A fault-injecting HTTPS proxy in front of a real Kubernetes API server.

The e2e tests break the API server on purpose (failed requests, 429s with
``Retry-After``, latency, dropped and expired watches, broken port-forwards)
to check that the operator and ``kubectl relay`` recover. A real API server
cannot be told to misbehave, so this proxy stands in front of it::

    kubectl / kopf / kubectl relay  --HTTPS-->  FaultProxy  --HTTPS-->  API server
                                    (its own cert)          (the user's credentials)

- It terminates TLS with a certificate made for it, and writes a kubeconfig
  (``write_kubeconfig``) that trusts that certificate and points at it.
- It forwards every request to the API server of the kubeconfig it fronts,
  presenting that kubeconfig's credentials (client certificate, bearer
  token or token file) and verifying the server with its CA.
- Responses stream as they come: a watch is one long chunked response. JSON
  watch streams are re-framed one event per chunk, so that a fault lands
  between two events, never inside one.
- ``101 Switching Protocols`` (port-forward and exec, SPDY or WebSocket):
  after the upgrade, bytes pass through untouched in both directions.

Faults (``FaultRules``) match a request by method (``"*"``: any) and a
regular expression searched in its path and in its path with the query
string, oldest rule first, each ``times`` times (``None``: forever). Open
streams are broken on demand: ``drop_watches`` (connection cut mid-stream),
``expire_watches`` (an ``ERROR`` event with a 410 ``Status``, then the end of
the stream: what a real server sends when the watched version is too old),
``break_portforwards`` (upgraded port-forward connections closed).

``FaultProxyThread`` runs the proxy on its own event loop in a background
thread, for synchronous tests; every control there is a plain method call.

Only HTTP/1.1 is spoken (ALPN offers nothing else): every Kubernetes client
falls back to it, and it keeps one request per connection at a time, which
is what makes faults per request simple.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from e2e.httpwire import (
    LAST_CHUNK,
    MAX_HEAD,
    PIECE,
    Discard,
    FramingError,
    Head,
    body_kind,
    chunk,
    chunks,
    copy_body,
    read_head,
)

T = TypeVar("T")

#: Longest watch event buffered while waiting for its newline.
MAX_EVENT = 16 * 1024 * 1024
#: Most client connections served at once; more wait for a free slot.
MAX_CONNECTIONS = 256
#: How long an idle client connection (between requests) is kept.
IDLE_TIMEOUT = 120.0
#: Bound on connecting to the API server and reading a response head.
UPSTREAM_TIMEOUT = 60.0
#: How long ``aclose`` lets cut connections finish before cancelling them.
CLOSE_TIMEOUT = 10.0
#: The token the proxy's kubeconfig carries. The proxy removes it (it presents
#: the fronted kubeconfig's credentials instead); it is there so that clients
#: send no other credentials and never prompt for any.
PROXY_TOKEN = "fault-proxy"

#: The reason the real server gives with each status code (for Status bodies).
REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}
PHRASES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 422: "Unprocessable Entity",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


class ProxyError(Exception):
    """The fronted kubeconfig cannot be used."""


def status_body(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    """A ``kind: Status`` failure, as the API server sends it."""
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason or REASONS.get(code, "InternalError"), "code": code,
    }


# -- the fronted kubeconfig -------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """The API server a kubeconfig names, and how to connect to it as its user."""

    host: str
    port: int
    #: The TLS context: the server's CA (or no verification) and the client certificate;
    #: None for a plain ``http://`` server (a local test server).
    context: ssl.SSLContext | None
    #: The name checked in the server's certificate (``tls-server-name`` or the host).
    server_name: str
    #: A bearer token to present, when the user has one.
    token: str | None
    #: The namespace of the kubeconfig's current context.
    namespace: str

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str], scratch: Path) -> Upstream:
        """Read the current context of ``path``; ``scratch`` receives key files for ``ssl``."""
        path = Path(path)
        config = yaml.safe_load(path.read_text()) or {}
        base = path.parent

        def named(kind: str, name: str) -> dict[str, Any]:
            for item in config.get(f"{kind}s") or []:
                if item.get("name") == name:
                    value: dict[str, Any] = item.get(kind) or {}
                    return value
            raise ProxyError(f"{path}: no {kind} named {name!r}")

        current = config.get("current-context")
        if not current:
            raise ProxyError(f"{path}: no current-context")
        context = named("context", current)
        cluster = named("cluster", context.get("cluster", ""))
        user = named("user", context.get("user", ""))
        if "exec" in user or "auth-provider" in user:
            raise ProxyError(
                f"{path}: user {context.get('user')!r} gets its credentials from a plugin; "
                "the fault proxy needs a client certificate, a token or a tokenFile"
            )

        def data(entry: dict[str, Any], key: str) -> bytes | None:
            if entry.get(f"{key}-data"):
                return base64.b64decode(entry[f"{key}-data"])
            if entry.get(key):
                return (base / str(entry[key])).read_bytes()
            return None

        url = urlsplit(cluster.get("server", ""))
        if url.scheme not in ("https", "http") or not url.hostname:
            raise ProxyError(f"{path}: server {cluster.get('server')!r} is not an https:// URL")
        tls: ssl.SSLContext | None = ssl.create_default_context()
        assert tls is not None
        tls.set_alpn_protocols(["http/1.1"])
        if cluster.get("insecure-skip-tls-verify"):
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        elif (ca := data(cluster, "certificate-authority")) is not None:
            tls.load_verify_locations(cadata=ca.decode())
        certificate, key = data(user, "client-certificate"), data(user, "client-key")
        if certificate and key:
            pair = scratch / "client.pem"
            fd = os.open(pair, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(certificate.rstrip(b"\n") + b"\n" + key)
            tls.load_cert_chain(pair)
        if url.scheme == "http":
            tls = None
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = (base / user["tokenFile"]).read_text().strip()
        return cls(
            host=url.hostname,
            port=url.port or (443 if tls else 80),
            context=tls,
            server_name=cluster.get("tls-server-name") or url.hostname,
            token=token or None,
            namespace=context.get("namespace") or "default",
        )


# -- fault rules --------------------------------------------------------------------------------


@dataclass
class Rule:
    """One fault: fail or delay the requests it matches, ``times`` times (None: forever)."""

    method: str
    pattern: re.Pattern[str]
    times: int | None
    status: int = 0
    message: str = ""
    reason: str = ""
    delay: float = 0.0
    retry_after: int | None = None

    def matches(self, method: str, path: str, path_qs: str) -> bool:
        return self.method in ("*", method.upper()) and (
            self.pattern.search(path) is not None or self.pattern.search(path_qs) is not None
        )


@dataclass
class FaultRules:
    """The pending faults; rules are consulted oldest first."""

    rules: list[Rule] = field(default_factory=list)
    #: How many requests rules have failed or delayed so far.
    fired: int = 0

    def fail(
        self, method: str, path_regex: str, *, status: int = 500, times: int | None = 1,
        reason: str | None = None, message: str | None = None, retry_after: int | None = None,
    ) -> None:
        """Answer matching requests with ``status`` and a ``kind: Status`` body."""
        self.rules.append(Rule(
            method.upper(), re.compile(path_regex), times, status=status,
            message=message or f"injected fault: {status}",
            reason=reason or REASONS.get(status, "InternalError"), retry_after=retry_after,
        ))

    def delay(
        self, method: str, path_regex: str, seconds: float, *, times: int | None = 1
    ) -> None:
        """Hold matching requests ``seconds`` before forwarding them."""
        self.rules.append(Rule(method.upper(), re.compile(path_regex), times, delay=seconds))

    def latency(self, seconds: float) -> None:
        """Delay every request by ``seconds`` until ``clear``."""
        self.delay("*", "", seconds, times=None)

    def clear(self) -> None:
        """Remove every pending rule."""
        self.rules.clear()

    async def apply(self, method: str, path: str, path_qs: str) -> Rule | None:
        """Sleep for the matching delays; the failure rule that matches, if any."""
        for rule in list(self.rules):
            if not rule.matches(method, path, path_qs):
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self.rules.remove(rule)
            self.fired += 1
            if rule.delay:
                await asyncio.sleep(rule.delay)
                continue
            return rule
        return None


# -- open streams the faults break --------------------------------------------------------------


@dataclass(eq=False)
class OpenStream:
    """An open watch response or upgraded connection: its path and both connections."""

    path: str
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    json_events: bool = False
    #: Set once the proxy ended the stream on purpose (the copy loop then stops quietly).
    ended: bool = False

    def cut(self) -> None:
        """Close both connections at once, mid-stream."""
        self.ended = True
        self.client.transport.abort()
        self.upstream.transport.abort()

    def expire(self) -> None:
        """End a watch as a real server does for a too-old version: ERROR 410, then the end."""
        if self.ended:
            return
        self.ended = True
        if self.json_events:
            status = status_body(410, "too old resource version (injected by the fault proxy)")
            event = json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"
            self.client.write(chunk(event))
        self.client.write(LAST_CHUNK)
        self.upstream.transport.abort()


# -- the proxy ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Link:
    """One client connection and the API server connection it uses (opened on demand)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    def drop_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream[1].transport.abort()
            self.upstream = None


def _is_watch(target: str) -> bool:
    path, _, query = target.partition("?")
    return "/watch/" in path or re.search(r"(^|&)watch=(true|1)(&|$)", query) is not None


class FaultProxy:
    """The proxy: ``await start()``, then ``url``; ``aclose()`` ends it and every connection."""

    def __init__(self, kubeconfig: str | os.PathLike[str], *, host: str = "127.0.0.1") -> None:
        import trustme  # noqa: PLC0415 - a test dependency: only the e2e suite uses the proxy

        self.kubeconfig = Path(kubeconfig)
        self.host = host
        self.faults = FaultRules()
        self._scratch = tempfile.TemporaryDirectory(prefix="relay-fault-proxy-")
        try:
            self.upstream = Upstream.from_kubeconfig(kubeconfig, Path(self._scratch.name))
        except BaseException:
            self._scratch.cleanup()
            raise
        self._ca = trustme.CA()
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_tls.set_alpn_protocols(["http/1.1"])
        self._ca.issue_cert(host, "localhost").configure_cert(self._server_tls)
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        #: The client connections being served, each with its serving task.
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        self._streams: set[OpenStream] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        """The CA that signed the proxy's certificate."""
        pem: bytes = self._ca.cert_pem.bytes()
        return pem

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, 0, ssl=self._server_tls, limit=MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening, cut every connection, and wait (bounded) until each is served out."""
        if self._server is not None:
            self._server.close()
        for stream in list(self._streams):
            stream.cut()
        for writer in list(self._connections):
            writer.transport.abort()
        tasks = set(self._connections.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # aborted transports close their sockets on the next iteration
        self._scratch.cleanup()

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str | None = None) -> Path:
        """A kubeconfig for the proxy: its CA, its address, the fronted context's namespace."""
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fault-proxy", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca_pem).decode()}}],
            "users": [{"name": "fault-proxy", "user": {"token": PROXY_TOKEN}}],
            "contexts": [{"name": "fault-proxy", "context": {
                "cluster": "fault-proxy", "user": "fault-proxy",
                "namespace": namespace or self.upstream.namespace}}],
            "current-context": "fault-proxy",
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(config, out, sort_keys=False)
        return Path(path)

    # -- breaking open streams

    def _matching(self, path_regex: str) -> list[OpenStream]:
        pattern = re.compile(path_regex)
        return [s for s in self._streams if pattern.search(s.path)]

    def drop_watches(self) -> int:
        """Cut every open watch mid-stream; how many."""
        watches = [s for s in self._streams if _is_watch(s.path)]
        for stream in watches:
            stream.cut()
        return len(watches)

    def expire_watches(self) -> int:
        """End every open watch with a 410 ``ERROR`` event; how many."""
        watches = [s for s in self._streams if _is_watch(s.path)]
        for stream in watches:
            stream.expire()
        return len(watches)

    def break_upgrades(self, path_regex: str = "") -> int:
        """Close every upgraded connection whose path matches; how many."""
        upgraded = [s for s in self._matching(path_regex) if not _is_watch(s.path)]
        for stream in upgraded:
            stream.cut()
        return len(upgraded)

    def break_portforwards(self) -> int:
        """Close every open port-forward connection (SPDY or WebSocket); how many."""
        return self.break_upgrades(r"/portforward(\?|$)")

    # -- serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        link = Link(reader, writer)
        try:
            async with self._slots:
                while True:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        request = await read_head(reader)
                    if request is None or not await self._exchange(request, link):
                        return
        except (FramingError, ConnectionError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ssl.SSLError):
            pass  # that client's connection ends; the others go on
        finally:
            self._connections.pop(writer, None)
            writer.transport.abort()
            link.drop_upstream()

    async def _connect(self, link: Link) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The link's upstream connection, opened if it has none."""
        if link.upstream is None:
            up = self.upstream
            async with asyncio.timeout(UPSTREAM_TIMEOUT):
                link.upstream = await asyncio.open_connection(
                    up.host, up.port, ssl=up.context,
                    server_hostname=up.server_name if up.context else None, limit=MAX_HEAD,
                )
        return link.upstream

    async def _answer(self, writer: asyncio.StreamWriter, code: int, message: str, *,
                      reason: str | None = None, retry_after: int | None = None) -> None:
        body = json.dumps(status_body(code, message, reason)).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        head = Head(f"HTTP/1.1 {code} {PHRASES.get(code, 'Error')}", headers)
        writer.write(head.encode() + body)
        await writer.drain()

    async def _exchange(self, request: Head, link: Link) -> bool:
        """One request and its response; whether the client's connection goes on."""
        reader, writer = link.reader, link.writer
        parts = request.first.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise FramingError(f"a bad request line: {request.first[:80]!r}")
        method, target, _ = parts
        path = target.partition("?")[0]
        upgrade = "upgrade" in request.tokens("connection")
        rule = await self.faults.apply(method, path, target)
        if rule is not None:
            if not upgrade:
                kind = body_kind(request)
                if kind == "close":
                    kind = 0  # a request without Content-Length or chunking has no body
                await copy_body(kind, reader, Discard())
            await self._answer(writer, rule.status, rule.message, reason=rule.reason,
                               retry_after=rule.retry_after)
            return not upgrade

        kind = body_kind(request)
        # A chunked body is re-chunked: a Content-Length next to it would be wrong (RFC 9112 6.3).
        headers = request.without("authorization", "host", "proxy-authorization",
                                  "proxy-connection", *(["content-length"] * (kind == "chunked")))
        headers.insert(0, ("Host", f"{self.upstream.server_name}:{self.upstream.port}"))
        if self.upstream.token:
            headers.append(("Authorization", f"Bearer {self.upstream.token}"))
        up_reader, up_writer = await self._connect(link)
        up_writer.write(Head(request.first, headers).encode())
        if not upgrade:
            await copy_body(0 if kind == "close" else kind, reader, up_writer)

        async with asyncio.timeout(UPSTREAM_TIMEOUT):
            response = await read_head(up_reader)
            while response is not None and response.first.split(" ")[1:2] == ["100"]:
                writer.write(response.encode())
                response = await read_head(up_reader)
        if response is None:
            raise FramingError(f"the API server closed the connection without answering {path}")
        code = int(response.first.split(" ")[1])
        writer.write(response.encode())
        await writer.drain()

        if code == 101:
            await self._pipe(OpenStream(target, writer, up_writer), reader, up_reader)
            return False
        no_body = method == "HEAD" or code in (204, 304) or 100 <= code < 200
        out_kind = 0 if no_body else body_kind(response)
        if _is_watch(target) and out_kind == "chunked":
            json_events = (response.get("content-type") or "").startswith("application/json")
            stream = OpenStream(target, writer, up_writer, json_events=json_events)
            self._streams.add(stream)
            try:
                await self._stream_watch(stream, up_reader)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                if not stream.ended:
                    raise
            finally:
                self._streams.discard(stream)
            if stream.ended:  # expired: the client's connection is still good
                await writer.drain()
                link.drop_upstream()
                return "close" not in request.tokens("connection")
        else:
            await copy_body(out_kind, up_reader, writer)
        if "close" in response.tokens("connection"):
            link.drop_upstream()
        return out_kind != "close" and "close" not in request.tokens("connection")

    async def _stream_watch(self, stream: OpenStream, up_reader: asyncio.StreamReader) -> None:
        """Copy a chunked watch response; JSON events one per chunk."""
        writer = stream.client
        pending = b""
        async for piece in chunks(up_reader):
            if stream.ended:
                return
            if not stream.json_events:
                writer.write(chunk(piece))
            else:
                pending += piece
                if len(pending) > MAX_EVENT:
                    raise FramingError(f"a watch event longer than {MAX_EVENT} bytes")
                while (end := pending.find(b"\n")) >= 0:
                    writer.write(chunk(pending[: end + 1]))
                    pending = pending[end + 1:]
            await writer.drain()
        if stream.ended:
            return
        if pending:
            writer.write(chunk(pending))
        writer.write(LAST_CHUNK)
        await writer.drain()

    async def _pipe(self, stream: OpenStream, reader: asyncio.StreamReader,
                    up_reader: asyncio.StreamReader) -> None:
        """Pass an upgraded connection's bytes both ways until one side ends."""
        self._streams.add(stream)

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while piece := await source.read(PIECE):
                    sink.write(piece)
                    await sink.drain()
                if sink.can_write_eof():
                    sink.write_eof()
            except (ConnectionError, ssl.SSLError, OSError):
                pass

        try:
            await asyncio.gather(copy(reader, stream.upstream), copy(up_reader, stream.client))
        finally:
            self._streams.discard(stream)
            stream.upstream.transport.abort()


# -- in a thread, for synchronous tests ---------------------------------------------------------


class FaultProxyThread:
    """A ``FaultProxy`` on its own event loop in a background thread.

    ``with FaultProxyThread(kubeconfig, workdir) as faults:`` starts it and
    writes ``faults.kubeconfig`` (pointing at the proxy); the fault controls
    are plain methods, run on the proxy's loop.
    """

    def __init__(self, kubeconfig: str | os.PathLike[str], workdir: str | os.PathLike[str],
                 *, namespace: str | None = None) -> None:
        self._fronted = Path(kubeconfig)
        self.kubeconfig = Path(workdir) / "fault-proxy.kubeconfig"
        self._namespace = namespace
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self.proxy: FaultProxy | None = None

    def __enter__(self) -> FaultProxyThread:
        self._thread.start()
        try:
            self.proxy = self._run(self._start())
        except BaseException:
            self._stop_loop()
            raise
        self.proxy.write_kubeconfig(self.kubeconfig, self._namespace)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proxy is not None:
            self._run(self.proxy.aclose())
        self._stop_loop()

    async def _start(self) -> FaultProxy:
        proxy = FaultProxy(self._fronted)
        await proxy.start()
        return proxy

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def _call(self, function: Callable[[], T]) -> T:
        async def call() -> T:
            return function()

        return self._run(call())

    @property
    def _proxy(self) -> FaultProxy:
        assert self.proxy is not None, "the fault proxy is not started"
        return self.proxy

    @property
    def url(self) -> str:
        return self._proxy.url

    @property
    def fired(self) -> int:
        """How many requests the rules have failed or delayed so far."""
        return self._call(lambda: self._proxy.faults.fired)

    def fail(self, method: str, path_regex: str, **options: Any) -> None:
        """See ``FaultRules.fail``."""
        self._call(lambda: self._proxy.faults.fail(method, path_regex, **options))

    def delay(self, method: str, path_regex: str, seconds: float,
              *, times: int | None = 1) -> None:
        """See ``FaultRules.delay``."""
        self._call(lambda: self._proxy.faults.delay(method, path_regex, seconds, times=times))

    def latency(self, seconds: float) -> None:
        """See ``FaultRules.latency``."""
        self._call(lambda: self._proxy.faults.latency(seconds))

    def clear(self) -> None:
        """Remove every pending rule."""
        self._call(self._proxy.faults.clear)

    def drop_watches(self) -> int:
        """See ``FaultProxy.drop_watches``."""
        return self._call(self._proxy.drop_watches)

    def expire_watches(self) -> int:
        """See ``FaultProxy.expire_watches``."""
        return self._call(self._proxy.expire_watches)

    def break_portforwards(self) -> int:
        """See ``FaultProxy.break_portforwards``."""
        return self._call(self._proxy.break_portforwards)

    def break_upgrades(self, path_regex: str = "") -> int:
        """See ``FaultProxy.break_upgrades``."""
        return self._call(lambda: self._proxy.break_upgrades(path_regex))

