"""A SocatTunnel's spec, checked and resolved into a frozen ``TunnelSpec``.

``parse_spec(body)`` is pure: no API calls, no kopf. It checks what the
CRD's schema cannot (the addresses, with the engine's own parser, so that a
bad address gets the same message in ``kubectl describe`` as from ``relay``
on the command line; cross-field rules; label syntax) and also what the
schema already checks, because objects do not always come through an API
server that applied the schema (an emulator, an old CRD, a hand-made body).

It returns the addresses the relay pods will run: the engine's canonical
spelling, with ``range=`` from ``spec.allowedSources`` and ``cert=``,
``key=``, ``cafile=`` pointing at the files mounted from the TLS Secrets.
Options that name files or restrict peers are the operator's to set, so the
spec refuses them in the address text and says which field to use instead.

A shared tunnel must serve more than one client: the listen address needs
``fork``. It is not added silently (the running command would differ from
what was written and reviewed); the message gives the corrected address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, get_args

from kubectl_relay.engine.addresses import Address, DualAddress, parse_address
from kubectl_relay.engine.errors import RelayError

from .bodies import (
    Effect,
    ServiceType,
    SessionLogs,
    TolerationOperator,
    Tracing,
    TunnelBody,
)
from .errors import AddressError, SecretError, SpecError
from .fields import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    SECRET_KEY,
    Resources,
    as_list,
    as_object,
    check_label_value,
    check_qualified_name,
    choice,
    describe,
    integer,
    known_fields,
    parse_resources,
    parse_ttl,
    required_string,
    string,
    string_map,
)
from .policy import (
    ConnectRules,
    TunnelPolicy,
    check_author_label,
    check_destination,
    check_pod_annotation,
    ip_literal,
    is_host_name,
    is_internal_host,
    is_loopback_host,
    is_service,
)

Protocol = Literal["TCP", "UDP"]
Side = Literal["listen", "connect"]
#: Taints of the control plane's nodes (``node-role.kubernetes.io/control-plane``, ``.../master``).
CONTROL_PLANE_TAINT_PREFIX = "node-role.kubernetes.io/"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The relay's global options for each ``spec.tracing`` value (socat's ``-v``
#: writes the data as text, ``-x`` as hex; "Might be combined with -v").
TRACING_FLAGS: Mapping[Tracing, tuple[str, ...]] = {
    "Disabled": (),
    "Text": ("-v",),
    "Hex": ("-x",),
    "TextAndHex": ("-v", "-x"),
}
#: The relay's options for each ``spec.sessionLogs`` value: with ``-d -d`` a fork listener
#: logs six or seven notices per connection (accepted, connected, each end...), which a
#: busy tunnel's log, and the container runtime and kubelet that carry it, pay for.
SESSION_LOG_FLAGS: Mapping[SessionLogs, tuple[str, ...]] = {
    "Notices": (),
    "Errors": ("--quiet-accepts", "--quiet-sessions"),
}

#: Listening keywords a tunnel may use, with the protocol its Service speaks.
LISTEN_KEYWORDS: Mapping[str, Protocol] = {
    "TCP-LISTEN": "TCP",
    "TCP4-LISTEN": "TCP",
    "TCP6-LISTEN": "TCP",
    "OPENSSL-LISTEN": "TCP",
    "UDP-LISTEN": "UDP",
    "UDP4-LISTEN": "UDP",
    "UDP6-LISTEN": "UDP",
}

#: Client keywords a tunnel may connect with. Files, pipes, UNIX sockets and
#: programs (EXEC, SYSTEM) are refused: a SocatTunnel forwards network
#: traffic, and must not become a way to run commands in relay pods for
#: someone allowed to create tunnels but not pods.
CONNECT_KEYWORDS = ("TCP", "TCP4", "TCP6", "UDP", "UDP4", "UDP6", "OPENSSL")

#: Address options that name files in the relay pod. The pod holds nothing
#: but the image and what the operator mounts, so these come from spec.tls.
FILE_OPTIONS = ("cert", "key", "cafile", "capath")

#: Where the TLS Secrets are mounted; one directory per role.
TLS_ROOT = "/etc/relay/tls"

#: Label and annotation keys the operator sets on relay pods; spec.pod may not.
RESERVED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
)
RESERVED_PREFIX = "relay.kubectl-relay.io/"

#: The TCP port on which every relay pod serves Prometheus metrics
#: (``relay --metrics``). Not a common service port, so that a tunnel rarely
#: wants it for itself; one that does is told to listen elsewhere.
METRICS_PORT = 9464
#: ``spec.closeTimeoutSeconds`` when not given: the relay's ``-t``, how long a connection one
#: side has ended (a client's half-close) waits for the other side's next byte. socat's 0.5 s
#: cut off a server that thought longer about a request it had read to the end.
DEFAULT_CLOSE_TIMEOUT = 30
MAX_CLOSE_TIMEOUT = 3600


# --- The resolved spec --------------------------------------------------------


@dataclass(frozen=True)
class Toleration:
    """One of ``spec.pod.tolerations``, as the Pod API has it."""

    key: str | None = None
    operator: TolerationOperator = "Equal"
    value: str | None = None
    effect: Effect | None = None
    seconds: int | None = None


@dataclass(frozen=True)
class PodSettings:
    """``spec.pod``: what the tunnel's author may set on the relay pods."""

    resources: Resources = field(default_factory=Resources)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSpec:
    """``spec.service``: the Service in front of the relay pods."""

    type: ServiceType
    port: int
    node_port: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretMount:
    """Some keys of one Secret, mounted read-only as files in the relay pod.

    ``files`` maps each Secret key to its file name in ``mount_path``. The
    file names are fixed (``tls.crt``, ``tls.key``, ``ca.crt``) whatever the
    keys are called, so the addresses never depend on a Secret's layout.
    """

    role: str  # "listen-certificate", "connect-ca"...: volume and directory name
    field: str  # the spec field naming the Secret, for messages
    secret_name: str
    files: tuple[tuple[str, str], ...]

    @property
    def mount_path(self) -> str:
        return f"{TLS_ROOT}/{self.role}"

    @property
    def volume_name(self) -> str:
        return f"tls-{self.role}"

    def path(self, file_name: str) -> str:
        return f"{self.mount_path}/{file_name}"


