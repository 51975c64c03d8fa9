"""Tunnel files: what a good one gives, and the exact message of every mistake, with its line."""

from __future__ import annotations

import io
import socket
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from kubectl_relay.plugin import events
from kubectl_relay.plugin.cli import Renderer
from kubectl_relay.plugin.errors import TunnelFileError
from kubectl_relay.plugin.exposing import ExposeSpec
from kubectl_relay.plugin.proxying import ProxySettings
from kubectl_relay.plugin.relaypod import PodSettings, TLSSettings, Toleration
from kubectl_relay.plugin.session import SessionOptions, TunnelSpec
from kubectl_relay.plugin.targets import Kind, ListenAddress, Target
from kubectl_relay.plugin.tunnelfile import FileTunnel, load
from kubectl_relay.plugin.tunnelset import Group, _renumbered, groups
from tests.plugin.test_cli import kubeconfig, run

__all__ = ["kubeconfig"]  # a fixture, used by name

TARGETS = "svc/NAME:PORT, pod/NAME:PORT, deploy/NAME:PORT or HOST:PORT"
LISTENS = "PORT or ADDRESS:PORT (8080, 127.0.0.1:8080, [::1]:8080)"
TUNNEL_KEYS = "name, kind, namespace, trace, pod, target, listen"
KINDS = "tcp, udp, tls, run, proxy, expose"
SERVICES = "lower-case letters, digits and inner '-', starting with a letter, at most 63"


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def mistakes(text: str, base: Path | None = None) -> list[str]:
    """The messages a file gives, one per mistake, in the file's order."""
    with pytest.raises(TunnelFileError) as caught:
        load(yaml_text(text), "t.yaml", base or Path("/nonexistent"))
    assert caught.value.exit_code == 2
    assert str(caught.value).splitlines()[0] == (
        f"t.yaml: {len(caught.value.mistakes)} mistake"
        f"{'s' if len(caught.value.mistakes) > 1 else ''}, nothing was started"
    )
    return [str(mistake) for mistake in caught.value.mistakes]


# -- what a good file gives ------------------------------------------------------------------


def test_a_file_gives_each_target_its_spec_namespace_and_options(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"CA PEM")
    tunnels = load(
        yaml_text(
            """
            namespace: shop
            trace: [verbose, hex]
            pod:
              idle-timeout: 5m
              tolerations: [dedicated=relay:NoSchedule]
              requests: {cpu: 50m}
            tunnels:
              - name: web
                kind: tcp
                target: [svc/web:80, deploy/api:http]
                listen: [8080, "[::1]:9090"]
              - name: dns
                kind: udp
                namespace: kube-system
                target: kube-dns:53
                session-idle: 2m30s
                trace: quiet
                pod: {idle-timeout: 1h, image: relay:test, node-selector: {zone: a}}
              - name: db
                kind: tls
                target: db.example.net:5432
                listen: 0
                cafile: ca.pem
                server-name: db.internal
                trace: summary
              - name: raw
                kind: run
                command: -u TCP-LISTEN:9000,fork 'TCP:10.0.0.7:80'
                listen: 9001
            """
        ),
        "t.yaml",
        tmp_path,
    )
    shared_pod = PodSettings(
        tolerations=(Toleration("dedicated", "Equal", "relay", "NoSchedule"),),
        requests={"cpu": "50m", "memory": "32Mi"},
        idle_timeout=300.0,
    )
    shop = SessionOptions(trace="rows", pod=shared_pod)
    assert tunnels == [
        FileTunnel(
            "web.1",
            TunnelSpec("tcp", Target(Kind.SERVICE, "web", 80), ListenAddress(port=8080)),
            "shop",
            shop,
        ),
        FileTunnel(
            "web.2",
            TunnelSpec("tcp", Target(Kind.DEPLOYMENT, "api", "http"), ListenAddress("::1", 9090)),
            "shop",
            shop,
        ),
        FileTunnel(
            "dns",
            TunnelSpec("udp", Target(Kind.HOST, "kube-dns", 53), ListenAddress(port=53),
                       session_idle=150.0),
            "kube-system",
            SessionOptions(
                trace="quiet",
                pod=PodSettings(
                    image="relay:test",
                    node_selector={"zone": "a"},
                    tolerations=shared_pod.tolerations,
                    requests=shared_pod.requests,
                    idle_timeout=3600.0,
                ),
            ),
        ),
        FileTunnel(
            "db",
            TunnelSpec(
                "tls",
                Target(Kind.HOST, "db.example.net", 5432),
                ListenAddress(port=0),
                tls=TLSSettings(ca_key="ca.crt", server_name="db.internal"),
                tls_files={"ca.crt": b"CA PEM"},
            ),
            "shop",
            SessionOptions(trace="quiet", summary=True, pod=shared_pod),
        ),
        FileTunnel(
            "raw",
            TunnelSpec(
                "run",
                listen=ListenAddress(port=9001),
                run_args=("-u", "TCP-LISTEN:9000,fork", "TCP:10.0.0.7:80"),
                run_port=9000,
            ),
            "shop",
            shop,
        ),
    ]


