"""``kubectl relay expose`` without a cluster: the command line, the objects, the mux client.

The mux client runs against a real relay-side ``MuxConnection`` over a real
socket pair and a real local server; the name clash against a small HTTP
server that answers like the API server does for one Service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubectl_relay.engine.muxing import MuxConnection, StreamsCarrier
from kubectl_relay.plugin import relaypod
from kubectl_relay.plugin.events import ConnectionClosed, ConnectionOpened, SessionEvent
from kubectl_relay.plugin.exposing import (
    MUX_PORT,
    SERVICE_TARGET_PORT,
    ExposeSpec,
    LocalConnector,
    exposed_service,
    relay_args,
    tunnel_spec,
)
from kubectl_relay.plugin.relaypod import ClientInfo, PodSettings
from tests.conftest import scaled
from tests.operator.podsecurity import hardening_violations, restricted_violations
from tests.plugin.test_cli import kubeconfig, run  # noqa: F401 - the fixture is used by name
from tests.support import ThreadedServer, echo, free_port, read_stream

CLIENT = ClientInfo("dev", "a1b2c3d4", "laptop", 4242, datetime(2026, 12, 6, tzinfo=UTC))
SPEC = ExposeSpec(local_port=8080, name="dev-api", service_port=80)

# -- the command line ------------------------------------------------------------------------------

BAD_INPUT = [
    (
        ["expose", "8080", "--name", "Dev_API"],
        "error: Invalid value for '--name': \"Dev_API\" is not a Service name: accepted are "
        "lower-case letters, digits and '-', starting with a letter and ending with a letter "
        "or digit, at most 63 characters; see 'kubectl relay expose --help'",
    ),
    (
        ["expose", "8080"],
        "error: Missing option '--name'; see 'kubectl relay expose --help'",
    ),
    (
        ["expose", "70000", "--name", "dev-api"],
        "error: Invalid value for 'LOCALPORT': 70000 is not in the range 1<=x<=65535; "
        "see 'kubectl relay expose --help'",
    ),
    (
        ["expose", "8080", "--name", "dev-api", "--relay-namespace", "other"],
        "error: --relay-namespace does not apply to expose: the Service and its relay pod are "
        "both in the namespace of -n; see 'kubectl relay expose --help'",
    ),
    (
        ["expose", "8080", "--name", "dev-api", "--summary"],
        "error: --summary is not available for expose yet: use -v, -x or -q; "
        "see 'kubectl relay expose --help'",
    ),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, kubeconfig: Path) -> None:  # noqa: F811
    status, out, err = run(*argv)
    assert (status, out, err) == (2, "", message + "\n")


class _FakeApi(BaseHTTPRequestHandler):
    """Answers GET of one existing Service; records every request."""

    service: dict[str, Any] = {}
    requests: list[tuple[str, str]] = []

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.requests.append((self.command, self.path))
        if self.command == "GET" and self.path == "/api/v1/namespaces/ns/services/dev-api":
            body, status = json.dumps(self.service).encode(), 200
        else:
            body, status = b'{"kind":"Status","code":404,"reason":"NotFound"}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_FakeApi]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, name="fake-api")
    thread.start()
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: 'http://127.0.0.1:{server.server_port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: ns}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    _FakeApi.requests = []
    try:
        yield _FakeApi
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_service_that_is_not_ours_is_a_clear_error_and_nothing_is_created(
    api: type[_FakeApi],
) -> None:
    api.service = {"metadata": {"name": "dev-api", "labels": {"app": "shop"}}}
    status, _, err = run("expose", "8080", "--name", "dev-api")
    assert status == 3
    assert err == (
        'error: service "dev-api" already exists in namespace "ns" and is not kubectl relay\'s; '
        "choose another --name (kubectl relay never replaces a Service it did not create)\n"
    )
    assert api.requests == [("GET", "/api/v1/namespaces/ns/services/dev-api")]


def test_a_service_of_another_expose_names_its_client(api: type[_FakeApi]) -> None:
    service = exposed_service(
        SPEC, namespace="ns", client=CLIENT, tunnel=0, job="kubectl-relay-a1b2c3d4-0-1", job_uid="u"
    )
    api.service = service
    status, _, err = run("expose", "8080", "--name", "dev-api")
    assert status == 3
    assert err == (
        'error: service "dev-api" already exists in namespace "ns": another kubectl relay '
        "expose (laptop:4242) serves it; stop that one, wait for its lease to end if it was "
        "killed, or choose another --name\n"
    )
    assert [method for method, _ in api.requests] == ["GET"]


# -- the objects -----------------------------------------------------------------------------------


def test_the_service_selects_the_relay_pod_and_is_owned_by_its_job() -> None:
    job = relaypod.relay_job(
        name="kubectl-relay-a1b2c3d4-0-1",
        namespace="shop",
        command=["relay", *relay_args()],
        client=CLIENT,
        tunnel=0,
        target="expose",
        settings=PodSettings(),
        port=MUX_PORT,
    )
    service = exposed_service(
        SPEC, namespace="shop", client=CLIENT, tunnel=0, job="kubectl-relay-a1b2c3d4-0-1",
        job_uid="1234-uid",
    )
    pod_labels = job["spec"]["template"]["metadata"]["labels"]  # type: ignore[index]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "kubectl-relay-a1b2c3d4-0-1",
         "uid": "1234-uid"}
    ]
    assert service["spec"]["ports"] == [
        {"name": "tcp", "protocol": "TCP", "port": 80, "targetPort": SERVICE_TARGET_PORT}
    ]
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == ("dev-api", "shop")
    # Found by kubectl relay ls/gc like the Job.
    assert service["metadata"]["labels"] == relaypod.labels(CLIENT, 0)


def test_the_relay_pod_is_restricted_and_listens_where_the_service_sends() -> None:
    spec = tunnel_spec()
    assert spec.run_args == (
        "-t",
        "30",
        "--quiet-sessions",
        f"TCP-LISTEN:{SERVICE_TARGET_PORT},fork,reuseaddr",
        f"MUX-LISTEN:{MUX_PORT}",
    )
    assert spec.run_port == MUX_PORT
    pod = relaypod.relay_pod_spec(["relay", *spec.run_args], PodSettings(), port=MUX_PORT)
    assert restricted_violations(pod) == []
    assert hardening_violations(pod) == []


# -- the mux client --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def relay_side(local_port: int, shown: list[SessionEvent]) -> AsyncIterator[MuxConnection]:
    """The relay's end of a mux connection whose other end is a ``LocalConnector``."""
    ours, theirs = socket.socketpair()
    relay = MuxConnection(StreamsCarrier(*await asyncio.open_connection(sock=ours)), listener=True)
    spec = ExposeSpec(local_port=local_port, name="dev-api")
    connector = LocalConnector(spec, 0, shown.append)
    client = MuxConnection(
        StreamsCarrier(*await asyncio.open_connection(sock=theirs)),
        listener=False,
        on_open=connector.accept,
    )
    tasks = [asyncio.ensure_future(relay.run()), asyncio.ensure_future(client.run())]
    try:
        yield relay
    finally:
        await connector.aclose()
        relay.close("test over")
        client.close("test over")
        await asyncio.gather(*tasks)


