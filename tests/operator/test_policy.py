"""What a tunnel's author may not do: hijack Services, weaken pods, reach forbidden destinations."""

from __future__ import annotations

from typing import Any

import pytest

from relay_operator.builders import desired_deployment, owner_from_body
from relay_operator.errors import DestinationError, ReconcileError, SettingsError, SpecError
from relay_operator.policy import ConnectRules, TunnelPolicy
from relay_operator.settings import Settings
from relay_operator.spec import parse_spec
from tests.operator.podsecurity import hardening_violations, restricted_violations
from tests.operator.test_spec import body, error

REFUSED = [
    pytest.param(
        {"pod": {"labels": {"app": "web"}}},
        'spec.pod.labels["app"]: a label on the relay pods could make them receive traffic '
        "meant for other pods (a Service selecting it) or pass NetworkPolicies meant for them, "
        "so tunnels may set only keys under tunnel.kubectl-relay.io/; "
        'write "tunnel.kubectl-relay.io/app"',
        id="hijack-service-by-label",
    ),
    pytest.param(
        {"pod": {"annotations": {"container.apparmor.security.beta.kubernetes.io/relay": "unconfined"}}},
        'spec.pod.annotations["container.apparmor.security.beta.kubernetes.io/relay"]: '
        "annotations under kubernetes.io and k8s.io configure the pod itself (AppArmor, "
        "seccomp, bandwidth); relay pods keep the operator's restricted settings; use a key "
        "under your own domain, such as example.com/owner",
        id="apparmor-unconfined",
    ),
    pytest.param(
        {"pod": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}},
        "annotations under kubernetes.io and k8s.io configure the pod itself",
        id="seccomp-annotation",
    ),
    pytest.param(
        {"pod": {"annotations": {"kubernetes.io/egress-bandwidth": "1G"}}},
        "annotations under kubernetes.io and k8s.io",
        id="kubernetes-io-annotation",
    ),
    pytest.param(
        {"connect": "TCP:169.254.169.254:80"},
        "spec.connect: connecting to 169.254.169.254 is denied by the operator's destination "
        "policy (the network 169.254.0.0/16); ask the cluster admin to change the destination "
        "policy if this tunnel needs it",
        id="cloud-metadata",
    ),
    pytest.param(
        {"connect": "TCP6:[fd00:ec2::254]:80"},
        "(the network fd00:ec2::254/128)",
        id="aws-metadata-ipv6",
    ),
    pytest.param(
        {"connect": "TCP:[::ffff:169.254.169.254]:80"},
        "connecting to 169.254.169.254 is denied",
        id="metadata-as-mapped-ipv6",
    ),
    pytest.param(
        {"connect": "OPENSSL:kubernetes.default.svc:443"},
        'connecting to kubernetes.default.svc is denied by the operator\'s destination policy '
        '(the name "kubernetes.default.svc")',
        id="api-server-by-name",
    ),
    pytest.param(
        {"connect": "TCP:Kubernetes.Default.svc.cluster.local.:443"},
        '(the name "kubernetes.default.svc.*")',
        id="api-server-fqdn-any-case",
    ),
    pytest.param(
        {"connect": "TCP:127.0.0.1:80"}, "(the network 127.0.0.0/8)", id="loopback-target"
    ),
    pytest.param({"connect": "TCP:127.1:80"}, "(the network 127.0.0.0/8)", id="short-loopback"),
    pytest.param({"connect": "TCP6:[::1]:80"}, "(the network ::1/128)", id="loopback-ipv6"),
    pytest.param({"connect": "TCP:localhost:80"}, '(the name "localhost")', id="localhost"),
    pytest.param(
        {"listen": "TCP-LISTEN:80,fork,bind=127.1"},
        'spec.listen: "bind=127.1" listens on the loopback interface, out of reach of other '
        "pods; remove the bind option",
        id="bind-short-loopback",
    ),
    pytest.param(
        {"listen": "TCP6-LISTEN:80,fork,bind=[::ffff:127.0.0.1]"},
        '"bind=[::ffff:127.0.0.1]" listens on the loopback interface',
        id="bind-mapped-loopback",
    ),
    pytest.param(
        {"connect": "TCP:web:80,bind=127.0.0.1"},
        'spec.connect: "bind=127.0.0.1" connects from the loopback interface, which reaches no '
        "other host; remove the bind option",
        id="connect-from-loopback",
    ),
    pytest.param(
        {"connect": "TCP:web\x00.t3.svc:80"},
        "spec.connect: a NUL byte at position 7: no address, name or option holds one; remove it",
        id="nul-byte",
    ),
    pytest.param(
        {"listen": "TCP-LISTEN:80,fork\n"},
        "spec.listen: the control character '\\n' at position 18",
        id="newline",
    ),
    pytest.param(
        {"connect": "TCP:web.t3.svc:80;id"},
        'spec.connect: "80;id" is neither a port number from 1 to 65535 nor a service name; '
        'write the port as a number, such as "443"',
        id="semicolon-in-port",
    ),
    pytest.param(
        {"connect": "TCP:web;id:80"},
        'spec.connect: "web;id" is neither an IP address nor a host name; a host name has '
        "dot-separated labels of letters, digits, '-' and '_'",
        id="semicolon-in-host",
    ),
    pytest.param(
        {"connect": "TCP:web..svc:80"}, '"web..svc" is neither an IP address nor a host name',
        id="empty-label",
    ),
    pytest.param(
        {"ttl": "3000000d"},
        'spec.ttl: "3000000d" is longer than the 30 days a temporary tunnel may live; '
        "remove ttl for a tunnel that stays",
        id="ttl-overflowing-datetime",
    ),
    pytest.param(
        {"ttl": "99999999999d"}, '"99999999999d" is longer than the 30 days', id="ttl-huge"
    ),
    pytest.param({"ttl": "30d1s"}, '"30d1s" is longer than the 30 days', id="ttl-just-over"),
    pytest.param({"ttl": "9" * 40 + "d"}, "is not a duration", id="ttl-too-long-text"),
]


