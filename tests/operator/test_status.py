"""The status of a tunnel and the events it deserves, from observed state: tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay_operator.errors import SecretError, SpecError
from relay_operator.metrics import OperatorMetrics
from relay_operator.spec import parse_spec
from relay_operator.status import (
    Condition,
    Event,
    Rollout,
    invalid,
    merge_conditions,
    phase,
    ready,
    report,
    service_address,
    transition_events,
    valid,
)
from tests.operator.test_spec import body

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def deployment(desired: int = 1, generation: int = 1, **status: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired},
        "status": {"observedGeneration": status.pop("observed", generation), **status},
    }


ROLLOUTS = [
    pytest.param(None, ("False", "Creating"), "Pending", id="no-deployment"),
    pytest.param(deployment(0), ("False", "Paused"), "Paused", id="paused"),
    pytest.param(deployment(2, replicas=2), ("False", "RelaysNotReady"), "Pending", id="starting"),
    pytest.param(
        deployment(2, replicas=2, updatedReplicas=2, readyReplicas=1, availableReplicas=1),
        ("False", "RelaysNotReady"), "Degraded", id="one-of-two",
    ),
    pytest.param(
        deployment(2, replicas=2, updatedReplicas=2, readyReplicas=2, availableReplicas=2),
        ("True", "RelaysReady"), "Ready", id="ready",
    ),
    pytest.param(
        deployment(1, replicas=2, updatedReplicas=1, readyReplicas=2, availableReplicas=2),
        ("False", "RollingOut"), "Pending", id="old-pod-still-there",
    ),
    pytest.param(
        deployment(1, generation=3, observed=2, replicas=1, updatedReplicas=1,
                   readyReplicas=1, availableReplicas=1),
        ("False", "RollingOut"), "Pending", id="not-yet-observed",
    ),
]


@pytest.mark.parametrize(("live", "expected", "summary"), ROLLOUTS)
def test_ready_and_phase_follow_the_rollout(
    live: dict[str, Any] | None, expected: tuple[str, str], summary: str
) -> None:
    rollout = Rollout.of(live)
    condition = ready("web", "team", valid(4), rollout, "web.team.svc:80")
    assert (condition.status, condition.reason) == expected
    assert condition.observed_generation == 4
    assert phase(valid(4), condition, rollout) == summary


def test_ready_messages_say_where_to_connect_or_where_to_look() -> None:
    good = Rollout.of(deployment(2, replicas=2, updatedReplicas=2, readyReplicas=2,
                                 availableReplicas=2))
    assert ready("web", "team", valid(1), good, "web.team.svc:80").message == (
        "2/2 relay pods ready; clients connect to web.team.svc:80"
    )
    starting = Rollout.of(deployment(2, replicas=2, updatedReplicas=2, readyReplicas=1))
    assert ready("web", "team", valid(1), starting, None).message == (
        "1/2 relay pods ready; see kubectl describe pods -n team "
        "-l relay.kubectl-relay.io/tunnel=web"
    )


def test_invalid_spec_without_relays() -> None:
    error = SpecError("spec.listen", "bad")
    validity = invalid(error, 2)
    assert validity == Condition("Valid", "False", "InvalidSpec", "spec.listen: bad", 2)
    condition = ready("web", "team", validity, None, None)
    assert (condition.status, condition.reason) == ("False", "InvalidSpec")
    assert phase(validity, condition, None) == "Invalid"


def test_invalid_change_with_the_last_valid_relays_running() -> None:
    """Ready says the relays serve; Valid says the spec shown is not what runs."""
    validity = invalid(SpecError("spec.listen", "bad"), 2)
    rollout = Rollout.of(deployment(1, replicas=1, updatedReplicas=1, readyReplicas=1,
                                    availableReplicas=1))
    condition = ready("web", "team", validity, rollout, None)
    assert condition.status == "True"
    assert phase(validity, condition, rollout) == "Invalid"


def test_secret_errors_have_their_own_reasons() -> None:
    missing = SecretError("spec.tls.listen.certificate", "team", "s", ("tls.crt", "tls.key"))
    no_key = SecretError("spec.tls.connect.ca", "team", "s", ("ca.crt",), "ca.crt")
    assert invalid(missing, 1).reason == "SecretNotFound"
    assert invalid(no_key, 1).reason == "SecretKeyNotFound"


@pytest.mark.parametrize(
    ("service", "address"),
    [
        (None, None),
        ({"spec": {"type": "ClusterIP", "ports": [{"port": 1433}]}}, "web.team.svc:1433"),
        ({"spec": {"type": "LoadBalancer", "ports": [{"port": 1433}]}}, "web.team.svc:1433"),
        (
            {"spec": {"type": "LoadBalancer", "ports": [{"port": 1433}]},
             "status": {"loadBalancer": {"ingress": [{"ip": "20.1.2.3"}]}}},
            "20.1.2.3:1433",
        ),
        (
            {"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
             "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}},
            "lb.example:80",
        ),
    ],
)
def test_service_address(service: dict[str, Any] | None, address: str | None) -> None:
    assert service_address("web", "team", service) == address


def test_transition_time_moves_only_with_the_status() -> None:
    before = [
        {"type": "Valid", "status": "True", "lastTransitionTime": "then"},
        {"type": "Ready", "status": "False", "lastTransitionTime": "then"},
    ]
    merged = merge_conditions(
        before,
        [valid(2), Condition("Ready", "True", "RelaysReady", "1/1", 2)],
        "now",
    )
    assert [(c["type"], c["lastTransitionTime"]) for c in merged] == [  # type: ignore[index]
        ("Valid", "then"), ("Ready", "now")]


TRANSITIONS = [
    pytest.param([], [valid(1)], [], id="valid-from-the-start"),
    pytest.param(
        [], [invalid(SpecError("spec.listen", "bad"), 1)],
        [Event("Warning", "InvalidSpec", "spec.listen: bad")], id="invalid",
    ),
    pytest.param(
        [{"type": "Valid", "status": "False", "reason": "InvalidSpec",
          "message": "spec.listen: bad"}],
        [invalid(SpecError("spec.listen", "bad"), 1)], [], id="still-invalid-is-not-repeated",
    ),
    pytest.param(
        [{"type": "Valid", "status": "False", "reason": "InvalidSpec", "message": "x"}],
        [valid(2)], [Event("Normal", "SpecValid", "the spec is valid again")], id="fixed",
    ),
    pytest.param(
        [{"type": "Ready", "status": "False", "reason": "Creating", "message": ""}],
        [Condition("Ready", "True", "RelaysReady", "1/1 relay pods ready", 1)],
        [Event("Normal", "Ready", "1/1 relay pods ready")], id="ready",
    ),
    pytest.param(
        [{"type": "Ready", "status": "True", "reason": "RelaysReady", "message": ""}],
        [Condition("Ready", "False", "RelaysNotReady", "0/1 relay pods ready", 1)],
        [Event("Warning", "NotReady", "0/1 relay pods ready")], id="lost",
    ),
    pytest.param(
        [{"type": "Ready", "status": "True", "reason": "RelaysReady", "message": ""}],
        [Condition("Ready", "False", "Paused", "paused", 1)],
        [Event("Normal", "NotReady", "paused")], id="paused-on-purpose",
    ),
]


@pytest.mark.parametrize(("before", "after", "events"), TRANSITIONS)
def test_events_on_transitions_only(
    before: list[dict[str, Any]], after: list[Condition], events: list[Event]
) -> None:
    assert transition_events(before, after) == events


def test_report_of_a_ready_tunnel() -> None:
    spec = parse_spec(body({"ttl": "1h", "service": {"port": 80}}))
    created = NOW - timedelta(minutes=5)
    result = report(
        name="tunnel", namespace="team", previous={}, validity=valid(3), spec=spec,
        deployment=deployment(1, replicas=1, updatedReplicas=1, readyReplicas=1,
                              availableReplicas=1),
        service={"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}},
        expires=created + timedelta(hours=1), now=NOW,
    )
    assert result.phase == "Ready"
    assert result.status == {
        "observedGeneration": 3,
        "phase": "Ready",
        "replicas": 1,
        "readyReplicas": 1,
        "serviceAddress": "tunnel.team.svc:80",
        "listen": "TCP-LISTEN:1433,fork,reuseaddr",
        "connect": "TCP:db:1433",
        "expiresAt": "2026-01-02T03:59:05Z",
        "conditions": [
            {"type": "Valid", "status": "True", "reason": "SpecValid",
             "message": "the spec is valid", "lastTransitionTime": "2026-01-02T03:04:05Z",
             "observedGeneration": 3},
            {"type": "Ready", "status": "True", "reason": "RelaysReady",
             "message": "1/1 relay pods ready; clients connect to tunnel.team.svc:80",
             "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 3},
        ],
    }
    assert result.events == (Event("Normal", "Ready", result.status["conditions"][1]["message"]),)  # type: ignore[index]


def test_report_of_an_invalid_spec_keeps_what_runs() -> None:
    result = report(
        name="tunnel", namespace="team", previous={"listen": "TCP-LISTEN:1,fork"},
        validity=invalid(SpecError("spec.listen", "bad"), 2), spec=None,
        deployment=None, service=None, expires=None, now=NOW,
    )
    assert "listen" not in result.status and "expiresAt" not in result.status
    assert result.status["serviceAddress"] is None  # a merge patch removes it
    assert result.status["phase"] == "Invalid"


def test_operator_metrics_render() -> None:
    metrics = OperatorMetrics()
    metrics.reconciliations["applied"] += 2
    metrics.api_errors = 3
    metrics.events["Warning"] += 1
    metrics.phases.update({"a/x": "Ready", "a/y": "Ready", "b/z": "Invalid"})
    text = metrics.render()
    assert 'relay_operator_reconciliations_total{result="applied"} 2\n' in text
    assert 'relay_operator_reconciliations_total{result="invalid"} 0\n' in text
    assert "relay_operator_api_errors_total 3\n" in text
    assert 'relay_operator_events_total{type="Warning"} 1\n' in text
    assert 'relay_operator_tunnels{phase="Ready"} 2\n' in text
    assert 'relay_operator_tunnels{phase="Invalid"} 1\n' in text
    assert "# TYPE relay_operator_tunnels gauge\n" in text
