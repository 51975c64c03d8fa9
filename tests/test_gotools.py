"""scripts/gotools.py: the kubectl it builds is the cluster's release; a chosen binary wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.localcluster.settings import RELEASE
from scripts import gotools


def test_the_kubectl_module_builds_the_clusters_release() -> None:
    assert gotools.kubectl_module_release() == RELEASE
    assert (gotools.KUBECTL_MODULE_DIR / "go.sum").is_file()


def test_a_binary_named_in_the_environment_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_KUBECTL", str(tmp_path / "my-kubectl"))
    monkeypatch.setenv("RELAY_KREW", str(tmp_path / "my-krew"))
    monkeypatch.setenv("RELAY_KWOK", str(tmp_path / "my-kwok"))
    assert gotools.kubectl_path() == tmp_path / "my-kubectl"
    assert gotools.krew_path() == tmp_path / "my-krew"
    assert gotools.kwok_path() == tmp_path / "my-kwok"


def test_without_go_the_message_names_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("e2e.localcluster.build.FALLBACK_GO", str(tmp_path / "no-go"))
    monkeypatch.delenv("RELAY_KREW", raising=False)
    assert gotools.main(["krew"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gotools: build: no `go` command on PATH")
    assert err.endswith("; or set RELAY_KREW to a krew binary\n")
    assert gotools.main(["helm"]) == 2
    assert capsys.readouterr().err == "usage: python -m scripts.gotools {kubectl,krew,kwok}\n"
