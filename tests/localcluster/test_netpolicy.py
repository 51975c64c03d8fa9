"""kube-router's firewall as a cluster step: its build pin, its flags, its role, its cleanup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.localcluster import build, netpolicy, network
from e2e.localcluster.settings import ClusterSettings

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> ClusterSettings:
    return ClusterSettings(state_dir=tmp_path / "state", cache_root=tmp_path / "cache")


def test_the_build_module_pins_the_release_and_names_the_command() -> None:
    go_mod = (netpolicy.MODULE_DIR / "go.mod").read_text().splitlines()
    # go mod tidy lists a module required only for its tool among the indirect ones.
    pinned = [line.split()[:2] for line in go_mod if line.split()[:1] == [netpolicy.MODULE]]
    assert pinned == [[netpolicy.MODULE, netpolicy.KUBE_ROUTER_VERSION]]
    assert f"tool {netpolicy.COMMAND_PACKAGE}" in go_mod
    sums = (netpolicy.MODULE_DIR / "go.sum").read_text()
    assert f"{netpolicy.MODULE} {netpolicy.KUBE_ROUTER_VERSION} h1:" in sums


def test_the_cache_key_follows_the_pin_go_and_the_module() -> None:
    key = build.kube_router_key("go1.26.8")
    assert key.split() == [
        netpolicy.KUBE_ROUTER_VERSION,
        "go1.26.8",
        build.module_files_hash(netpolicy.MODULE_DIR),
    ]
    assert build.kube_router_key("go1.27.0") != key


def test_only_the_firewall_runs(settings: ClusterSettings) -> None:
    argv = netpolicy.KubeRouterFirewall(settings).argv()
    assert argv[0] == str(settings.bin_dir / "kube-router")
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv[1:])
    assert (flags["run-firewall"], flags["run-router"], flags["run-service-proxy"]) == (
        "true",
        "false",
        "false",
    )
    assert flags["run-loadbalancer"] == "false"
    assert flags["kubeconfig"] == str(settings.kubeconfig("kube-router"))
    assert flags["hostname-override"] == settings.node_name
    assert flags["service-cluster-ip-range"] == settings.service_cidr
    assert flags["health-port"] == str(settings.kube_router_health_port)


def test_its_health_port_is_guarded_like_the_api_server(settings: ClusterSettings) -> None:
    dropped = [r for r in network.guard_rules(settings) if "--dports" in r.arguments]
    ports = dropped[0].arguments[dropped[0].arguments.index("--dports") + 1].split(",")
    assert str(settings.kube_router_health_port) in ports


def test_the_role_only_reads() -> None:
    role, binding = netpolicy.rbac_objects()
    assert role["kind"] == "ClusterRole"
    rules = role["rules"]
    assert isinstance(rules, list)
    assert {verb for rule in rules for verb in rule["verbs"]} == {"get", "list", "watch"}
    resources = {resource for rule in rules for resource in rule["resources"]}
    assert "networkpolicies" in resources and "secrets" not in resources
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": netpolicy.USER}
    ]


@pytest.mark.parametrize(
    ("name", "owned"),
    [
        ("KUBE-SRC-ABCDEFGHIJKLMNOP", True),
        ("KUBE-DST-2345672345672345", True),
        ("inet6:KUBE-SRC-ABCDEFGHIJKLMNOP", True),
        ("TMP-ABCDEFGHIJKLMNOP", True),
        ("KUBE-SRC-short", False),
        ("TMP-somebody-elses", False),
        ("my-blocklist", False),
    ],
)
def test_owned_ipsets_are_known_by_their_names(name: str, owned: bool) -> None:
    assert bool(netpolicy.OWNED_IPSET.fullmatch(name)) is owned


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ipset") is None,
    reason="iptables and ipset in a network namespace need root and the ipset command",
)
def test_cleanup_removes_its_chains_and_sets_and_nothing_else(netns: str) -> None:
    """In a namespace of the test: what kube-router would leave, and one chain and set not
    its own; ``remove_firewall`` run there leaves only the latter."""
    run = ["ip", "netns", "exec", netns]
    ours = "KUBE-SRC-ABCDEFGHIJKLMNOP"
    setup = [
        ["ipset", "create", ours, "hash:ip"],
        ["ipset", "create", "not-kube-routers", "hash:ip"],
        ["iptables", "-w", "-N", "KUBE-ROUTER-FORWARD"],
        ["iptables", "-w", "-N", "KUBE-POD-FW-ABCDEFGHIJKLMNOP"],
        ["iptables", "-w", "-N", "KUBE-FORWARD"],  # kube-proxy's: stays
        ["iptables", "-w", "-I", "FORWARD", "1", "-j", "KUBE-ROUTER-FORWARD"],
        ["iptables", "-w", "-A", "FORWARD", "-j", "KUBE-FORWARD"],
        ["iptables", "-w", "-A", "KUBE-ROUTER-FORWARD", "-j", "KUBE-POD-FW-ABCDEFGHIJKLMNOP"],
        [
            "iptables",
            "-w",
            "-A",
            "KUBE-POD-FW-ABCDEFGHIJKLMNOP",
            "-m",
            "set",
            "--match-set",
            ours,
            "src",
            "-j",
            "ACCEPT",
        ],
    ]
    for command in setup:
        subprocess.run([*run, *command], check=True, capture_output=True)
    script = "from e2e.localcluster.netpolicy import remove_firewall; print(remove_firewall())"
    result = subprocess.run(
        [*run, sys.executable, "-c", script],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[]", result.stderr
    saved = subprocess.run(
        [*run, "iptables-save", "-t", "filter"], capture_output=True, text=True, check=True
    ).stdout
    assert "KUBE-ROUTER" not in saved and "KUBE-POD-FW" not in saved
    assert "-A FORWARD -j KUBE-FORWARD" in saved
    sets = subprocess.run(
        [*run, "ipset", "list", "-n"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sets == ["not-kube-routers"]
