"""kubectl and krew, built with Go through the module proxy and kept in the user's cache.

    python -m scripts.gotools kubectl   # prints the path of kubectl, building it once
    python -m scripts.gotools krew      # the same for krew (the krew tests use it)
    python -m scripts.gotools kwok      # kwok, for the operator's scale benchmark

**kubectl** is the release the local cluster pins (``e2e/localcluster/settings.py``).
When the cluster's own build is in the cache, its kubectl is used as it is;
otherwise the module ``scripts/kubectlbuild/`` (committed: go.mod, go.sum,
main.go) builds kubectl from ``k8s.io/kubectl`` alone: a few minutes on a fresh
machine instead of all of Kubernetes, and seconds where the cluster's build
filled Go's build cache (same module versions, same flags).

**krew** is ``go install sigs.k8s.io/krew/cmd/krew@KREW_VERSION`` (its go.mod
has no ``replace`` lines, so no module of ours is needed).

Each binary is rebuilt only when its key changes (the Go version and what it
is built from), as ``e2e/localcluster/build.py`` does for the cluster.
``RELAY_KUBECTL`` / ``RELAY_KREW`` name binaries to use instead (then nothing
is built).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from e2e.localcluster.build import (
    go_environment,
    go_executable,
    go_version,
    source_hash,
    version_ldflags,
)
from e2e.localcluster.component import ClusterError
from e2e.localcluster.settings import ClusterSettings
from scripts.cachedir import user_cache_dir

#: The Go module that builds kubectl.
KUBECTL_MODULE_DIR = Path(__file__).resolve().parent / "kubectlbuild"

#: The krew release (the newest the module proxy serves).
KREW_VERSION = "v0.4.3"
KREW_PACKAGE = "sigs.k8s.io/krew/cmd/krew"

#: kwok (fake nodes and pods against a real API server), for the operator's
#: scale benchmark: the newest release the module proxy serves.
KWOK_VERSION = "v0.8.0"
KWOK_MODULE = "sigs.k8s.io/kwok"
#: kwok's own stages, in its module: nodes become Ready and keep a heartbeat
#: (else the node controller evicts their pods); pods are created, become
#: Ready and are deleted.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat/node-heartbeat.yaml",
    "pod/general/pod-create.yaml",
    "pod/general/pod-init-container-running.yaml",
    "pod/general/pod-init-container-completed.yaml",
    "pod/general/pod-ready.yaml",
    "pod/general/pod-complete.yaml",
    "pod/general/pod-delete.yaml",
)


class ToolUnavailable(RuntimeError):
    """A tool could not be built; the message says why and what to do."""


def tools_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/kubectl-relay/tools``."""
    return user_cache_dir() / "tools"


def kubectl_module_release() -> str:
    """The Kubernetes release that ``kubectlbuild/go.mod`` builds (``k8s.io/kubectl v0.X.Y``)."""
    go_mod = (KUBECTL_MODULE_DIR / "go.mod").read_text()
    for line in go_mod.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "k8s.io/kubectl" and words[1].startswith("v0."):
            return "v1." + words[1].removeprefix("v0.")
    raise ToolUnavailable("scripts/kubectlbuild/go.mod does not require k8s.io/kubectl")


def _cached_build(
    name: str, version: str, key: str, build: Callable[[Path, dict[str, str]], None]
) -> Path:
    """``<tools>/<name>-<version>/<name>``, built by ``build(partial, env)`` unless current."""
    folder = tools_dir() / f"{name}-{version}"
    binary = folder / name
    stamp = folder / ".build-key"
    if os.access(binary, os.X_OK) and stamp.is_file() and stamp.read_text().strip() == key:
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{name}.partial"
    build(partial, go_environment())
    # Same directory, so the rename is atomic: a concurrent run sees either the
    # old binary or the whole new one.
    partial.replace(binary)
    stamp.write_text(key + "\n")
    return binary


def _go(command: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-20:])
        raise ToolUnavailable(f"go build of {what} failed (exit {result.returncode}):\n{tail}")


