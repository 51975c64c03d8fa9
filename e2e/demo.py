"""``python -m e2e.demo`` (``./dev demo``): the relay in a cluster, end to end, in a few seconds.

A readable script of steps, each printing what it does:

1. start the sandbox cluster (API server + pods as local processes);
2. deploy a target: an HTTP server pod behind Service ``target``;
3. deploy the relay image, ``relay -v TCP-LISTEN:8080,fork TCP:target:80``,
   behind Service ``relay``;
4. send a real HTTP request from this machine to the relay's cluster IP;
5. show the relay pod's ``-v`` trace, read through the API (``pods/log``);
6. install the operator from ``manifests/`` with ``kubectl apply``, apply a
   ``SocatTunnel`` and send traffic through the Service the operator made;
7. open ``kubectl relay tcp svc/target:80`` and send traffic through the tunnel,
   its live trace printed by the plugin;
8. tear everything down.

Steps 2 to 5 use the kubernetes client, as a user's tooling would; steps 6
and 7 run ``kubectl`` and ``kubectl relay`` exactly as a user types them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from e2e.sandbox import HTTP_IMAGE, RELAY_IMAGE, SandboxThread

NAMESPACE = "demo"
MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
TUNNEL = """
apiVersion: relay.kubectl-relay.io/v1alpha1
kind: SocatTunnel
metadata: {name: web, namespace: demo}
spec:
  listen: TCP-LISTEN:8080,fork,reuseaddr
  connect: TCP:target:80
  tracing: Text
  service: {type: ClusterIP, port: 80}
"""
#: Bound on every wait: the demo must end even when something is broken.
TIMEOUT = 30.0

console = Console(highlight=False)


def step(title: str) -> None:
    console.rule(f"[bold cyan]{title}")


def deployment(name: str, image: str, container: dict[str, Any]) -> dict[str, Any]:
    """A one-replica Deployment whose pods are ready once port 8080 accepts connections."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "ports": [{"name": "tcp", "containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                            **container,
                        }
                    ]
                },
            },
        },
    }


def service(name: str) -> dict[str, Any]:
    """Service ``name``: port 80 to the pods' port 8080."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "tcp"}]},
    }


def wait(what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` until it returns something true."""
    deadline = time.monotonic() + TIMEOUT
    with console.status(f"waiting for {what}..."):
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen within {TIMEOUT:g}s")


def rolled_out(apps: client.AppsV1Api, name: str) -> bool:
    status = apps.read_namespaced_deployment(name, NAMESPACE).status
    return bool(status.available_replicas) and status.updated_replicas == status.replicas


def show_pods(core: client.CoreV1Api) -> None:
    table = Table("pod", "status", "pod IP", "image")
    for pod in core.list_namespaced_pod(NAMESPACE).items:
        table.add_row(
            pod.metadata.name, pod.status.phase, pod.status.pod_ip, pod.spec.containers[0].image
        )
    console.print(table)


