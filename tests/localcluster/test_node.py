"""The node's generated configuration (containerd, CNI, kubelet, kube-proxy, DNS) and its
host-side helpers (guard rules, mounts), checked against the real tools where they exist."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import threading
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from e2e.localcluster import dns, hostcleanup, images, kubelet, leftovers, network, proxy
from e2e.localcluster.component import ClusterError
from e2e.localcluster.containerd import containerd_config, runc_root
from e2e.localcluster.settings import ClusterSettings

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="network namespaces and mounts need root")


@pytest.fixture
def settings(tmp_path: Path) -> ClusterSettings:
    return ClusterSettings(state_dir=tmp_path / "state", cache_root=tmp_path / "cache")


def strings_in(value: object) -> Iterator[str]:
    """Every string of a nested document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def absolute_paths(document: object) -> list[Path]:
    return [Path(text) for text in strings_in(document) if text.startswith("/")]


# -- containerd ----------------------------------------------------------------------------------


def test_containerd_keeps_everything_under_the_state_directory(settings: ClusterSettings) -> None:
    config = tomllib.loads(containerd_config(settings))
    assert config["version"] == 2
    assert config["root"] == str(settings.containerd_root)
    assert config["state"] == str(settings.containerd_state)
    assert config["grpc"]["address"] == str(settings.containerd_socket)
    for path in absolute_paths(config):
        assert path.is_relative_to(settings.state_dir) or path == network.CNI_BIN_DIR, path