def kubectl_path() -> Path:
    """A kubectl of the cluster's release: ``RELAY_KUBECTL``, the cluster's, or our build."""
    if explicit := os.environ.get("RELAY_KUBECTL"):
        return Path(explicit)
    settings = ClusterSettings.from_environment()
    release = kubectl_module_release()
    if release != settings.release:
        raise ToolUnavailable(
            f"scripts/kubectlbuild/go.mod builds kubectl {release}, the local cluster pins "
            f"{settings.release}; they must be the same release"
        )
    clusters = settings.binary("kubectl")
    if os.access(clusters, os.X_OK):
        return clusters
    go = _go_or_fail("kubectl")
    key = f"{release} {go_version(go)} {source_hash(KUBECTL_MODULE_DIR)}"

    def build(partial: Path, env: dict[str, str]) -> None:
        command = [go, "build", "-o", str(partial), "-ldflags", version_ldflags(release), "."]
        _go(command, KUBECTL_MODULE_DIR, env, f"kubectl {release}")

    return _cached_build("kubectl", release, key, build)


def krew_path() -> Path:
    """krew: ``RELAY_KREW``, or ``go install`` of ``KREW_VERSION`` into the cache."""
    if explicit := os.environ.get("RELAY_KREW"):
        return Path(explicit)
    return _go_install("krew", KREW_PACKAGE, KREW_VERSION)


def kwok_path() -> Path:
    """kwok: ``RELAY_KWOK``, or ``go install`` of ``KWOK_VERSION`` into the cache.

    kwok refuses to start without stages (what it does to fake nodes and
    pods); its own stage files come with its module source, so the build
    copies them beside the binary, into ``stages/`` (see ``kwok_stages``).
    """
    if explicit := os.environ.get("RELAY_KWOK"):
        return Path(explicit)

    def copy_stages(go: str, env: dict[str, str], folder: Path) -> None:
        module = subprocess.run(
            [go, "list", "-m", "-f", "{{.Dir}}", f"{KWOK_MODULE}@{KWOK_VERSION}"],
            cwd=folder, env=env, capture_output=True, text=True, check=False,
        )
        source = Path(module.stdout.strip()) / "kustomize" / "stage"
        if module.returncode != 0 or not source.is_dir():
            raise ToolUnavailable(f"kwok's stage files are not in its module: {module.stderr}")
        target = folder / "stages"
        target.mkdir(exist_ok=True)
        for stage in KWOK_STAGES:
            (target / Path(stage).name).write_bytes((source / stage).read_bytes())

    return _go_install("kwok", f"{KWOK_MODULE}/cmd/kwok", KWOK_VERSION, copy_stages)


def kwok_stages(binary: Path) -> list[Path]:
    """The stage files beside a kwok binary that ``kwok_path`` built."""
    return [binary.parent / "stages" / Path(stage).name for stage in KWOK_STAGES]


def _go_install(
    name: str,
    package: str,
    version: str,
    after: Callable[[str, dict[str, str], Path], None] | None = None,
) -> Path:
    """``go install package@version`` into ``<tools>/<name>-<version>/<name>``, once."""
    go = _go_or_fail(name)
    key = f"{package}@{version} {go_version(go)}"

    def build(partial: Path, env: dict[str, str]) -> None:
        # `go install pkg@version` builds outside any module; GOBIN is a scratch
        # folder beside the binary so that the rename stays atomic.
        scratch = partial.with_name("gobin")
        env = dict(env, GOBIN=str(scratch))
        _go([go, "install", f"{package}@{version}"], partial.parent, env, name)
        if after is not None:
            after(go, env, partial.parent)
        (scratch / name).replace(partial)
        scratch.rmdir()

    return _cached_build(name, version, key, build)


def _go_or_fail(what: str) -> str:
    try:
        return go_executable()
    except ClusterError as exc:
        variable = f"RELAY_{what.upper()}"
        raise ToolUnavailable(f"{exc}; or set {variable} to a {what} binary") from None


TOOLS: dict[str, Callable[[], Path]] = {
    "kubectl": kubectl_path,
    "krew": krew_path,
    "kwok": kwok_path,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in TOOLS:
        sys.stderr.write(f"usage: python -m scripts.gotools {{{','.join(TOOLS)}}}\n")
        return 2
    try:
        sys.stdout.write(f"{TOOLS[argv[0]]()}\n")
    except ToolUnavailable as exc:
        sys.stderr.write(f"gotools: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
