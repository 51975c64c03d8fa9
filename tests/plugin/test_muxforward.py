"""A ``tcp`` tunnel's connections as streams of one port-forward (``muxforward``, ``Forwarder``).

Real parts end to end on loopback, but the cluster: the plugin's
``Forwarder`` on a real local socket, a real relay process running
``MUX-ACCEPT:M,fork TCP:...`` (the relay pod's command) and a real echo
server. In between, an HTTP-level stand-in for the API server's
``pods/portforward`` (``v4.channel.k8s.io`` over a WebSocket, each one a TCP
connection to M, as the kubelet makes), which counts the port-forwards and
can break them. It speaks no SPDY, so the plugin falls back to the WebSocket
here, as it does before an API server that refuses SPDY (the real kubelet and
containerd, over both, are in ``e2e/test_plugin.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web
from kubernetes import client

from kubectl_relay.engine.descriptors import open_descriptors
from kubectl_relay.plugin.connections import Connections
from kubectl_relay.plugin.events import ConnectionClosed, Notice
from kubectl_relay.plugin.kube import Cluster
from kubectl_relay.plugin.muxforward import SharedPortForward
from kubectl_relay.plugin.portforward import PROTOCOL, Forwarder, bind
from kubectl_relay.plugin.targets import ListenAddress
from tests.conftest import scaled
from tests.support import (
    RelayProcess,
    ThreadedServer,
    echo,
    exchange,
    free_port,
    log_lines,
    wait_for_output,
    wait_for_port,
)

POD = "kubectl-relay-test-0-1-abcde"


class FakePortForward:
    """``pods/portforward`` of one pod whose port is the relay's mux port on loopback."""

    def __init__(self, mux_port: int) -> None:
        self.mux_port = mux_port
        self.opened: list[str] = []
        self.sockets: list[web.WebSocketResponse] = []

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(PROTOCOL,))
        await ws.prepare(request)
        self.opened.append(request.match_info["pod"])
        self.sockets.append(ws)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.mux_port)
        port = struct.pack("<H", int(request.query["ports"]))
        await ws.send_bytes(b"\x00" + port)  # each channel starts with the port
        await ws.send_bytes(b"\x01" + port)

        async def to_pod() -> None:
            async for message in ws:
                if message.type == WSMsgType.BINARY and message.data[:1] == b"\x00":
                    writer.write(message.data[1:])
                    await writer.drain()

        async def from_pod() -> None:
            while data := await reader.read(65536):
                await ws.send_bytes(b"\x00" + data)

        tasks = [asyncio.ensure_future(to_pod()), asyncio.ensure_future(from_pod())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        await ws.close()
        return ws

    async def break_all(self) -> None:
        """Close every port-forward (an API server restarting)."""
        for ws in self.sockets:
            await ws.close()


class Route:
    """The tunnel's side of ``PodRoute``: one pod, always there."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.uses = 0

    async def pod(self) -> str:
        return POD

    def failed(self, pod: str, reason: str) -> None:
        self.failures.append(reason)

    def used(self, pod: str) -> None:
        self.uses += 1


def plain_cluster(server: str) -> Cluster:
    """A ``Cluster`` for an API server (or its stand-in) at ``server``, over plain HTTP."""
    return Cluster(server=server, namespace="test", user="test", headers={}, ssl_context=False,
                   configuration=client.Configuration(), request_timeout=scaled(10))


@contextlib.asynccontextmanager
async def tunnel(
    target_port: int, *, udp: bool = False, udp_idle: float = 60.0, udp_t: str = "0.5"
) -> AsyncIterator[tuple[int, FakePortForward, list[Any], Route, RelayProcess]]:
    """A relay, the stand-in API server and a serving ``Forwarder`` with a shared port-forward.

    ``udp``: a ``udp`` tunnel's, its relay the pod's (framed streams, socat's -t unless
    ``udp_t``), its senders' sessions ending after ``udp_idle`` seconds of quiet.
    """
    mux_port = free_port()
    listen = f"MUX-ACCEPT:{mux_port},fork,reuseaddr,bind=127.0.0.1"
    if udp:
        relay_args = ["-d", "-d", "-t", udp_t, f"{listen},frame=len16",
                      f"UDP:127.0.0.1:{target_port},shut-none"]
    else:
        relay_args = ["-d", "-d", "-t", "10", listen, f"TCP:127.0.0.1:{target_port}"]
    fake = FakePortForward(mux_port)
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{namespace}/pods/{pod}/portforward", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api_port = runner.addresses[0][1]
    cluster = plain_cluster(f"http://127.0.0.1:{api_port}")
    events: list[Any] = []
    route = Route()
    sock = bind(ListenAddress("127.0.0.1", 0), socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    local_port = sock.getsockname()[1]
    forwarder = Forwarder(
        sock=sock, cluster=cluster, namespace="test", route=route, port=8000, tunnel=0,
        on_event=events.append, connections=Connections(0, events.append, matching=False),
        udp=udp, udp_idle=udp_idle, mux=SharedPortForward(cluster, "test", 8000, events.append),
    )
    with RelayProcess(relay_args) as relay:
        await asyncio.to_thread(wait_for_output, relay, lambda _o, err: "listening on" in err)
        serving = asyncio.ensure_future(forwarder.serve())
        try:
            yield local_port, fake, events, route, relay
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            sock.close()
            await cluster.aclose()
            await runner.cleanup()
            relay.stop()


def closed_lines(events: list[Any]) -> list[ConnectionClosed]:
    return [event for event in events if isinstance(event, ConnectionClosed)]


async def all_closed(events: list[Any], count: int) -> list[ConnectionClosed]:
    """The ``count`` "closed" lines, once the forwarder has told them (a client's EOF comes first)."""
    async with asyncio.timeout(scaled(20)):
        while len(closed_lines(events)) < count:
            await asyncio.sleep(0.01)
    return closed_lines(events)


async def test_every_connection_is_a_stream_of_one_port_forward_with_its_half_close() -> None:
    with ThreadedServer(echo) as server:
        async with tunnel(server.port) as (port, fake, events, route, _):
            payloads = [bytes([65 + i]) * (3000 + 50_000 * i) for i in range(8)]
            replies = await asyncio.gather(
                *(asyncio.to_thread(exchange, port, payload) for payload in payloads)
            )
            assert replies == payloads  # byte for byte, each after its client's half-close
            assert fake.opened == [POD]  # one port-forward for all eight
            assert route.uses == 8  # each connection restarts the pod's idle clock
            closed = await all_closed(events, 8)
    assert sorted((event.sent, event.received, event.error) for event in closed) == sorted(
        (len(payload), len(payload), "") for payload in payloads
    )


async def test_an_api_server_without_spdy_gets_the_websocket_and_one_warning() -> None:
    # The stand-in routes only GET: the SPDY upgrade (a POST) gets 405 Method Not Allowed.
    with ThreadedServer(echo) as server:
        async with tunnel(server.port) as (port, fake, events, _, _):
            for payload in (b"first", b"second"):
                assert await asyncio.to_thread(exchange, port, payload) == payload
                await fake.break_all()  # the next connection opens a port-forward again
                await all_closed(events, 1 if payload == b"first" else 2)
            assert fake.opened == [POD, POD]
    warnings = [e.text for e in events if isinstance(e, Notice) and "SPDY" in e.text]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("the API server refused port-forwards over SPDY (405 "), warnings


async def test_a_datagram_that_waited_on_the_bound_socket_starts_its_session() -> None:
    # The tunnel binds its port before the relay pod is ready, so datagrams can wait there;
    # uvloop hands them to the protocol before create_datagram_endpoint has returned.
    sock = bind(ListenAddress("127.0.0.1", 0), socket.SOCK_DGRAM)
    cluster = plain_cluster("http://127.0.0.1:1")  # never asked: no pod is opened
    forwarder = Forwarder(
        sock=sock, cluster=cluster, namespace="test", route=Route(), port=8000, tunnel=0,
        on_event=lambda _: None, connections=Connections(0, lambda _: None, matching=False),
        udp=True,
    )
    started: asyncio.Queue[tuple[object, bytes]] = asyncio.Queue()

    async def session(transport: object, addr: object, queue: asyncio.Queue[bytes]) -> None:
        await started.put((transport, await queue.get()))

    forwarder._udp_session = session  # type: ignore[method-assign]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"waited", sock.getsockname())
        serving = asyncio.ensure_future(forwarder.serve())
        try:
            async with asyncio.timeout(scaled(10)):
                transport, first = await started.get()
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            sock.close()
    assert first == b"waited"
    assert callable(getattr(transport, "sendto", None))  # the endpoint's, for the replies


async def test_a_broken_port_forward_ends_its_streams_with_a_line_and_the_next_one_reopens() -> None:
    with ThreadedServer(echo) as server:
        async with tunnel(server.port) as (port, fake, events, _, _):
            with socket.create_connection(("127.0.0.1", port), timeout=scaled(20)) as held:
                held.sendall(b"ping")
                assert await asyncio.to_thread(held.recv, 4) == b"ping"  # its stream runs
                await fake.break_all()
                # The held connection ends (without the rest of a reply it never got).
                with contextlib.suppress(ConnectionResetError):
                    assert await asyncio.to_thread(held.recv, 1) == b""
            assert await asyncio.to_thread(exchange, port, b"after the break") == b"after the break"
            assert fake.opened == [POD, POD]
            errors = [event.error for event in await all_closed(events, 2)]
    assert errors[0].startswith(f"the port-forward to {POD} broke: "), errors
    assert errors[1:] == [""]


#: Clients in a process of their own (their sockets must not count against the test's
#: limit): on a line on stdin, BURST connections at once, each sends its number and
#: half-closes; prints how many got exactly theirs back.
BURST_CLIENTS = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
sys.stdin.readline()
conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
for index, conn in enumerate(conns):
    conn.sendall(b"client %d" % index)
    conn.shutdown(socket.SHUT_WR)
served = 0
for index, conn in enumerate(conns):
    reply = b""
    while chunk := conn.recv(4096):
        reply += chunk
    served += reply == b"client %d" % index
print(served)
"""
BURST = 30
#: Descriptors the tunnel may open beyond those it has when the burst starts.
ROOM = 5


async def test_a_burst_beyond_the_open_files_limit_waits_for_closes_and_the_tunnel_goes_on() -> None:
    """Out of descriptors, a local connection waits in the backlog; the tunnel used to end."""
    echo_port = free_port()  # an echo in a process of its own, as the clients
    with RelayProcess([f"TCP-LISTEN:{echo_port},fork,reuseaddr", "PIPE"]):
        await asyncio.to_thread(wait_for_port, echo_port)
        async with tunnel(echo_port) as (port, fake, events, _, _):
            assert await asyncio.to_thread(exchange, port, b"first") == b"first"
            clients = await asyncio.create_subprocess_exec(
                sys.executable, "-c", BURST_CLIENTS, str(port), str(BURST),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_descriptors() + ROOM, hard))
            try:
                served, _ = await asyncio.wait_for(clients.communicate(b"go\n"), scaled(60))
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert await asyncio.to_thread(exchange, port, b"after") == b"after"
            assert fake.opened == [POD]
    assert served == b"%d\n" % BURST
    warnings = [  # the stand-in refuses SPDY: that warning is another test's
        event.text for event in events
        if isinstance(event, Notice) and event.warning and "SPDY" not in event.text
    ]
    assert warnings == [
        "cannot accept another local connection (Too many open files): the next ones wait "
        "until one closes (ulimit -n raises the limit)"
    ], warnings


def test_a_session_raises_its_soft_open_files_limit_to_the_hard_one() -> None:
    """Each local connection is a descriptor: ``ulimit -Sn 64`` under 1,024 gives 1,024."""
    code = (
        "import resource\n"
        "from kubectl_relay.plugin.cli.running import run_session\n"
        "async def limits(): return resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "print(*run_session(limits()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(30),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 1024)),
        check=False,
    )
    assert result.stdout.split() == ["1024", "1024"], result.stderr


def shout(sock: socket.socket) -> None:
    """Answer a datagram with it in capitals, twice (boundaries must hold); quiet on timeout."""
    with contextlib.suppress(TimeoutError):
        data, peer = sock.recvfrom(65536)
        sock.sendto(data.upper(), peer)
        sock.sendto(data.upper() + b"!", peer)


def ask(port: int, questions: list[bytes]) -> list[bytes]:
    """From a socket of its own: each question, then its two answers."""
    answers = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.settimeout(scaled(10))
        for question in questions:
            sender.sendto(question, ("127.0.0.1", port))
            answers += [sender.recv(65536), sender.recv(65536)]
    return answers


async def test_every_udp_sender_is_a_framed_stream_of_one_port_forward() -> None:
    """A ``udp`` tunnel: one port-forward for every sender, boundaries kept, quiet ends."""
    with ThreadedServer(shout, kind=socket.SOCK_DGRAM) as server:
        async with tunnel(server.port, udp=True, udp_idle=0.5) as (port, fake, events, _, relay):
            senders = [[b"dig %d.%d" % (n, i) for i in range(3)] for n in range(5)]
            answers = await asyncio.gather(
                *(asyncio.to_thread(ask, port, questions) for questions in senders)
            )
            assert fake.opened == [POD]  # five senders, one port-forward
            closed = await all_closed(events, 5)  # each after its half second of quiet
    assert answers == [
        [answer for q in questions for answer in (q.upper(), q.upper() + b"!")]
        for questions in senders
    ]
    assert sorted((event.sent, event.received, event.error) for event in closed) == sorted(
        (sum(map(len, q)), sum(2 * len(x) + 1 for x in q), "") for q in senders
    )
    # A session ends by its end frame and the relay's: no stream is reset on the way (the
    # relay's other warnings are the test's end: its mux peer gone, and SIGTERM).
    warned = log_lines(relay.stderr_text, "W") + log_lines(relay.stderr_text, "E")
    assert not [line for line in warned if "mux stream" in line], warned


#: What ``subscription`` sends for one datagram, 0.2 s apart (3 s in all).
TICKS = 16


def subscription(sock: socket.socket) -> None:
    """Answer a datagram with ``TICKS`` datagrams: a stream the sender asked for."""
    with contextlib.suppress(TimeoutError):
        data, peer = sock.recvfrom(65536)
        for number in range(TICKS):
            time.sleep(0.2 if number else 0)
            sock.sendto(b"%s %02d" % (data, number), peer)


async def test_a_udp_session_lasts_while_the_target_still_sends() -> None:
    """Replies count as traffic: a sender that asked once hears all of a stream longer than
    its session's idle time (0.7 s here), and the session ends once neither side has sent for
    that long. (Before, the session ended 0.7 s after the question and stopped passing
    replies on ``UDP_END_WAIT`` later: the last ticks were lost.)"""
    with ThreadedServer(subscription, kind=socket.SOCK_DGRAM) as server:
        async with tunnel(server.port, udp=True, udp_idle=0.7) as (port, _, events, _, _):

            def subscribe() -> list[bytes]:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                    sender.settimeout(scaled(10))
                    sender.sendto(b"tick", ("127.0.0.1", port))
                    return [sender.recv(64) for _ in range(TICKS)]

            answers = await asyncio.to_thread(subscribe)
            closed = await all_closed(events, 1)
    assert answers == [b"tick %02d" % number for number in range(TICKS)]
    assert [(event.sent, event.received, event.error) for event in closed] == [
        (4, TICKS * 7, "")
    ]


async def test_a_sender_that_speaks_again_while_its_session_ends_gets_a_new_one() -> None:
    """Its quiet session sent its end and waits for the relay's (here its -t, 5 s, then at
    most ``UDP_END_WAIT``): a datagram sent meanwhile starts a new session, not lost in
    the old one's queue."""
    with ThreadedServer(shout, kind=socket.SOCK_DGRAM) as server:
        async with tunnel(server.port, udp=True, udp_idle=0.3, udp_t="5") as (port, _, events, _, _):

            def chat() -> list[bytes]:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                    sender.settimeout(scaled(10))
                    answers = []
                    # 1.2 s: 0.9 s after the first session went quiet, 1.1 s before it ends.
                    for question, pause in ((b"first", 1.2), (b"again", 0.0)):
                        sender.sendto(question, ("127.0.0.1", port))
                        answers += [sender.recv(64), sender.recv(64)]
                        time.sleep(pause)
                    return answers

            answers = await asyncio.to_thread(chat)
            closed = await all_closed(events, 2)
    assert answers == [b"FIRST", b"FIRST!", b"AGAIN", b"AGAIN!"]
    assert [(event.sent, event.received) for event in closed] == [(5, 11), (5, 11)]