def test_containerd_runs_pods_with_runc_on_cgroupfs_and_the_pause_image_built_here(
    settings: ClusterSettings,
) -> None:
    cri = tomllib.loads(containerd_config(settings))["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == images.PAUSE.reference
    assert cri["netns_mounts_under_state_dir"] is True
    # No CAP_SYS_RESOURCE in these sessions: runc cannot set the sandboxes' -998.
    assert cri["restrict_oom_score_adj"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"SystemdCgroup": False, "Root": str(runc_root(settings))}
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"
    assert cri["cni"]["conf_dir"] == str(network.cni_config_dir(settings))


def test_containerd_accepts_its_configuration(settings: ClusterSettings, tmp_path: Path) -> None:
    """``containerd config dump`` parses the file and merges it (no unknown table breaks it)."""
    if not shutil.which("containerd"):
        pytest.fail("containerd is not installed: `./dev cluster` installs Debian's")
    path = tmp_path / "containerd.toml"
    path.write_text(containerd_config(settings))
    dumped = subprocess.run(
        ["containerd", "--config", str(path), "config", "dump"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    merged = tomllib.loads(dumped)
    assert merged["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == images.PAUSE.reference
    assert merged["plugins"]["io.containerd.internal.v1.opt"]["path"].startswith(
        str(settings.state_dir)
    )


# -- the pods' network -----------------------------------------------------------------------------


def test_pods_get_no_default_route_and_no_masquerading(settings: ClusterSettings) -> None:
    (bridge,) = network.cni_config(settings)["plugins"]  # type: ignore[misc]
    assert bridge["type"] == "bridge"
    assert bridge["bridge"] == settings.bridge_name
    assert bridge["ipMasq"] is False
    assert bridge["isDefaultGateway"] is False
    # The plugin as gateway would switch ip_forward on for every interface.
    assert bridge["isGateway"] is False
    assert bridge["hairpinMode"] is True
    ipam = bridge["ipam"]
    assert ipam["ranges"] == [[{"subnet": settings.pod_cidr, "gateway": settings.bridge_address}]]
    assert ipam["routes"] == [{"dst": settings.service_cidr, "gw": settings.bridge_address}]
    assert Path(ipam["dataDir"]).is_relative_to(settings.state_dir)
    service = ipaddress.ip_network(settings.service_cidr)
    assert all(ipaddress.ip_network(route["dst"]) == service for route in ipam["routes"])


def test_guard_drops_pod_traffic_towards_any_other_interface(settings: ClusterSettings) -> None:
    rules = network.guard_rules(settings)
    assert {rule.table for rule in rules} == {"mangle"}
    forward = [r.arguments for r in rules if r.chain == "KUBECTL-RELAY-FORWARD"]
    bridge = settings.bridge_name
    assert ("-i", bridge, "!", "-o", bridge) == forward[0][:5] and forward[0][-1] == "DROP"
    assert ("-s", settings.pod_cidr, "!", "-o", bridge) == forward[1][:5]
    egress = [r.arguments for r in rules if r.chain == "KUBECTL-RELAY-EGRESS"]
    # Only the bridge and loopback return before the drop of pod source addresses.
    assert egress[:2] == [("-o", bridge, "-j", "RETURN"), ("-o", "lo", "-j", "RETURN")]
    assert egress[2][:2] == ("-s", settings.pod_cidr) and egress[2][-1] == "DROP"
    assert all("kubectl-relay" in " ".join(r.arguments) for r in rules if "DROP" in r.arguments)


@needs_root
def test_the_kernel_accepts_every_guard_rule(settings: ClusterSettings, netns: str) -> None:
    """The rules as ``Network`` adds them, in a namespace of the test: iptables loads each."""
    run = ["ip", "netns", "exec", netns]
    for chain, parent in network.guard_chains(settings).items():
        subprocess.run([*run, "iptables", "-w", "-t", "mangle", "-N", chain], check=True)
        subprocess.run(
            [*run, "iptables", "-w", "-t", "mangle", "-I", parent, "1", "-j", chain], check=True
        )
    for rule in network.guard_rules(settings):
        subprocess.run([*run, *rule.command("-A")], check=True, capture_output=True)
        subprocess.run([*run, *rule.command("-C")], check=True)
    saved = subprocess.run(
        [*run, "iptables-save", "-t", "mangle"], capture_output=True, text=True, check=True
    ).stdout
    assert saved.count("-j DROP") == 5


# -- kubelet and kube-proxy --------------------------------------------------------------------------


def test_kubelet_configuration(settings: ClusterSettings) -> None:
    config = kubelet.kubelet_config(settings)
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["clusterDNS"] == [settings.cluster_dns_ip]
    assert config["clusterDomain"] == settings.cluster_domain
    assert config["containerRuntimeEndpoint"] == f"unix://{settings.containerd_socket}"
    assert config["authentication"] == {
        "anonymous": {"enabled": False},
        "webhook": {"enabled": True, "cacheTTL": "30s"},
        "x509": {"clientCAFile": str(settings.pki_dir / "ca.crt")},
    }
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["address"] == settings.bridge_address
    for path in absolute_paths(config):
        if path != Path(f"/{kubelet.cgroup_root(settings)}"):
            assert path.is_relative_to(settings.state_dir), path
    # What only a flag sets: the node's address is the bridge's, its name the settings'.
    flags = kubelet.kubelet_flags(settings)
    assert f"--node-ip={settings.bridge_address}" in flags
    assert f"--hostname-override={settings.node_name}" in flags
    assert f"--kubeconfig={settings.kubeconfig('kubelet')}" in flags
    yaml.safe_load(yaml.safe_dump(config))


def test_each_state_directory_has_its_own_pod_cgroups(settings: ClusterSettings) -> None:
    other = ClusterSettings(state_dir=settings.state_dir / "other")
    assert kubelet.cgroup_root(settings) != kubelet.cgroup_root(other)
    assert kubelet.cgroup_root(settings) == kubelet.cgroup_root(
        ClusterSettings(state_dir=settings.state_dir)
    )
    assert kubelet.kubelet_config(settings)["cgroupRoot"] == f"/{kubelet.cgroup_root(settings)}"


def test_kube_proxy_configuration(settings: ClusterSettings) -> None:
    config = proxy.kube_proxy_config(settings)
    assert config["mode"] == "iptables"
    assert config["clusterCIDR"] == settings.pod_cidr
    assert config["nodePortAddresses"] == [f"{settings.bridge_address}/32"]
    assert config["iptables"] == {"localhostNodePorts": False, "masqueradeAll": False}
    assert config["clientConnection"] == {"kubeconfig": str(settings.kubeconfig("kube-proxy"))}


# -- DNS -----------------------------------------------------------------------------------------------


def test_dns_service_is_kube_dns_at_the_cluster_dns_address(settings: ClusterSettings) -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in dns.dns_objects(settings)}  # type: ignore[index]
    service = objects[("Service", "kube-dns")]
    assert service["metadata"]["namespace"] == "kube-system"  # type: ignore[index]
    assert service["spec"]["clusterIP"] == settings.cluster_dns_ip  # type: ignore[index]
    deployment = objects[("Deployment", "coredns")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    assert container["image"] == images.COREDNS.reference
    assert container["imagePullPolicy"] == "IfNotPresent"
    corefile = objects[("ConfigMap", "coredns")]["data"]["Corefile"]  # type: ignore[index]
    assert f"kubernetes {settings.cluster_domain} " in corefile
    # Nothing is forwarded: no query leaves the machine.
    assert "forward" not in corefile and "proxy" not in corefile


def dns_answer(query: bytes, address: str) -> bytes:
    """A response to ``query`` with one A record (name by compression pointer)."""
    ident = query[:2]
    question = query[12:]
    header = ident + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton(address)
    return header + question + record


def test_query_a_reads_the_answer_of_a_real_udp_server() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        received: list[bytes] = []

        def answer() -> None:
            query, peer = server.recvfrom(512)
            received.append(query)
            server.sendto(dns_answer(query, "198.19.0.1"), peer)

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            found = dns.query_a(
                "127.0.0.1", "kubernetes.default.svc.cluster.local", port=server.getsockname()[1]
            )
        finally:
            thread.join()
    assert found == ["198.19.0.1"]
    assert b"\x0akubernetes\x07default\x03svc\x07cluster\x05local\x00" in received[0]


# -- images: what the relay image's key covers -----------------------------------------------------------


def test_a_missing_build_tool_is_one_clear_error() -> None:
    with pytest.raises(ClusterError) as raised:
        images._run(["no-such-builder-tool", "--version"])
    assert str(raised.value) == (
        "build: `no-such-builder-tool` is not installed; `./dev cluster` installs the Debian "
        "packages the images are built with (buildah, mmdebstrap, gcc, libc6-dev)"
    )


def test_copied_sources_of_the_project_dockerfile() -> None:
    dockerfile = (images.PROJECT_DIR / "Dockerfile").read_text()
    assert images.copied_sources(dockerfile) == [
        "pyproject.toml",
        "README.md",
        "kubectl_relay",
        "operator",
    ]


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        ("COPY a b ./\n", ["a", "b"]),
        ('COPY ["a b", "c"]\n', ["a b"]),
        ("COPY --chown=1:1 x /y\n", ["x"]),
        ("COPY --from=build /opt /opt\n", []),
        ("ADD one \\\n    two /dest/\n", ["one", "two"]),
        ("# COPY commented /out\nRUN cp a b\n", []),
    ],
)
def test_copied_sources_forms(dockerfile: str, expected: list[str]) -> None:
    assert images.copied_sources(dockerfile) == expected


@pytest.mark.parametrize(
    ("reference", "listed"),
    [
        ("ghcr.io/kubectl-relay/relay:0.1.0", "ghcr.io/kubectl-relay/relay:0.1.0"),
        ("registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10.1"),
        ("localhost/kubectl-relay/coredns:v1", "localhost/kubectl-relay/coredns:v1"),
        ("kubectl-relay-test/mute:0.1.0", "docker.io/kubectl-relay-test/mute:0.1.0"),
        ("127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"),
    ],
)
def test_containerd_lists_images_by_their_normalized_name(reference: str, listed: str) -> None:
    assert images.Image("x", reference).containerd_name == listed


def test_relay_key_follows_the_copied_files_only(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\nCOPY app ./app\nCOPY conf.txt /etc/\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print(1)\n")
    (tmp_path / "conf.txt").write_text("a\n")
    first = images.relay_key(tmp_path)
    (tmp_path / "unrelated.txt").write_text("not copied\n")
    (tmp_path / "app" / "__pycache__").mkdir()
    (tmp_path / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert images.relay_key(tmp_path) == first
    (tmp_path / "app" / "main.py").write_text("print(2)\n")
    assert images.relay_key(tmp_path) != first


# -- host cleanup ----------------------------------------------------------------------------------------


@needs_root
def test_unmount_under_and_remove_tree_refuses_while_mounted(tmp_path: Path) -> None:
    outer = tmp_path / "tree"
    inner = outer / "a" / "b"
    inner.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(outer / "a")], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(outer / "a")], check=True)
    try:
        (outer / "a" / "b").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(outer / "a" / "b")], check=True)
        assert hostcleanup.mounts_under([outer]) == [outer / "a" / "b", outer / "a", outer / "a"]
        with pytest.raises(OSError, match="still mounted"):
            hostcleanup.remove_tree(outer)
        assert hostcleanup.unmount_under([outer]) == []
    finally:
        for point in hostcleanup.mounts_under([outer]):
            subprocess.run(["umount", "--lazy", str(point)], check=False)
    hostcleanup.remove_tree(outer)
    assert not outer.exists()


