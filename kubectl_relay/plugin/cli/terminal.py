"""The terminal of ``kubectl relay``: its consoles and how session events are shown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import click
from rich.console import COLOR_SYSTEMS, Console
from rich.status import Status
from rich.text import Text

from .. import events, tracing
from ..proxying import proxied
from ..summary import Exchange


@dataclass
class Terminal:
    """The consoles the CLI writes to: ``out`` (progress, trace) and ``err`` (errors)."""

    out: Console
    err: Console

    @classmethod
    def standard(cls) -> Terminal:
        """Consoles on stdout and stderr; lines are never wrapped (traces are copied)."""
        out = Console(soft_wrap=True, highlight=False)
        if not out.is_terminal:
            out = Console(soft_wrap=True, highlight=False, width=240)  # tables unwrapped in pipes
        return cls(out, Console(stderr=True, soft_wrap=True, highlight=False))


_ARROWS = {">": "→", "<": "←"}


@dataclass
class Renderer:
    """Shows session events: a spinner while relay pods start, then one line per event."""

    console: Console
    tunnels: int = 1
    status: Status | None = None
    #: The tunnels' names (a tunnel file's), shown instead of their numbers.
    names: Sequence[str] = ()
    _ready: set[int] = field(default_factory=set)

    def __call__(self, event: events.SessionEvent) -> None:
        self.show(event)

    def _prefix(self, tunnel: int, connection: int | None = None) -> str:
        """``[tunnel] `` (its name, or its number when there are several), ``#connection ``."""
        if self.names:
            prefix = f"[{self.names[tunnel]}] "
        else:
            prefix = f"[{tunnel + 1}] " if self.tunnels > 1 else ""
        return prefix + (f"#{connection} " if connection is not None else "")

    def _spin(self, text: str) -> None:
        if self.status is None:
            self.status = self.console.status(text)
            self.status.start()
        else:
            self.status.update(text)

    def _stop_spinning(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def line(self, text: Text | str, style: str = "") -> None:
        """Print one line (never markup: pod names and data may hold brackets)."""
        out = text if isinstance(text, Text) else Text(text, style=style)
        rendered = None if self.status is not None else rendered_line(self.console, out)
        if rendered is None:
            self.console.print(out)
            return
        try:
            self.console.file.write(rendered)
            self.console.file.flush()
        except BrokenPipeError:
            self.console.on_broken_pipe()  # as rich does: quiet exit, stdout to /dev/null

    def show(self, event: events.SessionEvent) -> None:
        """Render one event."""
        match event:
            case events.Listening(tunnel, address, protocol):
                self.line(f"{self._prefix(tunnel)}Listening on {address} ({protocol})", "dim")
            case events.PodCreating(tunnel, pod, namespace, target, endpoint):
                where = f" → {endpoint}" if endpoint else ""
                self._spin(f"Creating relay pod {namespace}/{pod} for {target}{where}")
            case events.PodWaiting(tunnel, pod, reason, message):
                detail = f": {message}" if message else ""
                self._spin(f"Waiting for relay pod {pod} ({reason}{detail})")
            case events.PodEvent(tunnel, pod, kind, reason, message):
                self.line(f"{self._prefix(tunnel)}{pod}: {kind} {reason}: {message}", "yellow")
            case events.TunnelReady(tunnel, listen, target, endpoint, pod, namespace):
                self._ready.add(tunnel)
                if len(self._ready) >= self.tunnels:
                    self._stop_spinning()
                text = Text(self._prefix(tunnel))
                if listen:
                    text.append(f"Forwarding {listen} → {target}", style="bold green")
                else:
                    text.append(f"Running relay {target}", style="bold green")
                if endpoint:
                    text.append(f" ({endpoint})")
                text.append(f" via pod {namespace}/{pod}", style="dim")
                self.line(text)
                if listen:
                    self.line("Press Ctrl-C to stop; the relay pod is deleted then.", "dim")
            case events.ConnectionOpened(tunnel, number, peer):
                self.line(f"{self._prefix(tunnel)}connection {number} from {peer}", "cyan")
            case events.ConnectionClosed(tunnel, number, sent, received, error):
                closed = f"{self._prefix(tunnel)}connection {number} closed: {sent} bytes sent, "
                closed += f"{received} received"
                self.line(closed + (f" ({error})" if error else ""), "red" if error else "cyan")
            case events.ForwardRetry(tunnel, reason, delay, connection):
                self.line(
                    f"{self._prefix(tunnel, connection)}port-forward failed ({reason}); "
                    f"retrying in {delay:g}s",
                    "yellow",
                )
            case events.PodReplaced(tunnel, old, reason):
                self.line(
                    f"{self._prefix(tunnel)}{reason}; starting a new relay pod (was {old})",
                    "yellow",
                )
            case events.PodDeleted(tunnel, pod):
                self.line(f"{self._prefix(tunnel)}deleted relay pod {pod}", "dim")
            case events.Traced(tunnel, pod, traced, connection):
                self.trace(tunnel, traced, connection)
            case events.Summarized(tunnel, exchange):
                self.line(self._prefix(tunnel, exchange.connection) + summary_text(exchange))
            case events.Exposed(tunnel, service, namespace, port, local, pod):
                text = Text(self._prefix(tunnel))
                text.append(f"Exposing service {namespace}/{service}:{port} → {local}",
                            style="bold green")
                text.append(f" via pod {namespace}/{pod}", style="dim")
                self.line(text)
                self.line("Press Ctrl-C to stop; the Service and relay pod are deleted then.",
                          "dim")
            case events.Notice(text, warning):
                self.line(text, "yellow" if warning else "dim")

    def trace(
        self, tunnel: int, event: tracing.TraceEvent, connection: int | None = None
    ) -> None:
        """Render one trace event: blocks with their header and payload as socat prints it."""
        prefix = self._prefix(tunnel, connection)
        match event:
            case tracing.Block():
                style = "green" if event.to_target else "magenta"
                who = "to target" if event.to_target else "from target"
                header = Text(prefix)
                header.append(f"{event.direction} {event.time}", style=f"bold {style}")
                header.append(f"  {_ARROWS[event.direction]} {who}", style=style)
                header.append(f"  length={event.length} from={event.start} to={event.end}")
                self.line(header)
                payload = event.payload[:-1] if event.payload.endswith("\n") else event.payload
                for row in payload.split("\n"):
                    self.line(Text(f"{prefix}  {row}"))
            case tracing.Accepted():
                self.line(f"{prefix}{event.time} relay accepted a connection", "cyan")
            case tracing.LogLine():
                if event.level in "EF":
                    self.line(f"{prefix}{event.time} relay error: {event.message}", "bold red")
                elif event.level == "W":
                    self.line(f"{prefix}{event.time} relay warning: {event.message}", "yellow")
                elif event.level == "N" and (request := proxied(event.message)) is not None:
                    protocol, destination = request
                    self.line(f"{prefix}{event.time} proxy: {protocol} to {destination}", "cyan")
            case tracing.Output():
                self.line(f"{prefix}{event.text}", "dim")

    def close(self) -> None:
        """Stop the spinner."""
        self._stop_spinning()


def rendered_line(console: Console, text: Text) -> str | None:
    """What ``console.print(text)`` writes for ``text``, or None where only rich can say.

    Why: rich lays out every ``print`` (measures, wraps, crops), about 80 µs a line here,
    and a busy tunnel prints three lines a connection, a ``-v`` trace one per row of data:
    a quarter of the plugin's time at ten clients went there. One line that needs no layout is its
    styled segments, written as rich writes them (about 7 µs). rich keeps what this skips:
    a spinner on screen (the caller's check), wrapping, recording, Windows' legacy
    console, Jupyter, ``NO_COLOR``, tabs (expanded), more than one line, and trailing
    whitespace (stripped past the width).
    """
    plain = text.plain
    if (
        not console.soft_wrap or console.record or console.quiet or console.legacy_windows
        or console.is_jupyter or "\n" in plain or "\t" in plain or plain[-1:].isspace()
    ):
        return None
    colors = COLOR_SYSTEMS.get(console.color_system or "")
    if colors is None:
        return plain + text.end
    if console.no_color:
        return None
    # As rich's own layout ends: joining the line turns its base style into a span.
    line = Text("\n").join([text])
    return "".join(
        segment.style.render(segment.text, color_system=colors) if segment.style
        else segment.text
        for segment in line.render(console)
    ) + text.end


def summary_text(exchange: Exchange) -> str:
    """A ``--summary`` line (without its prefix)."""
    took = _duration(exchange.seconds)
    sizes = f"{exchange.sent} B sent, {exchange.received} B received, {took}"
    if not exchange.is_http:
        return f"connection from {exchange.target}: {sizes}"
    answer = f"{exchange.status} {exchange.reason}".strip() if exchange.status else exchange.reason
    return f"{exchange.method} {exchange.target} → {answer}  ({sizes})"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def terminal_of(ctx: click.Context) -> Terminal:
    """The terminal ``main`` passed to the command, or the standard one."""
    terminal = ctx.find_object(Terminal)
    return terminal if terminal is not None else Terminal.standard()