def test_a_proxy_tunnel_takes_its_port_and_patterns() -> None:
    text = "tunnels:\n  - {name: p, kind: proxy, deny: 169.254.0.0/16, allow: [web.shop, 10.0.0.0/8]}\n"
    listen = ListenAddress(port=1080)
    settings = ProxySettings(listen, allow=("web.shop", "10.0.0.0/8"), deny=("169.254.0.0/16",))
    assert load(text, "t.yaml", Path()) == [
        FileTunnel("p", TunnelSpec("proxy", listen=listen, proxy=settings), None)
    ]


def test_an_expose_tunnel_names_its_service_after_itself_unless_told() -> None:
    text = (
        "tunnels:\n"
        "  - {name: dev-api, kind: expose, local-port: 8080}\n"
        "  - {name: b, kind: expose, local-port: 9090, service: web, port: 8000, namespace: x}\n"
    )
    assert load(text, "t.yaml", Path()) == [
        FileTunnel("dev-api", ExposeSpec(8080, "dev-api", 80), None),
        FileTunnel("b", ExposeSpec(9090, "web", 8000), "x"),
    ]


def test_tunnels_share_a_session_when_namespace_and_options_match() -> None:
    quiet = SessionOptions(trace="quiet")
    spec = TunnelSpec("tcp", Target(Kind.HOST, "h", 1), ListenAddress(port=0))
    tunnels = [
        FileTunnel("a", spec, None),
        FileTunnel("b", spec, "other"),
        FileTunnel("c", spec, "dev"),
        FileTunnel("d", spec, None, quiet),
        FileTunnel("e", spec, "other"),
        FileTunnel("f", ExposeSpec(8080, "f"), None),
        FileTunnel("g", ExposeSpec(8080, "g"), None),
        FileTunnel("h", spec, None),
    ]
    dev = SessionOptions(relay_namespace="dev", target_namespace="dev")
    assert groups(tunnels, "dev") == [
        Group("dev", dev, (0, 2, 7)),
        Group("other", SessionOptions(relay_namespace="other", target_namespace="other"), (1, 4)),
        Group("dev", SessionOptions(trace="quiet", relay_namespace="dev", target_namespace="dev"),
              (3,)),
        Group("dev", dev, (5,)),  # an expose tunnel runs a session of its own
        Group("dev", dev, (6,)),
    ]


def test_a_sessions_events_get_the_files_tunnel_numbers() -> None:
    seen: list[events.SessionEvent] = []
    sink = _renumbered(seen.append, (3, 5))
    sink(events.ConnectionOpened(1, 2, "127.0.0.1:5000"))
    sink(events.Notice("removed 1 finished relay pod(s) of yours"))
    assert seen == [
        events.ConnectionOpened(5, 2, "127.0.0.1:5000"),
        events.Notice("removed 1 finished relay pod(s) of yours"),
    ]


def test_lines_are_prefixed_with_the_tunnel_name() -> None:
    out = Console(file=io.StringIO(), width=100, color_system=None, soft_wrap=True)
    renderer = Renderer(out, tunnels=2, names=("web", "dns"))
    renderer.show(events.ConnectionOpened(1, 3, "127.0.0.1:5000"))
    renderer.show(events.Listening(0, "127.0.0.1:8080", "tcp"))
    assert out.file.getvalue().splitlines() == [  # type: ignore[attr-defined]
        "[dns] connection 3 from 127.0.0.1:5000",
        "[web] Listening on 127.0.0.1:8080 (tcp)",
    ]


# -- every mistake, with its line ------------------------------------------------------------

