"""What a tunnel's author may ask for, as the cluster admin decides it.

The operator's threat model: people who may create SocatTunnels but not
pods. Through a tunnel they must get no more than a relay pod that forwards
to a destination the admin allows. Three rules hold that, all pure:

- **Pod labels** are identities: Services, NetworkPolicies and
  PodDisruptionBudgets select pods by them. A relay pod labelled
  ``app: web`` joins the endpoints of Service ``web`` (and receives part of
  its traffic); labelled ``role: frontend`` it passes the NetworkPolicies
  that admit the frontend. Which selectors exist, or will exist, cannot be
  known when the tunnel is reconciled, so the rule is static: an author may
  set label keys under ``tunnel.kubectl-relay.io/`` (a prefix no selector
  outside this project has reason to use) and the exact keys the admin
  lists in the operator's settings (``team``, ``cost-center``: keys the
  admin knows no Service or policy selects on).
- **Pod annotations** under ``kubernetes.io`` and ``k8s.io`` (and their
  subdomains) are Kubernetes' own; some change the pod's security
  (``container.apparmor.security.beta.kubernetes.io/relay: unconfined``,
  the seccomp annotations) or its resources. They are refused; other
  annotations (``prometheus.io/*``, an owner's e-mail) pass.
- **Destinations**: ``DestinationPolicy`` lists denied and allowed networks
  and host names, globally and per namespace. By default the link-local
  range (cloud metadata services), the loopback ranges and the Kubernetes
  API server are denied. ``parse_spec`` checks the connect address against
  it, and the relay pods get the networks as ``--deny-connect`` /
  ``--allow-connect``, which the engine checks after resolving names.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import DestinationError, SpecError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The label keys every tunnel's author may set on its relay pods.
AUTHOR_LABEL_PREFIX = "tunnel.kubectl-relay.io/"

#: Annotation domains that belong to Kubernetes (with their subdomains).
KUBERNETES_DOMAINS = ("kubernetes.io", "k8s.io")

#: A host name as resolvers take it: dot-separated labels of letters,
#: digits, '-' and '_' (some internal zones use it), an optional final dot.
_HOST_LABEL = re.compile(r"^[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?$")
#: A service name as /etc/services has them (IANA: at most 15 characters).
_SERVICE_NAME = re.compile(r"^[A-Za-z]([-A-Za-z0-9]{0,14})$")


# --- Labels and annotations ----------------------------------------------------


def check_author_label(key: str, path: str, allowed_keys: Sequence[str]) -> None:
    """Refuse a relay-pod label key that a Service or policy may select on."""
    if key.startswith(AUTHOR_LABEL_PREFIX) or key in allowed_keys:
        return
    name = key.rpartition("/")[2]
    admin = f" or one the cluster admin allows ({', '.join(allowed_keys)})" if allowed_keys else ""
    raise SpecError(
        path,
        "a label on the relay pods could make them receive traffic meant for other pods "
        "(a Service selecting it) or pass NetworkPolicies meant for them, so tunnels may "
        f"set only keys under {AUTHOR_LABEL_PREFIX}{admin}",
        f'write "{AUTHOR_LABEL_PREFIX}{name}"',
    )


def kubernetes_domain(key: str) -> bool:
    """Whether an annotation key's prefix is ``kubernetes.io``, ``k8s.io`` or a subdomain."""
    prefix = key.rpartition("/")[0].lower()
    return any(prefix == d or prefix.endswith("." + d) for d in KUBERNETES_DOMAINS)


def check_pod_annotation(key: str, path: str) -> None:
    """Refuse pod annotations Kubernetes reads (AppArmor, seccomp, bandwidth...)."""
    if kubernetes_domain(key):
        raise SpecError(
            path,
            "annotations under kubernetes.io and k8s.io configure the pod itself (AppArmor, "
            "seccomp, bandwidth); relay pods keep the operator's restricted settings",
            "use a key under your own domain, such as example.com/owner",
        )


# --- Host names and addresses ------------------------------------------------------


