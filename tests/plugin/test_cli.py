"""The CLI without a cluster: bad input gives one line and its exit code; the renderer's output."""

from __future__ import annotations

import io
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from kubectl_relay.plugin import events
from kubectl_relay.plugin.cli import Renderer, Terminal, main, show_inventory, tunnels
from kubectl_relay.plugin.inventory import Inventory, RelayInfo
from kubectl_relay.plugin.session import TunnelSpec
from kubectl_relay.plugin.tracing import Accepted, Block, LogLine, Output


def console(width: int = 100) -> Console:
    return Console(
        file=io.StringIO(), width=width, color_system=None, soft_wrap=True, highlight=False
    )


def run(*argv: str) -> tuple[int, str, str]:
    terminal = Terminal(console(), console())
    code = main(list(argv), terminal=terminal)
    out = terminal.out.file.getvalue()  # type: ignore[attr-defined]
    err = terminal.err.file.getvalue()  # type: ignore[attr-defined]
    return code, out, err


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig whose server nobody listens on (nothing may be reached anyway)."""
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: ns}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


BAD_INPUT = [
    (
        ["tcp", "job/x:80"],
        2,
        'error: Invalid value for \'TARGET...\': "job/x:80": unknown kind "job"; accepted: '
        "svc/NAME:PORT, pod/NAME:PORT, deploy/NAME:PORT or HOST:PORT; see 'kubectl relay tcp --help'",
    ),
    (
        ["tcp"],
        2,
        "error: give at least one TARGET (svc/NAME:PORT, pod/NAME:PORT, deploy/NAME:PORT or "
        "HOST:PORT); see 'kubectl relay tcp --help'",
    ),
    (
        ["tcp", "svc/web:http"],
        2,
        "error: svc/web:http has a named port: give the local port with --listen; "
        "see 'kubectl relay tcp --help'",
    ),
    (
        ["tcp", "svc/a:80", "svc/b:80", "--listen", "8080"],
        2,
        "error: 2 TARGET(s) but 1 --listen: give one --listen per TARGET, in the same order, or "
        "none; see 'kubectl relay tcp --help'",
    ),
    (
        ["udp", "svc/dns:53", "--listen", "::1:53"],
        2,
        "error: Invalid value for '-l' / '--listen': \"::1:53\": write an IPv6 address in "
        "brackets; accepted: PORT or ADDRESS:PORT (8080, 127.0.0.1:8080, [::1]:8080); "
        "see 'kubectl relay udp --help'",
    ),
    (
        ["tcp", "svc/web:80", "-q", "-x"],
        2,
        "error: --quiet cannot be combined with -v or -x; see 'kubectl relay tcp --help'",
    ),
    (
        ["tcp", "svc/web:80", "--summary", "-x"],
        2,
        "error: --summary replaces the data trace: drop -v, -x and -q; "
        "see 'kubectl relay tcp --help'",
    ),
    (
        ["tcp", "svc/web:80", "--idle-timeout", "soon"],
        2,
        "error: Invalid value for '--idle-timeout': \"soon\" is not a duration (accepted: 30, 30s, "
        "10m, 1h30m); see 'kubectl relay tcp --help'",
    ),
    (
        ["tcp", "svc/web:80", "--keep-finished=-5"],
        2,
        "error: Invalid value for '--keep-finished': \"-5\" is not a duration of 0 or more "
        "(accepted: 30, 30s, 10m, 1h30m); see 'kubectl relay tcp --help'",
    ),
    (
        ["tcp", "svc/web:80", "--max-lifetime", "inf"],
        2,
        "error: Invalid value for '--max-lifetime': \"inf\" is not a duration (accepted: 30, "
        "30s, 10m, 1h30m); see 'kubectl relay tcp --help'",
    ),
    (
        ["udp", "svc/dns:53", "--session-idle", "0s"],
        2,
        "error: Invalid value for '--session-idle': \"0s\" is not a duration of more than 0 "
        "(accepted: 30, 30s, 10m, 1h30m); see 'kubectl relay udp --help'",
    ),
    (
        ["tcp", "svc/web:80", "--session-idle", "5s"],
        2,
        "error: No such option '--session-idle'; see 'kubectl relay tcp --help'",
    ),
    (
        ["tls", "svc/db:1433", "--insecure", "--tls-secret", "certs"],
        2,
        "error: --insecure turns verification off: drop --cafile/--tls-secret; "
        "see 'kubectl relay tls --help'",
    ),
    # click's own messages end with a full stop: no "'--port'.;" before the hint.
    (
        ["tcp", "svc/web:80", "--port", "8080"],
        2,
        "error: No such option '--port'; see 'kubectl relay tcp --help'",
    ),
    (["bogus"], 2, "error: No such command 'bogus'; see 'kubectl relay --help'"),
    (
        ["tcp", "svc/web:80", "--lease", "5s"],
        2,
        "error: Invalid value for '--lease': 5s is shorter than a relay pod's lease may be "
        "(accepted: 12s or more); see 'kubectl relay tcp --help'",
    ),
    (
        ["run", "--", "TCP-LISTN:80", "-"],
        2,
        'error: Invalid value for command: unknown device/address "TCP-LISTN"; '
        "see 'kubectl relay run --help'",
    ),
    (
        ["run", "--listen", "8080", "--", "TCP:web:80", "-"],
        2,
        "error: --listen needs a relay whose first address listens on TCP (TCP-LISTEN:PORT or "
        "OPENSSL-LISTEN:PORT); see 'kubectl relay run --help'",
    ),
]


@pytest.mark.parametrize(("argv", "code", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_an_exit_code(
    argv: list[str], code: int, message: str, kubeconfig: Path
) -> None:
    status, out, err = run(*argv)
    assert (status, err) == (code, message + "\n")
    assert out == ""


def test_session_idle_goes_to_every_target_of_a_udp_command(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: Path
) -> None:
    started: list[TunnelSpec] = []

    def capture(terminal: Terminal, specs: list[TunnelSpec], params: object) -> int:
        started.extend(specs)
        return 0

    monkeypatch.setattr(tunnels, "run_specs", capture)
    argv = ["udp", "svc/dns:53", "dns2:53", "-l", "5353", "-l", "5354"]
    assert run(*argv, "--session-idle", "2m30s") == (0, "", "")
    assert run(*argv) == (0, "", "")
    assert [spec.session_idle for spec in started] == [150.0, 150.0, 60.0, 60.0]


def test_a_missing_kubeconfig_is_a_cluster_error(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    status, _, err = run("tcp", "svc/web:80", "--kubeconfig", str(missing))
    assert status == 3
    assert err.startswith(f"error: cannot use the kubeconfig {missing}: ")
    assert err.endswith("; check --kubeconfig and --context (kubectl config get-contexts)\n")


def test_a_kubeconfig_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "config"
    broken.write_text("a: b: c\n")
    status, out, err = run("tcp", "svc/web:80", "--kubeconfig", str(broken))
    assert (status, out) == (3, "")
    assert err == (
        f"error: cannot use the kubeconfig {broken}: mapping values are not allowed here in "
        f'"{broken}", line 1, column 5; check --kubeconfig and --context '
        "(kubectl config get-contexts)\n"
    )


def test_a_local_port_in_use_fails_before_the_cluster_is_asked(kubeconfig: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status, out, err = run("tcp", "svc/web:80", "--listen", str(port))
    assert status == 4
    assert err == (
        f"error: cannot listen on 127.0.0.1:{port} (tcp): Address already in use; "
        "choose another local port with --listen (or 0 for any free port)\n"
    )
    assert out == f"Listening on 127.0.0.1:{port} (tcp)\n" or "Listening" not in out


def test_an_unreachable_api_server_is_a_cluster_error(kubeconfig: Path) -> None:
    status, _, err = run("tcp", "svc/web:80", "--listen", "0", "--request-timeout", "2s")
    assert status == 3
    assert err.startswith("error: cannot reach the API server at http://127.0.0.1:9: ")
    assert err.endswith("; check --kubeconfig, --context and the network\n")


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, _ = run("tcp", "--help")
    assert status == 0
    out = capsys.readouterr().out  # click writes help itself
    assert "Exit status:" in out and "4    the local listen address is in use" in out


@pytest.mark.parametrize("command", ["ls", "gc"])
def test_ls_and_gc_describe_their_own_flags_and_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, _ = run(command, "--help")
    out = capsys.readouterr().out
    assert status == 0
    assert "Only this namespace (default: every namespace you may list)." in " ".join(out.split())
    assert "Exit status:" in out and "0    " in out
    assert "tunnel" not in out and "--listen" not in out and "signal" not in out
    assert ("-o, --output [wide|json|yaml]" in out) == (command == "ls")
    assert ("--dry-run" in out) == (command == "gc")


# -- rendering ---------------------------------------------------------------------------------------


def render(*shown: events.SessionEvent, tunnels: int = 1) -> str:
    out = console()
    renderer = Renderer(out, tunnels=tunnels)
    for event in shown:
        renderer.show(event)
    renderer.close()
    return out.file.getvalue()  # type: ignore[attr-defined]


def test_a_traced_tunnel_renders_like_this() -> None:
    text = render(
        events.Listening(0, "127.0.0.1:8080", "tcp"),
        events.PodCreating(0, "kubectl-relay-ab12-0-1", "prod", "svc/web:80", "10.0.0.7:80"),
        events.PodEvent(0, "kubectl-relay-ab12-0-1-x", "Warning", "FailedScheduling", "0/3 nodes"),
        events.TunnelReady(
            0,
            "127.0.0.1:8080",
            "svc/web:80",
            "service prod/web (10.0.0.7:80)",
            "kubectl-relay-ab12-0-1-x",
            "prod",
        ),
        events.ConnectionOpened(0, 1, "127.0.0.1:50000"),
        events.Traced(0, "p", Accepted("2026/11/24 10:00:00.000100", "AF=2 a:1", "AF=2 b:2")),
        events.Traced(
            0,
            "p",
            Block(
                ">",
                "2026/11/24 10:00:00.000200",
                18,
                0,
                17,
                "GET / HTTP/1.0\\r\n\\r\n",
                b"GET / HTTP/1.0\r\n\r\n",
            ),
        ),
        events.Traced(0, "p", Block("<", "2026/11/24 10:00:00.000300", 2, 0, 1, "ok", b"ok")),
        events.Traced(0, "p", LogLine("2026/11/24 10:00:01", "relay", 1, "N", "hidden notice")),
        events.Traced(0, "p", LogLine("2026/11/24 10:00:01", "relay", 1, "E", "connect: refused")),
        events.Traced(0, "p", Output("program output")),
        events.ConnectionClosed(0, 1, 18, 2),
        events.ForwardRetry(0, "503 injected", 0.4),
        events.PodReplaced(0, "kubectl-relay-ab12-0-1-x", "relay pod x was deleted"),
        events.PodDeleted(0, "kubectl-relay-ab12-0-2-y"),
        events.Notice("removed 1 finished relay pod(s) of yours"),
    )
    assert text == (
        "Listening on 127.0.0.1:8080 (tcp)\n"
        "kubectl-relay-ab12-0-1-x: Warning FailedScheduling: 0/3 nodes\n"
        "Forwarding 127.0.0.1:8080 → svc/web:80 (service prod/web (10.0.0.7:80)) "
        "via pod prod/kubectl-relay-ab12-0-1-x\n"
        "Press Ctrl-C to stop; the relay pod is deleted then.\n"
        "connection 1 from 127.0.0.1:50000\n"
        "2026/11/24 10:00:00.000100 relay accepted a connection\n"
        "> 2026/11/24 10:00:00.000200  → to target  length=18 from=0 to=17\n"
        "  GET / HTTP/1.0\\r\n"
        "  \\r\n"
        "< 2026/11/24 10:00:00.000300  ← from target  length=2 from=0 to=1\n"
        "  ok\n"
        "2026/11/24 10:00:01 relay error: connect: refused\n"
        "program output\n"
        "connection 1 closed: 18 bytes sent, 2 received\n"
        "port-forward failed (503 injected); retrying in 0.4s\n"
        "relay pod x was deleted; starting a new relay pod (was kubectl-relay-ab12-0-1-x)\n"
        "deleted relay pod kubectl-relay-ab12-0-2-y\n"
        "removed 1 finished relay pod(s) of yours\n"
    )


def test_several_tunnels_are_numbered() -> None:
    text = render(events.ConnectionOpened(1, 3, "127.0.0.1:1"), tunnels=2)
    assert text == "[2] connection 3 from 127.0.0.1:1\n"


def test_a_retry_names_the_connection_waiting_for_it() -> None:
    text = render(events.ForwardRetry(1, "503 injected", 0.2, 3), tunnels=2)
    assert text == "[2] #3 port-forward failed (503 injected); retrying in 0.2s\n"


def test_ls_table() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    relay = RelayInfo(
        "prod",
        "kubectl-relay-ab12-0-1-x",
        "kubectl-relay-ab12-0-1",
        "alice",
        "ab12",
        "svc/web:80",
        "laptop:42",
        "Running",
        datetime(2026, 11, 24, 11, 0, tzinfo=UTC),
        None,
        "its client (pid 42) is gone",
    )
    out = console(width=160)
    show_inventory(out, Inventory([relay], None), now)
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0].split() == ["NAMESPACE", "POD", "TARGET", "CLIENT", "AGE", "STATUS"]
    assert lines[1].split()[:5] == [
        "prod",
        "kubectl-relay-ab12-0-1-x",
        "svc/web:80",
        "laptop:42",
        "60m",
    ]
    assert lines[1].rstrip().endswith("Running (orphan: its client (pid 42) is gone)")
