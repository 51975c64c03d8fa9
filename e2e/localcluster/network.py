"""The pods' network: the bridge, its CNI configuration, and the rules that keep it local.

The pods live in network namespaces containerd creates, joined to the bridge
``relaybr0`` by the CNI ``bridge`` plugin (Debian's containernetworking-plugins)
with ``host-local`` addresses from the pod CIDR. The bridge holds the gateway
address, which the API server advertises, so this step runs before it.

Nothing leaves the machine, by four independent means:

- **No route out.** The pods get no default route: only the pod CIDR (on the
  link) and the service CIDR (through the gateway, where kube-proxy's DNAT
  rules are). Any other destination fails inside the pod with "Network is
  unreachable". ``ipMasq`` is off: no pod address is ever rewritten to leave.
- **No forwarding but on the bridge.** ``net.ipv4.ip_forward`` (all
  interfaces) stays as it is (0 on these machines); only packets that arrive
  on the bridge may be routed (``net.ipv4.conf.relaybr0.forwarding=1``), which
  Service traffic between two pods needs: DNAT on the host, then back out on
  the bridge.
- **This host's route to the service CIDR** is the bridge, so its own
  connections to ClusterIPs never follow the default route.
- **Guard rules** in iptables' ``mangle`` table, which runs before the
  ``filter`` and ``nat`` rules kube-proxy and kube-router write, so no ACCEPT
  of theirs can come first: packets from the bridge or from a pod address are
  dropped when routed to any other interface, and the API server's, the
  kubelet's and kube-router's health ports answer only on loopback and the
  bridge.

``br_netfilter`` (``net.bridge.bridge-nf-call-iptables=1``) makes bridged
pod-to-pod packets pass iptables, so replies of Service connections are
un-DNATed. The host-wide sysctls it sets are restored on ``stop``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from e2e.localcluster import hostcleanup
from e2e.localcluster.component import ComponentError
from e2e.localcluster.settings import ClusterSettings

#: Debian's containernetworking-plugins.
CNI_BIN_DIR = Path("/usr/lib/cni")

#: The CNI network's name (and its configuration file's stem).
CNI_NETWORK = "kubectl-relay"

#: libcni's cache of ADD results (containerd 1.6 cannot move it): this network's files
#: are removed on stop, then the directories left empty.
LIBCNI_CACHE = Path("/var/lib/cni")

#: Host-wide sysctls this step sets (their earlier values are restored on stop).
HOST_SYSCTLS = {
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
}

#: Prefix of the iptables chains and comments of the guard (``iptables-save | grep relay``).
CHAIN_PREFIX = "KUBECTL-RELAY"


def cni_config_dir(settings: ClusterSettings) -> Path:
    """containerd's CNI ``conf_dir``: only this cluster's network is in it."""
    return settings.state_dir / "cni" / "net.d"


def ipam_dir(settings: ClusterSettings) -> Path:
    """Where ``host-local`` records the addresses it gave (its ``dataDir``)."""
    return settings.state_dir / "cni" / "ipam"


def _saved_state_path(settings: ClusterSettings) -> Path:
    return settings.run_dir / "network-host-state.json"


def cni_config(settings: ClusterSettings) -> dict[str, object]:
    """The CNI network configuration list (``<conf_dir>/10-kubectl-relay.conflist``)."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": settings.bridge_name,
                # The bridge's address is this step's (the plugin would also switch
                # net.ipv4.ip_forward on for every interface). No default route in the
                # pods and no masquerading: see the module docstring.
                "isGateway": False,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": settings.pod_cidr, "gateway": settings.bridge_address}]],
                    # Through the gateway: kube-proxy's rules on the host DNAT these.
                    "routes": [{"dst": settings.service_cidr, "gw": settings.bridge_address}],
                    "dataDir": str(ipam_dir(settings)),
                },
            },
        ],
    }