MISTAKES = [
    pytest.param(
        "", ["t.yaml:1:1: the file is empty (accepted: tunnels: a list of tunnels)"], id="empty"
    ),
    pytest.param(
        "tunnels: [\n",
        [
            "t.yaml:2:1: not valid YAML: while parsing a flow node expected the node content, "
            "but found '<stream end>'"
        ],
        id="yaml-syntax",
    ),
    pytest.param(
        "- name: a\n",
        [
            "t.yaml:1:1: the file must be a mapping, not a list "
            "(accepted: namespace, trace, pod, tunnels)"
        ],
        id="top-not-mapping",
    ),
    pytest.param(
        """
        namespce: shop
        """,
        [
            't.yaml:1:1: unknown key "namespce"; did you mean "namespace"? '
            "(accepted: namespace, trace, pod, tunnels)",
            't.yaml:1:1: "tunnels" is missing (accepted: tunnels: a list of tunnels)',
        ],
        id="unknown-top-key-and-no-tunnels",
    ),
    pytest.param(
        """
        tunnels: []
        """,
        [
            "t.yaml:1:10: tunnels: must be a list of tunnels, not an empty list "
            "(accepted: - name: NAME, kind: KIND, ... (one item per tunnel))"
        ],
        id="no-tunnels",
    ),
    pytest.param(
        """
        namespace: Shop_1
        trace: [quiet, hex]
        tunnels:
          - {name: a, kind: tcp, target: h:1}
        """,
        [
            't.yaml:1:12: namespace: "Shop_1" is not a namespace name '
            "(accepted: lower-case letters, digits and inner '-', at most 63 characters)",
            "t.yaml:2:8: trace: quiet cannot be combined with verbose or hex "
            "(accepted: verbose, hex, [verbose, hex], quiet or summary)",
        ],
        id="bad-defaults",
    ),
    pytest.param(
        """
        tunnels:
          - name: web
            kind: tcp
            target: svc/web
            lisen: 8080
        """,
        [
            f't.yaml:4:13: tunnels[0].target: "svc/web": the port is missing (accepted: {TARGETS})',
            't.yaml:5:5: tunnels[0]: unknown key "lisen"; did you mean "listen"? '
            f"(accepted: {TUNNEL_KEYS})",
        ],
        id="unknown-key-and-bad-target",
    ),
    pytest.param(
        """
        tunnels:
          - name: web
            kind: tcp
            target: svc/web:80
            target: svc/web:81
          - kind: tcpp
            target: h:2
          - name: web
            target: h:3
        """,
        [
            "t.yaml:5:5: tunnels[0].target: given twice (first on line 4)",
            't.yaml:6:5: tunnels[1]: "name" is missing (accepted: lower-case letters, digits and '
            "inner '-', at most 63 characters)",
            't.yaml:6:11: tunnels[1].kind: unknown kind "tcpp"; did you mean "tcp"? '
            f"(accepted: {KINDS})",
            f't.yaml:8:5: tunnels[2]: "kind" is missing (accepted: {KINDS})',
            't.yaml:8:11: tunnels[2].name: "web" is already the name of the tunnel on line 2 '
            "(accepted: a name of its own for each tunnel)",
        ],
        id="duplicate-key-missing-name-bad-kind-duplicate-name",
    ),
    pytest.param(
        """
        tunnels:
          - name: a
            kind: tcp
            target: svc/a:80
            listen: 8080
          - name: b
            kind: udp
            target: svc/b:8080
          - name: c
            kind: tcp
            target: [svc/c:80, svc/d:80]
            listen: ["0.0.0.0:8080", 0]
          - name: d
            kind: run
            command: [TCP-LISTEN:80, "TCP:h:80"]
            listen: "[::1]:8080"
          - name: e
            kind: run
            command: [TCP-LISTEN:80, "TCP:h:80"]
            listen: "[::1]:8080"
        """,
        [
            't.yaml:12:14: tunnels[2].listen[0]: local tcp port 8080 is already taken by tunnel "a" '
            "(line 5) (accepted: a local port of its own for each tunnel, or 0 for any free port)",
            't.yaml:20:13: tunnels[4].listen: local tcp port 8080 is already taken by tunnel "d" '
            "(line 16) (accepted: a local port of its own for each tunnel, or 0 for any free port)",
        ],
        id="duplicate-local-ports",
    ),
    pytest.param(
        """
        tunnels:
          - name: a
            kind: tcp
            target: [svc/a:http, svc/b:80]
          - name: b
            kind: tcp
            target: [h:1, h:2]
            listen: 9000
          - name: c
            kind: udp
            target: 53
            listen: "::1:53"
        """,
        [
            't.yaml:4:14: tunnels[0].target[0]: "svc/a:http" has a named port: give the local '
            f"port with listen (accepted: {LISTENS})",
            "t.yaml:8:13: tunnels[1].listen: 2 target(s) but 1 local port(s) "
            "(accepted: one listen per target, in the same order, or none)",
            f"t.yaml:11:13: tunnels[2].target: must be a string, not a number (accepted: {TARGETS})",
            't.yaml:12:13: tunnels[2].listen: "::1:53": write an IPv6 address in brackets '
            f"(accepted: {LISTENS})",
        ],
        id="targets-and-listens",
    ),
    pytest.param(
        """
        tunnels:
          - name: Web
            kind: tcp
            target: h:1
            cafile: ca.pem
            trace: [loud]
            pod:
              imag: x
              idle-timeout: soon
              max-lifetime: -5
              tolerations: ["=x:NoSchedule", "k:Never"]
              requests: cpu
        """,
        [
            't.yaml:2:11: tunnels[0].name: "Web" is not a tunnel name (accepted: lower-case '
            "letters, digits and inner '-', at most 63 characters)",
            't.yaml:5:13: tunnels[0].cafile: "cafile" does not apply to a tcp tunnel '
            f"(accepted: {TUNNEL_KEYS})",
            't.yaml:6:13: tunnels[0].trace[0]: unknown trace "loud" '
            "(accepted: verbose, hex, [verbose, hex], quiet or summary)",
            't.yaml:8:7: tunnels[0].pod: unknown key "imag"; did you mean "image"? (accepted: '
            "image, node-selector, tolerations, requests, limits, idle-timeout, max-lifetime, "
            "keep-finished, pod-timeout)",
            't.yaml:9:21: tunnels[0].pod.idle-timeout: "soon" is not a duration '
            "(accepted: 30, 30s, 10m, 1h30m)",
            "t.yaml:10:21: tunnels[0].pod.max-lifetime: a duration cannot be negative "
            "(accepted: 30, 30s, 10m, 1h30m)",
            't.yaml:11:21: tunnels[0].pod.tolerations[0]: "=x:NoSchedule" has no key '
            "(accepted: KEY[=VALUE][:EFFECT])",
            't.yaml:11:38: tunnels[0].pod.tolerations[1]: "Never" is not an effect '
            "(NoSchedule, PreferNoSchedule, NoExecute) (accepted: KEY[=VALUE][:EFFECT])",
            "t.yaml:12:17: tunnels[0].pod.requests: must be a mapping, not a string "
            "(accepted: KEY: VALUE)",
        ],
        id="name-kind-keys-trace-pod",
    ),
    pytest.param(
        """
        tunnels:
          - name: db
            kind: tls
            target: db:5432
            insecure: "yes"
            cafile: missing.pem
            tls-secret: db-ca
            cert: c.pem
          - name: db2
            kind: tls
            target: db:5433
            insecure: true
            tls-secret: db-ca
        """,
        [
            "t.yaml:5:15: tunnels[0].insecure: must be true or false, not a string "
            "(accepted: true, false)",
            't.yaml:6:13: tunnels[0].cafile: cannot read "/nonexistent/missing.pem": No such file '
            "or directory (accepted: a readable PEM file, its path relative to the tunnel file)",
            "t.yaml:7:17: tunnels[0].tls-secret: cannot be combined with cafile, cert "
            "(accepted: tls-secret or files)",
            't.yaml:8:11: tunnels[0].cert: cannot read "/nonexistent/c.pem": No such file or '
            "directory (accepted: a readable PEM file, its path relative to the tunnel file)",
            't.yaml:8:11: tunnels[0].cert: goes with "key" (accepted: cert and key together)',
            "t.yaml:12:15: tunnels[1].insecure: turns verification off: drop cafile and "
            "tls-secret (accepted: insecure, or cafile/tls-secret)",
        ],
        id="tls",
    ),
    pytest.param(
        """
        tunnels:
          - name: a
            kind: run
            command: [TCP:h:80, "BOGUS:x"]
          - name: b
            kind: run
            command: "STDIO 'TCP:h:80"
          - name: c
            kind: run
            command: [STDIO, TCP:h:80]
            listen: 8080
          - name: d
            kind: run
            listen: 8081
          - name: e
            kind: run
            command: {a: b}
          - name: f
            kind: run
            command: [TCP-LISTEN:80,fork, "TCP:h:80"]
        """,
        [
            't.yaml:4:14: tunnels[0].command: unknown device/address "BOGUS"',
            "t.yaml:7:14: tunnels[1].command: cannot be split into words: No closing quotation "
            "(accepted: a list of words, or a line with balanced quotes)",
            "t.yaml:11:13: tunnels[2].listen: needs a relay whose first address listens on TCP "
            "(TCP-LISTEN:PORT or OPENSSL-LISTEN:PORT)",
            't.yaml:12:5: tunnels[3]: "command" is missing (accepted: [ADDRESS1, ADDRESS2])',
            "t.yaml:17:14: tunnels[4].command: must be a list of words, not a mapping "
            "(accepted: [OPTIONS..., ADDRESS1, ADDRESS2])",
            't.yaml:20:29: tunnels[5].command[1]: YAML splits "TCP-LISTEN:80,fork" at the comma '
            'into two words (accepted: a quoted word ("TCP-LISTEN:80,fork"), one word per line, '
            "or the command as one string)",
        ],
        id="run",
    ),
    pytest.param(
        """
        tunnels:
          - name: socks
            kind: proxy
            deny: [169.254.0.0/16, "a,b", "bad name!"]
            allow: 10
          - name: socks2
            kind: proxy
          - name: socks3
            kind: proxy
            target: svc/a:80
        """,
        [
            't.yaml:4:28: tunnels[0].deny[1]: "a,b": give one CIDR or name per deny, without '
            "commas",
            't.yaml:4:35: tunnels[0].deny[2]: "bad name!" is neither a CIDR (10.0.0.0/8, '
            "fd00::/8, 10.1.2.3) nor a host name pattern (web.shop, "
            "*.kube-system.svc.cluster.local)",
            "t.yaml:5:12: tunnels[0].allow: must be a string, not a number",
            't.yaml:9:11: tunnels[2]: local tcp port 1080 is already taken by tunnel "socks2" '
            "(line 7) (accepted: a local port of its own for each tunnel, or 0 for any free port)",
            't.yaml:10:13: tunnels[2].target: "target" does not apply to a proxy tunnel '
            "(accepted: name, kind, namespace, trace, pod, listen, allow, deny)",
        ],
        id="proxy",
    ),
    pytest.param(
        """
        namespace: shop
        tunnels:
          - name: dev-api
            kind: expose
            local-port: 8080
          - name: 1api
            kind: expose
            local-port: 0
            port: http
            trace: summary
          - name: other
            kind: expose
            service: dev-api
            local-port: 9090
          - name: x
            kind: [expose]
          - name: y
            kind: expose
            service: Y
        """,
        [
            't.yaml:6:11: tunnels[1].name: "1api" is not a Service name (the tunnel\'s name, unless '
            f"service is given) (accepted: {SERVICES})",
            't.yaml:8:17: tunnels[1].local-port: "0" is not a port number (accepted: 1 to 65535)',
            't.yaml:9:11: tunnels[1].port: "http" is not a port number (accepted: 1 to 65535)',
            "t.yaml:10:12: tunnels[1].trace: summary is not available for expose yet "
            "(accepted: verbose, hex or quiet)",
            't.yaml:13:14: tunnels[2].service: Service "dev-api" is already exposed by the tunnel '
            "on line 3 (accepted: a Service name of its own for each expose tunnel)",
            f"t.yaml:16:11: tunnels[3].kind: must be a string, not a list (accepted: {KINDS})",
            't.yaml:17:5: tunnels[4]: "local-port" is missing (accepted: a port number, 1 to 65535)',
            f't.yaml:19:14: tunnels[4].service: "Y" is not a Service name (accepted: {SERVICES})',
        ],
        id="expose",
    ),
    pytest.param(
        """
        defaults: &d {kind: tcp}
        tunnels:
          - <<: *d
            name: a
            target: h:1
            3: x
        """,
        [
            't.yaml:1:1: unknown key "defaults" (accepted: namespace, trace, pod, tunnels)',
            "t.yaml:3:5: tunnels[0]: merge keys (<<) are not supported "
            "(accepted: the top-level namespace, trace and pod as defaults)",
            f't.yaml:3:5: tunnels[0]: "kind" is missing (accepted: {KINDS})',
            "t.yaml:6:5: tunnels[0]: a key must be a name, not a number (accepted: name, kind, "
            "namespace, trace, pod, target, listen, session-idle, insecure, cafile, cert, key, "
            "tls-secret, server-name, command, allow, deny, local-port, service, port)",
        ],
        id="merge-keys-and-odd-keys",
    ),
    pytest.param(
        """
        tunnels:
          - {name: a, kind: udp, target: h:53, session-idle: 0}
          - {name: b, kind: udp, target: h:54, session-idle: soon}
          - {name: c, kind: tcp, target: h:55, session-idle: 5s}
        """,
        [
            "t.yaml:2:54: tunnels[0].session-idle: must be more than 0 (0 would end each "
            "session at once) (accepted: a duration of more than 0 (30, 30s, 10m, 1h30m))",
            't.yaml:3:54: tunnels[1].session-idle: "soon" is not a duration '
            "(accepted: 30, 30s, 10m, 1h30m)",
            't.yaml:4:54: tunnels[2].session-idle: "session-idle" does not apply to a tcp '
            f"tunnel (accepted: {TUNNEL_KEYS})",
        ],
        id="session-idle",
    ),
]