def http_get(host: str, port: int) -> bytes:
    """One HTTP/1.0 request over a plain socket; the whole reply."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: relay\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def run(sandbox: SandboxThread, api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})

    step("2. A target: an HTTP server behind Service 'target'")
    apps.create_namespaced_deployment(
        NAMESPACE,
        deployment(
            "target",
            HTTP_IMAGE,
            {"args": ["--port", "8080", "--text", "hello from the target pod"]},
        ),
    )
    core.create_namespaced_service(NAMESPACE, service("target"))
    wait("the target to roll out", lambda: rolled_out(apps, "target"))

    step("3. The relay image: relay -v TCP-LISTEN:8080,fork TCP:target:80")
    command = ["relay", "-v", "TCP-LISTEN:8080,fork,reuseaddr", "TCP:target:80"]
    apps.create_namespaced_deployment(
        NAMESPACE, deployment("relay", RELAY_IMAGE, {"command": command})
    )
    core.create_namespaced_service(NAMESPACE, service("relay"))
    wait("the relay to roll out", lambda: rolled_out(apps, "relay"))
    show_pods(core)
    services = Table("service", "cluster IP", "ports")
    for svc in core.list_namespaced_service(NAMESPACE).items:
        services.add_row(
            svc.metadata.name,
            svc.spec.cluster_ip,
            ", ".join(f"{p.port}->{p.target_port}" for p in svc.spec.ports),
        )
    console.print(services)

    step("4. Traffic: this machine -> Service relay -> relay pod -> Service target")
    relay_ip = core.read_namespaced_service("relay", NAMESPACE).spec.cluster_ip
    wait(
        "the relay's endpoint",
        lambda: any(
            s.addresses for s in core.read_namespaced_endpoints("relay", NAMESPACE).subsets or []
        ),
    )
    console.print(f"GET http://{relay_ip}:80/")
    reply = http_get(relay_ip, 80)
    console.print(
        Panel(reply.decode(errors="replace").strip(), title="reply", border_style="green")
    )
    if b"hello from the target pod" not in reply:
        raise RuntimeError("the reply did not come from the target")

    step("5. The relay's -v trace, from pods/log")
    [relay_pod] = core.list_namespaced_pod(NAMESPACE, label_selector="app=relay").items

    def traced() -> str:
        log = core.read_namespaced_pod_log(relay_pod.metadata.name, NAMESPACE)
        return log if "hello from the target pod" in log else ""

    console.print(
        Panel(
            wait("the trace", traced).rstrip(),
            title=f"kubectl logs {relay_pod.metadata.name}",
            border_style="blue",
        )
    )


def kubectl(sandbox: SandboxThread, *args: str, stdin: str | None = None) -> str:
    """``kubectl ARGS`` with the sandbox's kubeconfig; its output, or an error naming it."""
    shown = " ".join(args)
    console.print(f"[dim]$ kubectl {shown}[/]")
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(sandbox.kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=TIMEOUT * 2, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {shown}: {result.stderr.strip()}")
    if result.stdout.strip():
        console.print(result.stdout.rstrip())
    return result.stdout


def operator_step(sandbox: SandboxThread, core: client.CoreV1Api) -> None:
    step("6. The operator: install from manifests/, then a SocatTunnel")
    kubectl(sandbox, "apply", "-f", str(MANIFESTS / "crd"),
            "-f", str(MANIFESTS / "rbac" / "cluster.yaml"), "-f", str(MANIFESTS / "operator.yaml"))
    kubectl(sandbox, "rollout", "status", "-n", "relay-system", "deployment/relay-operator",
            "--timeout=60s")
    kubectl(sandbox, "apply", "-f", "-", stdin=TUNNEL)
    kubectl(sandbox, "wait", "-n", NAMESPACE, "--for=condition=Ready", "socattunnel/web",
            "--timeout=60s")
    kubectl(sandbox, "get", "-n", NAMESPACE, "socattunnels")
    address = core.read_namespaced_service("web", NAMESPACE).spec.cluster_ip
    reply = wait("an answer through the tunnel's Service", lambda: http_get(address, 80))
    console.print(Panel(reply.decode(errors="replace").strip(), title=f"GET http://{address}/",
                        border_style="green"))
    if b"hello from the target pod" not in reply:
        raise RuntimeError("the reply through the SocatTunnel did not come from the target")


def plugin_step(sandbox: SandboxThread) -> None:
    step("7. kubectl relay tcp svc/target:80: a tunnel from this machine, traced")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    console.print(f"[dim]$ kubectl relay tcp svc/target:80 --listen {port} -n {NAMESPACE}[/]")
    plugin = subprocess.Popen(
        ["kubectl", "relay", "tcp", "svc/target:80", "--listen", str(port), "-n", NAMESPACE],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert plugin.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not any("Press Ctrl-C" in line for line in lines):
            line = plugin.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError("kubectl relay did not start: " + "".join(lines).strip())
            lines.append(line)
        reply = http_get("127.0.0.1", port)
        if b"hello from the target pod" not in reply:
            raise RuntimeError("the reply through kubectl relay did not come from the target")
        time.sleep(1.0)  # the trace arrives through the relay pod's log
        plugin.send_signal(signal.SIGINT)
        rest, _ = plugin.communicate(timeout=TIMEOUT)
        lines.append(rest)
        console.print(Panel("".join(lines).rstrip(), title="kubectl relay", border_style="blue"))
        if plugin.returncode != 0:
            raise RuntimeError(f"kubectl relay exited with {plugin.returncode}")
    finally:
        if plugin.poll() is None:
            plugin.kill()
            plugin.communicate()


def main() -> int:
    started = time.monotonic()
    step("1. Start the sandbox cluster")
    try:
        with SandboxThread(namespace=NAMESPACE) as sandbox:
            console.print(f"API server {sandbox.url}, kubeconfig {sandbox.kubeconfig}")
            with sandbox.api_client() as api:
                run(sandbox, api)
                operator_step(sandbox, client.CoreV1Api(api))
            plugin_step(sandbox)
            step("8. Tear down")
    except Exception as exc:  # the demo reports any failure in one line and exits 1
        console.print(f"[bold red]demo failed:[/] {type(exc).__name__}: {exc}")
        return 1
    console.print(
        f"[bold green]done[/] in {time.monotonic() - started:.1f}s: "
        "every pod process stopped, the sandbox is gone."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
