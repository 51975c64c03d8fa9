"""The Pod Security checker itself: it passes a compliant pod and names each broken control."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.operator.podsecurity import hardening_violations, pod_templates, restricted_violations

COMPLIANT: dict[str, Any] = {
    "automountServiceAccountToken": False,
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "514"}],
    },
    "containers": [
        {
            "name": "relay",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            },
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi"},
            },
        }
    ],
    "volumes": [{"name": "tls", "secret": {"secretName": "s"}}, {"name": "tmp", "emptyDir": {}}],
}

Mutation = Callable[[dict[str, Any]], None]


def container(pod: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = pod["containers"][0]
    return result


def context(pod: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = container(pod)["securityContext"]
    return result


BROKEN: list[Any] = [
    pytest.param(lambda p: p.update(hostNetwork=True), "Host Namespaces", id="host-network"),
    pytest.param(lambda p: p.update(hostPID=True), "Host Namespaces", id="host-pid"),
    pytest.param(lambda p: context(p).update(privileged=True), "Privileged", id="privileged"),
    pytest.param(
        lambda p: context(p)["capabilities"].update(add=["SYS_ADMIN"]), "Capabilities", id="cap-add"
    ),
    pytest.param(
        lambda p: context(p)["capabilities"].update(add=["CHOWN"]),
        "Capabilities",
        id="baseline-cap-but-not-restricted",
    ),
    pytest.param(
        lambda p: context(p)["capabilities"].update(drop=["NET_RAW"]),
        "does not drop ALL",
        id="cap-drop",
    ),
    pytest.param(
        lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "HostPath",
        id="host-path",
    ),
    pytest.param(
        lambda p: p["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}),
        "Volume Types",
        id="nfs-volume",
    ),
    pytest.param(
        lambda p: container(p).update(ports=[{"containerPort": 80, "hostPort": 80}]),
        "Host Ports",
        id="host-port",
    ),
    pytest.param(
        lambda p: context(p).update(seLinuxOptions={"type": "spc_t"}), "SELinux", id="selinux"
    ),
    pytest.param(lambda p: context(p).update(procMount="Unmasked"), "/proc", id="proc-mount"),
    pytest.param(
        lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "Seccomp",
        id="seccomp-unconfined",
    ),
    pytest.param(
        lambda p: p["securityContext"].pop("seccompProfile"), "Seccomp", id="seccomp-missing"
    ),
    pytest.param(
        lambda p: p["securityContext"]["sysctls"].append({"name": "net.core.somaxconn"}),
        "Sysctls",
        id="unsafe-sysctl",
    ),
    pytest.param(
        lambda p: context(p).update(allowPrivilegeEscalation=True),
        "Privilege Escalation",
        id="privilege-escalation",
    ),
    pytest.param(
        lambda p: context(p).pop("allowPrivilegeEscalation"),
        "Privilege Escalation",
        id="privilege-escalation-unset",
    ),
    pytest.param(
        lambda p: p["securityContext"].pop("runAsNonRoot"), "Non-root", id="run-as-non-root-unset"
    ),
    pytest.param(
        lambda p: context(p).update(runAsNonRoot=False), "Non-root", id="container-overrides"
    ),
    pytest.param(lambda p: context(p).update(runAsUser=0), "Non-root user", id="uid-0"),
    pytest.param(
        lambda p: p.update(initContainers=[{"name": "init"}]),
        "initContainers[init]",
        id="init-containers-count",
    ),
]


def test_compliant_pod_passes() -> None:
    assert restricted_violations(COMPLIANT) == []
    assert hardening_violations(COMPLIANT) == []


@pytest.mark.parametrize(("mutate", "control"), BROKEN)
def test_each_broken_control_is_named(mutate: Mutation, control: str) -> None:
    pod = copy.deepcopy(COMPLIANT)
    mutate(pod)
    violations = restricted_violations(pod)
    assert violations
    assert any(control in violation for violation in violations), violations


def test_apparmor_annotation() -> None:
    annotations = {"container.apparmor.security.beta.kubernetes.io/relay": "unconfined"}
    assert restricted_violations(COMPLIANT, {"annotations": annotations}) == [
        "metadata: AppArmor: container.apparmor.security.beta.kubernetes.io/relay=unconfined"
    ]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda p: context(p).pop("readOnlyRootFilesystem"), "readOnlyRootFilesystem"),
        (lambda p: container(p)["resources"]["limits"].pop("memory"), "no limits.memory"),
        (lambda p: p.pop("automountServiceAccountToken"), "automountServiceAccountToken"),
        (lambda p: p["securityContext"].pop("runAsUser"), "runAsUser"),
    ],
)
def test_hardening(mutate: Mutation, problem: str) -> None:
    pod = copy.deepcopy(COMPLIANT)
    mutate(pod)
    (violation,) = hardening_violations(pod)
    assert problem in violation


def test_pod_templates_of_workloads() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": COMPLIANT}
    job = {"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": COMPLIANT}}}
    cron = {
        "kind": "CronJob",
        "metadata": {"name": "c"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": COMPLIANT}}}},
    }
    config = {"kind": "ConfigMap", "metadata": {"name": "m"}}
    found = [where for obj in (pod, job, cron, config) for where, _, _ in pod_templates(obj)]
    assert found == ["Pod/p", "Job/j", "CronJob/c"]
