"""The plugin's own line writer writes exactly what rich's ``print`` would, or leaves it to rich."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.text import Text

from kubectl_relay.plugin import events, tracing
from kubectl_relay.plugin.cli.terminal import Renderer, rendered_line

COLOR_SYSTEMS = (None, "standard", "256", "truecolor")


def console(color_system: str | None, width: int = 100, **options: object) -> Console:
    """A console writing to a string, a terminal when it has colours; ``options`` override."""
    settings = {"soft_wrap": True, "highlight": False, **options}
    return Console(
        file=io.StringIO(), width=width, color_system=color_system,  # type: ignore[arg-type]
        force_terminal=color_system is not None, **settings,  # type: ignore[arg-type]
    )


def header() -> Text:
    """A trace block's header: a prefix, then three differently styled parts."""
    text = Text("[2] #7 ")
    text.append("> 2026/12/07 06:00:01.000123", style="bold green")
    text.append("  → to target", style="green")
    text.append("  length=18 from=0 to=17")
    return text


def overlapping() -> Text:
    text = Text("base then bold then both", style="cyan")
    text.stylize("bold", 5, 24)
    text.stylize("underline on red", 15, 19)
    return text


SAMPLES = {
    "one style": lambda: Text("connection 3 from 127.0.0.1:50000", style="cyan"),
    "unstyled": lambda: Text("  GET /[x] HTTP/1.1\\r"),
    "markup-like": lambda: Text("[bold]pod[/bold] :smile: [red]", style="yellow"),
    "control codes": lambda: Text("a\x1b[31mb\x07c\x08d", style="dim"),
    "wide characters": lambda: Text("данные 数据 → ←", style="magenta"),
    "header": header,
    "overlapping spans": overlapping,
    "empty": lambda: Text(""),
}


def printed_by_rich(color_system: str | None, text: Text) -> str:
    out = console(color_system)
    out.print(text)
    return out.file.getvalue()  # type: ignore[attr-defined]


def written_by_renderer(color_system: str | None, text: Text) -> str:
    out = console(color_system)
    Renderer(out).line(text)
    return out.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("color_system", COLOR_SYSTEMS)
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_a_line_is_written_as_rich_prints_it(color_system: str | None, sample: str) -> None:
    text = SAMPLES[sample]()
    assert rendered_line(console(color_system), text) is not None  # the fast way is taken
    assert written_by_renderer(color_system, text) == printed_by_rich(color_system, text)


@pytest.mark.parametrize("color_system", COLOR_SYSTEMS)
def test_styled_lines_carry_their_colours_and_plain_ones_none(color_system: str | None) -> None:
    written = written_by_renderer(color_system, header())
    assert ("\x1b[" in written) == (color_system is not None)
    assert Text.from_ansi(written).plain == header().plain + "\n"


@pytest.mark.parametrize(
    "text",
    [
        Text("a\tb", style="cyan"),  # rich expands tabs
        Text("two\nlines", style="cyan"),
        Text("trailing space   ", style="cyan"),  # rich strips it past the width
    ],
    ids=["tab", "newline", "trailing-space"],
)
@pytest.mark.parametrize("color_system", [None, "truecolor"])
def test_what_needs_layout_is_left_to_rich(color_system: str | None, text: Text) -> None:
    assert rendered_line(console(color_system), text) is None
    assert written_by_renderer(color_system, text) == printed_by_rich(color_system, text)


@pytest.mark.parametrize(
    "options",
    [{"record": True}, {"no_color": True}, {"quiet": True}, {"soft_wrap": False}],
    ids=["record", "no-color", "quiet", "wrapping"],
)
def test_consoles_that_need_rich_get_rich(options: dict[str, object]) -> None:
    out = console("truecolor", width=20, **options)
    line = Text("a line longer than twenty cells", style="bold cyan")
    assert rendered_line(out, line) is None
    Renderer(out).line(line)
    reference = console("truecolor", width=20, **options)
    reference.print(line)
    assert out.file.getvalue() == reference.file.getvalue()  # type: ignore[attr-defined]
    if options.get("record"):
        assert "a line longer" in out.export_text()


def test_a_trace_renders_the_same_either_way() -> None:
    """A whole block (header and payload rows) through the renderer, against rich alone."""
    block = tracing.Block(
        ">", "2026/12/07 06:00:01.000123", 18, 0, 17, "GET / HTTP/1.0\\r\n\\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    )
    fast = console("256")
    Renderer(fast, tunnels=2).show(events.Traced(1, "p", block, 7))
    slow = console("256")

    class RichOnly(Renderer):
        def line(self, text: Text | str, style: str = "") -> None:
            self.console.print(text if isinstance(text, Text) else Text(text, style=style))

    RichOnly(slow, tunnels=2).show(events.Traced(1, "p", block, 7))
    written = fast.file.getvalue()  # type: ignore[attr-defined]
    assert written == slow.file.getvalue()  # type: ignore[attr-defined]
    assert written.count("\n") == 3 and "[2] #7 " in written