@pytest.mark.parametrize(("text", "expected"), MISTAKES)
def test_every_mistake_has_its_line_and_what_is_accepted(text: str, expected: list[str]) -> None:
    assert mistakes(text) == expected


# -- the command ------------------------------------------------------------------------------


def test_a_file_with_mistakes_exits_2_and_lists_them_all(kubeconfig: Path, tmp_path: Path) -> None:
    file = tmp_path / "tunnels.yaml"
    file.write_text("tunnels:\n  - {name: a, kind: tcp, target: svc/a}\n  - {name: a, kind: udp}\n")
    code, out, err = run("-f", str(file))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {file}: 3 mistakes, nothing was started",
        f'  {file}:2:34: tunnels[0].target: "svc/a": the port is missing (accepted: {TARGETS})',
        f'  {file}:3:5: tunnels[1]: "target" is missing (accepted: {TARGETS})',
        f'  {file}:3:12: tunnels[1].name: "a" is already the name of the tunnel on line 2 '
        "(accepted: a name of its own for each tunnel)",
    ]


def test_stdin_is_read_with_a_dash(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("tunnels:\n  - {name: a, kind: udp}\n"))
    code, _, err = run("-f", "-")
    assert code == 2
    assert err.splitlines() == [
        "error: <stdin>: 1 mistake, nothing was started",
        f'  <stdin>:2:5: tunnels[0]: "target" is missing (accepted: {TARGETS})',
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-n", "x", "tcp", "h:1"],
            "error: -f and the options before the command go without a "
            "command; give 'tcp' its options after its name; see 'kubectl relay --help'",
        ),
        (
            ["--context", "c"],
            "error: give a command (expose, gc, ls, proxy, run, tcp, tls, udp) or -f FILE; "
            "see 'kubectl relay --help'",
        ),
    ],
)
def test_group_options_go_with_f_only(argv: list[str], message: str) -> None:
    assert run(*argv) == (2, "", message + "\n")


