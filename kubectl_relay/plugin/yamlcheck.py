"""Reading a YAML file by its nodes, so that every mistake can name its line and column.

``compose`` parses the text with PyYAML's composer (``yaml.compose``): the
nodes keep their marks, which a plain ``yaml.safe_load`` drops. A
``NodeReader`` walks them and checks shapes (mappings with known keys,
strings, booleans, one value or a list of them), collecting an
``errors.Mistake`` per problem instead of stopping at the first, so that a
user sees every mistake of a file at once. The tunnel file
(``tunnelfile``) is built on it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from .errors import Mistake, TargetSyntaxError, TunnelFileError

_TYPE_NAMES = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true/false",
    "tag:yaml.org,2002:null": "nothing",
    "tag:yaml.org,2002:timestamp": "a date",
}


def key_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _TYPE_NAMES.get(node.tag, "a value")


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``; did you mean "X"?`` for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f'; did you mean "{close[0]}"?' if close else ""


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def compose(text: str, source: str, empty: str) -> yaml.Node:
    """The root node of ``text`` (``TunnelFileError`` when it is not YAML, or empty:
    ``empty`` says what is accepted)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise TunnelFileError(
            source, [Mistake(source, line, column, "", f"not valid YAML: {problem}")]
        ) from None
    except yaml.YAMLError as exc:
        raise TunnelFileError(
            source, [Mistake(source, 1, 1, "", f"not valid YAML: {exc}")]
        ) from None
    if root is None:
        raise TunnelFileError(source, [Mistake(source, 1, 1, "", "the file is empty", empty)])
    return root


class NodeReader:
    """Checks the shapes of nodes; every problem becomes a ``Mistake`` in ``mistakes``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.mistakes: list[Mistake] = []
        self._constructor = yaml.SafeLoader("")

    def raise_mistakes(self) -> None:
        """``TunnelFileError`` with every mistake, in the file's order, if there is any."""
        if self.mistakes:
            in_order = sorted(self.mistakes, key=lambda mistake: (mistake.line, mistake.column))
            raise TunnelFileError(self.source, in_order)

    def mistake(self, node: yaml.Node, path: str, problem: str, accepted: str = "") -> None:
        mark = node.start_mark
        self.mistakes.append(
            Mistake(self.source, mark.line + 1, mark.column + 1, path, problem, accepted)
        )

    # -- shapes -----------------------------------------------------------------------------------

    def mapping(
        self,
        node: yaml.Node,
        path: str,
        keys: Sequence[str],
        what: str,
        accepted: Sequence[str] = (),
    ) -> dict[str, yaml.Node] | None:
        """The mapping's values by key; unknown and repeated keys are mistakes.

        ``accepted``: the keys to suggest and list, when fewer than ``keys``
        fit here (a tunnel's kind takes only some of them).
        """
        accepted = accepted or keys
        if not isinstance(node, yaml.MappingNode):
            self.mistake(
                node, path, f"{what} must be a mapping, not {describe(node)}", ", ".join(keys)
            )
            return None
        found: dict[str, yaml.Node] = {}
        lines: dict[str, int] = {}
        for key_node, value in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str) or key_node.tag != "tag:yaml.org,2002:str":
                if key == "<<":
                    self.mistake(
                        key_node,
                        path,
                        "merge keys (<<) are not supported",
                        "the top-level namespace, trace and pod as defaults",
                    )
                else:
                    self.mistake(
                        key_node,
                        path,
                        f"a key must be a name, not {describe(key_node)}",
                        ", ".join(keys),
                    )
            elif key in found:
                self.mistake(
                    key_node, key_path(path, key), f"given twice (first on line {lines[key]})"
                )
            elif key not in keys:
                hint = did_you_mean(key, accepted)
                self.mistake(key_node, path, f'unknown key "{key}"{hint}', ", ".join(accepted))
            else:
                found[key] = value
                lines[key] = line_of(key_node)
        return found

    def scalar(
        self, node: yaml.Node, path: str, accepted: str, *, numbers: bool = False
    ) -> str | None:
        """A string (or, with ``numbers``, a number as written: ``8080``)."""
        tags = {"tag:yaml.org,2002:str"}
        if numbers:
            tags |= {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
        if isinstance(node, yaml.ScalarNode) and node.tag in tags:
            return str(node.value)
        expected = "a string or a number" if numbers else "a string"
        self.mistake(node, path, f"must be {expected}, not {describe(node)}", accepted)
        return None

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
            return bool(self._constructor.construct_object(node))
        self.mistake(node, path, f"must be true or false, not {describe(node)}", "true, false")
        return None

    def one_or_more(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
        """A scalar or a non-empty list of them: (node, path) of each."""
        if isinstance(node, yaml.SequenceNode):
            if not node.value:
                self.mistake(node, path, "the list is empty")
            return [(item, key_path(path, index)) for index, item in enumerate(node.value)]
        return [(node, path)]

    def parsed(
        self,
        node: yaml.Node,
        path: str,
        parse: Callable[[str], Any],
        accepted: str,
        *,
        numbers: bool = False,
    ) -> Any:
        """``parse(text)``; its ``ValueError`` becomes a mistake at ``node``."""
        text = self.scalar(node, path, accepted, numbers=numbers)
        if text is None:
            return None
        try:
            return parse(text)
        except TargetSyntaxError as exc:
            self.mistake(node, path, exc.cause, exc.accepted)
        except ValueError as exc:
            self.mistake(node, path, str(exc), accepted if "accepted" not in str(exc) else "")
        return None

    def string_map(self, node: yaml.Node, path: str) -> dict[str, str] | None:
        if not isinstance(node, yaml.MappingNode):
            self.mistake(node, path, f"must be a mapping, not {describe(node)}", "KEY: VALUE")
            return None
        result: dict[str, str] = {}
        for key_node, value in node.value:
            key = self.scalar(key_node, path, "KEY: VALUE")
            text = self.scalar(value, key_path(path, str(key)), "KEY: VALUE", numbers=True)
            if key is not None and text is not None:
                result[key] = text
        return result

    def required(
        self, node: yaml.Node, found: dict[str, yaml.Node], path: str, key: str, accepted: str
    ) -> str | None:
        """The string at ``key`` of the tunnel at ``node``; a mistake when missing."""
        if key not in found:
            self.mistake(node, path, f'"{key}" is missing', accepted)
            return None
        return self.scalar(found[key], key_path(path, key), accepted)