@pytest.mark.parametrize(("spec", "message"), REFUSED)
def test_refused(spec: dict[str, Any], message: str) -> None:
    assert message in str(error(spec))


def test_destination_refusals_have_their_own_reason() -> None:
    refused = error({"connect": "TCP:169.254.169.254:80"})
    assert isinstance(refused, DestinationError)
    assert refused.condition_reason == "DestinationDenied"


ACCEPTED = [
    pytest.param({"ttl": "30d"}, id="ttl-30-days"),
    pytest.param({"ttl": "720h"}, id="ttl-720-hours"),
    pytest.param({"connect": "TCP:web.t3.svc:https"}, id="service-name-port"),
    pytest.param({"connect": "TCP:10.0.0.7:80"}, id="private-address"),
    pytest.param({"pod": {"labels": {"tunnel.kubectl-relay.io/team": "data"}}}, id="author-label"),
    pytest.param({"pod": {"annotations": {"example.com/owner": "x"}}}, id="own-annotation"),
    pytest.param({"listen": "TCP-LISTEN:80,fork,bind=0.0.0.0"}, id="bind-any"),
]


@pytest.mark.parametrize("spec", ACCEPTED)
def test_accepted(spec: dict[str, Any]) -> None:
    parse_spec(body(spec))


#: Everything a tunnel's author might try on the pod; refused or harmless, never unrestricted.
HOSTILE = [
    {"pod": {"annotations": {"container.apparmor.security.beta.kubernetes.io/relay": "unconfined"}}},
    {"pod": {"annotations": {"container.seccomp.security.alpha.kubernetes.io/relay": "unconfined"}}},
    {"pod": {"annotations": {"example.com/privileged": "true", "prometheus.io/scrape": "false"}}},
    {"pod": {"labels": {"tunnel.kubectl-relay.io/privileged": "true"}}},
    {"pod": {"nodeSelector": {"kubernetes.io/hostname": "control-plane"}}},
    {"pod": {"tolerations": [{"operator": "Exists"}]}},
    {"pod": {"resources": {"limits": {"cpu": "64", "memory": "1Ti"}}}},
    {"listen": "TCP-LISTEN:1,fork"},
    {"listen": "UDP-LISTEN:53,fork", "connect": "UDP:kube-dns.kube-system:53"},
    {"connect": "OPENSSL:db.example.net:5432,verify=0"},
    {"tracing": "TextAndHex"},
    {"pod": {"securityContext": {"privileged": True}}},
    {"hostNetwork": True},
]


@pytest.mark.parametrize("spec", HOSTILE)
def test_relay_pods_stay_restricted_whatever_the_spec(spec: dict[str, Any]) -> None:
    document = body(spec)
    try:
        tunnel = parse_spec(document)
    except SpecError:
        return  # refused: no pod at all
    deployment = desired_deployment(tunnel, owner_from_body(document), Settings())
    template = deployment["spec"]["template"]
    assert restricted_violations(template["spec"], template["metadata"]) == []
    assert hardening_violations(template["spec"]) == []


# --- The admin's policy ---------------------------------------------------------------


def settings(**environ: str) -> Settings:
    return Settings.from_environ({f"RELAY_OPERATOR_{k}": v for k, v in environ.items()})


def test_api_server_address_from_the_environment_is_denied() -> None:
    policy = Settings.from_environ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).tunnel_policy
    with pytest.raises(DestinationError, match=r"\(the network 10.0.0.1/32\)"):
        parse_spec(body({"connect": "TCP:10.0.0.1:443"}), policy)
    aks = Settings.from_environ({"KUBERNETES_SERVICE_HOST": "x.hcp.westeurope.azmk8s.io"})
    with pytest.raises(DestinationError, match=r"x\.hcp\.westeurope\.azmk8s\.io"):
        parse_spec(body({"connect": "OPENSSL:X.hcp.westeurope.azmk8s.io:443"}), aks.tunnel_policy)


