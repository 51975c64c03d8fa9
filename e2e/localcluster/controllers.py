"""kube-controller-manager and kube-scheduler.

Both talk to the API server with their own kubeconfig (users
``system:kube-controller-manager`` and ``system:kube-scheduler``, bound by the
API server's bootstrap RBAC), and serve health on loopback only. One instance
of each runs, so there is no leader election to wait for.

The controller-manager runs every default controller with one service account
per controller (``--use-service-account-credentials``), signs service-account
tokens with the cluster's key, puts the CA into every ``kube-root-ca.crt``
ConfigMap and signs CSRs with the cluster CA. It allocates no node CIDRs: the
CNI's host-local IPAM gives pods their addresses.
"""

from __future__ import annotations

from e2e.localcluster.component import DaemonComponent, https_get
from e2e.localcluster.pki import PkiPaths
from e2e.localcluster.settings import ClusterSettings


def _delegation_flags(settings: ClusterSettings, kubeconfig: str) -> list[str]:
    """Flags both share: their kubeconfig for the API and for checking who calls them."""
    path = settings.kubeconfig(kubeconfig)
    return [
        f"--kubeconfig={path}",
        f"--authentication-kubeconfig={path}",
        f"--authorization-kubeconfig={path}",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
        "--profiling=false",
    ]


def controller_manager_flags(settings: ClusterSettings) -> list[str]:
    """kube-controller-manager's command-line flags for ``settings``."""
    pki = PkiPaths(settings.pki_dir)
    return [
        *_delegation_flags(settings, "kube-controller-manager"),
        f"--secure-port={settings.controller_manager_port}",
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--service-cluster-ip-range={settings.service_cidr}",
        "--allocate-node-cidrs=false",
    ]


def scheduler_flags(settings: ClusterSettings) -> list[str]:
    """kube-scheduler's command-line flags for ``settings``."""
    return [
        *_delegation_flags(settings, "kube-scheduler"),
        f"--secure-port={settings.scheduler_port}",
    ]


def _healthy(port: int) -> bool:
    # Their serving certificates are self-signed at start: loopback, no server check.
    status, body = https_get(f"https://127.0.0.1:{port}/healthz")
    return status == 200 and body.strip() == "ok"


class ControllerManager(DaemonComponent):
    """The kube-controller-manager daemon."""

    name = "kube-controller-manager"

    def argv(self) -> list[str]:
        return [
            str(self.settings.binary("kube-controller-manager")),
            *controller_manager_flags(self.settings),
        ]

    def ready(self) -> bool:
        """``/healthz`` on its secure port answers ``ok``."""
        self.check_alive()
        return _healthy(self.settings.controller_manager_port)


class Scheduler(DaemonComponent):
    """The kube-scheduler daemon."""

    name = "kube-scheduler"

    def argv(self) -> list[str]:
        return [str(self.settings.binary("kube-scheduler")), *scheduler_flags(self.settings)]

    def ready(self) -> bool:
        """``/healthz`` on its secure port answers ``ok``."""
        self.check_alive()
        return _healthy(self.settings.scheduler_port)