def is_host_name(text: str) -> bool:
    """Whether ``text`` can be a DNS name (what getaddrinfo may resolve)."""
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


def is_service(text: str) -> bool:
    """A port: a number from 1 to 65535 or a service name (``https``)."""
    if text.isascii() and text.isdigit():
        return 1 <= int(text) <= 65535
    return bool(_SERVICE_NAME.match(text)) and not text.endswith("-")


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells (brackets, IPv4 short forms like ``127.1``), else None.

    IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) count as their IPv4
    address: the kernel connects and binds them as such.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        # getaddrinfo reads IPv4 in inet_aton's forms too: 127.1, 0x7f.1, 2130706433.
        if not text or not all(c.isalnum() or c == "." for c in text):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback_host(host: str) -> bool:
    """Whether a host (a bind= value's host part) is the local host only."""
    address = ip_literal(host)
    if address is not None:
        return address.is_loopback
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def is_internal_host(host: str) -> bool:
    """Whether ``host`` names something inside the cluster or its private network.

    Short names and ``*.svc`` names resolve through the pod's cluster DNS
    search path to Services; private addresses are the cluster's or its
    network's own.
    """
    address = ip_literal(host)
    if address is not None:
        return address.is_private
    labels = host.lower().rstrip(".").split(".")
    return len(labels) == 1 or "svc" in labels[1:] or host.endswith(".cluster.local")


# --- Destinations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Destinations:
    """Networks and host names: ``10.0.0.0/8``, ``db.example.net``, ``*.svc.cluster.local``.

    A name ``*.example.net`` matches every name below ``example.net``, not
    the name itself; ``kubernetes.default.svc.*`` every name that starts
    with ``kubernetes.default.svc.`` (whatever the cluster's domain). Names
    compare without case and final dot.
    """

    networks: tuple[Network, ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[object], path: str) -> Destinations:
        """From a list of strings (a setting); ``SpecError`` names the bad entry."""
        networks: list[Network] = []
        names: list[str] = []
        for index, entry in enumerate(entries):
            where = f"{path}[{index}]"
            if not isinstance(entry, str) or not entry:
                raise SpecError(where, "expected a CIDR, an address or a host name")
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if not is_host_name(name.removeprefix("*.").removesuffix(".*")):
                raise SpecError(
                    where,
                    f'"{entry}" is neither a CIDR nor a host name',
                    'write "10.0.0.0/8", "fd00::/8", "db.example.net" or "*.example.net"',
                )
            names.append(name)
        return cls(tuple(networks), tuple(names))

    def __add__(self, other: Destinations) -> Destinations:
        return Destinations(self.networks + other.networks, self.names + other.names)

    def __bool__(self) -> bool:
        return bool(self.networks or self.names)

    def network_of(self, address: IPAddress) -> Network | None:
        """The first network that holds ``address``."""
        for network in self.networks:
            if address.version == network.version and address in network:
                return network
        return None

    def name_of(self, host: str) -> str | None:
        """The first name or pattern that matches ``host``."""
        name = host.lower().rstrip(".")
        for entry in self.names:
            if entry.startswith("*.") and name.endswith(entry[1:]):
                return entry
            if entry.endswith(".*") and name.startswith(entry[:-1]):
                return entry
            if entry == name:
                return entry
        return None

    def entries(self) -> list[str]:
        return [str(n) for n in self.networks] + list(self.names)


#: What is denied unless the admin says otherwise: reaching them from a pod
#: gives away the node's or the cluster's credentials.
DEFAULT_DENIED = Destinations(
    networks=tuple(
        ipaddress.ip_network(n)
        for n in (
            "0.0.0.0/8",  # "this host": 0.0.0.0 reaches the pod's own ports
            "127.0.0.0/8",
            "::1/128",
            "::/128",
            "169.254.0.0/16",  # link-local: AWS, Azure, GCP and OCI metadata at .169.254
            "fe80::/10",
            "fd00:ec2::254/128",  # AWS metadata over IPv6
            "168.63.129.16/32",  # Azure's WireServer (VM agent, health probes)
            "100.100.100.200/32",  # Alibaba Cloud metadata
        )
    ),
    names=(
        "localhost",
        "*.localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.*",
        "metadata.google.internal",
    ),
)


