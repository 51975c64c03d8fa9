"""manifests/, the Helm chart and the Dockerfile: valid, hardened, least-privilege, in agreement.

- every Kubernetes object in manifests/ and in the rendered chart validates
  against the Kubernetes schemas (kubernetes-validate, 1.30 and the newest),
  and each kopf peering object against the chart's peering CRDs;
- the CRD is a structural schema; its schema accepts every example and
  refuses bad tunnels; its defaults are parse_spec's defaults;
- the chart runs two replicas under kopf peering (the peering CRDs, one
  peering object where kopf looks for it, RBAC to watch it and patch only
  it); manifests/ runs one replica without peering;
- every pod passes Pod Security "restricted";
- ``helm lint`` passes, ``values.schema.json`` refuses bad values;
- manifests/ is what scripts/render_manifests.py renders from the chart
  (one source), and the chart's defaults are the operator's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kubectl_relay import __version__
from kubectl_relay.engine.addresses import parse_address
from kubectl_relay.engine.cli import parse_command_line
from relay_operator.settings import ENVIRONMENT, IMAGE_REPOSITORY, Settings
from relay_operator.spec import parse_spec
from scripts import render_manifests
from tests.conftest import scaled
from tests.operator.openapi import apply_defaults, structural_problems, to_json_schema, validator
from tests.operator.podsecurity import hardening_violations, pod_templates, restricted_violations

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CHART = ROOT / "charts" / "kubectl-relay"
CRD_PATH = CHART / "crds" / "socattunnels.yaml"
PEERING_CRD_PATH = CHART / "crds" / "kopfpeerings.yaml"
#: The release's name in these tests, hence the peering object's.
FULLNAME = "relay-operator"
IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

#: Value sets the chart is rendered with in these tests.
CHART_VALUES: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["rbac.scope=namespaced", "watchNamespaces={team-a,team-b}"],
    "mirror": [
        "image.repository=myacr.azurecr.io/kubectl-relay/relay",
        "image.tag=0.1.0-rc1",
        "watchNamespaces={team-a}",
        "imagePullSecrets[0].name=acr",
        "serviceAccount.annotations.azure\\.workload\\.identity/client-id=abc",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
        "podLabels.team=platform",
    ],
}


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        for document in load(path):
            name = f"{document['kind']}/{document['metadata']['name']}"
            yield f"{path.relative_to(MANIFESTS)}:{name}", document


def example_tunnels() -> list[Any]:
    return [
        pytest.param(document, id=where)
        for where, document in manifest_documents()
        if document["kind"] == "SocatTunnel"
    ]


def kubernetes_objects() -> list[Any]:
    return [
        pytest.param(document, id=where)
        for where, document in manifest_documents()
        if document["kind"] != "SocatTunnel"
    ]


def helm_run(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=scaled(60), check=False
    )


def render(helm: Path, sets: list[str]) -> list[dict[str, Any]]:
    command = ["template", "relay", str(CHART), "--namespace", "relay-system", "--include-crds"]
    for setting in sets:
        command += ["--set", setting]
    result = helm_run(helm, *command)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def charts(helm: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: render(helm, sets) for name, sets in CHART_VALUES.items()}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    (document,) = load(CRD_PATH)
    return document


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# --- Kubernetes schemas ------------------------------------------------------


@pytest.mark.parametrize("document", kubernetes_objects())
def test_manifests_validate_against_kubernetes_schemas(document: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("values", CHART_VALUES)
def test_rendered_chart_validates_against_kubernetes_schemas(
    charts: dict[str, list[dict[str, Any]]], values: str
) -> None:
    peering_crds = {crd["spec"]["names"]["kind"]: crd for crd in load(PEERING_CRD_PATH)}
    for document in charts[values]:
        if document["apiVersion"] == "kopf.dev/v1":
            peering_validator(peering_crds[document["kind"]]).validate(document)
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)


def peering_validator(crd: dict[str, Any]) -> jsonschema.Draft7Validator:
    """Objects of a peering CRD, whose schema (like kopf's) leaves out the implicit fields."""
    schema = to_json_schema(schema_of(crd))
    schema["properties"].update(
        apiVersion={"const": f"{crd['spec']['group']}/v1"},
        kind={"const": crd["spec"]["names"]["kind"]},
        metadata={"type": "object"},
    )
    schema["required"] = ["apiVersion", "kind", "metadata"]
    return jsonschema.Draft7Validator(schema)


# --- The CRD -----------------------------------------------------------------


def test_crd_is_a_structural_schema(crd: dict[str, Any]) -> None:
    assert structural_problems(schema_of(crd)) == []


def test_crd_names(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "socattunnels.relay.kubectl-relay.io"
    spec = crd["spec"]
    assert spec["group"] == "relay.kubectl-relay.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "SocatTunnel",
        "listKind": "SocatTunnelList",
        "plural": "socattunnels",
        "singular": "socattunnel",
        "shortNames": ["st", "tunnel"],
        "categories": ["relay"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Listen", "Connect", "Ready", "Age"]


def test_printer_columns_point_at_schema_fields(crd: dict[str, Any]) -> None:
    schema = schema_of(crd)
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = re.sub(r"\[\?\(.*?\)\]", "[]", column["jsonPath"]).lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for part in path:
            name, _, index = part.partition("[")
            node = node["properties"][name]
            if index:
                node = node["items"]
        assert node["type"] in ("string", "integer"), column


@pytest.mark.parametrize("document", example_tunnels())
def test_crd_accepts_every_example(crd: dict[str, Any], document: dict[str, Any]) -> None:
    validator(crd).validate(document)


@pytest.mark.parametrize("document", example_tunnels())
def test_every_example_is_a_valid_tunnel_without_warnings(
    crd: dict[str, Any], document: dict[str, Any]
) -> None:
    """The examples model the secure defaults: nothing to warn about."""
    defaulted = apply_defaults(schema_of(crd), document)
    defaulted["metadata"]["namespace"] = "examples"
    assert parse_spec(defaulted).warnings == ()


BAD_TUNNELS: list[Any] = [
    pytest.param({"spec": {"listen": "TCP-LISTEN:1,fork"}}, id="no-connect"),
    pytest.param({"spec": {"tracing": "Off"}}, id="tracing-not-in-enum"),
    pytest.param({"spec": {"tracing": False}}, id="tracing-boolean"),
    pytest.param({"spec": {"sessionLogs": "Quiet"}}, id="session-logs-not-in-enum"),
    pytest.param({"spec": {"replicas": -1}}, id="negative-replicas"),
    pytest.param({"spec": {"closeTimeoutSeconds": 3601}}, id="close-timeout-range"),
    pytest.param({"spec": {"closeTimeoutSeconds": 0.5}}, id="close-timeout-fraction"),
    pytest.param({"spec": {"service": {"type": "ExternalName"}}}, id="service-type"),
    pytest.param({"spec": {"service": {"port": 0}}}, id="service-port-0"),
    pytest.param({"spec": {"service": {"nodePort": 80}}}, id="node-port-range"),
    pytest.param({"spec": {"allowedSources": ["10.0.0.0"]}}, id="cidr-without-prefix"),
    pytest.param({"spec": {"allowedSources": ["10.0.0.0/33"]}}, id="cidr-prefix"),
    pytest.param({"spec": {"allowedSources": ["300.0.0.0/8"]}}, id="cidr-octet"),
    pytest.param({"spec": {"ttl": "2 hours"}}, id="ttl"),
    pytest.param({"spec": {"tls": {"listen": {"certificate": {}}}}}, id="secret-name-missing"),
    pytest.param(
        {"spec": {"tls": {"connect": {"ca": {"secretName": "a", "key": "a/b"}}}}}, id="ca-key"
    ),
    pytest.param({"spec": {"pod": {"resources": {"limits": {"cpu": "lots"}}}}}, id="quantity"),
    pytest.param({"spec": {"pod": {"tolerations": [{"operator": "Maybe"}]}}}, id="toleration"),
    pytest.param({"spec": {"servce": {}}}, id="unknown-field"),
    pytest.param({"spec": {"pod": {"securityContext": {"privileged": True}}}}, id="pod-field"),
    pytest.param({"metadata": {"name": "Azure.SQL"}}, id="name-not-a-dns-label"),
]


def merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` merged in, object by object."""
    result = dict(base)
    for key, value in change.items():
        nested = isinstance(value, dict) and value and isinstance(result.get(key), dict)
        result[key] = merge(result[key], value) if nested else value
    return result


@pytest.mark.parametrize("change", BAD_TUNNELS)
def test_crd_refuses_bad_tunnels(crd: dict[str, Any], change: dict[str, Any]) -> None:
    good = {
        "apiVersion": "relay.kubectl-relay.io/v1alpha1",
        "kind": "SocatTunnel",
        "metadata": {"name": "tunnel"},
        "spec": {"listen": "TCP-LISTEN:1,fork", "connect": "TCP:db:1"},
    }
    validator(crd).validate(good)
    bad = merge(good, change)
    if change == {"spec": {"listen": "TCP-LISTEN:1,fork"}}:
        bad["spec"] = {"listen": "TCP-LISTEN:1,fork"}
    with pytest.raises(jsonschema.ValidationError):
        validator(crd).validate(bad)


def test_crd_defaults_are_parse_specs_defaults(crd: dict[str, Any]) -> None:
    """A tunnel means the same whether or not an API server filled in the defaults."""
    raw = {
        "metadata": {"name": "tunnel", "namespace": "team"},
        "spec": {
            "listen": "OPENSSL-LISTEN:8443,fork",
            "connect": "OPENSSL:db:1433",
            "service": {},
            "tls": {
                "listen": {"certificate": {"secretName": "s"}, "ca": {"secretName": "c"}},
                "connect": {"ca": {"secretName": "c"}},
            },
        },
    }
    defaulted = apply_defaults(schema_of(crd), raw)
    assert defaulted["spec"]["tracing"] == "Disabled"
    assert defaulted["spec"]["sessionLogs"] == "Notices"
    assert defaulted["spec"]["replicas"] == 1
    assert defaulted["spec"]["closeTimeoutSeconds"] == 30
    assert defaulted["spec"]["service"] == {"type": "ClusterIP"}
    assert defaulted["spec"]["tls"]["listen"]["ca"]["key"] == "ca.crt"
    assert parse_spec(defaulted) == parse_spec(raw)


# --- Pods --------------------------------------------------------------------


def pods(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for document in documents:
        yield from pod_templates(document)


def test_pods_in_manifests_pass_the_restricted_profile() -> None:
    documents = [document for _, document in manifest_documents()]
    found = list(pods(documents))
    assert {where for where, _, _ in found} == {
        "Deployment/relay-operator",
        "Pod/socat-debug",
        "Job/trace-failing-service",
    }
    for where, metadata, spec in found:
        assert restricted_violations(spec, metadata) == [], where
        needs_token = where == "Deployment/relay-operator"
        assert hardening_violations(spec, needs_token=needs_token) == [], where


@pytest.mark.parametrize("values", CHART_VALUES)
def test_chart_pods_pass_the_restricted_profile(
    charts: dict[str, list[dict[str, Any]]], values: str
) -> None:
    for where, metadata, spec in pods(charts[values]):
        assert restricted_violations(spec, metadata) == [], where
        assert hardening_violations(spec, needs_token=True) == [], where


def test_operator_namespace_enforces_the_restricted_profile() -> None:
    (namespace,) = [d for d in load(MANIFESTS / "operator.yaml") if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(
    ("path", "program"),
    [("examples/debug-pod.yaml", "socat"), ("examples/trace-job.yaml", "relay")],
)
def test_example_commands_are_relay_command_lines(path: str, program: str) -> None:
    """Each relay command line has exactly two addresses the engine parses.

    (In a YAML flow list an unquoted "TCP-LISTEN:8080,fork" splits in two.)
    """
    (_, _, spec), = pods(load(MANIFESTS / path))
    (container,) = spec["containers"]
    assert container["image"] == IMAGE
    command = container["command"]
    assert command[0] == program
    line = parse_command_line(command[1:])
    assert "-v" in command
    for address in line.addresses:
        parse_address(address)


# --- Helm --------------------------------------------------------------------


@pytest.mark.parametrize("values", CHART_VALUES)
def test_helm_lint(helm: Path, values: str) -> None:
    args = ["lint", str(CHART), "--strict"]
    for setting in CHART_VALUES[values]:
        args += ["--set", setting]
    result = helm_run(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["rbac.scope=everywhere"], "/rbac/scope"),
        (["rbac.scope=namespaced"], "/watchNamespaces"),
        (["watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (["relay.resources.limits.cpu=lots"], "/relay/resources/limits/cpu"),
        (["replica=2"], "additional properties 'replica' not allowed"),
        (["replicas=-1"], "/replicas"),
        (["peering.enabled=yes"], "/peering/enabled"),
        (["peering.name=x"], "additional properties 'name' not allowed"),
        (["peering.enabled=false"], "replicas > 1 needs peering.enabled=true"),
        (["apiConcurrency=0"], "/apiConcurrency"),
        (["apiConcurrency=1000"], "/apiConcurrency"),
    ],
)
def test_values_schema_refuses_bad_values(helm: Path, sets: list[str], message: str) -> None:
    args = ["template", "relay", str(CHART)]
    for setting in sets:
        args += ["--set", setting]
    result = helm_run(helm, *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_values_schema_is_valid_json_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_notes_render(helm: Path) -> None:
    result = helm_run(
        helm, "install", "relay", str(CHART), "--dry-run=client", "--namespace", "relay-system"
    )
    assert result.returncode == 0, result.stderr
    assert "kubectl get socattunnels" in result.stdout


# --- One source --------------------------------------------------------------


def test_manifests_are_rendered_from_the_chart(helm: Path) -> None:
    stale = render_manifests.stale(helm)
    assert stale == [], "run: python scripts/render_manifests.py"


def test_crd_in_manifests_is_the_charts() -> None:
    assert (MANIFESTS / "crd" / "socattunnels.yaml").read_bytes() == CRD_PATH.read_bytes()


def test_versions_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == __version__
    assert Settings().relay_image == IMAGE


def operator_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


#: Variables of the operator's container that kopf reads, not ``Settings``.
KOPF_ENVIRONMENT = {"POD_ID"}


def test_chart_defaults_are_the_operators_defaults(charts: dict[str, list[dict[str, Any]]]) -> None:
    """values.yaml repeats Settings' defaults; they must say the same.

    Except peering: the operator runs standalone unless told, the chart
    tells it the peering object's name (its replicas peer).
    """
    container = operator_container(charts["default"])
    assert container["image"] == IMAGE
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert set(env) <= set(ENVIRONMENT) | KOPF_ENVIRONMENT
    literal = {name: value for name, value in env.items() if value is not None}
    assert Settings.from_environ(literal) == dataclasses.replace(Settings(), peering=FULLNAME)


def test_destination_policy_and_label_keys_reach_the_operator(helm: Path) -> None:
    documents = render(
        helm,
        [
            "destinations.allow={10.0.0.0/8,*.database.windows.net}",
            "destinations.namespaces.ops.deny={db.example.net}",
            "relay.podLabelKeys={team}",
        ],
    )
    env = {item["name"]: item.get("value") for item in operator_container(documents)["env"]}
    policy = Settings.from_environ({k: v for k, v in env.items() if v is not None}).tunnel_policy
    assert policy.pod_label_keys == ("team",)
    assert policy.destinations.allowed is not None
    assert policy.destinations.allowed.entries() == ["10.0.0.0/8", "*.database.windows.net"]
    assert policy.destinations.rules("ops")[0].name_of("db.example.net") == "db.example.net"


def test_api_concurrency_reaches_the_operator(helm: Path) -> None:
    documents = render(helm, ["apiConcurrency=4"])
    env = {item["name"]: item.get("value") for item in operator_container(documents)["env"]}
    assert Settings.from_environ({k: v for k, v in env.items() if v is not None}).api_concurrency == 4


def test_relay_pods_follow_a_registry_mirror(charts: dict[str, list[dict[str, Any]]]) -> None:
    container = operator_container(charts["mirror"])
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert container["image"] == "myacr.azurecr.io/kubectl-relay/relay:0.1.0-rc1"
    assert env["RELAY_OPERATOR_RELAY_IMAGE"] == container["image"]


def test_operator_deployment(charts: dict[str, list[dict[str, Any]]]) -> None:
    (deployment,) = [d for d in charts["default"] if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    # Peering lets the new pod start before the old one stops.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    container = operator_container(charts["default"])
    assert container["command"] == ["relay-operator"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    health, metrics = container["ports"]
    assert health["name"] == "health"
    assert int(env["RELAY_OPERATOR_HEALTH_PORT"]) == health["containerPort"] == Settings().health_port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": health["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": health["name"]}
    # A drain evicts one replica at a time: the standby stays to take over.
    (budget,) = [d for d in charts["default"] if d["kind"] == "PodDisruptionBudget"]
    assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    assert metrics["name"] == "metrics"
    assert int(env["RELAY_OPERATOR_METRICS_PORT"]) == metrics["containerPort"]
    assert metrics["containerPort"] == Settings().metrics_port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics["containerPort"])
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "operator"
    (pod_id,) = [item for item in container["env"] if item["name"] == "POD_ID"]
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_manifests_run_one_operator_without_peering() -> None:
    """One ``kubectl apply`` cannot create a peering object with its CRD: manifests/ peers not."""
    documents = load(MANIFESTS / "operator.yaml")
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in pod
    env = {item["name"] for item in operator_container(documents)["env"]}
    assert "RELAY_OPERATOR_PEERING" not in env
    assert "POD_ID" in env
    everything = [document for _, document in manifest_documents()]
    assert not [d for d in everything if d["apiVersion"].startswith("kopf.dev/")]


@pytest.mark.parametrize(("values", "replicas"), [("0", 0), ("1", 1)])
def test_chart_without_peering(helm: Path, values: str, replicas: int) -> None:
    documents = render(helm, ["peering.enabled=false", f"replicas={values}"])
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == replicas
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = {item["name"] for item in operator_container(documents)["env"]}
    assert "RELAY_OPERATOR_PEERING" not in env
    # A budget for one replica would block every drain.
    assert not [d for d in documents if d["kind"] == "PodDisruptionBudget"]
    # The CRDs come with the chart (helm installs crds/ regardless), but no object or right.
    assert not [d for d in documents if d["apiVersion"].startswith("kopf.dev/")]
    (role,) = [d for d in documents if d["kind"] == "ClusterRole"]
    assert grants(role) == LEAST_PRIVILEGE


# --- kopf peering ------------------------------------------------------------


def test_peering_crds_are_what_kopf_looks_for() -> None:
    """kopf finds kopf.dev/v1 clusterkopfpeerings and kopfpeerings by discovery, merge-patches them."""
    crds = {crd["spec"]["names"]["kind"]: crd for crd in load(PEERING_CRD_PATH)}
    assert set(crds) == {"ClusterKopfPeering", "KopfPeering"}
    for kind, scope in (("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")):
        crd = crds[kind]
        plural = kind.lower() + "s"
        assert crd["metadata"]["name"] == f"{plural}.kopf.dev"
        assert crd["spec"]["group"] == "kopf.dev"
        assert crd["spec"]["scope"] == scope
        assert crd["spec"]["names"]["plural"] == plural
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
        # No status subresource: kopf then patches status on the object itself,
        # which is the one right the RBAC grants.
        assert "subresources" not in version
        assert structural_problems(schema_of(crd)) == []
        status = schema_of(crd)["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
        # A keep-alive as kopf writes it (identity -> priority, lifetime, lastseen) is kept.
        alive = {"relay-operator-7d9f-x2": {"priority": 7, "lifetime": 60, "lastseen": "now"}}
        body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": "p"},
                "status": alive}
        peering_validator(crd).validate(body)


def test_rendered_chart_includes_the_peering_crds(charts: dict[str, list[dict[str, Any]]]) -> None:
    names = {d["metadata"]["name"] for d in charts["default"]
             if d["kind"] == "CustomResourceDefinition"}
    assert names == {"socattunnels.relay.kubectl-relay.io", "clusterkopfpeerings.kopf.dev",
                     "kopfpeerings.kopf.dev"}


def peering_objects(documents: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    return sorted(
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        for d in documents
        if d["apiVersion"] == "kopf.dev/v1"
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # Every namespace: kopf looks for a ClusterKopfPeering.
        ("default", [("ClusterKopfPeering", None, FULLNAME)]),
        # Some namespaces: kopf looks for a KopfPeering in each one it serves.
        ("namespaced", [("KopfPeering", "team-a", FULLNAME), ("KopfPeering", "team-b", FULLNAME)]),
        ("mirror", [("KopfPeering", "team-a", FULLNAME)]),
    ],
)
def test_peering_object_is_where_kopf_looks_and_named_in_the_operators_settings(
    charts: dict[str, list[dict[str, Any]]], values: str, expected: list[Any]
) -> None:
    documents = charts[values]
    assert peering_objects(documents) == expected
    env = {item["name"]: item.get("value") for item in operator_container(documents)["env"]}
    assert Settings.from_environ({"RELAY_OPERATOR_PEERING": env["RELAY_OPERATOR_PEERING"]}).peering
    assert env["RELAY_OPERATOR_PEERING"] == FULLNAME


def test_namespaced_variant_restricts_the_operator_to_what_it_grants(
    charts: dict[str, list[dict[str, Any]]],
) -> None:
    documents = charts["namespaced"]
    kinds = {d["kind"] for d in documents}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles = sorted(d["metadata"]["namespace"] for d in documents if d["kind"] == "Role")
    bindings = sorted(d["metadata"]["namespace"] for d in documents if d["kind"] == "RoleBinding")
    assert roles == bindings == ["team-a", "team-b"]
    (config,) = [d for d in documents if d["kind"] == "ConfigMap"]
    env = operator_container(documents)["env"]
    (source,) = [e for e in env if e["name"] == "RELAY_OPERATOR_NAMESPACES"]
    assert source["valueFrom"]["configMapKeyRef"]["name"] == config["metadata"]["name"]
    namespaces = config["data"][source["valueFrom"]["configMapKeyRef"]["key"]]
    assert Settings.from_environ({"RELAY_OPERATOR_NAMESPACES": namespaces}).namespaces == (
        "team-a",
        "team-b",
    )


# --- RBAC --------------------------------------------------------------------

#: Exactly what the operator may do. A new permission must be added here, on purpose.
LEAST_PRIVILEGE = {
    ("relay.kubectl-relay.io", "socattunnels"): {"get", "list", "watch", "patch", "delete"},
    ("relay.kubectl-relay.io", "socattunnels/status"): {"patch"},
    ("relay.kubectl-relay.io", "socattunnels/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies"): {"get", "create", "patch", "delete"},
    ("", "secrets"): {"get"},
    ("", "events"): {"create"},
}


def peering_privilege(plural: str) -> dict[tuple[str, ...], set[str]]:
    """kopf's needs on its peering objects: list and watch them, patch (only) its own."""
    return {
        ("kopf.dev", plural): {"list", "watch"},
        ("kopf.dev", plural, FULLNAME): {"patch"},
    }


def grants(role: dict[str, Any]) -> dict[tuple[str, ...], set[str]]:
    """Verbs by (group, resource), or by (group, resource, name) for rules with resourceNames."""
    found: dict[tuple[str, ...], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        names = rule.get("resourceNames") or [None]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in names:
                    key = (group, resource) if name is None else (group, resource, name)
                    found.setdefault(key, set()).update(rule["verbs"])
    return found


@pytest.mark.parametrize(
    ("path", "kind"), [("rbac/cluster.yaml", "ClusterRole"), ("rbac/namespaced.yaml", "Role")]
)
def test_rbac_is_least_privilege(path: str, kind: str) -> None:
    documents = load(MANIFESTS / path)
    (role,) = [d for d in documents if d["kind"] == kind]
    assert grants(role) == LEAST_PRIVILEGE
    (binding,) = [d for d in documents if d["kind"] == f"{kind}Binding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": kind,
        "name": role["metadata"]["name"],
    }
    operator = load(MANIFESTS / "operator.yaml")
    (account,) = [d for d in operator if d["kind"] == "ServiceAccount"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]


@pytest.mark.parametrize(
    ("values", "kind", "plural"),
    [
        ("default", "ClusterRole", "clusterkopfpeerings"),
        # A ClusterRole, but the operator serves some namespaces: KopfPeerings.
        ("mirror", "ClusterRole", "kopfpeerings"),
        ("namespaced", "Role", "kopfpeerings"),
    ],
)
def test_chart_rbac_is_least_privilege_with_peering(
    charts: dict[str, list[dict[str, Any]]], values: str, kind: str, plural: str
) -> None:
    roles = [d for d in charts[values] if d["kind"] == kind]
    assert roles
    for role in roles:
        assert grants(role) == LEAST_PRIVILEGE | peering_privilege(plural)


def test_operator_deployment_uses_the_bound_service_account() -> None:
    documents = load(MANIFESTS / "operator.yaml")
    (account,) = [d for d in documents if d["kind"] == "ServiceAccount"]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# --- The image ---------------------------------------------------------------


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    instructions = [line.split(None, 1) for line in lines]
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) == 2, "a build stage and a runtime stage"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert "pip wheel" in text and "/wheels/*.whl" in text
    assert re.search(r"ln -s relay /opt/relay/bin/socat", text)
    users = [rest for word, rest in instructions if word == "USER"]
    assert users == ["65532:65532"], "a numeric non-root user, last"
    entrypoint = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entrypoint == ['["relay"]']
    # Ports belong to the pods (relay listen ports vary); the image declares none.
    assert not [rest for word, rest in instructions if word == "EXPOSE"]
