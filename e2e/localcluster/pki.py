"""The local cluster's certificates and keys, made fresh on every ``up``.

One CA signs everything: the serving certificates (API server, etcd, kubelet)
and the client certificates of every component and user. The client
certificate's common name is the Kubernetes user name and its organizations
are the groups, which is how the API server authenticates them:

================================  =====================================  ==================
file stem (``pki/<stem>.crt``)    user (CN)                              groups (O)
================================  =====================================  ==================
``admin``                         ``admin``                              ``system:masters``
``relay-dev``                     ``relay-dev``                          (none: no rights)
``kube-controller-manager``       ``system:kube-controller-manager``
``kube-scheduler``                ``system:kube-scheduler``
``kubelet``                       ``system:node:<node>``                 ``system:nodes``
``kube-proxy``                    ``system:kube-proxy``
``apiserver-kubelet-client``      ``kube-apiserver-kubelet-client``      ``system:masters``
``apiserver-etcd-client``         ``kube-apiserver-etcd-client``
================================  =====================================  ==================

A second CA, ``front-proxy-ca``, signs only ``front-proxy-client``: the API
server's identity when it proxies to aggregated API servers, which trust the
``X-Remote-User`` headers of that certificate alone (the controller-manager
and the scheduler read that CA too, to authenticate who calls them).

The service-account tokens are signed with ``sa.key`` and checked with
``sa.pub``. Keys are ECDSA P-256: quick to make, and accepted by every
component (etcd, the API server, service-account tokens as ES256).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from e2e.localcluster.settings import ClusterSettings

#: How long every certificate is valid: a local cluster lives hours, not years.
VALIDITY = datetime.timedelta(days=30)

#: File stem and subject of each CA.
CLUSTER_CA = "ca"
FRONT_PROXY_CA = "front-proxy-ca"
CA_NAMES = {
    CLUSTER_CA: "kubectl-relay local cluster CA",
    FRONT_PROXY_CA: "kubectl-relay local cluster front-proxy CA",
}


@dataclass(frozen=True)
class CertificateSpec:
    """One certificate to make: its file stem, subject and what it may be used for."""

    stem: str
    """``pki/<stem>.crt`` and ``pki/<stem>.key``."""

    common_name: str
    """The subject's CN: the user name for client certificates."""

    organizations: tuple[str, ...] = ()
    """The subject's O values: the groups for client certificates."""

    client: bool = False
    """Usable for TLS client authentication."""

    server: bool = False
    """Usable for TLS serving; then ``dns_names`` and ``ip_addresses`` are its SANs."""

    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    issuer: str = CLUSTER_CA
    """The stem of the CA that signs it."""


def apiserver_dns_names(settings: ClusterSettings) -> tuple[str, ...]:
    """The API server's DNS names: how pods (and this host) name it."""
    domain = settings.cluster_domain
    return (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{domain}",
    )


def apiserver_ip_addresses(settings: ClusterSettings) -> tuple[str, ...]:
    """Loopback, the advertised bridge address, and the ``kubernetes`` Service's ClusterIP."""
    return ("127.0.0.1", settings.bridge_address, settings.kubernetes_service_ip)


def client_identities(settings: ClusterSettings) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Kubeconfig name -> (user, groups) of each client that gets a kubeconfig."""
    return {
        "admin": ("admin", ("system:masters",)),
        "relay-dev": ("relay-dev", ()),
        "kube-controller-manager": ("system:kube-controller-manager", ()),
        "kube-scheduler": ("system:kube-scheduler", ()),
        "kubelet": (f"system:node:{settings.node_name}", ("system:nodes",)),
        "kube-proxy": ("system:kube-proxy", ()),
        "kube-router": ("system:kube-router", ()),
    }


def certificate_specs(settings: ClusterSettings) -> list[CertificateSpec]:
    """Every certificate of the cluster (the CA apart)."""
    specs = [
        CertificateSpec(
            "apiserver",
            "kube-apiserver",
            server=True,
            dns_names=apiserver_dns_names(settings),
            ip_addresses=apiserver_ip_addresses(settings),
        ),
        CertificateSpec(
            "etcd-server",
            "etcd",
            server=True,
            client=True,
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
        ),
        CertificateSpec(
            "kubelet-serving",
            f"system:node:{settings.node_name}",
            ("system:nodes",),
            server=True,
            dns_names=(settings.node_name, "localhost"),
            ip_addresses=("127.0.0.1", settings.bridge_address),
        ),
        # The API server's identity towards the kubelet (logs, exec, port-forward):
        # the kubelet asks the API server whether this user may, so it needs rights.
        CertificateSpec(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            ("system:masters",),
            client=True,
        ),
        CertificateSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True),
        CertificateSpec(
            "front-proxy-client", "front-proxy-client", client=True, issuer=FRONT_PROXY_CA
        ),
    ]
    for stem, (user, groups) in client_identities(settings).items():
        specs.append(CertificateSpec(stem, user, groups, client=True))
    return specs


@dataclass(frozen=True)
class PkiPaths:
    """Where the files of ``pki_dir`` are."""

    directory: Path

    def cert(self, stem: str) -> Path:
        """``<stem>.crt`` (PEM)."""
        return self.directory / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        """``<stem>.key`` (PEM, PKCS#8, mode 0600)."""
        return self.directory / f"{stem}.key"

    @property
    def ca_cert(self) -> Path:
        """The cluster CA's certificate: every client and server trusts it."""
        return self.cert("ca")

    @property
    def ca_key(self) -> Path:
        """The cluster CA's key (the controller-manager signs CSRs with it)."""
        return self.key("ca")

    @property
    def front_proxy_ca_cert(self) -> Path:
        """The front-proxy CA: trusted only for the API server's proxied requests."""
        return self.cert(FRONT_PROXY_CA)

    @property
    def service_account_key(self) -> Path:
        """Signs service-account tokens (API server, controller-manager)."""
        return self.key("sa")

    @property
    def service_account_public_key(self) -> Path:
        """Checks service-account tokens."""
        return self.directory / "sa.pub"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(b"")
    path.chmod(0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _ca(
    common_name: str, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    spec: CertificateSpec,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key and the certificate ``spec`` describes, signed by the CA."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = _new_key()
    usages = []
    if spec.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, spec.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if spec.dns_names or spec.ip_addresses:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec.ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def create_pki(settings: ClusterSettings) -> PkiPaths:
    """Make new CAs, every certificate of ``certificate_specs`` and the SA key pair."""
    paths = PkiPaths(settings.pki_dir)
    remove_pki(settings)
    paths.directory.mkdir(parents=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    authorities = {}
    for stem, common_name in CA_NAMES.items():
        ca_cert, ca_key = _ca(common_name, now)
        paths.cert(stem).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(paths.key(stem), ca_key)
        authorities[stem] = (ca_cert, ca_key)
    for spec in certificate_specs(settings):
        cert, key = issue(spec, *authorities[spec.issuer], now)
        paths.cert(spec.stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(paths.key(spec.stem), key)
    sa_key = _new_key()
    _write_key(paths.service_account_key, sa_key)
    paths.service_account_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths


def remove_pki(settings: ClusterSettings) -> None:
    """Remove the PKI directory (nothing happens when there is none)."""
    shutil.rmtree(settings.pki_dir, ignore_errors=True)
