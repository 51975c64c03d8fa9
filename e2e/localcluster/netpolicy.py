"""NetworkPolicy enforced by kube-router's network policy controller (iptables and ipset).

Which implementation, and why
-----------------------------
``sigs.k8s.io/kube-network-policies`` decides in user space on packets that an
nftables ``queue`` statement hands it; this kernel is built without
``CONFIG_NFT_QUEUE``, so no such rule loads (``nft add rule inet t c queue num
100 bypass`` answers ``Error: Could not process rule: No such file or
directory``). kube-router's controller needs only what the kernel has:
iptables rules in the ``filter`` table (through nf_tables' xt compatibility,
``CONFIG_NFT_COMPAT``), ``ipset`` hash sets matched by ``-m set``
(``CONFIG_IP_SET``, ``CONFIG_NETFILTER_XT_SET``), ``comment``, ``conntrack``,
``physdev`` (bridged pod-to-pod packets, through ``br_netfilter``) and
``NFLOG``/``REJECT`` for refused packets.

The pin is ``KUBE_ROUTER_VERSION``: the Go module proxy lists one release of
``github.com/cloudnativelabs/kube-router/v2``, v2.1.0 (``go list -m -versions``).
The advisory reported against it (GHSA-phqm-jgc3-qf8g: Service external and
load-balancer IPs copied unchecked onto the node) is in its service proxy,
which does not run here: only the firewall does
(``--run-firewall=true --run-router=false --run-service-proxy=false``).

How it runs
-----------
A host process like kube-proxy (``proxy.py``), built from ``kuberouterbuild/``
by ``build.py`` into the binary cache, with its own client certificate
(``system:kube-router``) whose ClusterRole only reads what its informers watch
(kube-router starts informers for pods, namespaces, NetworkPolicies, nodes,
Services, Endpoints and EndpointSlices whatever it runs, and waits for all of
them to sync). Its health port answers on every address, so the guard of
``network.py`` drops it from anywhere but loopback and the bridge.

Coexistence: kube-router's jumps go first in ``filter`` INPUT, FORWARD and
OUTPUT and only judge packets to and from pod addresses; kube-proxy's DNAT is
in ``nat`` (before ``filter``), and Service traffic from pods keeps its pod
source address, so a policy judges the real client. The host's own address
(the bridge's, the node IP) is always let in, as kube-router does for probes.

``stop`` removes what the controller made, found by name, since kube-router
v2.1.0's ``--cleanup-config`` does not: it cleans up with a controller that has
no iptables or ipset handlers (nothing happens), then clears IPVS and the
routing controller's state, which are not its here. Chains are those starting
with ``CHAIN_PREFIXES`` in ``filter``, with every rule jumping to them; sets are
those named by ``OWNED_IPSET``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import yaml

from e2e.localcluster.component import ComponentError, DaemonComponent, admin_kubectl
from e2e.localcluster.proxy import remove_chain
from e2e.localcluster.settings import ClusterSettings

#: The Go module, its pinned release (see the module docstring) and its command.
MODULE = "github.com/cloudnativelabs/kube-router/v2"
KUBE_ROUTER_VERSION = "v2.1.0"
COMMAND_PACKAGE = f"{MODULE}/cmd/kube-router"
VERSION_PACKAGE = f"{MODULE}/pkg/version"

#: The Go module that builds it (committed: go.mod with a ``tool`` line, go.sum).
MODULE_DIR = Path(__file__).resolve().parent / "kuberouterbuild"

#: The client certificate's user, and its ClusterRole and binding.
USER = "system:kube-router"
ROLE = "kubectl-relay:kube-router"

#: ``filter`` chains the controller makes: its top-level, per-pod and per-policy chains.
CHAIN_PREFIXES = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")

#: Sets the controller makes: sources and destinations of policies, and the temporary
#: sets of its atomic swaps (``TMP-`` and 16 base32 characters); ``inet6:`` for IPv6.
OWNED_IPSET = re.compile(r"(inet6:)?(KUBE-SRC-|KUBE-DST-|TMP-)[A-Z2-7]{16}")

#: What ``up`` prints for this step.
STEP_NAME = f"netpolicy (enforced by kube-router {KUBE_ROUTER_VERSION}: iptables and ipset)"


def kube_router_binary(settings: ClusterSettings) -> Path:
    """Where ``build`` puts the kube-router binary."""
    return settings.bin_dir / "kube-router"


def rbac_objects() -> list[dict[str, object]]:
    """The ClusterRole (read-only, what kube-router's informers list and watch) and binding."""
    read = ["get", "list", "watch"]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": ROLE},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                    "verbs": read,
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": read,
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": ROLE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": ROLE,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
        },
    ]


