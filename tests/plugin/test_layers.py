"""The plugin's layering: only its ``cli`` package imports click and rich; the library never prints."""

from __future__ import annotations

import ast
from pathlib import Path

import kubectl_relay.plugin

PLUGIN = Path(kubectl_relay.plugin.__file__).parent
CLI = PLUGIN / "cli"


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_cli_imports_click_and_rich() -> None:
    library = [path for path in PLUGIN.rglob("*.py") if CLI not in path.parents]
    assert len(library) > 10 and (CLI / "__init__.py").is_file()
    for path in library:
        assert not imported(path) & {"click", "rich"}, path.name


def test_the_library_never_prints() -> None:
    for path in PLUGIN.rglob("*.py"):
        tree = ast.parse(path.read_text())
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        ]
        assert not calls, path.name