async def test_each_stream_reaches_the_local_port_with_half_close() -> None:
    shown: list[SessionEvent] = []
    with ThreadedServer(echo) as server:
        async with relay_side(server.port, shown) as relay:
            channels = [await relay.open(f"10.0.0.{n}:5000") for n in range(1, 6)]
            for n, channel in enumerate(channels):
                await channel.write(b"request %d " % n * 1000)
                await channel.end()
            async with asyncio.timeout(scaled(20)):
                replies = await asyncio.gather(*(read_stream(c) for c in channels))
            assert replies == [b"request %d " % n * 1000 for n in range(5)]
            for channel in channels:
                await channel.aclose()
            async with asyncio.timeout(scaled(10)):
                while sum(isinstance(e, ConnectionClosed) for e in shown) < 5:
                    await asyncio.sleep(0.02)
    opened = [e for e in shown if isinstance(e, ConnectionOpened)]
    assert [(e.number, e.peer) for e in opened] == [
        (1, "10.0.0.1:5000"), (3, "10.0.0.2:5000"), (5, "10.0.0.3:5000"),
        (7, "10.0.0.4:5000"), (9, "10.0.0.5:5000"),
    ]
    closed = sorted((e.number, e.sent, e.received, e.error) for e in shown
                    if isinstance(e, ConnectionClosed))
    assert closed == [(2 * n + 1, 10_000, 10_000, "") for n in range(5)]


async def test_a_refused_local_connect_resets_the_stream_and_says_why() -> None:
    shown: list[SessionEvent] = []
    port = free_port()  # nothing listens there
    async with relay_side(port, shown) as relay:
        channel = await relay.open("10.0.0.9:5000")
        await channel.write(b"anyone?")
        async with asyncio.timeout(scaled(10)):
            with pytest.raises(ConnectionResetError) as caught:
                await channel.read()
        await channel.aclose()
    reason = f"connect to 127.0.0.1:{port}: Connection refused"
    assert caught.value.strerror == f"mux stream 1 reset: reset by the peer: {reason}"
    assert shown[-1] == ConnectionClosed(0, 1, 0, 0, f"{reason}; stream reset")
