"""A checker for the Pod Security Standards "restricted" profile, and the project's extras.

Written from the Kubernetes documentation ("Pod Security Standards",
kubernetes.io/docs/concepts/security/pod-security-standards/, the controls
as of Kubernetes 1.30): "restricted" is everything in "baseline" plus its own
controls. Each rule below names its control; a violation is reported as
``"<where>: <control>: <what>"``. Windows-only exemptions are left out: every
pod here is Linux.

``restricted_violations`` is the profile; ``hardening_violations`` adds what
the project asks of its pods on top (read-only root filesystem, requests and
limits, no service-account token where the pod does not talk to the API).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Body = Mapping[str, Any]

#: Baseline "Capabilities": what may be added (the container runtime's defaults).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
#: Baseline "Sysctls": the safe set (1.30: up to the tcp_keepalive ones, 1.29).
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
#: Baseline "SELinux": the allowed types.
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
#: Restricted "Volume Types": the only volume sources allowed.
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def pod_templates(obj: Body) -> Iterator[tuple[str, Body, Body]]:
    """``(where, metadata, pod spec)`` of each pod an object runs (Pod, workloads, CronJob)."""
    kind = obj.get("kind")
    name = f"{kind}/{obj.get('metadata', {}).get('name')}"
    if kind == "Pod":
        yield name, obj.get("metadata", {}), obj.get("spec", {})
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        template = obj["spec"]["template"]
        yield name, template.get("metadata", {}), template.get("spec", {})
    elif kind == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
        yield name, template.get("metadata", {}), template.get("spec", {})


def _containers(spec: Body) -> Iterator[tuple[str, Body]]:
    for key in _CONTAINER_LISTS:
        for container in spec.get(key) or []:
            yield f"{key}[{container.get('name')}]", container


def restricted_violations(spec: Body, metadata: Body | None = None) -> list[str]:
    """Every way the pod spec breaks the "restricted" profile (baseline included)."""
    found: list[str] = []
    annotations: Mapping[str, str] = (metadata or {}).get("annotations") or {}
    pod_security: Body = spec.get("securityContext") or {}

    def add(where: str, control: str, what: str) -> None:
        found.append(f"{where}: {control}: {what}")

    # --- Baseline ---
    if (pod_security.get("windowsOptions") or {}).get("hostProcess"):
        add("pod", "HostProcess", "hostProcess is true")
    for field in _HOST_NAMESPACES:
        if spec.get(field):
            add("pod", "Host Namespaces", f"{field} is true")
    for index, volume in enumerate(spec.get("volumes") or []):
        if "hostPath" in volume:
            add(f"volumes[{index}]", "HostPath Volumes", "hostPath is set")
        sources = set(volume) - {"name"}
        if not sources <= RESTRICTED_VOLUMES:
            add(f"volumes[{index}]", "Volume Types", f"{sorted(sources)} is not allowed")
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            add("metadata", "AppArmor", f"{key}={value}")
    for sysctl in pod_security.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            add("pod", "Sysctls", f"{sysctl.get('name')} is not a safe sysctl")

    contexts: list[tuple[str, Body]] = [("pod", pod_security)]
    contexts += [(where, c.get("securityContext") or {}) for where, c in _containers(spec)]
    for where, context in contexts:
        apparmor = (context.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            add(where, "AppArmor", f"appArmorProfile.type is {apparmor}")
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES:
            add(where, "SELinux", f"seLinuxOptions.type is {selinux['type']}")
        for field in ("user", "role"):
            if selinux.get(field):
                add(where, "SELinux", f"seLinuxOptions.{field} is set")
        seccomp = (context.get("seccompProfile") or {}).get("type")
        if seccomp not in (None, "RuntimeDefault", "Localhost"):
            add(where, "Seccomp", f"seccompProfile.type is {seccomp}")
        # --- Restricted: Running as Non-root User ---
        if context.get("runAsUser") == 0:
            add(where, "Running as Non-root user", "runAsUser is 0")

    for where, container in _containers(spec):
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            add(where, "Privileged Containers", "privileged is true")
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            add(where, "HostProcess", "hostProcess is true")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                add(where, "Host Ports", f"hostPort {port['hostPort']}")
        if context.get("procMount", "Default") != "Default":
            add(where, "/proc Mount Type", f"procMount is {context['procMount']}")
        capabilities = context.get("capabilities") or {}
        added = set(capabilities.get("add") or [])
        if not added <= BASELINE_CAPABILITIES:
            add(where, "Capabilities", f"adds {sorted(added - BASELINE_CAPABILITIES)}")
        # --- Restricted ---
        if context.get("allowPrivilegeEscalation") is not False:
            add(where, "Privilege Escalation", "allowPrivilegeEscalation is not false")
        non_root = context.get("runAsNonRoot")
        if non_root is False or (non_root is None and pod_security.get("runAsNonRoot") is not True):
            add(where, "Running as Non-root", "runAsNonRoot is not true (pod or container)")
        seccomp = (context.get("seccompProfile") or {}).get("type") or (
            pod_security.get("seccompProfile") or {}
        ).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            add(where, "Seccomp", "no RuntimeDefault or Localhost profile (pod or container)")
        if "ALL" not in (capabilities.get("drop") or []):
            add(where, "Capabilities", "does not drop ALL")
        if not added <= {"NET_BIND_SERVICE"}:
            add(where, "Capabilities", f"adds {sorted(added - {'NET_BIND_SERVICE'})}")
    return found


def hardening_violations(spec: Body, *, needs_token: bool = False) -> list[str]:
    """What the project asks of its pods beyond the profile."""
    found: list[str] = []
    pod_security: Body = spec.get("securityContext") or {}
    if not needs_token and spec.get("automountServiceAccountToken") is not False:
        found.append("pod: automountServiceAccountToken is not false")
    uid = pod_security.get("runAsUser")
    if not isinstance(uid, int) or isinstance(uid, bool) or uid == 0:
        found.append("pod: runAsUser is not a numeric non-root id")
    for where, container in _containers(spec):
        context = container.get("securityContext") or {}
        if context.get("readOnlyRootFilesystem") is not True:
            found.append(f"{where}: readOnlyRootFilesystem is not true")
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            for name in ("cpu", "memory"):
                if name not in (resources.get(part) or {}):
                    found.append(f"{where}: no {part}.{name}")
    return found
