"""etcd: the API server's store, one member on loopback, TLS with client certificates.

etcd is the one the multicall binary carries (``go.etcd.io/etcd/server/v3``
at the version Kubernetes' own go.mod names). Its data lives only as long as
the cluster: ``stop`` removes it, so every ``up`` starts from an empty store.
"""

from __future__ import annotations

import json
import shutil

from e2e.localcluster.component import DaemonComponent, https_get
from e2e.localcluster.pki import PkiPaths
from e2e.localcluster.settings import ClusterSettings

#: The member's name (one member, so it only has to be stable).
MEMBER = "relay-local"


def etcd_flags(settings: ClusterSettings) -> list[str]:
    """etcd's command-line flags for ``settings``."""
    pki = PkiPaths(settings.pki_dir)
    peer_url = f"http://127.0.0.1:{settings.etcd_peer_port}"
    return [
        f"--name={MEMBER}",
        f"--data-dir={settings.etcd_data_dir}",
        f"--listen-client-urls={settings.etcd_url}",
        f"--advertise-client-urls={settings.etcd_url}",
        # One member: no peer ever connects, but etcd wants the URLs; loopback only.
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster={MEMBER}={peer_url}",
        "--initial-cluster-state=new",
        f"--cert-file={pki.cert('etcd-server')}",
        f"--key-file={pki.key('etcd-server')}",
        f"--trusted-ca-file={pki.ca_cert}",
        "--client-cert-auth=true",
        # The store is thrown away on `down`; fsync would only slow the tests.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


class Etcd(DaemonComponent):
    """The etcd daemon."""

    name = "etcd"
    ready_timeout = 60.0

    def argv(self) -> list[str]:
        return [str(self.settings.binary("etcd")), *etcd_flags(self.settings)]

    def prepare(self) -> None:
        shutil.rmtree(self.settings.etcd_data_dir, ignore_errors=True)
        self.settings.etcd_data_dir.mkdir(parents=True, mode=0o700)

    def ready(self) -> bool:
        """``/health`` answers ``"health": "true"`` to the API server's client certificate."""
        self.check_alive()
        pki = PkiPaths(self.settings.pki_dir)
        status, body = https_get(
            f"{self.settings.etcd_url}/health",
            ca_file=pki.ca_cert,
            client_cert=(pki.cert("apiserver-etcd-client"), pki.key("apiserver-etcd-client")),
        )
        return status == 200 and json.loads(body).get("health") == "true"

    def cleanup(self) -> None:
        shutil.rmtree(self.settings.etcd_data_dir, ignore_errors=True)