@dataclass(frozen=True)
class TunnelSpec:
    """Everything the builders need, checked, defaulted and resolved.

    ``listen`` and ``connect`` are the addresses the relay runs, in the
    engine's canonical spelling with the operator's options wired in; the
    status shows them as they are.
    """

    name: str
    namespace: str
    listen: str
    connect: str
    protocol: Protocol
    port: int
    tracing: Tracing = "Disabled"
    session_logs: SessionLogs = "Notices"
    close_timeout: int = DEFAULT_CLOSE_TIMEOUT
    replicas: int = 1
    service: ServiceSpec | None = None
    secret_mounts: tuple[SecretMount, ...] = ()
    allowed_sources: tuple[Network, ...] = ()
    ttl: timedelta | None = None
    pod: PodSettings = field(default_factory=PodSettings)
    #: What the relay checks after resolving the connect host (the destination policy).
    connect_rules: ConnectRules = field(default_factory=ConnectRules)
    #: Things that work but deserve a Warning event (turned-off verification...).
    warnings: tuple[str, ...] = ()


# --- Labels, annotations, expiry ------------------------------------------------


def _labels(
    raw: Mapping[str, str], path: str, *, author_keys: Sequence[str] | None = None
) -> dict[str, str]:
    """Check label keys and values; ``author_keys``: these are relay-pod labels (see ``policy``)."""
    for key, value in raw.items():
        item = f'{path}["{key}"]'
        check_qualified_name(key, item)
        check_label_value(value, item)
        if author_keys is None:
            continue
        if key in RESERVED_LABELS or key.startswith(RESERVED_PREFIX):
            raise SpecError(item, "this label is set by the operator", "choose another key")
        check_author_label(key, item, author_keys)
    return dict(raw)


