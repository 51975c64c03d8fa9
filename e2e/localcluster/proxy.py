"""kube-proxy in iptables mode: Service ClusterIPs and nodePorts, as DNAT rules on the host.

Its ``KubeProxyConfiguration`` is generated from the settings. Choices, and why:

- ``clusterCIDR``: traffic to a Service from outside the pod CIDR (this host)
  is SNATed to the bridge address so the reply comes back; traffic from pods
  keeps its source.
- ``nodePortAddresses``: nodePorts answer on the bridge address only, never on
  the host's own interfaces; ``iptables.localhostNodePorts: false`` so that
  kube-proxy leaves ``route_localnet`` alone.
- ``conntrack``: zeros, so kube-proxy leaves the host's conntrack table size
  and timeouts as they are.

``stop`` runs ``kube-proxy --cleanup``, which removes its chains; the kubelet's
canary chains go with them.
"""

from __future__ import annotations

import shlex
import subprocess
import urllib.request
from pathlib import Path

import yaml

from e2e.localcluster.component import ComponentError, DaemonComponent
from e2e.localcluster.settings import ClusterSettings

#: Chains the kubelet and kube-proxy make that ``kube-proxy --cleanup`` may leave.
CANARY_CHAINS = {
    "mangle": ("KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY", "KUBE-IPTABLES-HINT"),
    "nat": ("KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY"),
    "filter": ("KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY", "KUBE-FIREWALL"),
}


def remove_chain(command: str, table: str, chain: str) -> None:
    """Delete every rule that jumps to ``chain``, then the chain (``command``: iptables or
    ip6tables). Nothing happens when the chain does not exist."""
    saved = subprocess.run(
        [f"{command}-save", "-t", table], capture_output=True, text=True, check=False
    ).stdout
    for line in saved.splitlines():
        words = shlex.split(line)
        if words[:1] == ["-A"] and words[-2:] == ["-j", chain]:
            subprocess.run([command, "-w", "-t", table, "-D", *words[1:]], check=False)
    for action in ("-F", "-X"):
        subprocess.run(
            [command, "-w", "-t", table, action, chain], capture_output=True, check=False
        )


def config_path(settings: ClusterSettings) -> Path:
    """The generated ``KubeProxyConfiguration``."""
    return settings.config_dir / "kube-proxy.yaml"


def kube_proxy_config(settings: ClusterSettings) -> dict[str, object]:
    """The ``KubeProxyConfiguration`` document for ``settings``."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(settings.kubeconfig("kube-proxy"))},
        "hostnameOverride": settings.node_name,
        "clusterCIDR": settings.pod_cidr,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{settings.kube_proxy_healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{settings.kube_proxy_metrics_port}",
        "nodePortAddresses": [f"{settings.bridge_address}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


class KubeProxy(DaemonComponent):
    """The kube-proxy daemon; ready when its healthz answers 200 (rules synced)."""

    name = "kube-proxy"
    ready_timeout = 60.0

    def argv(self) -> list[str]:
        return [str(self.settings.binary("kube-proxy")), f"--config={config_path(self.settings)}"]

    def prepare(self) -> None:
        """Write the configuration."""
        self.settings.config_dir.mkdir(parents=True, exist_ok=True)
        config_path(self.settings).write_text(
            yaml.safe_dump(kube_proxy_config(self.settings), sort_keys=False)
        )

    def ready(self) -> bool:
        """``/healthz`` answers 200 once the first sync of the rules is done."""
        self.check_alive()
        url = f"http://127.0.0.1:{self.settings.kube_proxy_healthz_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def cleanup(self) -> None:
        """``kube-proxy --cleanup`` (its iptables chains), then the canary chains left."""
        binary = self.settings.binary("kube-proxy")
        if binary.exists():
            result = subprocess.run(
                [str(binary), "--cleanup"],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if result.returncode != 0:
                raise ComponentError(
                    self.name,
                    "`kube-proxy --cleanup` failed",
                    (result.stdout + result.stderr)[-2000:],
                )
        for command in ("iptables", "ip6tables"):
            for table, chains in CANARY_CHAINS.items():
                for chain in chains:
                    remove_chain(command, table, chain)
        config_path(self.settings).unlink(missing_ok=True)
