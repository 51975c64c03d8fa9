"""The operator's settings from its environment."""

from __future__ import annotations

import pytest

from relay_operator.errors import SettingsError
from relay_operator.fields import Resources
from relay_operator.settings import Settings


def test_defaults() -> None:
    settings = Settings.from_environ({})
    assert settings == Settings()
    assert settings.relay_image == "ghcr.io/kubectl-relay/relay:0.1.0"
    assert settings.namespaces == ()
    assert settings.default_node_selector == {"kubernetes.io/os": "linux"}


def test_empty_values_keep_the_defaults() -> None:
    """An optional ConfigMap key that is absent gives an unset or empty variable."""
    assert Settings.from_environ({"RELAY_OPERATOR_NAMESPACES": ""}) == Settings()


def test_every_variable() -> None:
    settings = Settings.from_environ(
        {
            "RELAY_OPERATOR_NAMESPACES": "team-a, team-b,,1st",
            "RELAY_OPERATOR_RELAY_IMAGE": "myacr.azurecr.io/relay:0.1.0",
            "RELAY_OPERATOR_RELAY_PULL_POLICY": "Always",
            "RELAY_OPERATOR_RELAY_RESOURCES": '{"requests": {"cpu": "10m"}, "limits": {"cpu": 1}}',
            "RELAY_OPERATOR_RELAY_NODE_SELECTOR": '{"kubernetes.io/os": "linux", "pool": "a"}',
            "RELAY_OPERATOR_HEALTH_PORT": "9000",
            "RELAY_OPERATOR_METRICS_PORT": "0",
            "RELAY_OPERATOR_PEERING": "relay-operator",
            "RELAY_OPERATOR_API_CONCURRENCY": "32",
        }
    )
    assert settings == Settings(
        relay_image="myacr.azurecr.io/relay:0.1.0",
        relay_pull_policy="Always",
        namespaces=("team-a", "team-b", "1st"),
        default_resources=Resources({"cpu": "10m"}, {"cpu": "1"}),
        default_node_selector={"kubernetes.io/os": "linux", "pool": "a"},
        health_port=9000,
        metrics_port=0,
        peering="relay-operator",
        api_concurrency=32,
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "RELAY_OPERATOR_NAMESPACES",
            "team-a,Team_B",
            "RELAY_OPERATOR_NAMESPACES='team-a,Team_B': \"Team_B\" is not a namespace name",
        ),
        (
            "RELAY_OPERATOR_RELAY_PULL_POLICY",
            "sometimes",
            "RELAY_OPERATOR_RELAY_PULL_POLICY='sometimes': expected one of Always, "
            "IfNotPresent, Never",
        ),
        (
            "RELAY_OPERATOR_RELAY_RESOURCES",
            '{"limits": {"cpu": "lots"}}',
            'RELAY_OPERATOR_RELAY_RESOURCES=\'{"limits": {"cpu": "lots"}}\': '
            'resources.limits.cpu: "lots" is not a quantity; write it like "100m", "0.5" or '
            '"64Mi"',
        ),
        (
            "RELAY_OPERATOR_RELAY_RESOURCES",
            "{",
            "RELAY_OPERATOR_RELAY_RESOURCES='{': not JSON: Expecting property name enclosed "
            "in double quotes",
        ),
        (
            "RELAY_OPERATOR_RELAY_NODE_SELECTOR",
            '["linux"]',
            "RELAY_OPERATOR_RELAY_NODE_SELECTOR='[\"linux\"]': expected a JSON object of strings",
        ),
        (
            "RELAY_OPERATOR_HEALTH_PORT",
            "http",
            "RELAY_OPERATOR_HEALTH_PORT='http': expected a port from 1 to 65535",
        ),
        (
            "RELAY_OPERATOR_METRICS_PORT",
            "70000",
            "RELAY_OPERATOR_METRICS_PORT='70000': expected a port from 0 to 65535",
        ),
        (
            "RELAY_OPERATOR_API_CONCURRENCY",
            "0",
            "RELAY_OPERATOR_API_CONCURRENCY='0': expected a number from 1 to 256",
        ),
        (
            "RELAY_OPERATOR_PEERING",
            "Relay Operator",
            "RELAY_OPERATOR_PEERING='Relay Operator': not a valid object name",
        ),
    ],
)
def test_malformed(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({variable: value})
    assert str(caught.value) == message