@dataclass(frozen=True)
class Rule:
    """One iptables rule: table, chain and match/target arguments."""

    table: str
    chain: str
    arguments: tuple[str, ...]

    def command(self, action: str) -> list[str]:
        """``iptables -w -t <table> <action> <chain> <arguments>`` (action: -A, -C, -D)."""
        return ["iptables", "-w", "-t", self.table, action, self.chain, *self.arguments]


def _drop(chain: str, match: tuple[str, ...], why: str) -> Rule:
    """A DROP rule of the guard, commented with ``why`` (what ``iptables-save`` shows)."""
    return Rule(
        "mangle",
        chain,
        (*match, "-m", "comment", "--comment", f"kubectl-relay: {why}", "-j", "DROP"),
    )


def _return(chain: str, match: tuple[str, ...]) -> Rule:
    return Rule("mangle", chain, (*match, "-j", "RETURN"))


def guard_chains(settings: ClusterSettings) -> dict[str, str]:
    """Own chain -> the built-in ``mangle`` chain that jumps to it."""
    del settings
    return {
        f"{CHAIN_PREFIX}-FORWARD": "FORWARD",
        f"{CHAIN_PREFIX}-EGRESS": "POSTROUTING",
        f"{CHAIN_PREFIX}-INPUT": "INPUT",
    }


def guard_rules(settings: ClusterSettings) -> list[Rule]:
    """The rules of the guard chains, in order (see the module docstring)."""
    bridge = settings.bridge_name
    pods = settings.pod_cidr
    forward, egress, inbound = guard_chains(settings)
    local_ports = (
        f"{settings.apiserver_port},{settings.kubelet_port},{settings.kube_router_health_port}"
    )
    return [
        _drop(
            forward,
            ("-i", bridge, "!", "-o", bridge),
            "pod traffic is forwarded only back to the bridge",
        ),
        _drop(
            forward,
            ("-s", pods, "!", "-o", bridge),
            "pod addresses are forwarded only to the bridge",
        ),
        _drop(
            forward,
            ("!", "-i", bridge, "-o", bridge),
            "nothing is forwarded from elsewhere to the pods",
        ),
        _return(egress, ("-o", bridge)),
        _return(egress, ("-o", "lo")),
        _drop(egress, ("-s", pods), "no packet with a pod address leaves by another interface"),
        _return(inbound, ("-i", "lo")),
        _return(inbound, ("-i", bridge)),
        _drop(
            inbound,
            ("-p", "tcp", "-m", "multiport", "--dports", local_ports),
            "API server, kubelet and kube-router health only on loopback and the bridge",
        ),
    ]


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode != 0:
        raise ComponentError(
            "network", f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()}"
        )
    return result


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def _nft_tables() -> set[str]:
    """``family name`` of every nftables table (iptables-nft makes them on first use)."""
    result = _run(["nft", "list", "tables"], check=False)
    return {line.removeprefix("table ").strip() for line in result.stdout.splitlines() if line}