def test_remove_empty_directories_keeps_what_holds_files(tmp_path: Path) -> None:
    (tmp_path / "run" / "s" / "deep").mkdir(parents=True)
    (tmp_path / "run" / "kept").mkdir()
    (tmp_path / "run" / "kept" / "file").write_text("x")
    hostcleanup.remove_empty_directories(tmp_path / "run")
    assert not (tmp_path / "run" / "s").exists()
    assert (tmp_path / "run" / "kept" / "file").exists()


@needs_root
def test_remove_cgroups_kills_the_processes_and_removes_the_tree() -> None:
    """A real cgroup (pids hierarchy) with a process two levels down."""
    hierarchy = hostcleanup.CGROUP_MOUNT / "pids"
    if not hierarchy.is_dir():
        pytest.skip("no cgroup v1 pids hierarchy on this host")
    name = f"relay-test-{uuid.uuid4().hex[:8]}"
    leaf = hierarchy / name / "pod" / "container"
    leaf.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        (leaf / "cgroup.procs").write_text(str(sleeper.pid))
        assert hostcleanup.pids_in_cgroups(hostcleanup.cgroup_directories(name)) == {sleeper.pid}
        assert hostcleanup.remove_cgroups(hostcleanup.cgroup_directories(name)) == []
        # Gone (reaped by the helper: the sleeper is the test's child, so its status is too).
        assert not Path(f"/proc/{sleeper.pid}").exists()
        assert not (hierarchy / name).exists()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        for path in (leaf, leaf.parent, leaf.parent.parent):
            with contextlib.suppress(OSError):
                path.rmdir()


