"""The relay Job and pod: restricted profile, labels, the engine command."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubectl_relay import podsecurity
from kubectl_relay.engine.addresses import parse_address
from kubectl_relay.engine.cli import parse_command_line
from kubectl_relay.plugin import proxying, relaypod
from kubectl_relay.plugin.muxforward import MUX_VARIABLE, uses_mux
from kubectl_relay.plugin.proxying import ProxySettings
from kubectl_relay.plugin.relaypod import ClientInfo, Mode, PodSettings, TLSSettings, Toleration
from tests.conftest import scaled
from tests.operator.podsecurity import hardening_violations, restricted_violations
from tests.support import (
    RelayProcess,
    ThreadedServer,
    free_port,
    mux_client,
    mux_exchange,
    recv_all,
    wait_for_output,
)

CLIENT = ClientInfo(
    "alice@example.com", "0123abcd", "laptop", 4242, datetime(2026, 11, 24, tzinfo=UTC)
)


def job(**settings: Any) -> dict[str, Any]:
    command = relaypod.relay_command(
        "text", relaypod.listen_address(600), relaypod.target_address("tcp", "10.0.0.1:80")
    )
    return relaypod.relay_job(
        name="kubectl-relay-0123abcd-0-1",
        namespace="prod",
        command=command,
        client=CLIENT,
        tunnel=0,
        target="svc/web:80",
        settings=PodSettings(**settings),
        tls=TLSSettings(secret="certs", ca_key="ca.crt"),
    )


def test_the_pod_passes_the_restricted_profile_and_the_hardening() -> None:
    body = job(node_selector={"pool": "debug"}, tolerations=(Toleration("debug", "Exists"),))
    template = body["spec"]["template"]
    assert restricted_violations(template["spec"], template["metadata"]) == []
    assert hardening_violations(template["spec"]) == []


def test_the_job_goes_away_on_its_own() -> None:
    spec = job(max_lifetime=3600, keep_finished=5)["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["ttlSecondsAfterFinished"] == 5
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["template"]["spec"]["activeDeadlineSeconds"] == 3600


def test_labels_and_annotations_name_the_user_session_and_client() -> None:
    body = job(max_lifetime=3600)
    metadata = body["metadata"]
    assert metadata["labels"] == {
        "app.kubernetes.io/managed-by": "kubectl-relay",
        "app.kubernetes.io/name": "kubectl-relay",
        "relay.kubectl-relay.io/user": "alice_example.com",
        "relay.kubectl-relay.io/session": "0123abcd",
        "relay.kubectl-relay.io/tunnel": "0",
    }
    annotations = metadata["annotations"]
    assert annotations["relay.kubectl-relay.io/client"] == "laptop:4242"
    assert annotations["relay.kubectl-relay.io/started"] == "2026-11-24T00:00:00Z"
    assert annotations["relay.kubectl-relay.io/deadline"] == "2026-11-24T01:00:00Z"
    assert body["spec"]["template"]["metadata"]["labels"] == metadata["labels"]


def test_the_command_is_a_valid_engine_command_line() -> None:
    container = job()["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/kubectl-relay/relay:0.1.0"
    command = container["command"]
    assert command == [
        "relay",
        "-d",
        "-d",
        "-lu",
        "--trace-session-ids",
        "-v",
        "--quiet-sessions",
        "--grace-period",
        "3",
        "-t",
        "30",
        "TCP-LISTEN:8000,fork,reuseaddr,frame=len16,accept-timeout=600",
        "TCP:10.0.0.1:80",
    ]
    line = parse_command_line(command[1:])
    assert line.quiet_sessions
    for address in line.addresses:
        parse_address(address)


def test_a_tcp_tunnels_relay_accepts_mux_streams_with_the_same_idle_exit() -> None:
    first = relaypod.listen_address(600, mux=True)
    assert first == "MUX-ACCEPT:8000,fork,reuseaddr,accept-timeout=600"
    line = parse_command_line(relaypod.relay_command("quiet", first, "TCP:10.0.0.1:80")[1:])
    assert [parse_address(address).keyword for address in line.addresses] == ["MUX-ACCEPT", "TCP"]


def test_a_udp_tunnels_relay_frames_the_datagrams_of_each_mux_stream() -> None:
    first = relaypod.listen_address(600, mux=True, datagrams=True)
    assert first == "MUX-ACCEPT:8000,fork,reuseaddr,accept-timeout=600,frame=len16"
    assert parse_address(first).options.text("frame") == "len16"


@pytest.mark.parametrize("mode", ["tcp", "tls", "udp"])
def test_stream_tunnels_wait_for_a_reply_after_a_half_close_and_datagram_ones_do_not(
    mode: Mode,
) -> None:
    second = relaypod.target_address(mode, "10.0.0.1:80")
    patience = relaypod.close_timeout(mode)
    command = relaypod.relay_command("quiet", "MUX-ACCEPT:8000", second, close_timeout=patience)
    expected = 0.5 if mode == "udp" else relaypod.CLOSE_TIMEOUT  # 0.5: socat's default
    assert parse_command_line(command[1:]).close_timeout == expected


def test_a_proxy_tunnels_pod_waits_for_replies_as_a_tcp_tunnels_does() -> None:
    command = proxying.relay_command("quiet", 60, ProxySettings())
    assert parse_command_line(command[1:]).close_timeout == relaypod.CLOSE_TIMEOUT


def slow_answer(conn: socket.socket) -> None:
    """Read the request to its end, think for 1.5 s, then say how long it was."""
    request = recv_all(conn)
    time.sleep(1.5)
    conn.sendall(b"%d bytes\n" % len(request))


async def test_a_tcp_tunnels_pod_gives_a_client_that_half_closed_a_slow_reply() -> None:
    """The pod's own command, run here: socat's -t 0.5 cut such a session with no reply."""
    port = free_port()
    with ThreadedServer(slow_answer) as server:
        first = relaypod.listen_address(60, mux=True).replace(str(relaypod.POD_PORT), str(port))
        second = relaypod.target_address("tcp", f"127.0.0.1:{server.port}")
        command = relaypod.relay_command("quiet", first, second)
        with RelayProcess(command[1:], as_given=True) as relay:
            await asyncio.to_thread(wait_for_output, relay, lambda _out, err: "listening on" in err)
            async with mux_client(port) as connection:
                reply = await mux_exchange(connection, b"x" * 1000, "127.0.0.1:5000")
    assert reply == b"1000 bytes\n"


@pytest.mark.parametrize(
    ("mode", "variable", "expected"),
    [("tcp", None, True), ("tcp", "1", True), ("tcp", "0", False), ("tls", None, True),
     ("proxy", None, True), ("proxy", "0", False), ("udp", None, True), ("udp", "0", False),
     ("run", None, False)],
)
def test_tunnels_share_a_port_forward_unless_told_not_to_but_run_ones(
    monkeypatch: pytest.MonkeyPatch, mode: str, variable: str | None, expected: bool
) -> None:
    if variable is None:
        monkeypatch.delenv(MUX_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(MUX_VARIABLE, variable)
    assert uses_mux(mode) is expected


def test_the_relay_ends_its_sessions_before_the_kubelet_kills_the_pod() -> None:
    """On SIGTERM the relay cuts what still runs, with a log line, inside the pod's grace period."""
    spec = job()["spec"]["template"]["spec"]
    line = parse_command_line(spec["containers"][0]["command"][1:])
    assert 0 < line.grace_period < spec["terminationGracePeriodSeconds"] - 1


