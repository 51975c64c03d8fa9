"""``kubectl_complete-relay`` and ``ls``/``gc`` against an API server stand-in on loopback.

The stand-in is a real HTTP server (the standard library's) answering the
list and delete requests the plugin makes with fixed objects; completion runs
as kubectl runs it, with the words after ``relay`` as arguments.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from kubectl_relay.plugin import relaypod
from kubectl_relay.plugin.cli import Terminal, complete_main, main

SERVICES = [
    {
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80}, {"port": 443, "protocol": "TCP"}]},
    },
    {"metadata": {"name": "dns"}, "spec": {"ports": [{"port": 53, "protocol": "UDP"}]}},
]
PODS = [
    {
        "metadata": {"name": "web-1"},
        "spec": {"containers": [{"name": "main", "ports": [{"containerPort": 8080}]}]},
    },
    {"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "main"}]}},
]
DEPLOYMENTS = [
    {
        "metadata": {"name": "web"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "main", "ports": [{"name": "echo", "containerPort": 8080}]}
                    ]
                }
            }
        },
    }
]


def relay_pod(name: str, phase: str, client: str, *, deadline: datetime | None = None) -> dict:
    started = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    annotations = {
        relaypod.ANNOTATION_CLIENT: client,
        relaypod.ANNOTATION_TARGET: "svc/web:80",
        relaypod.ANNOTATION_STARTED: started.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if deadline is not None:
        annotations[relaypod.ANNOTATION_DEADLINE] = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {
            "name": name,
            "namespace": "prod",
            "labels": {relaypod.LABEL_USER: "u", relaypod.LABEL_SESSION: "ab12"},
            "annotations": annotations,
            "ownerReferences": [{"kind": "Job", "name": name.rsplit("-", 1)[0]}],
        },
        "status": {"phase": phase},
    }


class ApiStandIn(ThreadingHTTPServer):
    """Lists from ``objects`` by path (query ignored); DELETEs recorded and removed."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.objects = objects
        self.deleted: list[str] = []