@needs_root
def test_the_guard_drops_what_a_pod_sends_beyond_the_bridge(settings: ClusterSettings) -> None:
    """A pod that has a default route, a host that forwards everywhere: the guard still drops.

    Three namespaces of the test's own: ``host`` (the bridge with the gateway address, and
    ``out0`` towards ``outside``), ``pod`` (on the bridge, default route via the gateway),
    ``outside`` (198.51.100.2, TEST-NET-2). The ping goes through before the guard rules
    are added (so the test can fail) and is dropped after, by the guard's FORWARD chain.
    """
    tag = uuid.uuid4().hex[:6]
    host, pod, outside = (f"relay-{role}-{tag}" for role in ("host", "pod", "out"))
    bridge = settings.bridge_name

    def run(namespace: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *command],
            capture_output=True,
            text=True,
            check=check,
        )

    for name in (host, pod, outside):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        run(host, "ip", "link", "add", bridge, "type", "bridge")
        run(host, "ip", "address", "add", f"{settings.bridge_address}/24", "dev", bridge)
        run(host, "ip", "link", "set", bridge, "up")
        run(host, "ip", "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", pod)
        run(host, "ip", "link", "set", "pod0", "master", bridge, "up")
        run(pod, "ip", "address", "add", "198.18.0.2/24", "dev", "eth0")
        run(pod, "ip", "link", "set", "eth0", "up")
        run(pod, "ip", "route", "add", "default", "via", settings.bridge_address)
        run(
            host,
            "ip",
            "link",
            "add",
            "out0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            outside,
        )
        run(host, "ip", "address", "add", "198.51.100.1/24", "dev", "out0")
        run(host, "ip", "link", "set", "out0", "up")
        run(outside, "ip", "address", "add", "198.51.100.2/24", "dev", "eth0")
        run(outside, "ip", "link", "set", "eth0", "up")
        run(outside, "ip", "route", "add", "198.18.0.0/24", "via", "198.51.100.1")
        run(host, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        ping = ("ping", "-c", "1", "-W", "2", "198.51.100.2")
        assert run(pod, *ping, check=False).returncode == 0, "no path even without the guard"
        for chain, parent in network.guard_chains(settings).items():
            run(host, "iptables", "-w", "-t", "mangle", "-N", chain)
            run(host, "iptables", "-w", "-t", "mangle", "-I", parent, "1", "-j", chain)
        for rule in network.guard_rules(settings):
            run(host, *rule.command("-A"))
        assert run(pod, *ping, check=False).returncode != 0
        counters = run(
            host, "iptables", "-w", "-t", "mangle", "-L", "KUBECTL-RELAY-FORWARD", "-v", "-n", "-x"
        ).stdout.splitlines()
        first_rule_packets = int(counters[2].split()[0])
        assert first_rule_packets >= 1, counters
    finally:
        for name in (host, pod, outside):
            subprocess.run(["ip", "netns", "delete", name], check=False)


@needs_root
def test_leftovers_names_a_mount_left_under_the_state_directory(settings: ClusterSettings) -> None:
    point = settings.state_dir / "containerd"
    point.mkdir(parents=True)
    assert f"mount: {point}" not in leftovers.leftovers(settings)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(point)], check=True)
    try:
        assert f"mount: {point}" in leftovers.leftovers(settings)
    finally:
        subprocess.run(["umount", str(point)], check=True)
    assert f"mount: {point}" not in leftovers.leftovers(settings)
