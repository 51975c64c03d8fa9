"""``python -m e2e.demo`` (``./dev demo``): the relay in a cluster, end to end, in a few seconds.

The cluster is the one ``--kubeconfig`` or ``RELAY_E2E_KUBECONFIG`` names (a
real one: ``./dev cluster up``, kind, AKS), with ``RELAY_E2E_IMAGE`` as the
relay image; without either it says so and exits 2. A readable script of
steps, each printing what it does:

1. connect to the cluster;
2. deploy a target: the relay image answering HTTP with a canned page, behind
   Service ``target``;
3. deploy the relay image, ``relay -v TCP-LISTEN:8080,fork TCP:target:80``,
   behind Service ``relay``;
4. send a real HTTP request from this machine to Service ``relay`` (through
   ``kubectl port-forward``);
5. show the relay pod's ``-v`` trace, read through the API (``pods/log``);
6. install the operator from ``manifests/`` with ``kubectl apply``, apply a
   ``SocatTunnel`` and send traffic through the Service the operator made;
7. open ``kubectl relay tcp svc/target:80`` and send traffic through the tunnel,
   its live trace printed by the plugin;
8. tear everything down (the namespace, the operator).

Steps 2 to 5 use the kubernetes client, as a user's tooling would; steps 6
and 7 run ``kubectl`` and ``kubectl relay`` exactly as a user types them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from e2e.cluster import DEFAULT_RELAY_IMAGE, ENV_IMAGE, MANIFESTS, real_kubeconfig
from e2e.kubeclient import api_client_for

NAMESPACE = "demo"
#: The target's answer to every request (the relay image runs ``SYSTEM:cat`` of it).
TARGET_PAGE = ("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
               "hello from the target pod\n")
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


def deployment(name: str, image: str, container: dict[str, Any],
               volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
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
                    ],
                    "volumes": volumes or [],
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
    """One HTTP/1.0 request over a plain socket; the whole reply (empty if reset)."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: relay\r\n\r\n")
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            return b""
    return reply


class DemoCluster:
    """Where the demo runs: a kubeconfig, the relay image, and how to reach a Service."""

    def __init__(self, kubeconfig: Path, relay_image: str) -> None:
        self.kubeconfig = kubeconfig
        self.relay_image = relay_image

    @contextlib.contextmanager
    def reach(self, name: str, port: int) -> Iterator[tuple[str, int]]:
        """A ``(host, port)`` of this machine that reaches Service ``name``.

        A cluster's IPs are not reachable from here in general, so ``kubectl
        port-forward`` stands in.
        """
        console.print(f"[dim]$ kubectl port-forward -n {NAMESPACE} svc/{name} :{port}[/]")
        forward = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "port-forward", "-n", NAMESPACE,
             f"svc/{name}", f":{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert forward.stdout is not None
            out, deadline = b"", time.monotonic() + TIMEOUT
            pattern = br"Forwarding from 127\.0\.0\.1:(\d+) -> "
            while not (found := re.search(pattern, out)):
                if time.monotonic() > deadline or forward.poll() is not None:
                    raise RuntimeError(f"kubectl port-forward: {out.decode().strip()}")
                if select.select([forward.stdout], [], [], 0.5)[0]:
                    out += os.read(forward.stdout.fileno(), 4096)
            yield "127.0.0.1", int(found.group(1))
        finally:
            forward.terminate()
            forward.wait(TIMEOUT)
            assert forward.stdout is not None
            forward.stdout.close()


