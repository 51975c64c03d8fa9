"""Kubeconfig files that point kubectl, kopf and the kubernetes client at the sandbox."""

from __future__ import annotations

import base64
import os
from typing import Any

import yaml

CLUSTER = "sandbox"


def kubeconfig(
    server: str, token: str, *, namespace: str, user: str, ca_pem: bytes = b"",
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user (a bearer token) and one context.

    ``ca_pem``: the CA that signed an HTTPS server's certificate.
    """
    context = f"{user}@{CLUSTER}"
    cluster: dict[str, Any] = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {
            "cluster": CLUSTER, "user": user, "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    }


def write(path: str | os.PathLike[str], config: dict[str, Any]) -> None:
    """Write a kubeconfig readable only by its owner (it holds a token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
