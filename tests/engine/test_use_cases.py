"""The stream command lines of USE-CASES.md section 1, run as users run them.

Each test runs the command line as written there, with ``relay`` for
``socat``. Host names point at servers on 127.0.0.1 and fixed ports are
replaced by free ones (a shared machine may have 8080 in use); nothing else
changes. Data is checked byte for byte in both directions.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import threading
import time

import pytest

from tests.conftest import RELAY, scaled
from tests.support import (
    RelayProcess,
    ThreadedServer,
    echo,
    exchange,
    free_port,
    relay_listening,
    run_relay,
    wait_for_output,
    wait_for_path,
    wait_for_port,
)

PAYLOAD = bytes(range(256)) * 64 + b"\r\nend of payload\n"


def test_tcp_listener_to_the_terminal() -> None:
    # relay TCP-LISTEN:8080,fork -
    port = free_port()
    relay = RelayProcess([f"TCP-LISTEN:{port},fork", "-"])
    with relay:
        wait_for_port(port)
        relay.proc.stdin.write(b"from the terminal\n")  # type: ignore[union-attr]
        relay.proc.stdin.close()  # type: ignore[union-attr]
        assert exchange(port, b"from the client\n") == b"from the terminal\n"
        time.sleep(0.5)  # the client's bytes reach stdout within socat's -t 0.5
        # The session has ended; with fork the listener runs until a signal.
        assert relay.stop() == 128 + 15
    assert relay.stdout_bytes == b"from the client\n"


def test_terminal_to_a_tcp_port() -> None:
    # relay - TCP:localhost:8080
    with ThreadedServer(echo) as server:
        result = run_relay(["-", f"TCP:localhost:{server.port}"], input=PAYLOAD)
    assert result.returncode == 0, result.stderr
    assert result.stdout == PAYLOAD


def test_unix_domain_socket_listener(tmp_path: os.PathLike[str]) -> None:
    # relay UNIX-LISTEN:/tmp/socket,fork -
    path = os.path.join(tmp_path, "socket")
    with RelayProcess([f"UNIX-LISTEN:{path},fork", "-"]) as relay:
        wait_for_path(path)
        relay.proc.stdin.close()  # type: ignore[union-attr]
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(scaled(10))
            client.connect(path)
            client.sendall(b"over unix\n")
            client.shutdown(socket.SHUT_WR)
            assert client.recv(100) == b""
        time.sleep(0.2)
        assert relay.stop() == 128 + 15
    assert relay.stdout_bytes == b"over unix\n"
    assert not os.path.exists(path), "the socket file must be removed on exit"


@pytest.mark.parametrize(
    "template",
    [
        "TCP-LISTEN:{listen},fork TCP:{target}",  # port forwarding / to a Service
        "TCP-LISTEN:{listen},fork,reuseaddr TCP:{target}",  # container to container
        "TCP-LISTEN:{listen},fork,reuseaddr TCP:{target},keepalive",  # keepalive
        "TCP-LISTEN:{listen},fork,reuseaddr,max-children=10 TCP:{target}",  # bounded
        "TCP-LISTEN:{listen},fork TCP:{target},connect-timeout=5",  # connect timeout
        "-v TCP-LISTEN:{listen},fork TCP:{target}",  # HTTP inspection, traced
    ],
)
def test_port_forwarding_lines(template: str) -> None:
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = template.format(listen=listen, target=f"localhost:{server.port}").split()
        with relay_listening(args, listen) as relay:
            for _ in range(3):
                assert exchange(listen, PAYLOAD) == PAYLOAD
        assert relay.proc.returncode == 128 + 15
        assert "Traceback" not in relay.stderr_text


def test_named_pipe(tmp_path: os.PathLike[str]) -> None:
    # relay PIPE:/tmp/pipe -   (what is written into the FIFO comes back out of it)
    path = os.path.join(tmp_path, "pipe")
    # -t 0.5, socat's default: a FIFO never ends, so the relay ends by it after stdin's EOF.
    result = run_relay(["-t", "0.5", f"PIPE:{path}", "-"], input=b"through the fifo\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"through the fifo\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the service\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_inspection_with_curl() -> None:
    # relay -v TCP-LISTEN:8080,fork TCP:api.example.com:80, driven by the real curl.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        listen = free_port()
        with relay_listening(
            ["-v", f"TCP-LISTEN:{listen},fork", f"TCP:localhost:{server.server_port}"], listen
        ) as relay:
            out = subprocess.run(
                ["curl", "-sS", "--max-time", str(scaled(10)), f"http://127.0.0.1:{listen}/x"],
                capture_output=True,
                check=True,
            ).stdout
            time.sleep(0.3)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert out == b"hello from the service\n"
    trace = relay.stderr_text
    assert "> " in trace and "length=" in trace
    assert "GET /x HTTP/1.1\\r" in trace or "GET /x HTTP/1.1\r" in trace
    assert "hello from the service" in trace


def test_retries_until_the_target_comes_up() -> None:
    # relay -v TCP-LISTEN:8080,fork,retry=10 TCP:target:80,forever
    target = free_port()
    listen = free_port()
    args = ["-v", f"TCP-LISTEN:{listen},fork,retry=10", f"TCP:localhost:{target},forever"]
    with relay_listening(args, listen) as relay:
        client = socket.create_connection(("127.0.0.1", listen), timeout=scaled(20))
        with client:
            client.sendall(b"early bytes\n")
            # The relay retries the refused connect meanwhile (waited for, not
            # slept: the port answers before the relay's event loop runs).
            wait_for_output(relay, lambda _stdout, stderr: "Connection refused" in stderr)
            with ThreadedServer(echo, address=("127.0.0.1", target)):
                client.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := client.recv(100):
                    received += chunk
    assert received == b"early bytes\n"
    assert "Connection refused" in relay.stderr_text


def test_python_program_starts_a_tunnel() -> None:
    # subprocess.Popen(['relay', 'TCP-LISTEN:8443,fork,reuseaddr', 'TCP:myapp.example.net:443'])
    with ThreadedServer(echo) as server:
        listen = free_port()
        proc = subprocess.Popen(
            [*RELAY, f"TCP-LISTEN:{listen},fork,reuseaddr", f"TCP:127.0.0.1:{server.port}"],
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(listen)
            assert exchange(listen, PAYLOAD) == PAYLOAD
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=scaled(10))
    assert proc.returncode == 128 + 15, err


def test_many_concurrent_sessions_keep_their_bytes_apart() -> None:
    """50 sessions at once with distinct random payloads: nothing lost or mixed up."""
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork,reuseaddr", f"TCP:127.0.0.1:{server.port}"]
        with relay_listening(args, listen):
            results: dict[int, bool] = {}

            def client(index: int) -> None:
                payload = os.urandom(200_000 + index)
                reply = exchange(listen, payload)
                results[index] = hashlib.sha256(reply).digest() == hashlib.sha256(payload).digest()

            threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=scaled(60))
    assert len(results) == 50
    assert all(results.values())
