"""What a stopped cluster would have left on the host: the check ``down`` ends with.

``leftovers(settings)`` looks where the cluster's parts leave traces and
returns one line per trace found: processes of the cluster's binaries or its
containerd, mounts under the state directory, the bridge and its route,
iptables rules of the guard or of kube-proxy, kube-router and the kubelet,
kube-router's ipsets, the pods' cgroups, libcni's cache entries of the
cluster's network, and the kubelet's links to container logs. An empty list
means nothing is left.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from e2e.localcluster import hostcleanup, netpolicy, network
from e2e.localcluster.containerd import SHIM, config_path
from e2e.localcluster.kubelet import CONTAINER_LOG_LINKS, cgroup_root, pod_logs_dir
from e2e.localcluster.settings import ClusterSettings


def _processes(settings: ClusterSettings) -> list[str]:
    """Processes running a binary of the cache, our containerd, or one of its shims."""
    found = []
    containerd_config = str(config_path(settings))
    socket = str(settings.containerd_socket)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [
                a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")
            ]
        except OSError:
            continue
        if not argv or not argv[0]:
            continue
        ours = (
            Path(argv[0]).is_relative_to(settings.bin_dir)
            or containerd_config in argv
            or (os.path.basename(argv[0]) == SHIM and socket in argv)
        )
        if ours:
            found.append(f"process {entry.name}: {' '.join(argv)[:120]}")
    return found


def _iptables_rules() -> list[str]:
    """Rules and chains of the guard, kube-proxy or the kubelet, in iptables and ip6tables."""
    found = []
    for command in ("iptables-save", "ip6tables-save"):
        saved = subprocess.run([command], capture_output=True, text=True, check=False).stdout
        for line in saved.splitlines():
            if network.CHAIN_PREFIX in line or "kubectl-relay" in line or "KUBE-" in line:
                found.append(f"{command}: {line}")
    return found


def leftovers(settings: ClusterSettings) -> list[str]:
    """One line per trace of the cluster still on the host (see the module docstring)."""
    found = _processes(settings)
    found += [f"mount: {point}" for point in hostcleanup.mounts_under([settings.state_dir])]
    if Path(f"/sys/class/net/{settings.bridge_name}").exists():
        found.append(f"network interface: {settings.bridge_name}")
    routes = subprocess.run(
        ["ip", "route", "show", settings.service_cidr], capture_output=True, text=True, check=False
    ).stdout.strip()
    if routes:
        found.append(f"route: {routes}")
    found += _iptables_rules()
    found += [f"ipset: {name}" for name in netpolicy.owned_ipsets()]
    found += [f"cgroup: {path}" for path in hostcleanup.cgroup_directories(cgroup_root(settings))]
    results = network.LIBCNI_CACHE / "results"
    found += [f"libcni cache: {path}" for path in results.glob(f"{network.CNI_NETWORK}-*")]
    if CONTAINER_LOG_LINKS.is_dir():
        logs = pod_logs_dir(settings)
        found += [
            f"container log link: {link}"
            for link in CONTAINER_LOG_LINKS.iterdir()
            if link.is_symlink() and Path(os.readlink(link)).is_relative_to(logs)
        ]
    return found
