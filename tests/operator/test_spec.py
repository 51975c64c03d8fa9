"""``parse_spec``: valid tunnels -> ``TunnelSpec``, invalid ones -> the exact message.

Tables in the style of a parser's tests. Addresses in the expectations are
the engine's canonical spelling, which is what the status shows.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubectl_relay.engine.addresses import parse_address
from kubectl_relay.engine.errors import RelayError
from relay_operator.errors import AddressError, SecretError, SpecError
from relay_operator.fields import Resources, parse_quantity
from relay_operator.spec import (
    PodSettings,
    SecretMount,
    ServiceSpec,
    Toleration,
    TunnelSpec,
    check_secret,
    expires_at,
    parse_spec,
)
from tests.conftest import RELAY, scaled

BASE = {"listen": "TCP-LISTEN:1433,fork,reuseaddr", "connect": "TCP:db:1433"}
CERT = "/etc/relay/tls/listen-certificate"


def body(spec: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A SocatTunnel body: BASE, updated with ``spec`` and keyword fields."""
    return {
        "apiVersion": "relay.kubectl-relay.io/v1alpha1",
        "kind": "SocatTunnel",
        "metadata": {"name": "tunnel", "namespace": "team", "uid": "u-1"},
        "spec": {**BASE, **(spec or {}), **fields},
    }