def _annotations(raw: Mapping[str, str], path: str, *, pod: bool = False) -> dict[str, str]:
    for key in raw:
        item = f'{path}["{key}"]'
        check_qualified_name(key, item)
        if key.startswith(RESERVED_PREFIX):
            raise SpecError(item, "this annotation is set by the operator", "choose another key")
        if pod:
            check_pod_annotation(key, item)
    return dict(raw)


def expires_at(spec: TunnelSpec, created: datetime) -> datetime | None:
    """When a temporary tunnel expires: its creation time plus ``spec.ttl``."""
    return None if spec.ttl is None else created + spec.ttl


# --- Addresses ---------------------------------------------------------------


def _parse(text: str, path: str) -> Address:
    for position, character in enumerate(text):
        if ord(character) < 32 or ord(character) == 127:
            shown = "a NUL byte" if character == "\0" else f"the control character {character!r}"
            raise SpecError(
                path,
                f"{shown} at position {position}: no address, name or option holds one",
                "remove it",
            )
    try:
        parsed = parse_address(text)
    except RelayError as exc:
        raise AddressError(path, text, exc) from exc
    if isinstance(parsed, DualAddress):
        raise SpecError(
            path,
            "a dual address (A!!B) reads from one place and writes to another; "
            "a tunnel needs one address on each side",
        )
    return parsed


def _refuse_operator_options(address: Address, path: str, side: Side) -> None:
    for name in FILE_OPTIONS:
        if name in address.options:
            raise SpecError(
                path,
                f'option "{name}" names a file, but the relay pod holds only what the '
                "operator mounts",
                f"put the certificate in a Secret and name it in spec.tls.{side}",
            )
    if "range" in address.options:
        raise SpecError(
            path,
            'the "range" option is set by the operator',
            "list the networks in spec.allowedSources, which also creates a NetworkPolicy",
        )


def _bind_host(bind: str) -> str:
    """The host of a ``bind=`` value (``host``, ``host:port``, ``[ip6]:port``)."""
    if bind.startswith("["):
        return bind[1:].partition("]")[0]
    if bind.count(":") == 1:
        return bind.partition(":")[0]
    return bind


def _check_bind(address: Address, path: str, side: Side) -> None:
    """A loopback ``bind=`` can never work in a pod: refuse it on either side."""
    bind = address.options.get("bind")
    if not isinstance(bind, str) or not is_loopback_host(_bind_host(bind)):
        return
    if side == "listen":
        problem = f'"bind={bind}" listens on the loopback interface, out of reach of other pods'
    else:
        problem = f'"bind={bind}" connects from the loopback interface, which reaches no other host'
    raise SpecError(path, problem, "remove the bind option")


def _check_listen(address: Address, text: str) -> tuple[Protocol, int]:
    path = "spec.listen"
    protocol = LISTEN_KEYWORDS.get(address.keyword)
    if protocol is None:
        raise SpecError(
            path,
            f"{address.keyword} does not accept connections from other pods",
            "a tunnel listens with TCP-LISTEN, UDP-LISTEN or OPENSSL-LISTEN "
            "(or their 4 and 6 variants)",
        )
    port_text = address.params[0] if address.params else ""
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise SpecError(
            path,
            f'the port must be a number from 1 to 65535, got "{port_text}"',
            "the Service, the probe and the NetworkPolicy need to know it",
        )
    if protocol == "TCP" and int(port_text) == METRICS_PORT:
        raise SpecError(
            path,
            f"port {METRICS_PORT} is the relay pod's metrics port",
            "listen on another port; spec.service.port can still expose the tunnel "
            f"as {METRICS_PORT}",
        )
    if not address.options.get("fork"):
        raise SpecError(
            path,
            'a shared tunnel serves many clients, so the listen address needs the "fork" '
            "option (without it the relay ends after the first client)",
            f'write "{text},fork"',
        )
    _check_bind(address, path, "listen")
    _refuse_operator_options(address, path, "listen")
    return protocol, int(port_text)


