"""Installed as users install kubectl plugins: with the real krew from our own index, and pipx.

Nothing leaves the machine: krew downloads the archive from an HTTP server on
loopback, clones the index from a local git repository, and pip installs the
dependencies from ``./dev setup``'s wheelhouse (``PIP_NO_INDEX``). Then the
real kubectl finds the installed plugin and its completion command on PATH.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import gotools, krew_release
from tests.conftest import scaled

# Each installs the package into fresh environments with pip: beside a busy worker (./dev
# test runs two) the pipx install took 90 s, close to pytest's default 120 s timeout.
pytestmark = pytest.mark.timeout(300)

COMMANDS = ["expose", "gc", "ls", "proxy", "run", "tcp", "tls", "udp"]


def tool(name: str) -> Path:
    try:
        return gotools.TOOLS[name]()
    except gotools.ToolUnavailable as exc:
        pytest.skip(f"no {name}: {exc}")


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A user's environment: a fresh HOME, pip offline on the wheelhouse, kubectl on PATH.

    The wheel this test builds is built offline too (pip reads PIP_* here).
    """
    wheelhouse = krew_release.wheelhouse_dir()
    if not any(wheelhouse.glob("*.whl")):
        pytest.fail(f"no wheels in {wheelhouse}: run ./dev setup")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    home = tmp_path / "home"
    home.mkdir()
    kubectl = tool("kubectl")
    # git for krew; the Python the plugin installs itself with (not this venv's).
    path = [str(kubectl.parent), "/usr/local/bin", "/usr/bin", "/bin"]
    return {
        "HOME": str(home),
        "PATH": os.pathsep.join(path),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "KUBECTL_RELAY_PYTHON": os.path.realpath(sys.executable),
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
    }


@pytest.fixture
def archive_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback, and its URL."""
    folder = tmp_path / "releases"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            del args

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def run(env: dict[str, str], *argv: str | Path, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        check=False,
    )
    assert result.returncode == 0, (
        f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout + result.stderr


def completed_words(output: str) -> list[str]:
    """The candidates of ``kubectl __complete`` (its last line is the directive)."""
    lines = output.splitlines()
    words = [line.split("\t")[0] for line in lines if not line.startswith((":", "Completion "))]
    return [word for word in words if word and not word.startswith("[Debug]")]


def test_krew_installs_the_plugin_from_our_index(
    offline: dict[str, str], archive_server: tuple[Path, str], tmp_path: Path
) -> None:
    folder, base_url = archive_server
    # The release as a maintainer makes it (archive from this checkout, index
    # pointing at it), served from loopback.
    archive, index = krew_release.release(base_url, tmp_path / "dist")
    archive.rename(folder / archive.name)
    krew_root = tmp_path / "krew"
    krew_bin = tmp_path / "krew-cmd"
    krew_bin.mkdir()
    (krew_bin / "kubectl-krew").symlink_to(tool("krew"))
    env = {
        **offline,
        "KREW_ROOT": str(krew_root),
        "KREW_NO_UPGRADE_CHECK": "1",
        "PATH": os.pathsep.join([str(krew_root / "bin"), str(krew_bin), offline["PATH"]]),
    }

    run(env, "kubectl", "krew", "index", "add", "kubectl-relay", index)
    installed = run(env, "kubectl", "krew", "install", "kubectl-relay/relay")
    assert "Installed plugin: relay" in installed
    assert "kubectl_complete-relay" in installed  # the caveat says how to complete
    listed = run(env, "kubectl", "krew", "list")
    assert "kubectl-relay/relay" in listed

    # The first run installs the wheel beside the launcher, then runs it.
    first = run(env, "kubectl", "relay", "--help", timeout=300)
    assert "kubectl relay: first run, installing into" in first
    assert "Usage: kubectl relay [OPTIONS] [COMMAND] [ARGS]..." in first
    again = run(env, "kubectl", "relay", "--version")
    assert again == "kubectl relay, version 0.1.0\n"

    # The caveat's link gives kubectl the completion command.
    (krew_root / "bin" / "kubectl_complete-relay").symlink_to("kubectl-relay")
    assert completed_words(run(env, "kubectl", "__complete", "relay", "")) == COMMANDS

    run(env, "kubectl", "krew", "uninstall", "relay")
    assert not (krew_root / "store" / "relay").exists()


def test_pipx_installs_the_plugin_and_its_completion(
    offline: dict[str, str], tmp_path: Path
) -> None:
    pipx = Path(sys.executable).with_name("pipx")
    if not pipx.exists():
        pytest.skip("pipx is not installed (./dev setup installs it)")
    wheel = krew_release.build_wheel(tmp_path / "wheel")
    pipx_bin = tmp_path / "pipx-bin"
    env = {
        **offline,
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(pipx_bin),
        "PIPX_DEFAULT_PYTHON": offline["KUBECTL_RELAY_PYTHON"],
        "PATH": os.pathsep.join([str(pipx_bin), offline["PATH"]]),
    }
    run(env, pipx, "install", wheel, timeout=300)
    commands = sorted(p.name for p in pipx_bin.iterdir())
    assert commands == ["kubectl-relay", "kubectl_complete-relay", "relay", "relay-operator"]
    assert "Usage: kubectl relay [OPTIONS]" in run(env, "kubectl", "relay", "--help")
    assert completed_words(run(env, "kubectl", "__complete", "relay", "")) == COMMANDS
    run(env, pipx, "uninstall", "kubectl-relay")
