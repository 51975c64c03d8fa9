"""From a pod spec to a host command line: environment, ``$(VAR)`` expansion, mount paths.

Pure functions, apart from fetching the Secrets and ConfigMaps that ``env``
and ``envFrom`` name (through the same ``Fetch`` the volumes use).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import podshim
from .images import Image, container_argv
from .objects import Body, meta, namespace_of
from .volumes import Fetch, configmap_data, field_value, mounts_env, rewrite, secret_data

#: Host variables a pod's process keeps (coverage and interpreter settings); a
#: container does not inherit its node's environment, so nothing else passes.
PASSED_THROUGH = ("COVERAGE_PROCESS_START", "PYTHONDONTWRITEBYTECODE", "RELAY_TEST_TIMEOUT_SCALE")


class ContainerConfigError(Exception):
    """The container's configuration names something missing (CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Launch:
    """Everything needed to start one container's process."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables only; ``$$`` is a literal ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR.sub(substitute, text)


async def _key(fetch: Fetch, plural: str, namespace: str, ref: Mapping[str, Any]) -> str | None:
    """One key of a Secret or ConfigMap (``secretKeyRef`` / ``configMapKeyRef``)."""
    kind = "secret" if plural == "secrets" else "configmap"
    body = await fetch(plural, namespace, ref.get("name", ""))
    if body is None:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(f'{kind} "{ref.get("name")}" not found')
    key = ref["key"]
    values = secret_data(body) if plural == "secrets" else configmap_data(body)
    if key in values:
        return values[key].decode(errors="replace")
    if ref.get("optional"):
        return None
    raise ContainerConfigError(
        f"couldn't find key {key} in {kind.title()} {namespace}/{ref.get('name')}"
    )


async def container_env(pod: Body, container: Mapping[str, Any], fetch: Fetch) -> dict[str, str]:
    """The container's own variables: ``envFrom`` first, then ``env`` (later ones win)."""
    namespace = namespace_of(pod)
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, plural in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            if kind not in source:
                continue
            ref = source[kind]
            body = await fetch(plural, namespace, ref.get("name", ""))
            if body is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{plural[:-1]} "{ref.get("name")}" not found')
            values = secret_data(body) if plural == "secrets" else configmap_data(body)
            for key, raw in values.items():
                env[prefix + key] = raw.decode(errors="replace")
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand(str(var["value"]), env)
            continue
        source = var.get("valueFrom") or {}
        value: str | None = ""
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            value = await _key(fetch, "secrets", namespace, source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = await _key(fetch, "configmaps", namespace, source["configMapKeyRef"])
        elif "resourceFieldRef" in source:
            value = "0"  # resources are not enforced in the sandbox
        if value is not None:
            env[name] = value
    return env


def base_env(
    pod: Body, *, pod_ip: str, dns_table: str, bindir: str, home: str, kubeconfig: str | None
) -> dict[str, str]:
    """The variables every container starts with (before the spec's own)."""
    spec = pod.get("spec") or {}
    hostname = spec.get("hostname") or meta(pod).get("name", "")
    repo_root = str(Path(__file__).resolve().parents[3])
    python_path = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)
    env = {
        "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "/usr/bin:/bin")]),
        "PYTHONPATH": python_path,
        "PYTHONUNBUFFERED": "1",  # logs reach `kubectl logs -f` as they are written
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "HOSTNAME": hostname,
        "POD_IP": pod_ip,
        podshim.ENV_POD_IP: pod_ip,
        podshim.ENV_NAMESPACE: namespace_of(pod),
        podshim.ENV_HOSTNAME: hostname,
        podshim.ENV_DNS_TABLE: dns_table,
        podshim.ENV_PARENT_PID: str(os.getpid()),
    }
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    env.update({k: os.environ[k] for k in PASSED_THROUGH if k in os.environ})
    return env


def launch(
    image: Image,
    container: Mapping[str, Any],
    *,
    base: Mapping[str, str],
    own_env: Mapping[str, str],
    mounts: Mapping[str, str],
    cwd: Path,
) -> Launch:
    """The host command line and environment for a container."""
    env = {**base, **image.extra_env}
    env.update({k: rewrite(v, mounts) for k, v in own_env.items()})
    env.update(mounts_env(mounts))
    command: Sequence[str] = [
        rewrite(expand(a, env), mounts) for a in container.get("command") or []
    ]
    args: Sequence[str] = [rewrite(expand(a, env), mounts) for a in container.get("args") or []]
    argv = container_argv(image, command, args)
    working_dir = container.get("workingDir")
    if working_dir:
        mapped = Path(rewrite(working_dir, mounts))
        cwd = mapped if mapped.is_dir() else cwd
    return Launch(argv=argv, env=env, cwd=cwd)