def _check_connect(
    address: Address, namespace: str, policy: TunnelPolicy
) -> ConnectRules:
    """Check the connect address; what the relay must check when it connects."""
    path = "spec.connect"
    if address.keyword not in CONNECT_KEYWORDS:
        raise SpecError(
            path,
            f"{address.keyword} addresses are not allowed in a SocatTunnel",
            f"connect with one of {', '.join(CONNECT_KEYWORDS)}",
        )
    if len(address.params) != 2:  # the engine's parser has said so already
        raise SpecError(path, f"{address.keyword} needs a host and a port")
    host, port = address.params
    if ip_literal(host) is None and not is_host_name(host):
        raise SpecError(
            path,
            f'"{host}" is neither an IP address nor a host name',
            "a host name has dot-separated labels of letters, digits, '-' and '_'",
        )
    if not is_service(port):
        raise SpecError(
            path,
            f'"{port}" is neither a port number from 1 to 65535 nor a service name',
            'write the port as a number, such as "443"',
        )
    _check_bind(address, path, "connect")
    _refuse_operator_options(address, path, "connect")
    return check_destination(host, policy.destinations, namespace, path)


def range_option(network: Network) -> str:
    """socat's spelling of one network for ``range=``: ``10.0.0.0/8``, ``[fd00::]/8``."""
    if isinstance(network, ipaddress.IPv6Network):
        return f"range=[{network.network_address}]/{network.prefixlen}"
    return f"range={network.with_prefixlen}"


def _wire(address: Address, extra: Sequence[str], path: str) -> str:
    """The canonical text of ``address`` with the operator's options appended."""
    text = ",".join([str(address), *extra])
    return str(_parse(text, path))


# --- The spec's parts -----------------------------------------------------------