class Network:
    """Step of ``up``: the bridge, the sysctls, the guard rules and the CNI configuration."""

    name = "network"
    ready_timeout = 10.0

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        """Save the host's state, then create the bridge, set the sysctls, add the rules."""
        self._save_host_state()
        bridge = self.settings.bridge_name
        if not Path(f"/sys/class/net/{bridge}").exists():
            _run(["ip", "link", "add", "name", bridge, "type", "bridge"])
        address = f"{self.settings.bridge_address}/{self.settings.bridge_prefix_length}"
        _run(["ip", "address", "replace", address, "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])
        # This host's own connections to ClusterIPs leave by the bridge, with the bridge's
        # address: never towards the default route, even before kube-proxy's rules exist.
        _run(
            [
                "ip",
                "route",
                "replace",
                self.settings.service_cidr,
                "dev",
                bridge,
                "src",
                self.settings.bridge_address,
            ]
        )
        for name, value in HOST_SYSCTLS.items():
            _sysctl_path(name).write_text(value)
        _sysctl_path(f"net/ipv4/conf/{bridge}/forwarding").write_text("1")
        self._add_rules()
        directory = cni_config_dir(self.settings)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"10-{CNI_NETWORK}.conflist").write_text(
            json.dumps(cni_config(self.settings), indent=2) + "\n"
        )

    def _save_host_state(self) -> None:
        """Save the sysctls and the nftables tables as they were before the first start."""
        path = _saved_state_path(self.settings)
        if path.exists():
            return
        state = {
            "sysctls": {name: _sysctl_path(name).read_text().strip() for name in HOST_SYSCTLS},
            "nft_tables": sorted(_nft_tables()),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2) + "\n")

    def _add_rules(self) -> None:
        for chain, parent in guard_chains(self.settings).items():
            _run(["iptables", "-w", "-t", "mangle", "-N", chain], check=False)
            _run(["iptables", "-w", "-t", "mangle", "-F", chain])
            jump = Rule("mangle", parent, ("-j", chain))
            if _run(jump.command("-C"), check=False).returncode != 0:
                _run(["iptables", "-w", "-t", "mangle", "-I", parent, "1", "-j", chain])
        for rule in guard_rules(self.settings):
            _run(rule.command("-A"))

    # -- ready -----------------------------------------------------------------------------

    def ready(self) -> bool:
        """The bridge is up with the gateway address and every guard rule is in place."""
        shown = _run(["ip", "-json", "address", "show", "dev", self.settings.bridge_name])
        addresses = {
            info["local"] for link in json.loads(shown.stdout) for info in link["addr_info"]
        }
        return self.settings.bridge_address in addresses and all(
            _run(rule.command("-C"), check=False).returncode == 0
            for rule in guard_rules(self.settings)
        )

    # -- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Remove the rules, the bridge and its ports, the CNI files; restore the sysctls."""
        for chain, parent in guard_chains(self.settings).items():
            jump = Rule("mangle", parent, ("-j", chain))
            while _run(jump.command("-D"), check=False).returncode == 0:
                pass
            _run(["iptables", "-w", "-t", "mangle", "-F", chain], check=False)
            _run(["iptables", "-w", "-t", "mangle", "-X", chain], check=False)
        bridge = self.settings.bridge_name
        if Path(f"/sys/class/net/{bridge}").exists():
            ports = _run(["ip", "-json", "link", "show", "master", bridge], check=False)
            for port in json.loads(ports.stdout or "[]"):
                _run(["ip", "link", "delete", port["ifname"]], check=False)
            _run(["ip", "link", "delete", bridge])
        subprocess.run(["rm", "-rf", str(self.settings.state_dir / "cni")], check=True)
        # <network>-<sandbox id>-<interface>; containerd's loopback entry names the same id.
        for cached in (LIBCNI_CACHE / "results").glob(f"{CNI_NETWORK}-*"):
            sandbox = cached.name.removeprefix(f"{CNI_NETWORK}-").rsplit("-", 1)[0]
            (cached.parent / f"cni-loopback-{sandbox}-lo").unlink(missing_ok=True)
            cached.unlink(missing_ok=True)
        hostcleanup.remove_empty_directories(LIBCNI_CACHE)
        self._restore_host_state()

    def _restore_host_state(self) -> None:
        path = _saved_state_path(self.settings)
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        for name, value in state["sysctls"].items():
            with contextlib.suppress(OSError):
                _sysctl_path(name).write_text(value)
        # iptables-nft creates a table on first use and never removes it: remove the
        # ones that were not there before and hold no rule any more.
        for table in sorted(_nft_tables() - set(state["nft_tables"])):
            listing = _run(["nft", "list", "table", *table.split()], check=False).stdout
            if not any(line.strip() and not _structural(line) for line in listing.splitlines()):
                _run(["nft", "delete", "table", *table.split()], check=False)
        path.unlink()


def _structural(line: str) -> bool:
    """Whether an ``nft list table`` line only declares (table, chain, hook, brace), no rule."""
    text = line.strip()
    return text.startswith(("table ", "chain ", "type ", "}")) or text == "}"
