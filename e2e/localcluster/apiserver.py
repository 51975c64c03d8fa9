"""kube-apiserver, with security switched on as in AKS.

- Authentication: client certificates of the cluster CA (users and
  components), service-account tokens (issuer, signing key, public key).
- Authorization: ``Node,RBAC``; admission: ``NodeRestriction`` on top of the
  default plugins, among them ``PodSecurity`` (so a namespace labelled
  ``pod-security.kubernetes.io/enforce=restricted`` refuses privileged pods).
  ``--allow-privileged=true``: a refusal must come from PodSecurity, not from
  this flag.
- It listens on every address of the host, so that it serves both on
  127.0.0.1 (the clients on this host) and on the bridge's gateway address,
  which it advertises: the ``kubernetes`` Service's endpoint, reached from pods.
"""

from __future__ import annotations

from e2e.localcluster.component import DaemonComponent, https_get
from e2e.localcluster.pki import PkiPaths
from e2e.localcluster.settings import ClusterSettings


def service_account_issuer(settings: ClusterSettings) -> str:
    """The ``iss`` of service-account tokens (what a real cluster's in-cluster name is)."""
    return f"https://kubernetes.default.svc.{settings.cluster_domain}"


def apiserver_flags(settings: ClusterSettings) -> list[str]:
    """kube-apiserver's command-line flags for ``settings``."""
    pki = PkiPaths(settings.pki_dir)
    return [
        f"--etcd-servers={settings.etcd_url}",
        f"--etcd-cafile={pki.ca_cert}",
        f"--etcd-certfile={pki.cert('apiserver-etcd-client')}",
        f"--etcd-keyfile={pki.key('apiserver-etcd-client')}",
        f"--secure-port={settings.apiserver_port}",
        "--bind-address=0.0.0.0",
        f"--advertise-address={settings.bridge_address}",
        f"--tls-cert-file={pki.cert('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        f"--client-ca-file={pki.ca_cert}",
        f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
        f"--kubelet-certificate-authority={pki.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--service-account-issuer={service_account_issuer(settings)}",
        f"--service-account-key-file={pki.service_account_public_key}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={settings.service_cidr}",
        f"--service-node-port-range={settings.node_port_range}",
        # Aggregated API servers (and the controllers' delegated authentication)
        # trust the user headers only of the front-proxy CA's "front-proxy-client".
        f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.cert('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key('front-proxy-client')}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        "--profiling=false",
    ]


class ApiServer(DaemonComponent):
    """The kube-apiserver daemon."""

    name = "kube-apiserver"
    ready_timeout = 120.0

    def argv(self) -> list[str]:
        return [str(self.settings.binary("kube-apiserver")), *apiserver_flags(self.settings)]

    def ready(self) -> bool:
        """``/readyz`` answers 200 to the admin (every post-start hook has run)."""
        self.check_alive()
        pki = PkiPaths(self.settings.pki_dir)
        status, _body = https_get(
            f"{self.settings.apiserver_url}/readyz",
            ca_file=pki.ca_cert,
            client_cert=(pki.cert("admin"), pki.key("admin")),
        )
        return status == 200
