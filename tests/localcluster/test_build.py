"""The multicall binary's Go module and the cache key of its build."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from e2e.localcluster import build
from e2e.localcluster.component import ClusterError
from e2e.localcluster.settings import COMMANDS, RELEASE, ClusterSettings

GO_MOD = (build.MODULE_DIR / "go.mod").read_text()


def replaces(go_mod: str) -> dict[str, str]:
    """``old => new`` of a go.mod's replace directives (block or single line)."""
    found: dict[str, str] = {}
    for line in go_mod.splitlines():
        match = re.match(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+(.+?)\s*$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def requires(go_mod: str) -> dict[str, str]:
    """module -> version of a go.mod's require directives."""
    found: dict[str, str] = {}
    for line in go_mod.splitlines():
        match = re.match(r"^\s*(?:require\s+)?([\w./\-~]+)\s+(v\S+)(\s*//.*)?$", line)
        if match and "=>" not in line:
            found[match.group(1)] = match.group(2)
    return found


@pytest.fixture(scope="module")
def kubernetes_go_mod() -> str:
    """The pinned release's own go.mod, from the Go module cache (or the module proxy)."""
    go = shutil.which("go") or build.FALLBACK_GO
    if not Path(go).exists():
        pytest.fail("no `go` command: the local cluster is built with Go")
    result = subprocess.run(
        # `list -m` fetches only the module's go.mod (and its info), not its sources.
        [go, "list", "-m", "-json", f"k8s.io/kubernetes@{RELEASE}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=build.MODULE_DIR,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(json.loads(result.stdout)["GoMod"]).read_text()


def test_module_requires_the_pinned_release() -> None:
    assert build.required_release(GO_MOD) == RELEASE
    assert requires(GO_MOD)["k8s.io/kubernetes"] == RELEASE


def test_every_staging_module_is_replaced_by_its_published_version(kubernetes_go_mod: str) -> None:
    """Kubernetes' go.mod maps each k8s.io/* staging module to ./staging/src/...; ours maps
    each of them (and nothing else) to the published module of the same release."""
    staging = {
        module
        for module, target in replaces(kubernetes_go_mod).items()
        if target.startswith("./staging/src/")
    }
    assert len(staging) > 25
    staging_version = "v0." + RELEASE.removeprefix("v1.")
    assert replaces(GO_MOD) == {module: f"{module} {staging_version}" for module in staging}


def test_etcd_is_the_version_kubernetes_names(kubernetes_go_mod: str) -> None:
    module = "go.etcd.io/etcd/server/v3"
    assert requires(GO_MOD)[module] == requires(kubernetes_go_mod)[module]


def test_version_stamps() -> None:
    flags = build.version_ldflags("v1.34.4").split()
    assert flags[:2] == ["-s", "-w"]
    stamps = dict(flags[i + 1].split("=", 1) for i in range(len(flags)) if flags[i] == "-X")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert stamps[f"{package}.gitVersion"] == "v1.34.4"
        assert stamps[f"{package}.gitMajor"] == "1"
        assert stamps[f"{package}.gitMinor"] == "34"
        assert stamps[f"{package}.gitTreeState"] == "clean"


@pytest.mark.parametrize("release", ["1.34.4", "v1.34", "v1.34.4-rc.0", "latest"])
def test_bad_release_is_refused(release: str) -> None:
    with pytest.raises(ClusterError, match=r"vMAJOR\.MINOR\.PATCH"):
        build.version_ldflags(release)


def test_cache_key_follows_release_and_sources(tmp_path: Path) -> None:
    settings = ClusterSettings(state_dir=tmp_path / "s", cache_root=tmp_path / "c")
    key = build.build_key(settings, "go1.26.8")
    assert key.startswith(f"{RELEASE} go1.26.8 ")
    assert key.split()[-1] == build.source_hash()
    assert build.build_key(settings, "go1.26.9") != key
    other = ClusterSettings(state_dir=tmp_path / "s", cache_root=tmp_path / "c", release="v1.34.5")
    assert build.build_key(other, "go1.26.8") != key


def test_cached_binaries_need_the_key_and_every_link(tmp_path: Path) -> None:
    settings = ClusterSettings(state_dir=tmp_path / "s", cache_root=tmp_path / "c")
    assert not build.binaries_current(settings, "k")
    settings.bin_dir.mkdir(parents=True)
    binary = settings.bin_dir / build.BINARY
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    for command in COMMANDS:
        settings.binary(command).symlink_to(build.BINARY)
    (settings.bin_dir / ".build-key").write_text("k\n")
    assert build.binaries_current(settings, "k")
    assert not build.binaries_current(settings, "other")
    settings.binary("kubelet").unlink()
    assert not build.binaries_current(settings, "k")


def test_release_mismatch_is_refused_before_building(tmp_path: Path) -> None:
    settings = ClusterSettings(
        state_dir=tmp_path / "s", cache_root=tmp_path / "c", release="v1.35.0"
    )
    with pytest.raises(
        ClusterError, match=r"requires k8s.io/kubernetes v1.34.4, the settings pin v1.35.0"
    ):
        build.build_binaries(settings, lambda _line: None)
    assert not os.path.exists(settings.bin_dir)


def test_module_path_is_the_go_mod_one() -> None:
    assert GO_MOD.splitlines()[0] == f"module {build.MODULE_PATH}"