def _allowed_sources(spec: Mapping[str, object]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for index, item in enumerate(as_list(spec, "allowedSources", "spec")):
        path = f"spec.allowedSources[{index}]"
        if not isinstance(item, str):
            raise SpecError(path, f"expected a CIDR string, got {describe(item)}")
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise SpecError(
                    path, f'"{item}" is not a CIDR', 'write it like "10.0.0.0/8" or "fd00::/8"'
                ) from None
            raise SpecError(
                path, f'"{item}" has host bits set', f'did you mean "{loose.with_prefixlen}"?'
            ) from None
        if "/" not in item:
            raise SpecError(
                path, f'"{item}" has no prefix length', f'write "{network.with_prefixlen}"'
            )
        networks.append(network)
    return tuple(networks)


def _secret_ref(value: object, path: str, default_key: str | None) -> tuple[str, str | None]:
    obj = as_object(value, path)
    known_fields(obj, path, ("secretName", "key") if default_key else ("secretName",))
    name = required_string(obj, "secretName", path)
    if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        raise SpecError(
            f"{path}.secretName",
            f'"{name}" is not a valid Secret name',
            "use lower-case letters, digits, '-' and '.'",
        )
    key = string(obj, "key", path) or default_key
    if key is not None and (len(key) > 253 or not SECRET_KEY.match(key)):
        raise SpecError(
            f"{path}.key",
            f'"{key}" is not a valid Secret key',
            "use letters, digits, '-', '_' and '.'",
        )
    return name, key


#: The address keyword each side's TLS material is for.
TLS_KEYWORDS: Mapping[Side, str] = {"listen": "OPENSSL-LISTEN", "connect": "OPENSSL"}


def _tls_side(
    tls: Mapping[str, object], side: Side, keyword: str
) -> tuple[list[SecretMount], list[str]]:
    """The Secret mounts of one side and the address options that point at them."""
    path = f"spec.tls.{side}"
    tls_keyword = TLS_KEYWORDS[side]
    raw = tls.get(side)
    if raw is not None and keyword != tls_keyword:
        raise SpecError(
            path,
            f"TLS material is used only with an {tls_keyword} {side} address, and "
            f"spec.{side} is {keyword}",
            f"remove {path} or make spec.{side} an {tls_keyword} address",
        )
    obj = as_object(raw or {}, path)
    known_fields(obj, path, ("certificate", "ca"))
    mounts: list[SecretMount] = []
    options: list[str] = []
    if obj.get("certificate") is not None:
        name, _ = _secret_ref(obj["certificate"], f"{path}.certificate", None)
        mount = SecretMount(
            role=f"{side}-certificate",
            field=f"{path}.certificate",
            secret_name=name,
            files=(("tls.crt", "tls.crt"), ("tls.key", "tls.key")),
        )
        mounts.append(mount)
        options += [f"cert={mount.path('tls.crt')}", f"key={mount.path('tls.key')}"]
    elif keyword == "OPENSSL-LISTEN":
        raise SpecError(
            f"{path}.certificate",
            "OPENSSL-LISTEN needs a server certificate",
            f"set {path}.certificate.secretName to a kubernetes.io/tls Secret",
        )
    if obj.get("ca") is not None:
        name, key = _secret_ref(obj["ca"], f"{path}.ca", "ca.crt")
        assert key is not None  # a default was given
        mount = SecretMount(
            role=f"{side}-ca", field=f"{path}.ca", secret_name=name, files=((key, "ca.crt"),)
        )
        mounts.append(mount)
        options.append(f"cafile={mount.path('ca.crt')}")
    return mounts, options


def _service(spec: Mapping[str, object], listen_port: int) -> ServiceSpec | None:
    raw = spec.get("service")
    if raw is None:
        return None
    path = "spec.service"
    obj = as_object(raw, path)
    known_fields(obj, path, ("type", "port", "nodePort", "annotations"))
    kind = choice(obj, "type", path, get_args(ServiceType), "ClusterIP")
    port = integer(obj, "port", path, 1, 65535) or listen_port
    node_port = integer(obj, "nodePort", path, 30000, 32767)
    if node_port is not None and kind == "ClusterIP":
        raise SpecError(
            f"{path}.nodePort",
            "a ClusterIP Service has no node port",
            "set spec.service.type to NodePort or LoadBalancer, or remove nodePort",
        )
    annotations = _annotations(string_map(obj, "annotations", path), f"{path}.annotations")
    return ServiceSpec(type=kind, port=port, node_port=node_port, annotations=annotations)


def _tolerations(pod: Mapping[str, object]) -> tuple[Toleration, ...]:
    result: list[Toleration] = []
    for index, item in enumerate(as_list(pod, "tolerations", "spec.pod")):
        path = f"spec.pod.tolerations[{index}]"
        obj = as_object(item, path)
        known_fields(obj, path, ("key", "operator", "value", "effect", "tolerationSeconds"))
        operator = choice(obj, "operator", path, get_args(TolerationOperator), "Equal")
        effect: Effect | None = None
        if obj.get("effect"):  # "" means every effect, as in the Pod API
            effect = choice(obj, "effect", path, get_args(Effect), "NoSchedule")
        key = string(obj, "key", path) or None
        value = string(obj, "value", path) or None
        seconds = integer(obj, "tolerationSeconds", path, -(2**63))
        if key is not None:
            check_qualified_name(key, f"{path}.key")
        if operator == "Exists" and value is not None:
            raise SpecError(f"{path}.value", 'must be empty when operator is "Exists"')
        if key is None and operator != "Exists":
            raise SpecError(f"{path}.operator", 'must be "Exists" when key is empty')
        if seconds is not None and effect != "NoExecute":
            raise SpecError(f"{path}.tolerationSeconds", 'needs effect "NoExecute"')
        _check_placement(key, effect, seconds, path)
        result.append(
            Toleration(key=key, operator=operator, value=value, effect=effect, seconds=seconds)
        )
    return tuple(result)


def _check_placement(key: str | None, effect: Effect | None, seconds: int | None,
                     path: str) -> None:
    """A tunnel's author may not place relay pods where the cluster admin keeps pods out.

    Taints are how an admin sets nodes apart (the control plane, GPU or
    system pools): a key-less toleration would pass every one of them, and
    the control plane's own would put relays beside the API server. A
    key-less toleration stays fine for NoExecute with a bound, the usual
    "stay a while on a failing node".
    """
    if key is None and not (effect == "NoExecute" and seconds is not None):
        raise SpecError(
            path,
            "a toleration without key tolerates every taint, which would place relay pods "
            "on nodes the cluster admin set apart; name the taint's key (a key-less "
            'toleration is accepted only for effect "NoExecute" with tolerationSeconds)',
        )
    if key is not None and key.startswith(CONTROL_PLANE_TAINT_PREFIX):
        raise SpecError(
            f"{path}.key",
            f'"{key}" is a control-plane taint and relay pods do not run on the control '
            "plane; tolerate the taint of the nodes set apart for relays instead",
        )


def _pod(spec: Mapping[str, object], policy: TunnelPolicy) -> PodSettings:
    raw = spec.get("pod")
    if raw is None:
        return PodSettings()
    path = "spec.pod"
    obj = as_object(raw, path)
    known_fields(obj, path, ("resources", "nodeSelector", "tolerations", "labels", "annotations"))
    resources = Resources()
    if obj.get("resources") is not None:
        resources = parse_resources(obj["resources"], f"{path}.resources")
    node_selector = string_map(obj, "nodeSelector", path)
    _labels(node_selector, f"{path}.nodeSelector")
    return PodSettings(
        resources=resources,
        node_selector=node_selector,
        tolerations=_tolerations(obj),
        labels=_labels(
            string_map(obj, "labels", path), f"{path}.labels", author_keys=policy.pod_label_keys
        ),
        annotations=_annotations(
            string_map(obj, "annotations", path), f"{path}.annotations", pod=True
        ),
    )


def _metadata(body: Mapping[str, object]) -> tuple[str, str]:
    meta = as_object(body.get("metadata"), "metadata")
    name = required_string(meta, "name", "metadata")
    namespace = required_string(meta, "namespace", "metadata")
    # The name becomes the Service's name (an RFC 1035 label) and a label value.
    if len(name) > 63 or not DNS_LABEL.match(name):
        raise SpecError(
            "metadata.name",
            f'"{name}" cannot name the relay\'s Service',
            "use at most 63 lower-case letters, digits and '-', starting with a letter",
        )
    return name, namespace


def _warnings(
    listen: Address,
    connect: Address,
    tracing: Tracing,
    listen_mounts: Sequence[SecretMount],
    service: ServiceSpec | None = None,
    allowed_sources: Sequence[Network] = (),
) -> tuple[str, ...]:
    """What works but weakens the tunnel's security: each becomes a Warning event."""
    warnings: list[str] = []
    host = connect.params[0] if connect.params else ""
    if (
        service is not None
        and service.type in ("LoadBalancer", "NodePort")
        and not allowed_sources
        and is_internal_host(host)
    ):
        warnings.append(
            f"spec.service: a {service.type} Service makes {host}, which is inside the "
            "cluster, reachable from outside it by anyone who reaches the nodes or the "
            "load balancer; list the clients' networks in spec.allowedSources, or use "
            "a ClusterIP Service"
        )
    tls_involved = listen.keyword == "OPENSSL-LISTEN" or connect.keyword == "OPENSSL"
    if connect.keyword == "OPENSSL" and connect.options.get("verify") is False:
        warnings.append(
            "spec.connect: verify=0 turns off the check of the server's certificate, so "
            "anyone on the path can read and change the traffic; give the server's CA in "
            "spec.tls.connect.ca, or remove verify=0 for a server with a public certificate"
        )
    if (
        listen.keyword == "OPENSSL-LISTEN"
        and listen.options.get("verify") is not False
        and not any(m.role == "listen-ca" for m in listen_mounts)
    ):
        # socat's OPENSSL-LISTEN requires a client certificate by default
        # (verify=1); without a CA only certificates from public CAs pass.
        warnings.append(
            "spec.listen: OPENSSL-LISTEN asks every client for a certificate (verify=1 is "
            "the default) but spec.tls.listen.ca is not set, so only certificates from "
            "public CAs pass; add verify=0 if clients have no certificates, or set "
            "spec.tls.listen.ca"
        )
    if tracing != "Disabled" and tls_involved:
        warnings.append(
            f"spec.tracing: {tracing} writes the relayed bytes, decrypted, to the pod's log; "
            "anyone who can read the logs sees them"
        )

    return tuple(warnings)


SPEC_FIELDS = (
    "listen",
    "connect",
    "tracing",
    "sessionLogs",
    "closeTimeoutSeconds",
    "replicas",
    "service",
    "tls",
    "allowedSources",
    "ttl",
    "pod",
)


def parse_spec(body: TunnelBody, policy: TunnelPolicy | None = None) -> TunnelSpec:
    """Check a SocatTunnel and resolve it; raise ``SpecError`` on the first problem.

    ``policy`` is the cluster admin's (``Settings.tunnel_policy``); by default
    the built-in one: no pod labels but under ``tunnel.kubectl-relay.io/``,
    the metadata, link-local and loopback ranges and the API server denied.

    Checks run in the order of the spec's fields, so that a tunnel with
    several problems reports the first one a reader meets.
    """
    raw: Mapping[str, object] = body
    name, namespace = _metadata(raw)
    spec = as_object(raw.get("spec"), "spec")
    known_fields(spec, "spec", SPEC_FIELDS)

    listen_text = required_string(spec, "listen", "spec")
    listen = _parse(listen_text, "spec.listen")
    protocol, port = _check_listen(listen, listen_text)
    connect_text = required_string(spec, "connect", "spec")
    connect = _parse(connect_text, "spec.connect")
    policy = policy or TunnelPolicy()
    connect_rules = _check_connect(connect, namespace, policy)

    tracing = choice(spec, "tracing", "spec", get_args(Tracing), "Disabled")
    session_logs = choice(spec, "sessionLogs", "spec", get_args(SessionLogs), "Notices")
    close_timeout = integer(spec, "closeTimeoutSeconds", "spec", 0, MAX_CLOSE_TIMEOUT)
    replicas = integer(spec, "replicas", "spec", 0, 2**31 - 1)
    service = _service(spec, port)

    tls = as_object(spec.get("tls") or {}, "spec.tls")
    known_fields(tls, "spec.tls", ("listen", "connect"))
    listen_mounts, listen_options = _tls_side(tls, "listen", listen.keyword)
    connect_mounts, connect_options = _tls_side(tls, "connect", connect.keyword)
    allowed = _allowed_sources(spec)
    ttl_text = string(spec, "ttl", "spec")
    ttl = None if ttl_text is None else parse_ttl(ttl_text, "spec.ttl")
    pod = _pod(spec, policy)

    return TunnelSpec(
        name=name,
        namespace=namespace,
        listen=_wire(
            listen, [*(range_option(n) for n in allowed), *listen_options], "spec.listen"
        ),
        connect=_wire(connect, connect_options, "spec.connect"),
        protocol=protocol,
        port=port,
        tracing=tracing,
        session_logs=session_logs,
        close_timeout=DEFAULT_CLOSE_TIMEOUT if close_timeout is None else close_timeout,
        replicas=1 if replicas is None else replicas,
        service=service,
        secret_mounts=(*listen_mounts, *connect_mounts),
        allowed_sources=allowed,
        ttl=ttl,
        pod=pod,
        connect_rules=connect_rules,
        warnings=_warnings(listen, connect, tracing, listen_mounts, service, allowed),
    )


def check_secret(mount: SecretMount, namespace: str, secret: Mapping[str, object] | None) -> None:
    """Raise ``SecretError`` unless ``secret`` (a Secret body, or None) has every key needed.

    Pure, so that the handlers can check every Secret before creating
    anything: a tunnel whose Secret is missing gets a clear condition
    instead of a Deployment whose pods hang in ContainerCreating.
    """
    keys = tuple(key for key, _ in mount.files)
    if secret is None:
        raise SecretError(mount.field, namespace, mount.secret_name, keys)
    data = secret.get("data")
    present = data if isinstance(data, Mapping) else {}
    for key in keys:
        if key not in present:
            raise SecretError(mount.field, namespace, mount.secret_name, keys, key)
