"""Pod volumes as host directories, and the rewriting of mount paths for the process.

A container cannot see ``/certs/server.pem`` at that path here: there is no
mount namespace. The kubelet writes each volume into the pod's directory,
then gives the process host paths instead of mount paths:

- every command-line argument and environment value that contains a mount
  path (at the start, or after ``=``, ``,``, ``:``, ``;``, a quote or a
  space, and followed by ``/``, such a separator or the end) gets the host
  directory instead. So ``OPENSSL-LISTEN:443,cert=/certs/server.pem`` becomes
  ``...,cert=/tmp/sandbox-.../volumes/tls/server.pem``;
- ``SANDBOX_MOUNTS`` holds the JSON map mount path -> host path, for programs
  that build paths themselves (``host_path`` below applies it).

Volume types: secret, configMap, projected (secret, configMap, downwardAPI,
serviceAccountToken sources), downwardAPI, emptyDir, hostPath (the host path
itself) and persistentVolumeClaim (a directory per claim, shared by pods).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from .objects import Body, meta, namespace_of

ENV_MOUNTS = "SANDBOX_MOUNTS"

#: Fetch a Secret or ConfigMap: (plural, namespace, name) -> body, or None when missing.
Fetch = Callable[[str, str, str], Awaitable[Body | None]]


class VolumeError(Exception):
    """A volume cannot be set up yet (a missing Secret or ConfigMap): retried later."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(volume, message)
        self.volume = volume
        self.message = message

    def __str__(self) -> str:
        return f'MountVolume.SetUp failed for volume "{self.volume}" : {self.message}'


def secret_data(secret: Body) -> dict[str, bytes]:
    """A Secret's values (``data`` decoded; ``stringData`` too, should a server keep it)."""
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return data


def configmap_data(configmap: Body) -> dict[str, bytes]:
    """A ConfigMap's values (``data`` and ``binaryData``)."""
    data = {k: v.encode() for k, v in (configmap.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (configmap.get("binaryData") or {}).items()})
    return data


def field_value(pod: Body, path: str) -> str:
    """A downward-API ``fieldPath`` of the pod (``metadata.name``, ``status.podIP``...)."""
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta(pod).get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta(pod).get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    node: Any = pod
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, list):  # status.podIPs
        return ",".join(
            str(item.get("ip", item)) if isinstance(item, dict) else str(item) for item in node
        )
    return "" if node is None else str(node)


def _write_items(
    target: Path, data: Mapping[str, bytes], items: list[dict[str, Any]] | None, mode: int
) -> None:
    """Write keys as files (``items`` selects and renames keys)."""
    target.mkdir(parents=True, exist_ok=True)
    chosen = [(i["key"], i.get("path", i["key"]), i.get("mode", mode)) for i in items or []]
    if not items:
        chosen = [(key, key, mode) for key in data]
    for key, relative, file_mode in chosen:
        if key not in data:
            raise KeyError(key)
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[key])
        path.chmod(file_mode)


async def _source_data(
    kind: str, ref: Mapping[str, Any], namespace: str, fetch: Fetch, volume: str
) -> dict[str, bytes] | None:
    """The data of a secret or configMap source; None when missing and optional."""
    name = ref.get("secretName") or ref.get("name") or ""
    plural = "secrets" if kind == "secret" else "configmaps"
    body = await fetch(plural, namespace, name)
    if body is None:
        if ref.get("optional"):
            return None
        raise VolumeError(volume, f'{plural[:-1]} "{name}" not found')
    return secret_data(body) if kind == "secret" else configmap_data(body)


