"""Kubeconfigs of the local cluster's components and users, and the step making them.

Each kubeconfig embeds its client certificate and key and the CA, so it can be
copied elsewhere (a CI artifact, another shell) and still work. They all name
the API server at ``https://127.0.0.1:<apiserver_port>``: every client of this
cluster runs on this host.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import yaml

from e2e.localcluster.pki import PkiPaths, client_identities, create_pki, remove_pki
from e2e.localcluster.settings import ClusterSettings

#: The cluster's and the context's name in every kubeconfig.
CLUSTER_NAME = "relay-local"


def _data(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def kubeconfig_document(
    settings: ClusterSettings, pki: PkiPaths, stem: str, user: str
) -> dict[str, Any]:
    """The kubeconfig of ``user`` with the client certificate ``pki/<stem>.crt``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": settings.apiserver_url,
                    "certificate-authority-data": _data(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _data(pki.cert(stem)),
                    "client-key-data": _data(pki.key(stem)),
                },
            }
        ],
        "contexts": [
            {
                "name": f"{user}@{CLUSTER_NAME}",
                "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": "default"},
            }
        ],
        "current-context": f"{user}@{CLUSTER_NAME}",
        "preferences": {},
    }


def write_kubeconfigs(settings: ClusterSettings, pki: PkiPaths) -> list[Path]:
    """One kubeconfig per entry of ``pki.client_identities``; returns their paths."""
    settings.kubeconfig_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for stem, (user, _groups) in client_identities(settings).items():
        path = settings.kubeconfig(stem)
        path.write_text("")
        path.chmod(0o600)
        document = kubeconfig_document(settings, pki, stem, user)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        written.append(path)
    return written


class Credentials:
    """Step of ``up``: a fresh CA, every certificate and key, and every kubeconfig."""

    name = "credentials"
    ready_timeout = 1.0

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings

    def start(self) -> None:
        """Make the PKI, then the kubeconfigs from it."""
        write_kubeconfigs(self.settings, create_pki(self.settings))

    def ready(self) -> bool:
        """Every kubeconfig is there."""
        return all(
            self.settings.kubeconfig(stem).is_file() for stem in client_identities(self.settings)
        )

    def stop(self) -> None:
        """Remove the kubeconfigs and the PKI: the next ``up`` makes new ones."""
        shutil.rmtree(self.settings.kubeconfig_dir, ignore_errors=True)
        remove_pki(self.settings)