def test_target_addresses_per_mode() -> None:
    assert relaypod.target_address("udp", "10.0.0.1:53") == "UDP:10.0.0.1:53,shut-none"
    assert relaypod.target_address("tls", "db:1433") == "OPENSSL:db:1433"
    insecure = TLSSettings(verify=False)
    assert relaypod.target_address("tls", "db:1433", insecure) == "OPENSSL:db:1433,verify=0"
    files = TLSSettings(
        secret="s",
        ca_key="ca.crt",
        cert_key="tls.crt",
        key_key="tls.key",
        server_name="db.example.net",
    )
    assert relaypod.target_address("tls", "10.0.0.1:1433", files) == (
        "OPENSSL:10.0.0.1:1433,cafile=/etc/kubectl-relay/tls/ca.crt,"
        "cert=/etc/kubectl-relay/tls/tls.crt,key=/etc/kubectl-relay/tls/tls.key,"
        "snihost=db.example.net,commonname=db.example.net"
    )
    for mode, endpoint in (("udp", "10.0.0.1:53"), ("tls", "10.0.0.1:1433")):
        parse_address(relaypod.target_address(mode, endpoint, files))  # type: ignore[arg-type]


def test_trace_levels() -> None:
    numbered = ["-d", "-d", "-lu", "--trace-session-ids"]
    assert relaypod.trace_flags("quiet") == [*numbered, "--quiet-accepts"]
    assert relaypod.trace_flags("hex") == [*numbered, "-x"]
    assert relaypod.trace_flags("rows") == [*numbered, "-v", "-x"]


