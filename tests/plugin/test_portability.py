"""The plugin runs on macOS and Windows too: no POSIX-only module or call on its path.

Tested here on Linux by taking away what Windows lacks: the POSIX-only
modules the engine's runtime uses (``termios``, ``resource``, ``pty``...) and
``signal.SIGHUP``. macOS has all of them; what differs there (no
``/proc``) the plugin does not use either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kubectl_relay.plugin
from tests.conftest import scaled

PLUGIN = Path(kubectl_relay.plugin.__file__).parent
#: What the engine's runtime imports and Windows lacks (asyncio's own fcntl stays).
TAKEN_AWAY = ("termios", "tty", "pty", "resource", "pwd", "grp")
#: Not to be imported by the plugin's modules at all.
POSIX_ONLY = (*TAKEN_AWAY, "fcntl", "posix")

WITHOUT_POSIX = f"""
import json, signal, sys
sys.modules.update(dict.fromkeys({list(TAKEN_AWAY)!r}, None))
del signal.SIGHUP
from kubectl_relay.plugin import cli
codes = [cli.main(argv) for argv in (["ls", "--help"], ["tcp", "svc/web:80", "--listen", "0",
         "--request-timeout", "2s"], ["run", "--", "TCP:web:80", "-"])]
cli.complete_main(["tcp", "--li"])
print(json.dumps(codes))
"""


def test_the_plugin_works_without_posix_only_modules(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_POSIX],
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    *shown, codes = result.stdout.splitlines()
    # ls --help, an unreachable cluster (3, not an import error), run refused (2).
    assert codes == "[0, 3, 2]"
    assert "--listen\t" in "\n".join(shown) and shown[-1] == ":4"
    assert "error: cannot reach the API server at http://127.0.0.1:9" in result.stderr
    assert "`kubectl relay run` checks the relay's command line with the engine" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_posix_only_call_in_the_plugins_source() -> None:
    for path in PLUGIN.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not set(names) & set(POSIX_ONLY), (path.name, names)
            if isinstance(node, ast.Attribute):
                # os.setsid/getpgid/killpg and signal.SIGHUP (SIGHUP only by name, guarded).
                assert node.attr not in ("setsid", "getpgid", "killpg", "SIGHUP", "fork"), (
                    path.name,
                    node.lineno,
                )
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith("/proc/"), (path.name, node.lineno)