def test_a_port_in_use_in_any_group_fails_before_the_cluster_is_asked(
    kubeconfig: Path, tmp_path: Path
) -> None:
    """Two namespaces make two sessions; the second's port is taken: exit 4, the first's freed."""
    with socket.socket() as taken, socket.socket() as probe:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        file = tmp_path / "tunnels.yaml"
        file.write_text(
            "tunnels:\n"
            f"  - {{name: a, kind: tcp, target: h:1, listen: {free}}}\n"
            f"  - {{name: b, kind: tcp, target: h:2, listen: {taken.getsockname()[1]}, "
            "namespace: other}\n"
        )
        code, out, err = run("-f", str(file))
    assert code == 4, err
    assert f"[a] Listening on 127.0.0.1:{free} (tcp)" in out
    assert "127.0.0.1:9" not in err  # the cluster was never asked
    with socket.socket() as again:
        again.bind(("127.0.0.1", free))  # the first group's listener was closed


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Tunnels from a file", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "ca.pem").write_bytes(b"CA")
    tunnels = load(example, "README.md", tmp_path)
    kinds = [t.spec.mode if isinstance(t.spec, TunnelSpec) else "expose" for t in tunnels]
    assert [(t.name, kind, t.namespace) for t, kind in zip(tunnels, kinds, strict=True)] == [
        ("web", "tcp", "shop"),
        ("dns", "udp", "kube-system"),
        ("db", "tls", "shop"),
        ("raw", "run", "shop"),
        ("socks", "proxy", "shop"),
        ("dev-api", "expose", "shop"),
    ]