def test_a_tls_secret_is_mounted_read_only_for_the_relay_group() -> None:
    spec = job()["spec"]["template"]["spec"]
    assert spec["volumes"] == [
        {"name": "tls", "secret": {"secretName": "certs", "defaultMode": 0o440}}
    ]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "tls", "mountPath": "/etc/kubectl-relay/tls", "readOnly": True}
    ]
    assert spec["securityContext"]["fsGroup"] == podsecurity.NONROOT_ID


def test_label_values() -> None:
    assert relaypod.label_value("system:serviceaccount:ns:sa") == "system_serviceaccount_ns_sa"
    assert relaypod.label_value("-x-") == "x"
    assert relaypod.label_value("é") == "unknown"
    assert len(relaypod.label_value("a" * 100)) == 63


def test_the_job_deadline_is_a_lease_within_the_lifetime() -> None:
    body = relaypod.relay_job(
        name="kubectl-relay-0123abcd-0-1",
        namespace="prod",
        command=["relay", "-u", "STDIN", "STDOUT"],
        client=CLIENT,
        tunnel=0,
        target="svc/web:80",
        settings=PodSettings(max_lifetime=3600),
        lease=120.2,
    )
    assert body["spec"]["activeDeadlineSeconds"] == 121
    assert body["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 3600
    settings = PodSettings(max_lifetime=100)
    assert relaypod.lease_deadline(4000.0, settings) == 100
    assert relaypod.lease_deadline(None, settings) == 100
    assert relaypod.lease_deadline(0.2, settings) == 1
    # A killed client's relay pod ends within a minute, renewed well before.
    assert relaypod.LEASE_SECONDS + relaypod.TERMINATION_GRACE_SECONDS < 60
    assert relaypod.LEASE_RENEW_PERIOD * 3 <= relaypod.LEASE_SECONDS


def test_the_lease_is_40s_unless_told_and_renewed_well_before_it_ends() -> None:
    assert PodSettings().lease == relaypod.LEASE_SECONDS == 40
    assert relaypod.renew_period(relaypod.LEASE_SECONDS) == relaypod.LEASE_RENEW_PERIOD == 10
    # The tests' short lease (--lease, never under MIN_LEASE_SECONDS): a quarter of it.
    assert relaypod.renew_period(relaypod.MIN_LEASE_SECONDS) == 3
    assert relaypod.renew_period(3600) == relaypod.LEASE_RENEW_PERIOD


def test_a_host_target_is_resolved_by_an_init_container_of_the_relay_pod() -> None:
    body = relaypod.relay_job(
        name="kubectl-relay-0123abcd-0-1",
        namespace="prod",
        command=relaypod.relay_command(
            "text", relaypod.listen_address(600), relaypod.target_address("tcp", "db.prod:5432")
        ),
        client=CLIENT,
        tunnel=0,
        target="db.prod:5432",
        settings=PodSettings(),
        check_host="db.prod:5432",
    )
    template = body["spec"]["template"]
    (init,) = template["spec"]["initContainers"]
    assert init["name"] == relaypod.RESOLVE_CONTAINER
    assert init["command"] == [
        "relay", "-u", "OPEN:/dev/null,rdonly", "UDP:db.prod:5432,shut-none"
    ]
    assert restricted_violations(template["spec"], template["metadata"]) == []
    assert "initContainers" not in job()["spec"]["template"]["spec"]


def test_the_resolve_command_sends_nothing_to_the_target() -> None:
    """The real engine runs the init container's command: it exits 0 and no datagram leaves."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target:
        target.bind(("127.0.0.1", 0))
        target.settimeout(scaled(10))
        port = target.getsockname()[1]
        init = relaypod.resolve_init_container(f"127.0.0.1:{port}", PodSettings())
        command = [str(Path(sys.executable).parent / "relay"), *init["command"][1:]]
        done = subprocess.run(command, capture_output=True, timeout=scaled(20), check=False)
        assert done.returncode == 0, done.stderr
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker:
            marker.sendto(b"marker", ("127.0.0.1", port))
        assert target.recvfrom(100)[0] == b"marker"  # the first datagram is ours

