"""The Pod Security "restricted" settings every relay pod carries.

Shared by the operator's builders and the plugin's ephemeral relay pod, so
that both harden their pods the same way. Pure data: no client, no kopf.

Kubernetes' "restricted" profile asks for: ``runAsNonRoot``, seccomp
``RuntimeDefault`` (or ``Localhost``), ``allowPrivilegeEscalation: false``,
and every capability dropped. The relay goes further: a numeric user and
group (so that a kubelet can check non-root without reading the image), and
a read-only root filesystem (the engine writes nothing).
"""

from __future__ import annotations

from .jsontypes import JSONObject

#: The uid and gid of the relay's user (the "nonroot" id of distroless images).
NONROOT_ID = 65532



def restricted_pod_security_context() -> JSONObject:
    """The pod-level ``securityContext`` (``fsGroup`` makes mounted Secrets readable)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_ID,
        "runAsGroup": NONROOT_ID,
        "fsGroup": NONROOT_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security_context() -> JSONObject:
    """The container-level ``securityContext``: restricted, plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
