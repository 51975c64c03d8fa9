"""The one settings object of the local cluster, and the paths derived from it.

Every address, port and path a component's flags or configuration files use
comes from :class:`ClusterSettings`, so that the whole cluster can be read in
one place and moved (another state directory, another API port) in one place.

The addresses are in 198.18.0.0/15, the RFC 2544 benchmarking range: nothing
on these machines uses it, and nothing routes it off the machine.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from scripts.cachedir import user_cache_dir

#: The pinned Kubernetes release every component (and kubectl) is built from.
RELEASE = "v1.34.4"

#: Environment variables that move the cluster's directories (tests, CI, laptops).
ENV_STATE_DIR = "RELAY_CLUSTER_STATE_DIR"
ENV_CACHE_DIR = "RELAY_CLUSTER_CACHE_DIR"

#: Names of the component binaries, symlinked to the one multicall binary.
COMMANDS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)


def default_cache_root() -> Path:
    """``${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-relay/cluster``."""
    return user_cache_dir() / "cluster"


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how the local single-node cluster runs."""

    release: str = RELEASE
    """The Kubernetes release (``vX.Y.Z``) of every component; the cache is per release."""

    cache_root: Path = field(default_factory=default_cache_root)
    """Build cache of every release; this release's binaries and images live in ``cache_dir``."""

    state_dir: Path = Path("/var/lib/kubectl-relay-cluster")
    """Runtime files: PKI, kubeconfigs, configuration, logs, pidfiles, etcd and containerd data."""

    apiserver_port: int = 16443
    """The API server's secure port, on every address of the host (see ``apiserver.py``)."""

    etcd_client_port: int = 12379
    """etcd's client port, on 127.0.0.1 only."""

    etcd_peer_port: int = 12380
    """etcd's peer port, on 127.0.0.1 only (one member: no peer ever connects)."""

    controller_manager_port: int = 10257
    """kube-controller-manager's secure (health and metrics) port, on 127.0.0.1."""

    scheduler_port: int = 10259
    """kube-scheduler's secure (health and metrics) port, on 127.0.0.1."""

    kubelet_port: int = 10250
    """The kubelet's API port (logs, exec, port-forward from the API server)."""

    kube_proxy_healthz_port: int = 10256
    """kube-proxy's health port."""

    kube_proxy_metrics_port: int = 10249
    """kube-proxy's metrics port."""

    kube_router_health_port: int = 20244
    """kube-router's health port (it listens on every address; the guard drops it but on
    loopback and the bridge)."""

    bridge_name: str = "relaybr0"
    """The Linux bridge the pods' veths join (CNI bridge plugin)."""

    pod_cidr: str = "198.18.0.0/24"
    """Pod addresses (host-local IPAM); the bridge holds the first one, the gateway."""

    service_cidr: str = "198.19.0.0/24"
    """Service ClusterIPs; the first one is the ``kubernetes`` Service."""

    cluster_dns_ip: str = "198.19.0.10"
    """The ClusterIP of the cluster DNS Service, given to every pod as its resolver."""

    cluster_domain: str = "cluster.local"
    """The DNS domain of Services and pods."""

    node_name: str = "relay-node"
    """The one node's name (its kubelet's identity is ``system:node:<node_name>``)."""

    node_port_range: str = "30000-32767"
    """The range the API server allocates nodePorts from."""

    # -- derived addresses ---------------------------------------------------------------------

    @property
    def bridge_address(self) -> str:
        """The bridge's (gateway's) address: the first of the pod CIDR. The API server
        advertises it, so that the ``kubernetes`` Service reaches it from the pods."""
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def bridge_prefix_length(self) -> int:
        """The pod CIDR's prefix length (the bridge's address is ``bridge_address/<this>``)."""
        return ipaddress.ip_network(self.pod_cidr).prefixlen

    @property
    def kubernetes_service_ip(self) -> str:
        """The ClusterIP of the ``default/kubernetes`` Service: the first of the service CIDR."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    @property
    def apiserver_url(self) -> str:
        """The API server as clients on this host reach it."""
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        """etcd's client URL (loopback, TLS with client certificates)."""
        return f"https://127.0.0.1:{self.etcd_client_port}"

    # -- cache (build) -------------------------------------------------------------------------

    @property
    def cache_dir(self) -> Path:
        """This release's build cache: ``<cache_root>/<release>``."""
        return self.cache_root / self.release

    @property
    def bin_dir(self) -> Path:
        """The multicall binary and its symlinks (``kubectl``, ``kubelet``, ...)."""
        return self.cache_dir / "bin"

    @property
    def images_dir(self) -> Path:
        """Image archives built here, imported into containerd on ``up``."""
        return self.cache_dir / "images"

    def binary(self, command: str) -> Path:
        """The path of one component's command (a symlink to the multicall binary)."""
        return self.bin_dir / command

    # -- state (run) ---------------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        """Certificates and keys (the cluster CA, every component's and user's)."""
        return self.state_dir / "pki"

    @property
    def kubeconfig_dir(self) -> Path:
        """One kubeconfig per component and user."""
        return self.state_dir / "kubeconfig"

    @property
    def config_dir(self) -> Path:
        """Generated configuration files of the components."""
        return self.state_dir / "config"

    @property
    def log_dir(self) -> Path:
        """One log file per daemon."""
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        """Pidfiles (and sockets that have no better home)."""
        return self.state_dir / "run"

    @property
    def etcd_data_dir(self) -> Path:
        """etcd's data directory."""
        return self.state_dir / "etcd"

    @property
    def containerd_root(self) -> Path:
        """The cluster's own containerd's persistent root (never the system one's)."""
        return self.state_dir / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        """The cluster's own containerd's state directory."""
        return self.state_dir / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        """The cluster's own containerd's gRPC socket (the kubelet's CRI endpoint)."""
        return self.state_dir / "containerd" / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        """The kubelet's root directory (pods' volumes; mounts live under it)."""
        return self.state_dir / "kubelet"

    def kubeconfig(self, user: str) -> Path:
        """The kubeconfig of ``user`` (``admin``, ``relay-dev``, ``kubelet``, ...)."""
        return self.kubeconfig_dir / f"{user}.kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        """The cluster administrator's kubeconfig (``system:masters``): what ``up`` prints."""
        return self.kubeconfig("admin")

    def log_file(self, name: str) -> Path:
        """The log of daemon ``name``."""
        return self.log_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        """The pidfile of daemon ``name``."""
        return self.run_dir / f"{name}.pid"

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_environment(cls) -> ClusterSettings:
        """The defaults, with ``RELAY_CLUSTER_STATE_DIR`` and ``RELAY_CLUSTER_CACHE_DIR``."""
        changes: dict[str, Path] = {}
        if state := os.environ.get(ENV_STATE_DIR, "").strip():
            changes["state_dir"] = Path(state).expanduser().absolute()
        if cache := os.environ.get(ENV_CACHE_DIR, "").strip():
            changes["cache_root"] = Path(cache).expanduser().absolute()
        return dataclasses.replace(cls(), **changes)  # type: ignore[arg-type]
