"""The local cluster's settings and the flags and files generated from them."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from e2e.localcluster.apiserver import apiserver_flags
from e2e.localcluster.controllers import controller_manager_flags, scheduler_flags
from e2e.localcluster.etcd import etcd_flags
from e2e.localcluster.settings import (
    ENV_CACHE_DIR,
    ENV_STATE_DIR,
    RELEASE,
    ClusterSettings,
)


def flag_values(flags: list[str]) -> dict[str, str]:
    """``--name=value`` flags as a dict; a flag given twice fails the test."""
    values: dict[str, str] = {}
    for flag in flags:
        name, _, value = flag.partition("=")
        assert name.startswith("--"), flag
        assert name not in values, f"{name} given twice"
        values[name] = value
    return values


@pytest.fixture
def settings(tmp_path: Path) -> ClusterSettings:
    return ClusterSettings(state_dir=tmp_path / "state", cache_root=tmp_path / "cache")


def test_addresses_are_derived_from_the_cidrs(settings: ClusterSettings) -> None:
    assert settings.bridge_address == "198.18.0.1"
    assert settings.bridge_prefix_length == 24
    assert settings.kubernetes_service_ip == "198.19.0.1"
    assert ipaddress.ip_address(settings.cluster_dns_ip) in ipaddress.ip_network(
        settings.service_cidr
    )
    other = dataclasses.replace(settings, pod_cidr="198.18.4.0/23", service_cidr="198.19.8.0/22")
    assert other.bridge_address == "198.18.4.1"
    assert other.bridge_prefix_length == 23
    assert other.kubernetes_service_ip == "198.19.8.1"


def test_pod_and_service_ranges_do_not_overlap(settings: ClusterSettings) -> None:
    pods = ipaddress.ip_network(settings.pod_cidr)
    services = ipaddress.ip_network(settings.service_cidr)
    assert not pods.overlaps(services)
    benchmarking = ipaddress.ip_network("198.18.0.0/15")
    assert pods.subnet_of(benchmarking) and services.subnet_of(benchmarking)


def test_cache_is_per_release(settings: ClusterSettings, tmp_path: Path) -> None:
    assert settings.release == RELEASE
    assert settings.cache_dir == tmp_path / "cache" / RELEASE
    assert settings.binary("kubectl") == tmp_path / "cache" / RELEASE / "bin" / "kubectl"
    other = dataclasses.replace(settings, release="v1.34.5")
    assert other.cache_dir == tmp_path / "cache" / "v1.34.5"


def test_default_cache_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ClusterSettings().cache_dir == tmp_path / "xdg" / "kubectl-relay" / "cluster" / RELEASE
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert (
        ClusterSettings().cache_root == tmp_path / "home" / ".cache" / "kubectl-relay" / "cluster"
    )


def test_environment_moves_the_directories(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path / "s"))
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "c"))
    settings = ClusterSettings.from_environment()
    assert settings.state_dir == tmp_path / "s"
    assert settings.cache_root == tmp_path / "c"
    assert settings.admin_kubeconfig == tmp_path / "s" / "kubeconfig" / "admin.kubeconfig"
    monkeypatch.delenv(ENV_STATE_DIR)
    monkeypatch.delenv(ENV_CACHE_DIR)
    assert ClusterSettings.from_environment().state_dir == Path("/var/lib/kubectl-relay-cluster")


def test_etcd_listens_on_loopback_only(settings: ClusterSettings) -> None:
    flags = flag_values(etcd_flags(settings))
    for name in ("--listen-client-urls", "--listen-peer-urls", "--advertise-client-urls"):
        url = urlsplit(flags[name])
        assert url.hostname == "127.0.0.1", name
    assert urlsplit(flags["--listen-client-urls"]).port == settings.etcd_client_port
    assert urlsplit(flags["--listen-peer-urls"]).port == settings.etcd_peer_port
    assert flags["--client-cert-auth"] == "true"
    assert flags["--data-dir"] == str(settings.state_dir / "etcd")


def test_apiserver_security_flags(settings: ClusterSettings) -> None:
    flags = flag_values(apiserver_flags(settings))
    assert flags["--authorization-mode"] == "Node,RBAC"
    assert flags["--enable-admission-plugins"] == "NodeRestriction"
    assert "--disable-admission-plugins" not in flags  # PodSecurity stays on
    assert flags["--allow-privileged"] == "true"
    assert flags["--advertise-address"] == "198.18.0.1"
    assert flags["--bind-address"] == "0.0.0.0"
    assert flags["--secure-port"] == "16443"
    assert flags["--service-cluster-ip-range"] == "198.19.0.0/24"
    assert flags["--service-node-port-range"] == "30000-32767"
    assert flags["--etcd-servers"] == f"https://127.0.0.1:{settings.etcd_client_port}"
    assert flags["--service-account-issuer"] == "https://kubernetes.default.svc.cluster.local"
    assert flags["--requestheader-client-ca-file"].endswith("/pki/front-proxy-ca.crt")
    assert flags["--requestheader-allowed-names"] == "front-proxy-client"
    assert flags["--proxy-client-cert-file"].endswith("/pki/front-proxy-client.crt")


def test_component_files_live_in_the_state_dir(settings: ClusterSettings) -> None:
    every = [
        *etcd_flags(settings),
        *apiserver_flags(settings),
        *controller_manager_flags(settings),
        *scheduler_flags(settings),
    ]
    paths = [value for flag in every if (value := flag.partition("=")[2]).startswith("/")]
    assert len(paths) > 15
    for path in paths:
        assert Path(path).is_relative_to(settings.state_dir), path


def test_controllers_use_their_own_identities(settings: ClusterSettings) -> None:
    manager = flag_values(controller_manager_flags(settings))
    scheduler = flag_values(scheduler_flags(settings))
    assert manager["--kubeconfig"].endswith("/kube-controller-manager.kubeconfig")
    assert scheduler["--kubeconfig"].endswith("/kube-scheduler.kubeconfig")
    assert manager["--use-service-account-credentials"] == "true"
    assert manager["--controllers"] == "*"
    assert manager["--allocate-node-cidrs"] == "false"
    for flags in (manager, scheduler):
        assert flags["--bind-address"] == "127.0.0.1"