def error(spec: Mapping[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(body(spec))
    return caught.value


# --- Valid tunnels -----------------------------------------------------------

VALID = [
    pytest.param(
        {
            "listen": "TCP-LISTEN:1433,fork,reuseaddr",
            "connect": "OPENSSL:myserver.database.windows.net:1433",
        },
        {
            "listen": "TCP-LISTEN:1433,fork,reuseaddr",
            "connect": "OPENSSL:myserver.database.windows.net:1433",
            "protocol": "TCP",
            "port": 1433,
        },
        id="azure-sql",
    ),
    pytest.param(
        {"listen": "tcp-l:8080,fork", "connect": "tcp-connect:svc:80"},
        {"listen": "TCP-LISTEN:8080,fork", "connect": "TCP:svc:80"},
        id="aliases-and-case-become-canonical",
    ),
    pytest.param(
        {"listen": "UDP-LISTEN:514,fork", "connect": "TCP:logserver:514"},
        {"listen": "UDP-LISTEN:514,fork", "protocol": "UDP", "port": 514},
        id="udp-to-tcp",
    ),
    pytest.param(
        {"listen": "TCP6-LISTEN:8080,fork", "connect": "TCP6:[fd00::1]:80"},
        {"listen": "TCP6-LISTEN:8080,fork", "connect": "TCP6:[fd00::1]:80"},
        id="ipv6",
    ),
    pytest.param(
        {"allowedSources": ["10.20.0.0/16", "192.168.10.0/24", "fd00::/8"]},
        {
            "listen": "TCP-LISTEN:1433,fork,reuseaddr,range=10.20.0.0/16,"
            "range=192.168.10.0/24,range=[fd00::]/8",
            "allowed_sources": (
                ipaddress.ip_network("10.20.0.0/16"),
                ipaddress.ip_network("192.168.10.0/24"),
                ipaddress.ip_network("fd00::/8"),
            ),
        },
        id="allowed-sources-become-range-options",
    ),
    pytest.param(
        {
            "listen": "OPENSSL-LISTEN:8443,fork",
            "tls": {
                "listen": {
                    "certificate": {"secretName": "server-tls"},
                    "ca": {"secretName": "clients-ca"},
                }
            },
        },
        {
            "listen": f"OPENSSL-LISTEN:8443,fork,cert={CERT}/tls.crt,key={CERT}/tls.key,"
            "cafile=/etc/relay/tls/listen-ca/ca.crt",
            "secret_mounts": (
                SecretMount(
                    "listen-certificate",
                    "spec.tls.listen.certificate",
                    "server-tls",
                    (("tls.crt", "tls.crt"), ("tls.key", "tls.key")),
                ),
                SecretMount(
                    "listen-ca", "spec.tls.listen.ca", "clients-ca", (("ca.crt", "ca.crt"),)
                ),
            ),
        },
        id="tls-termination-with-client-ca",
    ),
    pytest.param(
        {
            "connect": "OPENSSL:api.partner.example:443",
            "tls": {
                "connect": {
                    "certificate": {"secretName": "client-tls"},
                    "ca": {"secretName": "partner-ca", "key": "root.pem"},
                }
            },
        },
        {
            "connect": "OPENSSL:api.partner.example:443,"
            "cert=/etc/relay/tls/connect-certificate/tls.crt,"
            "key=/etc/relay/tls/connect-certificate/tls.key,"
            "cafile=/etc/relay/tls/connect-ca/ca.crt",
            "secret_mounts": (
                SecretMount(
                    "connect-certificate",
                    "spec.tls.connect.certificate",
                    "client-tls",
                    (("tls.crt", "tls.crt"), ("tls.key", "tls.key")),
                ),
                SecretMount(
                    "connect-ca", "spec.tls.connect.ca", "partner-ca", (("root.pem", "ca.crt"),)
                ),
            ),
        },
        id="mutual-tls-origination-any-ca-key",
    ),
    pytest.param(
        {},
        {
            "tracing": "Disabled",
            "session_logs": "Notices",
            "close_timeout": 30,
            "replicas": 1,
            "service": None,
            "ttl": None,
            "pod": PodSettings(),
            "warnings": (),
        },
        id="defaults",
    ),
    pytest.param(
        {"closeTimeoutSeconds": 0}, {"close_timeout": 0}, id="close-timeout-zero-as-socat-t-0"
    ),
    pytest.param(
        {"service": {}, "replicas": 0, "tracing": "TextAndHex"},
        {"service": ServiceSpec(type="ClusterIP", port=1433), "replicas": 0},
        id="service-defaults-to-the-listen-port",
    ),
    pytest.param(
        {
            "service": {
                "type": "LoadBalancer",
                "port": 1533,
                "nodePort": 31433,
                "annotations": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"},
            }
        },
        {
            "service": ServiceSpec(
                "LoadBalancer",
                1533,
                31433,
                {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"},
            )
        },
        id="service-in-full",
    ),
    pytest.param({"ttl": "1h30m"}, {"ttl": timedelta(hours=1, minutes=30)}, id="ttl"),
    pytest.param({"ttl": "7d"}, {"ttl": timedelta(days=7)}, id="ttl-days"),
    pytest.param(
        {
            "pod": {
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": 1, "memory": "1Gi"}},
                "nodeSelector": {"agentpool": "relay"},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "relay"},
                    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
                ],
                "labels": {"tunnel.kubectl-relay.io/team": "data"},
                "annotations": {"example.com/owner": "data-platform"},
            }
        },
        {
            "pod": PodSettings(
                resources=Resources({"cpu": "100m"}, {"cpu": "1", "memory": "1Gi"}),
                node_selector={"agentpool": "relay"},
                tolerations=(
                    Toleration("dedicated", "Equal", "relay"),
                    Toleration(None, "Exists", None, "NoExecute", 30),
                ),
                labels={"tunnel.kubectl-relay.io/team": "data"},
                annotations={"example.com/owner": "data-platform"},
            )
        },
        id="pod-settings",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), VALID)
def test_valid(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    tunnel = parse_spec(body(spec))
    assert (tunnel.name, tunnel.namespace) == ("tunnel", "team")
    for name, value in expected.items():
        assert getattr(tunnel, name) == value, name


@pytest.mark.parametrize(("spec", "expected"), VALID)
def test_wired_addresses_are_canonical(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    """What the pods run reads back to itself: the engine's one spelling."""
    tunnel = parse_spec(body(spec))
    for text in (tunnel.listen, tunnel.connect):
        assert str(parse_address(text)) == text


# --- Invalid tunnels ---------------------------------------------------------

INVALID = [
    pytest.param(
        {"listen": "TCP-LISTEN:1433"},
        'spec.listen: a shared tunnel serves many clients, so the listen address needs the '
        '"fork" option (without it the relay ends after the first client); '
        'write "TCP-LISTEN:1433,fork"',
        id="no-fork",
    ),
    pytest.param(
        {"listen": "TCP:db:1433,fork"},
        "spec.listen: TCP does not accept connections from other pods; a tunnel listens with "
        "TCP-LISTEN, UDP-LISTEN or OPENSSL-LISTEN (or their 4 and 6 variants)",
        id="listen-is-not-listening",
    ),
    pytest.param(
        {"listen": "UNIX-LISTEN:/tmp/s,fork"},
        "spec.listen: UNIX-LISTEN does not accept connections from other pods; a tunnel "
        "listens with TCP-LISTEN, UDP-LISTEN or OPENSSL-LISTEN (or their 4 and 6 variants)",
        id="listen-on-a-unix-socket",
    ),
    pytest.param(
        {"listen": "TCP-LISTEN:https,fork"},
        'spec.listen: the port must be a number from 1 to 65535, got "https"; '
        "the Service, the probe and the NetworkPolicy need to know it",
        id="service-name-port",
    ),
    pytest.param(
        {"listen": "TCP-LISTEN:0,fork"},
        'spec.listen: the port must be a number from 1 to 65535, got "0"; '
        "the Service, the probe and the NetworkPolicy need to know it",
        id="port-zero",
    ),
    pytest.param(
        {"listen": "TCP-LISTEN:80,fork,bind=127.0.0.1"},
        'spec.listen: "bind=127.0.0.1" listens on the loopback interface, out of reach of '
        "other pods; remove the bind option",
        id="loopback-bind",
    ),
    pytest.param(
        {"listen": "TCP-LISTEN:80,fork,range=10.0.0.0/8"},
        'spec.listen: the "range" option is set by the operator; list the networks in '
        "spec.allowedSources, which also creates a NetworkPolicy",
        id="range-in-the-address",
    ),
    pytest.param(
        {"listen": "OPENSSL-LISTEN:443,fork,cert=/certs/server.pem"},
        'spec.listen: option "cert" names a file, but the relay pod holds only what the '
        "operator mounts; put the certificate in a Secret and name it in spec.tls.listen",
        id="cert-file-in-the-address",
    ),
    pytest.param(
        {"connect": "OPENSSL:db:1433,cafile=/etc/ssl/ca.pem"},
        'spec.connect: option "cafile" names a file, but the relay pod holds only what the '
        "operator mounts; put the certificate in a Secret and name it in spec.tls.connect",
        id="cafile-in-the-address",
    ),
    pytest.param(
        {"listen": "TCP-LISTEN:80,fork!!STDOUT"},
        "spec.listen: a dual address (A!!B) reads from one place and writes to another; "
        "a tunnel needs one address on each side",
        id="dual-address",
    ),
    pytest.param(
        {"connect": "EXEC:/bin/sh"},
        "spec.connect: EXEC addresses are not allowed in a SocatTunnel; connect with one of "
        "TCP, TCP4, TCP6, UDP, UDP4, UDP6, OPENSSL",
        id="exec",
    ),
    pytest.param(
        {"listen": "OPENSSL-LISTEN:8443,fork"},
        "spec.tls.listen.certificate: OPENSSL-LISTEN needs a server certificate; "
        "set spec.tls.listen.certificate.secretName to a kubernetes.io/tls Secret",
        id="tls-listen-without-certificate",
    ),
    pytest.param(
        {"tls": {"connect": {"ca": {"secretName": "ca"}}}},
        "spec.tls.connect: TLS material is used only with an OPENSSL connect address, and "
        "spec.connect is TCP; remove spec.tls.connect or make spec.connect an OPENSSL address",
        id="tls-for-a-plain-connect",
    ),
    pytest.param(
        {"tls": {"listen": {"certificate": {"secretName": "s"}}}},
        "spec.tls.listen: TLS material is used only with an OPENSSL-LISTEN listen address, "
        "and spec.listen is TCP-LISTEN; remove spec.tls.listen or make spec.listen an "
        "OPENSSL-LISTEN address",
        id="tls-for-a-plain-listen",
    ),
    pytest.param(
        {
            "connect": "OPENSSL:db:1433",
            "tls": {"connect": {"ca": {"secretName": "c", "key": "a b"}}},
        },
        "spec.tls.connect.ca.key: \"a b\" is not a valid Secret key; "
        "use letters, digits, '-', '_' and '.'",
        id="bad-secret-key",
    ),
    pytest.param(
        {"listen": "TCP-LISTEN:80,fork,bind=[::1]:80"},
        'spec.listen: "bind=[::1]:80" listens on the loopback interface, out of reach of '
        "other pods; remove the bind option",
        id="loopback-bind-ipv6",
    ),
    pytest.param(
        {
            "listen": "OPENSSL-LISTEN:8443,fork",
            "tls": {"listen": {"certificate": {"secretName": "Server_TLS"}}},
        },
        'spec.tls.listen.certificate.secretName: "Server_TLS" is not a valid Secret name; '
        "use lower-case letters, digits, '-' and '.'",
        id="bad-secret-name",
    ),
    pytest.param(
        {
            "listen": "OPENSSL-LISTEN:8443,fork",
            "tls": {"listen": {"certificate": {"secretName": "s", "key": "tls.crt"}}},
        },
        "spec.tls.listen.certificate.key: unknown field; "
        "spec.tls.listen.certificate accepts secretName",
        id="certificate-keys-are-fixed",
    ),
    pytest.param(
        {"allowedSources": ["10.0.0.1/8"]},
        'spec.allowedSources[0]: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?',
        id="cidr-with-host-bits",
    ),
    pytest.param(
        {"allowedSources": ["10.0.0.0/8", "10.1.2.3"]},
        'spec.allowedSources[1]: "10.1.2.3" has no prefix length; write "10.1.2.3/32"',
        id="address-without-prefix",
    ),
    pytest.param(
        {"allowedSources": ["office"]},
        'spec.allowedSources[0]: "office" is not a CIDR; write it like "10.0.0.0/8" or '
        '"fd00::/8"',
        id="not-a-cidr",
    ),
    pytest.param(
        {"service": {"nodePort": 30080}},
        "spec.service.nodePort: a ClusterIP Service has no node port; set spec.service.type "
        "to NodePort or LoadBalancer, or remove nodePort",
        id="node-port-clashes-with-cluster-ip",
    ),
    pytest.param(
        {"service": {"port": 70000}},
        "spec.service.port: 70000 is out of range (from 1 to 65535)",
        id="service-port-out-of-range",
    ),
    pytest.param(
        {"service": {"type": "ExternalName"}},
        'spec.service.type: "ExternalName" is not one of ClusterIP, NodePort, LoadBalancer',
        id="service-type",
    ),
    pytest.param(
        {"servce": {}},
        "spec.servce: unknown field; spec accepts allowedSources, closeTimeoutSeconds, connect, "
        "listen, pod, replicas, service, sessionLogs, tls, tracing, ttl",
        id="unknown-field",
    ),
    pytest.param(
        {"tracing": "Off"},
        'spec.tracing: "Off" is not one of Disabled, Text, Hex, TextAndHex',
        id="tracing-value",
    ),
    pytest.param(
        {"tracing": False},
        "spec.tracing: expected a string, got a boolean",
        id="yaml-read-off-as-false",
    ),
    pytest.param(
        {"sessionLogs": "Quiet"},
        'spec.sessionLogs: "Quiet" is not one of Notices, Errors',
        id="session-logs-value",
    ),
    pytest.param(
        {"closeTimeoutSeconds": 7200},
        "spec.closeTimeoutSeconds: 7200 is out of range (from 0 to 3600)",
        id="close-timeout-range",
    ),
    pytest.param(
        {"closeTimeoutSeconds": 0.5},
        "spec.closeTimeoutSeconds: expected an integer, got the number 0.5",
        id="close-timeout-fraction",
    ),
    pytest.param(
        {"replicas": -1}, "spec.replicas: -1 is out of range (from 0 to 2147483647)", id="replicas"
    ),
    pytest.param(
        {"replicas": "2"},
        'spec.replicas: expected an integer, got the string "2"',
        id="replicas-type",
    ),
    pytest.param(
        {"ttl": "2 hours"},
        'spec.ttl: "2 hours" is not a duration; write it like "90s", "30m" or "2h"',
        id="ttl-format",
    ),
    pytest.param(
        {"ttl": "0m"},
        "spec.ttl: must be longer than zero; remove ttl to keep the tunnel",
        id="ttl-0",
    ),
    pytest.param(
        {"pod": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}},
        "spec.pod.resources.requests.cpu: the request (2) is above the limit (1); "
        "a request must not exceed its limit",
        id="request-above-limit",
    ),
    pytest.param(
        {"pod": {"resources": {"limits": {"memory": "lots"}}}},
        'spec.pod.resources.limits.memory: "lots" is not a quantity; '
        'write it like "100m", "0.5" or "64Mi"',
        id="bad-quantity",
    ),
    pytest.param(
        {"pod": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
        "spec.pod.resources.limits.nvidia.com/gpu: unknown resource; "
        "use cpu, memory, ephemeral-storage",
        id="unknown-resource",
    ),
    pytest.param(
        {"pod": {"labels": {"relay.kubectl-relay.io/tunnel": "other"}}},
        'spec.pod.labels["relay.kubectl-relay.io/tunnel"]: this label is set by the operator; '
        "choose another key",
        id="reserved-label",
    ),
    pytest.param(
        {"pod": {"labels": {"team": "data platform"}}},
        'spec.pod.labels["team"]: "data platform" is not a valid label value; use at most 63 '
        "letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        id="label-value",
    ),
    pytest.param(
        {"pod": {"annotations": {"Bad_Prefix/x": "y"}}},
        'spec.pod.annotations["Bad_Prefix/x"]: "Bad_Prefix/x" is not a valid key: the prefix '
        "must be a DNS subdomain; use lower-case letters, digits, '-' and '.', such as "
        "example.com/name",
        id="annotation-key",
    ),
    pytest.param(
        {"pod": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
        'spec.pod.tolerations[0].value: must be empty when operator is "Exists"',
        id="toleration-exists-with-value",
    ),
    pytest.param(
        {"pod": {"tolerations": [{"key": "k", "tolerationSeconds": 5}]}},
        'spec.pod.tolerations[0].tolerationSeconds: needs effect "NoExecute"',
        id="toleration-seconds",
    ),
    pytest.param(
        {"pod": {"tolerations": [{"operator": "Exists"}]}},
        "spec.pod.tolerations[0]: a toleration without key tolerates every taint, which would "
        "place relay pods on nodes the cluster admin set apart; name the taint's key (a "
        'key-less toleration is accepted only for effect "NoExecute" with tolerationSeconds)',
        id="toleration-of-every-taint",
    ),
    pytest.param(
        {"pod": {"tolerations": [{"operator": "Exists", "effect": "NoSchedule"}]}},
        "spec.pod.tolerations[0]: a toleration without key tolerates every taint, which would "
        "place relay pods on nodes the cluster admin set apart; name the taint's key (a "
        'key-less toleration is accepted only for effect "NoExecute" with tolerationSeconds)',
        id="toleration-of-every-noschedule-taint",
    ),
    pytest.param(
        {"pod": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                                  "operator": "Exists", "effect": "NoSchedule"}]}},
        'spec.pod.tolerations[0].key: "node-role.kubernetes.io/control-plane" is a '
        "control-plane taint and relay pods do not run on the control plane; tolerate the "
        "taint of the nodes set apart for relays instead",
        id="toleration-of-the-control-plane",
    ),
    pytest.param(
        {"pod": {"nodeSelector": {"agentpool": 3}}},
        'spec.pod.nodeSelector["agentpool"]: expected a string, got the number 3',
        id="node-selector-type",
    ),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid(spec: dict[str, Any], message: str) -> None:
    problem = error(spec)
    assert str(problem) == message
    assert problem.condition_reason == "InvalidSpec"


def test_listen_port_must_not_be_the_metrics_port() -> None:
    assert str(error({"listen": "TCP-LISTEN:9464,fork"})) == (
        "spec.listen: port 9464 is the relay pod's metrics port; listen on another port; "
        "spec.service.port can still expose the tunnel as 9464"
    )
    # UDP 9464 is another port than the metrics endpoint's TCP 9464.
    assert parse_spec(body({"listen": "UDP-LISTEN:9464,fork"})).port == 9464


def test_metadata_name_must_name_a_service() -> None:
    tunnel = body()
    tunnel["metadata"]["name"] = "azure.sql"
    with pytest.raises(SpecError) as caught:
        parse_spec(tunnel)
    assert str(caught.value) == (
        "metadata.name: \"azure.sql\" cannot name the relay's Service; use at most 63 "
        "lower-case letters, digits and '-', starting with a letter"
    )


@pytest.mark.parametrize("missing", ["listen", "connect"])
def test_required_addresses(missing: str) -> None:
    tunnel = body()
    del tunnel["spec"][missing]
    with pytest.raises(SpecError) as caught:
        parse_spec(tunnel)
    assert str(caught.value) == f"spec.{missing}: required"


# --- The engine's own messages -----------------------------------------------

BAD_ADDRESSES = [
    ("listen", "TCP-LISTN:1433,fork"),
    ("listen", "TCP-LISTEN:1433,fork,bogus"),
    ("listen", "TCP-LISTEN:1433,fork,backlog=many"),
    ("connect", "TCP:db"),
    ("connect", "OPENSSL:db:1433,verify=maybe"),
    ("connect", 'TCP:"db:1433'),
]


def engine_message(text: str) -> str:
    try:
        parse_address(text)
    except RelayError as exc:
        return str(exc)
    raise AssertionError(f"{text!r} parses")


@pytest.mark.parametrize(("field", "text"), BAD_ADDRESSES)
def test_bad_address_gives_the_engines_message(field: str, text: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_spec(body({field: text}))
    assert str(caught.value) == f"spec.{field}: {engine_message(text)}"
    assert caught.value.condition_reason == "InvalidAddress"
    assert caught.value.text == text


@pytest.mark.parametrize(("field", "text"), BAD_ADDRESSES[:2])
def test_status_message_is_what_relay_prints(field: str, text: str) -> None:
    """The same words in `kubectl describe` as on the command line."""
    with pytest.raises(AddressError) as caught:
        parse_spec(body({field: text}))
    addresses = [text, "TCP:db:1433"] if field == "listen" else ["TCP-LISTEN:1,fork", text]
    result = subprocess.run(
        [*RELAY, *addresses], capture_output=True, text=True, timeout=scaled(30), check=False
    )
    assert result.returncode == 1
    assert result.stderr.rstrip("\n").endswith(f" E {caught.value.problem}")


# --- Warnings ----------------------------------------------------------------


def test_turned_off_verification_warns() -> None:
    tunnel = parse_spec(body(connect="OPENSSL:db:1433,verify=0"))
    assert tunnel.warnings == (
        "spec.connect: verify=0 turns off the check of the server's certificate, so anyone "
        "on the path can read and change the traffic; give the server's CA in "
        "spec.tls.connect.ca, or remove verify=0 for a server with a public certificate",
    )


def test_tracing_decrypted_traffic_warns() -> None:
    tunnel = parse_spec(body(connect="OPENSSL:db:1433", tracing="Text"))
    assert tunnel.warnings == (
        "spec.tracing: Text writes the relayed bytes, decrypted, to the pod's log; anyone who "
        "can read the logs sees them",
    )


def test_tls_listen_asking_for_client_certificates_without_ca_warns() -> None:
    tls = {"listen": {"certificate": {"secretName": "server-tls"}}}
    warned = parse_spec(body(listen="OPENSSL-LISTEN:8443,fork", tls=tls))
    assert len(warned.warnings) == 1
    assert warned.warnings[0].startswith("spec.listen: OPENSSL-LISTEN asks every client")
    quiet = parse_spec(body(listen="OPENSSL-LISTEN:8443,fork,verify=0", tls=tls))
    assert quiet.warnings == ()


# --- Secrets, expiry, quantities ---------------------------------------------

MOUNT = SecretMount(
    "listen-certificate",
    "spec.tls.listen.certificate",
    "server-tls",
    (("tls.crt", "tls.crt"), ("tls.key", "tls.key")),
)
CA_MOUNT = SecretMount("connect-ca", "spec.tls.connect.ca", "partner-ca", (("root.pem", "ca.crt"),))


def test_secret_with_every_key_passes() -> None:
    check_secret(MOUNT, "team", {"data": {"tls.crt": "LS0t", "tls.key": "LS0t"}})


def test_missing_secret() -> None:
    with pytest.raises(SecretError) as caught:
        check_secret(MOUNT, "team", None)
    assert caught.value.condition_reason == "SecretNotFound"
    assert str(caught.value) == (
        'spec.tls.listen.certificate: Secret "server-tls" not found in namespace "team"; '
        "create it (kubectl create secret tls server-tls --cert=tls.crt --key=tls.key -n team) "
        "or correct spec.tls.listen.certificate.secretName"
    )


def test_missing_ca_secret_suggests_a_generic_secret() -> None:
    with pytest.raises(SecretError) as caught:
        check_secret(CA_MOUNT, "team", None)
    assert "kubectl create secret generic partner-ca --from-file=root.pem=<file> -n team" in str(
        caught.value
    )


def test_secret_without_a_key() -> None:
    with pytest.raises(SecretError) as caught:
        check_secret(MOUNT, "team", {"data": {"tls.crt": "LS0t"}})
    assert caught.value.condition_reason == "SecretKeyNotFound"
    assert str(caught.value) == (
        'spec.tls.listen.certificate: Secret "server-tls" in namespace "team" has no key '
        '"tls.key"; add it to the Secret or correct spec.tls.listen.certificate'
    )


def test_expiry() -> None:
    created = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    temporary = parse_spec(body(ttl="2h"))
    assert expires_at(temporary, created) == datetime(2025, 1, 1, 14, 0, tzinfo=UTC)
    assert expires_at(parse_spec(body()), created) is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("100m", "0.1"), ("1", "1"), ("1.5", "1.5"), ("64Mi", "67108864"), ("1G", "1000000000"),
     ("2e3", "2000"), (".5", "0.5"), ("1Ki", "1024")],
)
def test_quantities(text: str, value: str) -> None:
    assert parse_quantity(text) == parse_quantity(value)


@pytest.mark.parametrize("text", ["", "m", "1.2.3", "-1", "1 Gi", "1gi", "0x10"])
def test_not_quantities(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_spec_is_frozen() -> None:
    tunnel = parse_spec(body())
    assert isinstance(tunnel, TunnelSpec)
    with pytest.raises(AttributeError):
        tunnel.replicas = 3
