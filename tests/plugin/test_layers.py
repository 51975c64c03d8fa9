"""The plugin's layering: only cli.py imports click and rich; the engine imports no plugin code."""

from __future__ import annotations

import ast
from pathlib import Path

import kubectl_relay.plugin

PLUGIN = Path(kubectl_relay.plugin.__file__).parent


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_cli_imports_click_and_rich() -> None:
    for path in PLUGIN.glob("*.py"):
        if path.name != "cli.py":
            assert not imported(path) & {"click", "rich"}, path.name


def test_the_library_never_prints() -> None:
    for path in PLUGIN.glob("*.py"):
        tree = ast.parse(path.read_text())
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        ]
        assert not calls, path.name