def owned_chains(command: str = "iptables") -> list[str]:
    """The controller's chains in ``filter`` (``command``: iptables or ip6tables)."""
    saved = subprocess.run(
        [f"{command}-save", "-t", "filter"], capture_output=True, text=True, check=False
    ).stdout
    chains = (line[1:].split()[0] for line in saved.splitlines() if line.startswith(":"))
    return [chain for chain in chains if chain.startswith(CHAIN_PREFIXES)]


def owned_ipsets() -> list[str]:
    """The controller's ipsets (none when the ``ipset`` command is missing)."""
    if shutil.which("ipset") is None:
        return []
    listed = subprocess.run(
        ["ipset", "list", "-n"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    return [name for name in listed.split() if OWNED_IPSET.fullmatch(name)]


def remove_firewall() -> list[str]:
    """Remove the controller's chains (and the rules jumping to them), then its ipsets.

    Returns one line per set that stayed (a set still referenced cannot go).
    """
    for command in ("iptables", "ip6tables"):
        for chain in owned_chains(command):
            remove_chain(command, "filter", chain)
    problems = []
    for name in owned_ipsets():
        result = subprocess.run(
            ["ipset", "destroy", name], capture_output=True, text=True, check=False, timeout=30
        )
        if result.returncode != 0:
            problems.append(f"ipset {name}: {result.stderr.strip()}")
    return problems


class KubeRouterFirewall(DaemonComponent):
    """Step of ``up``: kube-router's firewall alone; ready when healthy and its chains exist."""

    name = STEP_NAME
    process_name = "kube-router"
    ready_timeout = 60.0

    def argv(self) -> list[str]:
        settings = self.settings
        return [
            str(kube_router_binary(settings)),
            f"--kubeconfig={settings.kubeconfig('kube-router')}",
            f"--hostname-override={settings.node_name}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--run-loadbalancer=false",
            "--enable-ipv4=true",
            "--enable-ipv6=false",
            f"--service-cluster-ip-range={settings.service_cidr}",
            f"--service-node-port-range={settings.node_port_range}",
            f"--health-port={settings.kube_router_health_port}",
            "--metrics-port=0",
        ]

    def prepare(self) -> None:
        """Check for the ``ipset`` command, then grant the controller's read-only role."""
        if shutil.which("ipset") is None:
            raise ComponentError(
                self.process_name,
                "the `ipset` command is missing (Debian's `ipset` package; `./dev setup` "
                "installs it): kube-router keeps the policies' address sets with it",
            )
        documents = yaml.safe_dump_all(rbac_objects(), sort_keys=False)
        admin_kubectl(
            self.settings,
            self.process_name,
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            stdin=documents,
        )

    def ready(self) -> bool:
        """``/healthz`` answers 200 and the first sync made the top-level chains."""
        self.check_alive()
        url = f"http://127.0.0.1:{self.settings.kube_router_health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                healthy = bool(response.status == 200)
        except OSError:
            return False
        return healthy and "KUBE-ROUTER-FORWARD" in owned_chains()

    def cleanup(self) -> None:
        """Remove the chains and sets (see the module docstring)."""
        if problems := remove_firewall():
            raise ComponentError(self.process_name, "could not remove: " + "; ".join(problems))