def test_allow_list_with_names_and_networks() -> None:
    policy = settings(
        DESTINATIONS='{"allow": ["*.database.windows.net", "10.20.0.0/16"], "deny": ["10.20.9.0/24"]}'
    ).tunnel_policy
    by_name = parse_spec(body({"connect": "OPENSSL:db.database.windows.net:1433"}), policy)
    # A name the allow list names needs no address check; the denied networks still apply.
    assert by_name.connect_rules.allowed is None
    assert "10.20.9.0/24" in by_name.connect_rules.arguments()[1]
    other_name = parse_spec(body({"connect": "TCP:web:80"}), policy)
    # Any other name must resolve into an allowed network: the relay checks that.
    assert other_name.connect_rules.arguments()[2:] == ["--allow-connect", "10.20.0.0/16"]
    parse_spec(body({"connect": "TCP:10.20.1.1:80"}), policy)
    with pytest.raises(DestinationError, match=r"\(the network 10.20.9.0/24\)"):
        parse_spec(body({"connect": "TCP:10.20.9.9:80"}), policy)
    with pytest.raises(DestinationError) as caught:
        parse_spec(body({"connect": "TCP:192.0.2.1:80"}), policy)
    assert str(caught.value) == (
        "spec.connect: 192.0.2.1 is not among the destinations the operator's policy allows; "
        "the destinations allowed in namespace team are: 10.20.0.0/16, *.database.windows.net"
    )


def test_per_namespace_policy_and_defaults_off() -> None:
    policy = settings(
        DESTINATIONS='{"denyDefaults": false, "namespaces": {"team": {"allow": ["db.example.net"]},'
        ' "ops": {"deny": ["db.example.net"]}}}'
    ).tunnel_policy
    elsewhere = body({"connect": "TCP:127.0.0.1:80"})
    elsewhere["metadata"]["namespace"] = "elsewhere"
    # The admin turned the defaults off: nothing denied, nothing for the relay to check.
    assert parse_spec(elsewhere, policy).connect_rules == ConnectRules()
    parse_spec(body({"connect": "TCP:db.example.net:5432"}), policy)
    with pytest.raises(DestinationError, match="not among the destinations"):
        parse_spec(body({"connect": "TCP:web:80"}), policy)
    ops = body({"connect": "TCP:db.example.net:5432"})
    ops["metadata"]["namespace"] = "ops"
    with pytest.raises(DestinationError, match=r'the name "db\.example\.net"'):
        parse_spec(ops, policy)


def test_admin_allowed_label_keys() -> None:
    policy = settings(POD_LABEL_KEYS="team, cost-center").tunnel_policy
    assert policy == TunnelPolicy(policy.destinations, pod_label_keys=("team", "cost-center"))
    parse_spec(body({"pod": {"labels": {"team": "data", "cost-center": "42"}}}), policy)
    with pytest.raises(SpecError, match=r"or one the cluster admin allows \(team, cost-center\)"):
        parse_spec(body({"pod": {"labels": {"app": "web"}}}), policy)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("DESTINATIONS", "[]", "expected a JSON object"),
        ("DESTINATIONS", '{"deny": ["metadata!"]}', 'deny[0]: "metadata!" is neither a CIDR'),
        ("DESTINATIONS", '{"denyDefaults": "no"}', "denyDefaults: expected true or false"),
        ("DESTINATIONS", '{"allowed": []}', 'unknown field "allowed"'),
        ("POD_LABEL_KEYS", "bad key", '"bad key" is not a valid key'),
    ],
)
def test_bad_policy_settings(variable: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem.replace("(", r"\(").replace("[", r"\[")):
        settings(**{variable: value})


def test_defects_and_refusals_are_reported_in_the_status() -> None:
    defect = ReconcileError(OverflowError("date value out of range"))
    assert (defect.condition_reason, defect.retry) == ("ReconcileFailed", False)
    assert str(defect).startswith(
        "the operator failed on this tunnel (OverflowError: date value out of range)"
    )


@pytest.mark.parametrize(
    ("spec", "warned"),
    [
        ({"connect": "TCP:web:80", "service": {"type": "LoadBalancer"}}, True),
        ({"connect": "TCP:web.t3.svc.cluster.local:80", "service": {"type": "NodePort"}}, True),
        ({"connect": "TCP:10.0.0.7:80", "service": {"type": "LoadBalancer"}}, True),
        ({"connect": "TCP:web:80", "service": {"type": "ClusterIP"}}, False),
        ({"connect": "OPENSSL:db.example.net:443", "service": {"type": "LoadBalancer"}}, False),
        (
            {"connect": "TCP:web:80", "service": {"type": "LoadBalancer"},
             "allowedSources": ["10.20.0.0/16"]},
            False,
        ),
    ],
)
def test_load_balancer_in_front_of_an_internal_name_warns(
    spec: dict[str, Any], warned: bool
) -> None:
    warnings = [w for w in parse_spec(body(spec)).warnings if w.startswith("spec.service:")]
    assert bool(warnings) == warned
    if warned:
        assert "reachable from outside it" in warnings[0]