class Handler(BaseHTTPRequestHandler):
    server: ApiStandIn

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path in self.server.objects:
            self._answer(200, {"kind": "List", "items": self.server.objects[path]})
        else:
            self._answer(404, {"kind": "Status", "reason": "NotFound", "message": "not found"})

    def do_DELETE(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.deleted.append(self.path)
        name = self.path.rsplit("/", 1)[-1]
        for items in self.server.objects.values():
            items[:] = [i for i in items if i["metadata"]["name"] != name]
        self._answer(200, {"kind": "Status", "status": "Success"})

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiStandIn]:
    past = datetime.now(UTC) - timedelta(hours=1)
    server = ApiStandIn(
        {
            "/api/v1/namespaces": [{"metadata": {"name": n}} for n in ("prod", "kube-system")],
            "/api/v1/namespaces/prod/services": SERVICES,
            "/api/v1/namespaces/prod/pods": PODS,
            "/apis/apps/v1/namespaces/prod/deployments": DEPLOYMENTS,
            "/api/v1/namespaces/prod/secrets": [],
            "/api/v1/pods": [
                relay_pod("kubectl-relay-ab12-0-1-x", "Running", "elsewhere:1"),
                relay_pod("kubectl-relay-ab12-0-2-y", "Succeeded", "elsewhere:1"),
                relay_pod("kubectl-relay-ab12-0-3-z", "Running", "elsewhere:1", deadline=past),
            ],
        }
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
        f"clusters: [{{name: k, cluster: {{server: 'http://127.0.0.1:{server.server_port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: dev, context: {cluster: k, user: u, namespace: prod}},\n"
        "           {name: other, context: {cluster: k, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def complete(capsys: pytest.CaptureFixture[str], *words: str) -> list[str]:
    assert complete_main(list(words)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out.splitlines()


# -- completion ---------------------------------------------------------------------------------


def test_commands_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    commands = complete(capsys, "")
    assert [line.split("\t")[0] for line in commands] == [
        "expose",
        "gc",
        "ls",
        "proxy",
        "run",
        "tcp",
        "tls",
        "udp",
        ":4",
    ]
    assert commands[2].startswith("ls\tList your relay pods")
    flags = complete(capsys, "tcp", "--li")
    assert [line.split("\t")[0] for line in flags] == ["--listen", "--limits", ":4"]
    assert complete(capsys, "ls", "-o", "") == ["wide", "json", "yaml", ":4"]


def test_target_kinds_keep_the_word_open(capsys: pytest.CaptureFixture[str]) -> None:
    assert complete(capsys, "tcp", "") == [
        "svc/\ta Service",
        "pod/\ta pod",
        "deploy/\ta Deployment's pods",
        ":6",
    ]
    assert complete(capsys, "udp", "d") == ["deploy/\ta Deployment's pods", ":6"]


def test_targets_from_the_cluster(capsys: pytest.CaptureFixture[str], api: ApiStandIn) -> None:
    assert complete(capsys, "tcp", "svc/") == [
        "svc/web:http\tport 80/TCP (http)",
        "svc/web:443\tport 443/TCP",
        "svc/dns:53\tport 53/UDP",
        ":4",
    ]
    assert complete(capsys, "tcp", "svc/w") == [
        "svc/web:http\tport 80/TCP (http)",
        "svc/web:443\tport 443/TCP",
        ":4",
    ]
    # The kind as the user spelled it; a pod without declared ports leaves the port open.
    assert complete(capsys, "tcp", "--listen", "0", "pods/") == [
        "pods/web-1:8080\tcontainer main, port 8080/TCP",
        "pods/bare:\tpod/bare: no ports declared",
        ":4",
    ]
    assert complete(capsys, "tcp", "pod/b") == ["pod/bare:\tpod/bare: no ports declared", ":6"]
    assert complete(capsys, "tcp", "deploy/") == [
        "deploy/web:echo\tcontainer main, port 8080/TCP (echo)",
        ":4",
    ]


def test_namespaces_and_contexts(capsys: pytest.CaptureFixture[str], api: ApiStandIn) -> None:
    assert complete(capsys, "tcp", "-n", "") == ["kube-system", "prod", ":4"]
    assert complete(capsys, "ls", "--namespace", "k") == ["kube-system", ":4"]
    assert complete(capsys, "tcp", "--relay-namespace", "p") == ["prod", ":4"]
    assert complete(capsys, "gc", "--context", "") == [
        "dev\tcluster k, user u",
        "other\tcluster k, user u",
        ":4",
    ]
    # Targets are looked up in the namespace given before them.
    assert complete(capsys, "tcp", "-n", "kube-system", "svc/") == [":4"]


def test_an_unreachable_cluster_gives_no_candidates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert complete(capsys, "tcp", "svc/") == [":4"]
    assert complete(capsys, "tcp", "-n", "") == [":4"]


def test_a_path_is_left_to_the_shell(capsys: pytest.CaptureFixture[str]) -> None:
    assert complete(capsys, "tls", "--cafile", "") == [":0"]
    assert complete(capsys, "ls", "--kubeconfig", "") == [":0"]


# -- ls and gc ----------------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, str, str]:
    def console() -> Console:
        return Console(file=io.StringIO(), width=200, color_system=None, soft_wrap=True)

    terminal = Terminal(console(), console())
    code = main(list(argv), terminal=terminal)
    return (
        code,
        terminal.out.file.getvalue(),  # type: ignore[attr-defined]
        terminal.err.file.getvalue(),  # type: ignore[attr-defined]
    )


def test_ls_output_formats(api: ApiStandIn) -> None:
    code, out, err = run("ls", "-o", "json")
    assert (code, err) == (0, "")
    relays = json.loads(out)
    assert [r["pod"] for r in relays] == [
        "kubectl-relay-ab12-0-1-x",
        "kubectl-relay-ab12-0-2-y",
        "kubectl-relay-ab12-0-3-z",
    ]
    assert relays[0] == {
        "namespace": "prod",
        "pod": "kubectl-relay-ab12-0-1-x",
        "job": "kubectl-relay-ab12-0-1",
        "user": "u",
        "session": "ab12",
        "target": "svc/web:80",
        "client": "elsewhere:1",
        "phase": "Running",
        "started": "2026-11-24T11:00:00Z",
        "deadline": None,
        "orphan": None,
    }
    assert relays[1]["orphan"] == "finished (Succeeded)"
    code, out, _ = run("ls", "--output", "yaml")
    assert code == 0 and yaml.safe_load(out) == relays
    code, out, _ = run("ls", "-o", "wide")
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == [
        "NAMESPACE",
        "POD",
        "TARGET",
        "CLIENT",
        "AGE",
        "STATUS",
        "JOB",
        "USER",
        "SESSION",
        "DEADLINE",
    ]
    assert rows[0].split()[-4:] == ["kubectl-relay-ab12-0-1", "u", "ab12", "<none>"]
    code, _, err = run("ls", "-o", "name")
    assert code == 2
    assert err == (
        "error: Invalid value for '-o' / '--output': 'name' is not one of 'wide', 'json', "
        "'yaml'; see 'kubectl relay ls --help'\n"
    )


def test_gc_dry_run_counts_what_gc_deletes(api: ApiStandIn) -> None:
    code, dry, _ = run("gc", "--dry-run")
    assert code == 0 and api.deleted == []
    code, real, _ = run("gc")
    assert code == 0
    assert dry.splitlines() == [
        "would delete prod/kubectl-relay-ab12-0-2-y (finished (Succeeded))",
        "would delete prod/kubectl-relay-ab12-0-3-z (past its deadline)",
        "2 relay pod(s) would be deleted, 1 left",
    ]
    assert real.splitlines() == [
        "deleted prod/kubectl-relay-ab12-0-2-y (finished (Succeeded))",
        "deleted prod/kubectl-relay-ab12-0-3-z (past its deadline)",
        "2 relay pod(s) deleted, 1 left",
    ]
    assert api.deleted == [
        "/apis/batch/v1/namespaces/prod/jobs/kubectl-relay-ab12-0-2",
        "/api/v1/namespaces/prod/pods/kubectl-relay-ab12-0-2-y",
        "/apis/batch/v1/namespaces/prod/jobs/kubectl-relay-ab12-0-3",
        "/api/v1/namespaces/prod/pods/kubectl-relay-ab12-0-3-z",
    ]
    code, again, _ = run("ls")
    assert code == 0 and "kubectl-relay-ab12-0-1-x" in again and "0-2-y" not in again
