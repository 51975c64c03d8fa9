"""NetworkPolicy enforcement: ``sigs.k8s.io/kube-network-policies``, where this kernel allows it.

kube-network-policies (v0.8.0) sends the first packet of every pod connection
to user space through an nftables ``queue`` statement, decides there, and
accepts or drops it. The kernel of these machines is built without
``CONFIG_NFT_QUEUE`` (it has ``CONFIG_NETFILTER_NETLINK_QUEUE`` and the
iptables ``NFQUEUE`` target, which the project does not use), so no rule with
``queue`` can be loaded::

    # nft add table inet t; nft add chain inet t c '{ type filter hook forward priority 0; }'
    # nft add rule inet t c queue num 100 bypass
    Error: Could not process rule: No such file or directory

This step checks exactly that (``nft_queue_supported``) and, as it finds,
says in its name (which ``up`` prints) that NetworkPolicy objects are accepted
by the API server and NOT enforced. Running the controller where a kernel
allows it is not wired: it only reads its API credentials in-cluster
(``rest.InClusterConfig``), so it would be a DaemonSet in the host's network
namespace with NET_ADMIN, on an image built here like CoreDNS's.
"""

from __future__ import annotations

import subprocess

from e2e.localcluster.settings import ClusterSettings

#: The pinned release of the controller (its module is served by the Go module proxy).
MODULE = "sigs.k8s.io/kube-network-policies"
VERSION = "v0.8.0"

#: A throw-away table for the probe.
PROBE_TABLE = ("inet", "kubectl-relay-queue-probe")

UNENFORCED = "netpolicy: NOT enforced (this kernel cannot load nftables `queue` rules)"
UNWIRED = "netpolicy: NOT enforced (the kernel has nft queue; kube-network-policies is not wired)"


def nft_queue_supported() -> bool:
    """Whether the kernel loads an nftables rule with a ``queue`` statement."""
    family, table = PROBE_TABLE
    script = (
        f"table {family} {table} {{\n"
        "  chain probe {\n    type filter hook forward priority 0; policy accept;\n"
        "    meta l4proto tcp queue num 100 bypass\n  }\n}\n"
    )
    try:
        loaded = subprocess.run(
            ["nft", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return loaded.returncode == 0
    finally:
        subprocess.run(
            ["nft", "delete", "table", family, table], capture_output=True, check=False, timeout=10
        )


class NetworkPolicies:
    """Step of ``up``: the probe, and its verdict in the step's name."""

    name = "netpolicy"
    ready_timeout = 10.0

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings

    def start(self) -> None:
        """Probe the kernel; name the step after what it found."""
        if nft_queue_supported():
            self.name = UNWIRED
        else:
            self.name = UNENFORCED

    def ready(self) -> bool:
        """Nothing runs, so nothing to wait for."""
        return True

    def stop(self) -> None:
        """Nothing to undo (the probe removes its table at once)."""