@dataclass(frozen=True)
class NamespaceDestinations:
    """One namespace's additions: ``denied`` adds to the global list, ``allowed`` replaces it."""

    denied: Destinations = field(default_factory=Destinations)
    allowed: Destinations | None = None


@dataclass(frozen=True)
class DestinationPolicy:
    """Where tunnels may connect: denied always wins; with an allow list, only what it holds.

    ``denied`` defaults to ``DEFAULT_DENIED`` (plus the API server's address
    from the operator's environment, see ``Settings``); ``allowed`` None
    allows everything not denied.
    """

    denied: Destinations = DEFAULT_DENIED
    allowed: Destinations | None = None
    namespaces: Mapping[str, NamespaceDestinations] = field(default_factory=dict)

    def rules(self, namespace: str) -> tuple[Destinations, Destinations | None]:
        """The denied and allowed destinations in force in ``namespace``."""
        own = self.namespaces.get(namespace)
        if own is None:
            return self.denied, self.allowed
        allowed = own.allowed if own.allowed is not None else self.allowed
        return self.denied + own.denied, allowed


@dataclass(frozen=True)
class ConnectRules:
    """What the relay checks after resolving: the ``--deny-connect``/``--allow-connect`` lists."""

    denied: tuple[Network, ...] = ()
    #: None: no allow list (every address not denied may be reached).
    allowed: tuple[Network, ...] | None = None

    def arguments(self) -> list[str]:
        """The relay's global options that enforce these rules."""
        args: list[str] = []
        if self.denied:
            args += ["--deny-connect", ",".join(str(n) for n in self.denied)]
        if self.allowed is not None:
            # An empty allow list allows nothing: parse_spec refuses such a
            # tunnel before it gets here.
            args += ["--allow-connect", ",".join(str(n) for n in self.allowed)]
        return args


def check_destination(
    host: str, policy: DestinationPolicy, namespace: str, path: str
) -> ConnectRules:
    """Refuse a connect host the policy denies; the rules the relay enforces at connect time.

    A name is checked here by name only (it resolves later, in the pod): the
    relay checks its addresses. With an allow list, a name the list names
    needs no address check; any other name must resolve into an allowed
    network, and one that no allowed network could hold is refused here.
    """
    denied, allowed = policy.rules(namespace)
    address = ip_literal(host)
    shown = str(address) if address is not None else host
    hint = "ask the cluster admin to change the destination policy if this tunnel needs it"
    if address is not None:
        network = denied.network_of(address)
        if network is not None:
            raise DestinationError(path, shown, f"the network {network}", hint)
    else:
        name = denied.name_of(host)
        if name is not None:
            raise DestinationError(path, shown, f'the name "{name}"', hint)
    if allowed is None:
        return ConnectRules(denied=denied.networks)
    if address is None and allowed.name_of(host) is not None:
        return ConnectRules(denied=denied.networks)
    if address is not None and allowed.network_of(address) is not None:
        return ConnectRules(denied=denied.networks, allowed=allowed.networks)
    if address is None and allowed.networks:
        return ConnectRules(denied=denied.networks, allowed=allowed.networks)
    listed = ", ".join(allowed.entries()) or "nothing"
    raise DestinationError(
        path, shown, None, f"the destinations allowed in namespace {namespace} are: {listed}"
    )


@dataclass(frozen=True)
class TunnelPolicy:
    """Everything the cluster admin decides about tunnels, passed to ``parse_spec``."""

    destinations: DestinationPolicy = field(default_factory=DestinationPolicy)
    #: Exact label keys (beyond ``AUTHOR_LABEL_PREFIX``) tunnels may put on relay pods.
    pod_label_keys: tuple[str, ...] = ()
