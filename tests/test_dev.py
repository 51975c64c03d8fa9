"""``./dev``: its usage, and the one line after which kubectl, helm and the plugin are on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import scaled

ROOT = Path(__file__).resolve().parent.parent
#: The venv ./dev made (RELAY_VENV moves it).
VENV = ROOT / os.environ.get("RELAY_VENV", ".venv")


def dev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "dev"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )


def test_without_a_command_dev_prints_its_usage() -> None:
    result = dev()
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: ./dev COMMAND [ARGS]\n")
    assert "set -euo" not in result.stdout and "#" not in result.stdout
    wrong = dev("tset")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr == './dev: unknown command "tset"\n' + result.stdout


def test_the_printed_line_puts_everything_on_path(tmp_path: Path) -> None:
    if not (ROOT / "bin" / "kubectl").exists():
        pytest.fail("no bin/kubectl: run ./dev setup")
    line = dev("env").stdout
    assert line == f'export PATH="{ROOT}/bin:{VENV}/bin:$PATH"\n'
    # A shell with nothing of ours on PATH, as a user's is before the line.
    script = (
        f"{line}"
        "for tool in kubectl helm kubectl-relay kubectl_complete-relay relay python; do\n"
        '  command -v "$tool"\n'
        "done\n"
        "kubectl relay --help\n"
        'python -c "import aiohttp, kubectl_relay"\n'
    )
    result = subprocess.run(
        ["/bin/bash", "-c", script],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = result.stdout.splitlines()[:6]
    assert found == [
        f"{ROOT}/bin/kubectl",
        f"{ROOT}/bin/helm",
        f"{VENV}/bin/kubectl-relay",
        f"{VENV}/bin/kubectl_complete-relay",
        f"{VENV}/bin/relay",
        f"{VENV}/bin/python",
    ]
    assert "Usage: kubectl relay [OPTIONS] [COMMAND] [ARGS]..." in result.stdout
