"""The local cluster's certificates, keys and kubeconfigs, checked by real TLS peers."""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from e2e.localcluster.kubeconfig import Credentials, write_kubeconfigs
from e2e.localcluster.pki import (
    CLUSTER_CA,
    FRONT_PROXY_CA,
    PkiPaths,
    certificate_specs,
    create_pki,
)
from e2e.localcluster.settings import ClusterSettings
from tests.conftest import scaled


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> ClusterSettings:
    root = tmp_path_factory.mktemp("cluster")
    settings = ClusterSettings(state_dir=root / "state", cache_root=root / "cache")
    Credentials(settings).start()
    return settings


@pytest.fixture(scope="module")
def pki(settings: ClusterSettings) -> PkiPaths:
    return PkiPaths(settings.pki_dir)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def subject(cert: x509.Certificate) -> tuple[str, list[str]]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return str(cn), [str(o) for o in orgs]


def test_apiserver_names(pki: PkiPaths) -> None:
    sans = (
        load(pki.cert("apiserver"))
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "198.18.0.1", "198.19.0.1")
    }


@pytest.mark.parametrize(
    ("stem", "user", "groups"),
    [
        ("admin", "admin", ["system:masters"]),
        ("relay-dev", "relay-dev", []),
        ("kubelet", "system:node:relay-node", ["system:nodes"]),
        ("kube-proxy", "system:kube-proxy", []),
        ("kube-router", "system:kube-router", []),
        ("kube-controller-manager", "system:kube-controller-manager", []),
        ("kube-scheduler", "system:kube-scheduler", []),
    ],
)
def test_client_identities(pki: PkiPaths, stem: str, user: str, groups: list[str]) -> None:
    cert = load(pki.cert(stem))
    assert subject(cert) == (user, groups)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def openssl_verify(ca: Path, *certs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), *map(str, certs)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_certificate_verifies_with_openssl(settings: ClusterSettings, pki: PkiPaths) -> None:
    specs = certificate_specs(settings)
    for issuer in (CLUSTER_CA, FRONT_PROXY_CA):
        certs = [pki.cert(spec.stem) for spec in specs if spec.issuer == issuer]
        result = openssl_verify(pki.cert(issuer), *certs)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count(": OK") == len(certs) > 0


def test_front_proxy_client_is_no_user_of_the_cluster_ca(pki: PkiPaths) -> None:
    """Only the front-proxy CA signs it, so it cannot log in as a user."""
    assert openssl_verify(pki.ca_cert, pki.cert("front-proxy-client")).returncode != 0
    assert openssl_verify(pki.front_proxy_ca_cert, pki.cert("admin")).returncode != 0


def test_keys_are_private(settings: ClusterSettings, pki: PkiPaths) -> None:
    keys = sorted(pki.directory.glob("*.key"))
    assert pki.ca_key in keys and pki.service_account_key in keys
    assert pki.key(FRONT_PROXY_CA) in keys
    for path in [*keys, *settings.kubeconfig_dir.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _serve_once(server: ssl.SSLContext, listener: socket.socket, seen: list[str]) -> None:
    conn, _ = listener.accept()
    try:
        with server.wrap_socket(conn, server_side=True) as tls:
            peer = tls.getpeercert() or {}
            fields = dict(field[0] for field in peer.get("subject", ()))
            seen.append(str(fields.get("commonName")))
            tls.sendall(b"ok")
    except (ssl.SSLError, OSError):
        conn.close()


def handshake(pki: PkiPaths, server_name: str, user: str = "relay-dev") -> list[str]:
    """TLS from ``user``'s certificate to a server with the API server's one, as ``server_name``.

    Returns the client common names the server saw.
    """
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_cert_chain(str(pki.cert("apiserver")), str(pki.key("apiserver")))
    client = ssl.create_default_context(cafile=str(pki.ca_cert))
    client.load_cert_chain(str(pki.cert(user)), str(pki.key(user)))
    seen: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(scaled(10))
        thread = threading.Thread(target=_serve_once, args=(server, listener, seen))
        thread.start()
        try:
            raw = socket.create_connection(listener.getsockname(), timeout=scaled(10))
            with client.wrap_socket(raw, server_hostname=server_name) as tls:
                assert tls.recv(2) == b"ok"
        finally:
            thread.join(scaled(10))
    return seen


@pytest.mark.parametrize("name", ["kubernetes.default.svc", "198.18.0.1", "198.19.0.1"])
def test_mutual_tls_with_the_apiserver_certificate(pki: PkiPaths, name: str) -> None:
    """A client of the cluster CA reaches the API server's certificate by each of its names."""
    assert handshake(pki, name) == ["relay-dev"]


@pytest.mark.parametrize("name", ["example.com", "192.0.2.1", "kubernetes.default.svc.other"])
def test_apiserver_certificate_refuses_other_names(pki: PkiPaths, name: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(pki, name)


def test_kubeconfigs_embed_their_credentials(settings: ClusterSettings, pki: PkiPaths) -> None:
    document = yaml.safe_load(settings.kubeconfig("relay-dev").read_text())
    cluster = document["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:16443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == pki.ca_cert.read_bytes()
    user = document["users"][0]
    assert user["name"] == "relay-dev"
    assert (
        base64.b64decode(user["user"]["client-certificate-data"])
        == pki.cert("relay-dev").read_bytes()
    )
    assert document["current-context"] == document["contexts"][0]["name"]


def test_credentials_step_is_undone(tmp_path: Path) -> None:
    settings = ClusterSettings(state_dir=tmp_path / "state", cache_root=tmp_path / "cache")
    step = Credentials(settings)
    step.stop()  # never started: nothing to do, no error
    step.start()
    assert step.ready()
    first_ca = PkiPaths(settings.pki_dir).ca_cert.read_bytes()
    step.start()  # a second up makes a new CA
    assert PkiPaths(settings.pki_dir).ca_cert.read_bytes() != first_ca
    step.stop()
    step.stop()
    assert not settings.pki_dir.exists() and not settings.kubeconfig_dir.exists()
    assert not step.ready()


def test_kubeconfigs_follow_the_pki(tmp_path: Path) -> None:
    settings = ClusterSettings(state_dir=tmp_path / "state", cache_root=tmp_path / "cache")
    paths = write_kubeconfigs(settings, create_pki(settings))
    assert sorted(p.name for p in paths) == sorted(
        f"{n}.kubeconfig"
        for n in (
            "admin",
            "relay-dev",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "kube-router",
        )
    )