def run(cluster: DemoCluster, api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})

    step("2. A target: the relay image answering HTTP, behind Service 'target'")
    core.create_namespaced_config_map(NAMESPACE, {
        "metadata": {"name": "target-page"}, "data": {"page.http": TARGET_PAGE}})
    apps.create_namespaced_deployment(
        NAMESPACE,
        deployment(
            "target",
            cluster.relay_image,
            {"command": ["relay", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:cat /page/page.http"],
             "volumeMounts": [{"name": "page", "mountPath": "/page"}]},
            [{"name": "page", "configMap": {"name": "target-page"}}],
        ),
    )
    core.create_namespaced_service(NAMESPACE, service("target"))
    wait("the target to roll out", lambda: rolled_out(apps, "target"))

    step("3. The relay image: relay -v TCP-LISTEN:8080,fork TCP:target:80")
    command = ["relay", "-v", "TCP-LISTEN:8080,fork,reuseaddr", "TCP:target:80"]
    apps.create_namespaced_deployment(
        NAMESPACE, deployment("relay", cluster.relay_image, {"command": command})
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
    wait(
        "the relay's endpoint",
        lambda: any(
            s.addresses for s in core.read_namespaced_endpoints("relay", NAMESPACE).subsets or []
        ),
    )
    with cluster.reach("relay", 80) as (host, port):
        console.print(f"GET http://{host}:{port}/")
        # kube-proxy writes Service target's rules a moment after its endpoints: until
        # then the relay's connection to it is refused, and the reply is empty (R40).
        reply = wait("an answer through the relay", lambda: http_get(host, port))
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


def kubectl(cluster: DemoCluster, *args: str, stdin: str | None = None,
            show: bool = True) -> str:
    """``kubectl ARGS`` with the cluster's kubeconfig; its output, or an error naming it."""
    shown = " ".join(args)
    if show:
        console.print(f"[dim]$ kubectl {shown}[/]")
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=TIMEOUT * 4, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {shown}: {result.stderr.strip()}")
    if show and result.stdout.strip():
        console.print(result.stdout.rstrip())
    return result.stdout


def operator_step(cluster: DemoCluster) -> None:
    step("6. The operator: install from manifests/, then a SocatTunnel")
    # The operator's image and its relays': the cluster's relay image (as a kustomize
    # `images:` override would set them).
    operator = (MANIFESTS / "operator.yaml").read_text()
    kubectl(cluster, "apply", "-f", str(MANIFESTS / "crd"),
            "-f", str(MANIFESTS / "rbac" / "cluster.yaml"))
    kubectl(cluster, "apply", "-f", "-",
            stdin=operator.replace(DEFAULT_RELAY_IMAGE, cluster.relay_image))
    kubectl(cluster, "rollout", "status", "-n", "relay-system", "deployment/relay-operator",
            "--timeout=120s")
    kubectl(cluster, "apply", "-f", "-", stdin=TUNNEL)
    kubectl(cluster, "wait", "-n", NAMESPACE, "--for=condition=Ready", "socattunnel/web",
            "--timeout=90s")
    kubectl(cluster, "get", "-n", NAMESPACE, "socattunnels")
    with cluster.reach("web", 80) as (host, port):
        reply = wait("an answer through the tunnel's Service", lambda: http_get(host, port))
    console.print(Panel(reply.decode(errors="replace").strip(), title="GET through svc/web",
                        border_style="green"))
    if b"hello from the target pod" not in reply:
        raise RuntimeError("the reply through the SocatTunnel did not come from the target")


def plugin_step(cluster: DemoCluster) -> None:
    step("7. kubectl relay tcp svc/target:80: a tunnel from this machine, traced")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    image = [] if cluster.relay_image == DEFAULT_RELAY_IMAGE else ["--image", cluster.relay_image]
    console.print(f"[dim]$ kubectl relay tcp svc/target:80 --listen {port} -n {NAMESPACE}[/]")
    plugin = subprocess.Popen(
        ["kubectl", "relay", "tcp", *image, "svc/target:80", "--listen", str(port),
         "-n", NAMESPACE],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert plugin.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + TIMEOUT * 2
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


def tear_down(cluster: DemoCluster) -> None:
    """Delete the demo's namespace and the operator; wait (bounded) until their pods are gone."""
    kubectl(cluster, "delete", "-f", str(MANIFESTS / "operator.yaml"), "--ignore-not-found",
            "--wait=true", "--timeout=120s", show=False)
    kubectl(cluster, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
            "--timeout=180s", show=False)


def tour(cluster: DemoCluster) -> None:
    """Steps 2 to 7, then the tear-down (also after a failure)."""
    with api_client_for(cluster.kubeconfig) as api:
        try:
            client.CoreV1Api(api).read_namespace(NAMESPACE)
        except ApiException as exc:
            if exc.status != 404:
                raise
        else:
            console.print(f"namespace {NAMESPACE} is left from an earlier run: deleting it")
            tear_down(cluster)
        try:
            run(cluster, api)
            operator_step(cluster)
            plugin_step(cluster)
        finally:
            step("8. Tear down")
            tear_down(cluster)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", type=Path, default=real_kubeconfig(),
                        help="the cluster's kubeconfig (default: $RELAY_E2E_KUBECONFIG)")
    parser.add_argument("--image", default=os.environ.get(ENV_IMAGE) or DEFAULT_RELAY_IMAGE,
                        help="the relay image that cluster runs (default: $RELAY_E2E_IMAGE, "
                        f"else {DEFAULT_RELAY_IMAGE})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.kubeconfig is None:
        console.print("[bold red]demo: no cluster:[/] pass --kubeconfig or set "
                      "RELAY_E2E_KUBECONFIG (./dev cluster up starts one and prints it)")
        return 2
    started = time.monotonic()
    try:
        step("1. The cluster")
        kubectl(DemoCluster(options.kubeconfig, options.image), "version")
        tour(DemoCluster(options.kubeconfig, options.image))
    except Exception as exc:  # the demo reports any failure in one line and exits 1
        console.print(f"[bold red]demo failed:[/] {type(exc).__name__}: {exc}")
        return 1
    console.print(
        f"[bold green]done[/] in {time.monotonic() - started:.1f}s: "
        f"every pod stopped, namespace {NAMESPACE} and the operator deleted."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
