"""Real users for the e2e tests: client certificates signed by the cluster, and their rights.

A user in Kubernetes is whoever presents a certificate the API server
trusts, with the user name in its subject's CN. ``user_kubeconfig`` makes one
the way an administrator does on any cluster (kind, AKS, the local one):

1. a private key and a certificate signing request for ``CN=<name>``, made here;
2. a ``CertificateSigningRequest`` (``certificates.k8s.io/v1``) for the signer
   ``kubernetes.io/kube-apiserver-client``, approved by the admin (the test's
   kubeconfig), and signed by the controller-manager;
3. a RoleBinding to the ``edit`` ClusterRole in each namespace the user may
   use, and nothing anywhere else;
4. a kubeconfig with the admin's cluster entry and the new user's key and
   certificate.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import scaled

SIGNER = "kubernetes.io/kube-apiserver-client"
#: Shortest lifetime the CSR API accepts is 10 minutes; an hour outlives any test.
LIFETIME_SECONDS = 3600
#: Bound on the controller-manager's signing.
SIGN_TIMEOUT = 60.0


class UserError(Exception):
    """The cluster did not give the user a certificate; the message says what happened."""


def _key_and_request(name: str) -> tuple[bytes, bytes]:
    """A new EC key and a PEM certificate signing request for ``CN=name`` (PEM both)."""
    from cryptography import x509  # noqa: PLC0415 - a test dependency
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, request.public_bytes(serialization.Encoding.PEM)


def sign(api_client: Any, name: str) -> tuple[bytes, bytes]:
    """Key and certificate (PEM) for user ``name``, signed through the CSR API."""
    from kubernetes import client  # noqa: PLC0415

    certificates = client.CertificatesV1Api(api_client)
    key_pem, request_pem = _key_and_request(name)
    csr_name = f"relay-e2e-{name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    body: Any = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name},
        "spec": {
            "request": base64.b64encode(request_pem).decode(),
            "signerName": SIGNER,
            "expirationSeconds": LIFETIME_SECONDS,
            "usages": ["client auth"],
        },
    }
    certificates.create_certificate_signing_request(body)
    try:
        csr: Any = certificates.read_certificate_signing_request(csr_name)
        csr.status.conditions = [client.V1CertificateSigningRequestCondition(
            type="Approved", status="True", reason="RelayE2E",
            message="approved by the kubectl-relay e2e suite")]
        certificates.replace_certificate_signing_request_approval(csr_name, csr)
        deadline = time.monotonic() + scaled(SIGN_TIMEOUT)
        while True:
            status: Any = certificates.read_certificate_signing_request(csr_name).status
            if status.certificate:
                return key_pem, base64.b64decode(status.certificate)
            failed = [c for c in status.conditions or () if c.type == "Failed"]
            if failed:
                raise UserError(f"CSR {csr_name} failed: {failed[0].message}")
            if time.monotonic() > deadline:
                raise UserError(
                    f"CSR {csr_name} was approved but not signed within "
                    f"{scaled(SIGN_TIMEOUT):g}s: is the controller-manager's signer for "
                    f"{SIGNER} configured (--cluster-signing-cert-file)?")
            time.sleep(0.2)
    finally:
        certificates.delete_certificate_signing_request(csr_name)


def grant_edit(api_client: Any, user: str, namespace: str) -> None:
    """Bind ``user`` to the ``edit`` ClusterRole in ``namespace``."""
    from kubernetes import client  # noqa: PLC0415

    binding: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"relay-e2e-{user}-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    client.RbacAuthorizationV1Api(api_client).create_namespaced_role_binding(namespace, binding)


def user_kubeconfig(
    api_client: Any, admin_kubeconfig: Path, name: str, path: Path, *,
    namespaces: Iterable[str] = (), namespace: str = "default",
) -> Path:
    """Write a kubeconfig at ``path`` for a new user ``name`` (see the module docstring)."""
    key_pem, certificate_pem = sign(api_client, name)
    for allowed in namespaces:
        grant_edit(api_client, name, allowed)
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context = next(c["context"] for c in admin["contexts"]
                   if c["name"] == admin["current-context"])
    cluster = dict(next(c["cluster"] for c in admin["clusters"]
                        if c["name"] == context["cluster"]))
    if cluster.get("certificate-authority"):  # inline it: the new file may live elsewhere
        ca_path = admin_kubeconfig.parent / cluster.pop("certificate-authority")
        cluster["certificate-authority-data"] = base64.b64encode(ca_path.read_bytes()).decode()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": name, "user": {
            "client-certificate-data": base64.b64encode(certificate_pem).decode(),
            "client-key-data": base64.b64encode(key_pem).decode()}}],
        "contexts": [{"name": name, "context": {
            "cluster": "e2e", "user": name, "namespace": namespace}}],
        "current-context": name,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    return path


def grant_rules(
    api_client: Any, user: str, namespace: str, name: str, rules: list[dict[str, Any]]
) -> None:
    """Give ``user`` exactly ``rules`` in ``namespace``: a Role ``name`` and its RoleBinding."""
    from kubernetes import client  # noqa: PLC0415

    rbac = client.RbacAuthorizationV1Api(api_client)
    role: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": rules,
    }
    rbac.create_namespaced_role(namespace, role)
    binding: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    rbac.create_namespaced_role_binding(namespace, binding)
