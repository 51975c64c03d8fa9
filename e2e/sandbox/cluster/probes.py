"""Container probes: tcpSocket, httpGet and exec, run against the pod's IP.

``probe_loop`` applies the thresholds as the kubelet does: a result flips
only after ``successThreshold`` successes or ``failureThreshold`` failures in
a row. Periods and initial delays are capped by the cluster settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .settings import ClusterSettings

#: Runs an exec probe's command in the container's context; returns the exit status.
ExecRunner = Callable[[list[str], float], Awaitable[int]]


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    """A probe's ``port``: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} is not a port of container {container.get('name')!r}")


async def _connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket; closed again if the probe is cancelled meanwhile.

    Plain sockets rather than asyncio streams: a probe is cancelled whenever its
    container ends, and a stream cancelled while connecting can leave its
    transport behind.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _tcp(host: str, port: int) -> tuple[bool, str]:
    try:
        sock = await _connect(host, port)
    except OSError as exc:
        return False, f"dial tcp {host}:{port}: {exc.strerror or exc}"
    sock.close()
    return True, ""


def _request(host: str, port: int, get: Mapping[str, Any]) -> bytes:
    headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1.32", "Accept": "*/*"}
    for header in get.get("httpHeaders") or []:
        headers[header["name"]] = header["value"]
    lines = [f"GET {get.get('path', '/')} HTTP/1.0", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status_code(status_line: bytes) -> int:
    parts = status_line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


async def _http(host: str, port: int, get: Mapping[str, Any]) -> tuple[bool, str]:
    scheme = str(get.get("scheme", "HTTP")).upper()
    url = f"{scheme.lower()}://{host}:{port}{get.get('path', '/')}"
    if scheme == "HTTPS":
        return await _https(host, port, get, url)
    loop = asyncio.get_running_loop()
    try:
        sock = await _connect(host, port)
    except OSError as exc:
        return False, f'Get "{url}": {exc.strerror or exc}'
    try:
        await loop.sock_sendall(sock, _request(host, port, get))
        received = b""
        while b"\n" not in received and len(received) < 4096:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            received += chunk
    except OSError as exc:
        return False, f'Get "{url}": {exc.strerror or exc}'
    finally:
        sock.close()
    code = _status_code(received.split(b"\n", 1)[0])
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def _https(host: str, port: int, get: Mapping[str, Any], url: str) -> tuple[bool, str]:
    # The kubelet does not verify the certificate of an HTTPS probe.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, ssl.SSLError) as exc:
        return False, f'Get "{url}": {exc}'
    try:
        writer.write(_request(host, port, get))
        await writer.drain()
        status_line = await reader.readline()
    except (OSError, ssl.SSLError) as exc:
        return False, f'Get "{url}": {exc}'
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    code = _status_code(status_line)
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def check(
    probe: Mapping[str, Any],
    *,
    pod_ip: str,
    container: Mapping[str, Any],
    run_exec: ExecRunner,
) -> tuple[bool, str]:
    """Run a probe once; (success, message)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            port = resolve_port(spec["port"], container)
            return await asyncio.wait_for(_tcp(spec.get("host") or pod_ip, port), timeout)
        if "httpGet" in probe:
            spec = probe["httpGet"]
            port = resolve_port(spec["port"], container)
            return await asyncio.wait_for(_http(spec.get("host") or pod_ip, port, spec), timeout)
        if "exec" in probe:
            status = await run_exec(list(probe["exec"].get("command") or []), timeout)
            return status == 0, "" if status == 0 else f"command exited with {status}"
    except TimeoutError:
        return False, f"probe timed out after {timeout:g}s"
    except ValueError as exc:
        return False, str(exc)
    return False, "unsupported probe type (the sandbox runs tcpSocket, httpGet and exec)"


async def probe_loop(
    probe: Mapping[str, Any],
    run_once: Callable[[], Awaitable[tuple[bool, str]]],
    on_change: Callable[[bool, str], None],
    settings: ClusterSettings,
    *,
    initial: bool,
) -> None:
    """Probe forever, calling ``on_change`` whenever the thresholded result flips."""
    delay = min(float(probe.get("initialDelaySeconds", 0)), settings.probe_delay_cap)
    period = min(float(probe.get("periodSeconds", 10)), settings.probe_period_cap)
    success_threshold = int(probe.get("successThreshold", 1))
    failure_threshold = int(probe.get("failureThreshold", 3))
    state = initial
    successes = failures = 0
    await asyncio.sleep(delay)
    while True:
        ok, message = await run_once()
        if ok:
            successes, failures = successes + 1, 0
            if not state and successes >= success_threshold:
                state = True
                on_change(True, "")
        else:
            successes, failures = 0, failures + 1
            # A readiness probe that never passed reports its first failure at once;
            # otherwise wait for failureThreshold failures in a row.
            if state and failures >= failure_threshold:
                state = False
                on_change(False, message)
        await asyncio.sleep(period)