async def materialize(pod: Body, root: Path, fetch: Fetch, *, claims_root: Path) -> dict[str, Path]:
    """Write the pod's volumes under ``root``; return volume name -> host path."""
    namespace = namespace_of(pod)
    paths: dict[str, Path] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = volume["name"]
        target = root / name
        mode = 0o644
        try:
            if "secret" in volume or "configMap" in volume:
                kind = "secret" if "secret" in volume else "configMap"
                source = volume[kind]
                mode = source.get("defaultMode", mode)
                data = await _source_data(kind, source, namespace, fetch, name)
                _write_items(target, data or {}, source.get("items") if data else None, mode)
            elif "projected" in volume:
                mode = volume["projected"].get("defaultMode", mode)
                target.mkdir(parents=True, exist_ok=True)
                for source in volume["projected"].get("sources") or []:
                    await _project(pod, target, source, namespace, fetch, name, mode)
            elif "downwardAPI" in volume:
                mode = volume["downwardAPI"].get("defaultMode", mode)
                _write_downward(pod, target, volume["downwardAPI"].get("items") or [], mode)
            elif "hostPath" in volume:
                target = Path(volume["hostPath"]["path"])
            elif "persistentVolumeClaim" in volume:
                target = claims_root / namespace / volume["persistentVolumeClaim"]["claimName"]
                target.mkdir(parents=True, exist_ok=True)
            else:  # emptyDir and anything without content of its own
                target.mkdir(parents=True, exist_ok=True)
        except KeyError as exc:
            raise VolumeError(name, f"key {exc} not found") from None
        paths[name] = target
    return paths


async def _project(
    pod: Body,
    target: Path,
    source: Mapping[str, Any],
    namespace: str,
    fetch: Fetch,
    volume: str,
    mode: int,
) -> None:
    for kind in ("secret", "configMap"):
        if kind in source:
            data = await _source_data(kind, source[kind], namespace, fetch, volume)
            if data is not None:
                _write_items(target, data, source[kind].get("items"), mode)
    if "downwardAPI" in source:
        _write_downward(pod, target, source["downwardAPI"].get("items") or [], mode)
    if "serviceAccountToken" in source:
        # No token authentication in the sandbox: any token is accepted.
        path = target / source["serviceAccountToken"].get("path", "token")
        path.write_text("sandbox-token")
        path.chmod(mode)


def _write_downward(pod: Body, target: Path, items: list[dict[str, Any]], mode: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in items:
        value = field_value(pod, item["fieldRef"]["fieldPath"]) if "fieldRef" in item else "1"
        path = target / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
        path.chmod(item.get("mode", mode))


def mounts_for(container: Mapping[str, Any], volumes: Mapping[str, Path]) -> dict[str, str]:
    """Mount path -> host path for one container (``subPath`` included)."""
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        host = volumes.get(mount["name"])
        mount_path = str(mount.get("mountPath", "")).rstrip("/")
        if host is None or not mount_path:
            continue  # unknown volume or a mount on "/": nothing sensible to rewrite
        sub = mount.get("subPath")
        mounts[mount_path] = str(host / sub) if sub else str(host)
    return mounts


_SEPARATORS = "=,:; \"'"


def rewrite(text: str, mounts: Mapping[str, str]) -> str:
    """``text`` with every mount path replaced by its host path.

    One pass with the longest mount paths first, so a host path put in is
    never rewritten again by a shorter mount.
    """
    if not mounts:
        return text
    separators = re.escape(_SEPARATORS)
    alternatives = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    pattern = rf"(?<![^{separators}])({alternatives})(?=/|[{separators}]|$)"
    return re.sub(pattern, lambda match: mounts[match.group(1)], text)


def mounts_env(mounts: Mapping[str, str]) -> dict[str, str]:
    """The ``SANDBOX_MOUNTS`` variable for a container's environment."""
    return {ENV_MOUNTS: json.dumps(dict(mounts))} if mounts else {}


def host_path(path: str) -> str:
    """Inside a pod's process: the host path for a path under a mount (else ``path``)."""
    mounts: dict[str, str] = json.loads(os.environ.get(ENV_MOUNTS) or "{}")
    for mount_path in sorted(mounts, key=len, reverse=True):
        if path == mount_path or path.startswith(mount_path + "/"):
            return mounts[mount_path] + path[len(mount_path) :]
    return path
