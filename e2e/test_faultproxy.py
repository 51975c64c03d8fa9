"""The fault proxy on real sockets, in front of a real HTTPS server that wants a client certificate.

The upstream stands in for an API server where the proxy's behaviour must be
seen byte for byte: which credentials arrive, how a watch is framed, what an
upgraded connection carries. Clients are raw TLS connections (and ``kubectl``
once), so nothing smooths over what the proxy sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from e2e.faultproxy import FaultProxy, FaultProxyThread, ProxyError
from e2e.httpwire import Head, chunks, read_head
from tests.conftest import scaled

TOKEN = "upstream-secret-token"


@dataclass
class Upstream:
    """An HTTPS server: it reports each request, streams ``/watch``, upgrades ``portforward``."""

    ca: trustme.CA
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Events the open watch sends, as raw chunk payloads (None ends the response).
    watch_feed: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    #: Set when a watch or upgraded connection of the upstream sees its client go.
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers[task] = writer
        try:
            while (head := await read_head(reader)) is not None:
                method, target, _ = head.first.split(" ")
                body = await read_body(head, reader)
                peer = writer.get_extra_info("peercert") or {}
                subject = dict(rdn[0] for rdn in peer.get("subject", ()))
                self.requests.append({
                    "method": method, "target": target, "body": body,
                    "authorization": head.get("authorization"), "host": head.get("host"),
                    "client": subject.get("commonName"),
                })
                if target.startswith("/watch"):
                    await self.watch(reader, writer)
                elif target.endswith("/portforward?ports=80"):
                    await self.upgrade(reader, writer)
                    return
                else:
                    answer = json.dumps(self.requests[-1], default=bytes.hex).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.closed.set()
            writer.close()
            self.handlers.pop(task, None)

    async def watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send what the feed gives until it says stop or the client goes (as a server does)."""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        gone = asyncio.ensure_future(reader.read(1))
        try:
            while True:
                payload = asyncio.ensure_future(self.watch_feed.get())
                await asyncio.wait({payload, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    payload.cancel()
                    return
                if (data := payload.result()) is None:
                    break
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            gone.cancel()

    async def upgrade(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                     b"Upgrade: SPDY/3.1\r\n\r\n")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


async def read_body(head: Head, reader: asyncio.StreamReader) -> bytes:
    """A message's body, decoded (chunked or with a Content-Length)."""
    if head.get("transfer-encoding") == "chunked":
        return b"".join([piece async for piece in chunks(reader)])
    return await reader.readexactly(int(head.get("content-length") or 0))


def write_kubeconfig(path: Path, port: int, ca: trustme.CA, user: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": f"https://localhost:{port}",
            "certificate-authority-data": base64.b64encode(ca.cert_pem.bytes()).decode()}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns1"}}],
        "current-context": "x",
    }))
    return path


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    ca = trustme.CA()
    server = Upstream(ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_OPTIONAL  # the token test comes without a certificate
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server
        listener.close()
        for writer in list(server.handlers.values()):
            writer.transport.abort()  # each handler then ends by itself
        await asyncio.gather(*server.handlers, return_exceptions=True)


def client_certificate(ca: trustme.CA) -> dict[str, str]:
    leaf = ca.issue_cert("relay-tester", common_name="relay-tester")
    return {
        "client-certificate-data": base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode(),
        "client-key-data": base64.b64encode(leaf.private_key_pem.bytes()).decode(),
    }


@pytest.fixture
async def proxy(upstream: Upstream, tmp_path: Path) -> AsyncIterator[FaultProxy]:
    kubeconfig = write_kubeconfig(tmp_path / "kc", upstream.port, upstream.ca,
                                  client_certificate(upstream.ca))
    running = FaultProxy(kubeconfig)
    await running.start()
    try:
        yield running
    finally:
        await running.aclose()


class Client:
    """One TLS connection to the proxy, trusting the proxy's CA."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, proxy: FaultProxy) -> Client:
        context = ssl.create_default_context(cadata=proxy.ca_pem.decode())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.port, ssl=context, server_hostname="127.0.0.1")
        return cls(reader, writer)

    async def send(self, method: str, target: str, body: bytes = b"",
                   headers: tuple[tuple[str, str], ...] = ()) -> None:
        lines = [f"{method} {target} HTTP/1.1", "Host: proxy",
                 "Authorization: Bearer fault-proxy", *(f"{k}: {v}" for k, v in headers)]
        if body or (method == "POST" and not headers):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()

    async def response(self) -> tuple[Head, bytes]:
        async with asyncio.timeout(scaled(10)):
            head = await read_head(self.reader)
            assert head is not None
            return head, await read_body(head, self.reader)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def test_requests_reach_the_server_as_the_kubeconfig_user(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    client = await Client.open(proxy)
    await client.send("GET", "/echo/one?x=1")
    head, body = await client.response()
    assert head.first == "HTTP/1.1 200 OK"
    seen = json.loads(body)
    # The upstream saw the kubeconfig's client certificate, not the proxy's placeholder token.
    assert (seen["client"], seen["authorization"]) == ("relay-tester", None)
    assert seen["target"] == "/echo/one?x=1" and seen["host"] == f"localhost:{upstream.port}"
    # The same client connection carries the next request, body and all.
    await client.send("POST", "/echo/two", b"\x00\xff" * 5000)
    _, body = await client.response()
    assert upstream.requests[-1]["body"] == b"\x00\xff" * 5000
    await client.close()


async def test_a_chunked_request_body_is_forwarded(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    client = await Client.open(proxy)
    await client.send("POST", "/echo", headers=(("Transfer-Encoding", "chunked"),))
    client.writer.write(b"5\r\nhello\r\n7\r\n, there\r\n0\r\n\r\n")
    head, _ = await client.response()
    assert head.first.endswith("200 OK")
    assert upstream.requests[-1]["body"] == b"hello, there", upstream.requests
    await client.close()


async def test_a_token_user_presents_its_token(upstream: Upstream, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    kubeconfig = write_kubeconfig(tmp_path / "kc", upstream.port, upstream.ca,
                                  {"tokenFile": "token"})  # relative to the kubeconfig
    running = FaultProxy(kubeconfig)
    await running.start()
    try:
        client = await Client.open(running)
        await client.send("GET", "/echo")
        _, body = await client.response()
        assert json.loads(body)["authorization"] == f"Bearer {TOKEN}"
        await client.close()
    finally:
        await running.aclose()


async def test_failures_answer_as_the_api_server_and_wear_off(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.faults.fail("POST", r"/deployments$", status=429, times=2, retry_after=3)
    proxy.faults.fail("*", r"watch=true", status=410)
    client = await Client.open(proxy)
    for _ in range(2):
        await client.send("POST", "/apis/apps/v1/namespaces/a/deployments", b"{}")
        head, body = await client.response()
        assert head.first == "HTTP/1.1 429 Too Many Requests"
        assert head.get("retry-after") == "3"
        status = json.loads(body)
        assert (status["kind"], status["code"], status["reason"]) == (
            "Status", 429, "TooManyRequests")
    await client.send("POST", "/apis/apps/v1/namespaces/a/deployments", b"{}")
    head, _ = await client.response()
    assert head.first.endswith("200 OK")
    await client.send("GET", "/api/v1/pods?watch=true&resourceVersion=1")  # query matched
    head, body = await client.response()
    assert json.loads(body)["reason"] == "Expired"
    assert proxy.faults.fired == 3
    # Failed requests never reached the server.
    assert [r["method"] for r in upstream.requests] == ["POST"]
    await client.close()


async def test_delays_hold_requests_then_forward_them(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.faults.delay("GET", r"/slow", 0.2, times=1)
    client = await Client.open(proxy)
    await client.send("GET", "/slow")
    head, _ = await client.response()
    assert head.first.endswith("200 OK") and proxy.faults.fired == 1
    assert upstream.requests[-1]["target"] == "/slow"
    await client.close()


async def test_watch_events_stream_one_per_chunk_and_expire_with_410(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    client = await Client.open(proxy)
    await client.send("GET", "/watch/pods?watch=true")
    head = await read_head(client.reader)
    assert head is not None and head.get("transfer-encoding") == "chunked"
    events = chunks(client.reader)
    # One event split over two chunks, then two events in one: re-framed per event.
    await upstream.watch_feed.put(b'{"type":"ADDED",')
    await upstream.watch_feed.put(b'"object":{"n":1}}\n{"type":"MODIFIED","object":{}}\n')
    async with asyncio.timeout(scaled(10)):
        assert await anext(events) == b'{"type":"ADDED","object":{"n":1}}\n'
        assert await anext(events) == b'{"type":"MODIFIED","object":{}}\n'
        assert proxy.expire_watches() == 1
        error = json.loads(await anext(events))
        assert error["type"] == "ERROR"
        assert (error["object"]["code"], error["object"]["reason"]) == (410, "Expired")
        with pytest.raises(StopAsyncIteration):
            await anext(events)
        await upstream.closed.wait()  # the proxy let go of the upstream watch
    # The client's connection is still good for the next request.
    await client.send("GET", "/echo/after")
    head2, _ = await client.response()
    assert head2.first.endswith("200 OK")
    await client.close()


async def test_a_dropped_watch_is_cut_mid_stream(proxy: FaultProxy, upstream: Upstream) -> None:
    client = await Client.open(proxy)
    await client.send("GET", "/watch/pods?watch=1")
    assert await read_head(client.reader) is not None
    await upstream.watch_feed.put(b'{"type":"ADDED","object":{}}\n')
    events = chunks(client.reader)
    async with asyncio.timeout(scaled(10)):
        assert await anext(events) == b'{"type":"ADDED","object":{}}\n'
        assert proxy.drop_watches() == 1
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError, ssl.SSLError)):
            await anext(events)  # no terminating chunk: the connection just ends
        await upstream.closed.wait()
    await client.close()


async def test_upgraded_connections_pass_bytes_through_and_break_on_demand(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    client = await Client.open(proxy)
    await client.send("POST", "/api/v1/namespaces/a/pods/p/portforward?ports=80",
                      headers=(("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")))
    async with asyncio.timeout(scaled(10)):
        head = await read_head(client.reader)
        assert head is not None and head.first.startswith("HTTP/1.1 101")
        payload = bytes(range(256)) * 300  # every byte value, more than one read's worth
        client.writer.write(payload)
        assert await client.reader.readexactly(len(payload)) == payload
        assert proxy.break_upgrades(r"/exec") == 0  # another path: untouched
        assert proxy.break_portforwards() == 1
        assert await client.reader.read() == b""
        await upstream.closed.wait()
    await client.close()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_retries_through_the_proxy_thread(upstream_thread: tuple[Path, list[str]],
                                                  tmp_path: Path) -> None:
    kubeconfig, seen = upstream_thread
    with FaultProxyThread(kubeconfig, tmp_path) as faults:
        faults.fail("GET", r"/api$", status=503, times=1, retry_after=1)
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(faults.kubeconfig), "get", "--raw", "/api"],
            capture_output=True, text=True, timeout=scaled(30), check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"kind": "APIVersions", "versions": ["v1"]}
        assert faults.fired == 1
    # kubectl retried after the 503; only the retry reached the server.
    assert [line for line in seen if line.startswith("GET /api")] == ["GET /api"]


def test_the_thread_leaves_nothing_behind_with_a_client_still_connected(
    upstream_thread: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """Leaving the block ends every connection's task before the loop stops.

    An idle keep-alive client (as kubectl leaves one) is still connected then;
    a task or socket left to the garbage collector would warn, and warnings
    are errors here.
    """
    import gc  # noqa: PLC0415
    import http.client  # noqa: PLC0415

    kubeconfig, _ = upstream_thread
    with FaultProxyThread(kubeconfig, tmp_path) as faults:
        config = yaml.safe_load(faults.kubeconfig.read_text())
        ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        context = ssl.create_default_context(cadata=ca.decode())
        port = int(faults.url.rsplit(":", 1)[1])
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                 timeout=scaled(10))
        connection.request("GET", "/api")
        assert connection.getresponse().read()  # the connection stays open, idle
    connection.close()
    gc.collect()


@pytest.fixture
def upstream_thread(tmp_path: Path) -> Any:
    """A minimal API server answering ``/api`` in a thread (for the synchronous kubectl test)."""
    import http.server  # noqa: PLC0415
    import threading  # noqa: PLC0415

    ca = trustme.CA()
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            body = json.dumps({"kind": "APIVersions", "versions": ["v1"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield write_kubeconfig(tmp_path / "api-kc", server.server_address[1], ca,
                               {"token": TOKEN}), seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_closing_cuts_idle_and_streaming_connections_cleanly(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Nothing is left behind (warnings are errors: an unclosed socket would fail the test)."""
    kubeconfig = write_kubeconfig(tmp_path / "kc", upstream.port, upstream.ca,
                                  client_certificate(upstream.ca))
    running = FaultProxy(kubeconfig)
    await running.start()
    idle = await Client.open(running)
    await idle.send("GET", "/echo")  # then idle, its upstream connection kept
    await idle.response()
    watching = await Client.open(running)
    await watching.send("GET", "/watch/pods?watch=true")
    assert await read_head(watching.reader) is not None
    await running.aclose()
    async with asyncio.timeout(scaled(10)):
        assert await idle.reader.read() == b""
        await upstream.closed.wait()
    await idle.close()
    await watching.close()


def test_a_kubeconfig_with_an_exec_plugin_is_refused(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kc", 443, trustme.CA(),
                                  {"exec": {"command": "kubelogin"}})
    with pytest.raises(ProxyError, match="from a plugin; the fault proxy needs a client"):
        FaultProxy(kubeconfig)
