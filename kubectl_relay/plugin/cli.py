"""``kubectl relay``: the commands, their option types, the exit codes, and the terminal.

This is the only module of the plugin that imports click and rich. Commands
collect options, reject conflicting ones with ``click.UsageError`` and call
the library; ``main`` turns every error into its exit code in one place; the
``Renderer`` shows the library's events (progress, the relay's trace) on the
one pair of consoles the CLI creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from click.shell_completion import CompletionItem, ShellComplete
from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from .. import __version__
from ..engine.addresses import parse_address
from ..engine.errors import RelayError
from . import completion, errors, events, inventory, relaypod, tracing
from .kube import Cluster, KubeOptions, kubeconfig_path
from .relaypod import PodSettings, TLSSettings, Toleration, TraceLevel
from .session import Session, SessionOptions, TunnelSpec
from .summary import Exchange
from .targets import (
    TARGET_FORMS,
    ListenAddress,
    Target,
    parse_listen,
    parse_target,
)

T = TypeVar("T")

EXIT_CODES_HELP = """\b
Exit status:
  0    the tunnel was ended with Ctrl-C (or `run`: the relay exited 0)
  1    the tunnel failed while it ran
  2    bad command line (usage, TARGET or --listen syntax)
  3    the cluster refused or lacks something: kubeconfig, rights,
       target not found, wrong port
  4    the local listen address is in use or not bindable
  5    the relay pod did not start: image pull, scheduling, timeout
  128+N  ended by signal N (SIGTERM: 143, SIGHUP: 129)
  run: the relay's own exit status once it ended
"""

# -- parameter types ---------------------------------------------------------------------------


class TargetType(click.ParamType[Target]):
    """TARGET, parsed by ``targets.parse_target``."""

    name = "TARGET"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Target:
        if isinstance(value, Target):
            return value
        try:
            return parse_target(str(value))
        except errors.TargetSyntaxError as exc:
            self.fail(str(exc), param, ctx)

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        """``svc/``, ``pod/``, ``deploy/``, then ``KIND/NAME:PORT`` from the cluster."""
        if "/" not in incomplete:
            return _items(completion.kind_candidates(incomplete))
        return _complete_from_cluster(
            ctx,
            lambda cluster: completion.target_candidates(cluster, cluster.namespace, incomplete),
        )


class ListenType(click.ParamType[ListenAddress]):
    """``[ADDRESS:]PORT``, parsed by ``targets.parse_listen``."""

    name = "[ADDRESS:]PORT"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> ListenAddress:
        if isinstance(value, ListenAddress):
            return value
        try:
            return parse_listen(str(value))
        except errors.TargetSyntaxError as exc:
            self.fail(str(exc), param, ctx)


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


class DurationType(click.ParamType[float]):
    """``30``, ``30s``, ``10m``, ``1h30m``: seconds as a float."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        match = _DURATION.fullmatch(text)
        if not text or match is None:
            self.fail(f'"{text}" is not a duration (accepted: 30, 30s, 10m, 1h30m)', param, ctx)
        hours, minutes, seconds = (float(part or 0) for part in match.groups())
        return hours * 3600 + minutes * 60 + seconds


class KeyValueType(click.ParamType[dict[str, str]]):
    """``KEY=VALUE[,KEY=VALUE...]``: a dict."""

    name = "KEY=VALUE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dict[str, str]:
        if isinstance(value, dict):
            return value
        pairs: dict[str, str] = {}
        for item in str(value).split(","):
            key, equals, val = item.partition("=")
            if not equals or not key.strip():
                self.fail(f'"{item}" is not KEY=VALUE', param, ctx)
            pairs[key.strip()] = val.strip()
        return pairs


_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class TolerationType(click.ParamType[Toleration]):
    """``KEY[=VALUE][:EFFECT]``: without a value the toleration matches any (Exists)."""

    name = "KEY[=VALUE][:EFFECT]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Toleration:
        if isinstance(value, Toleration):
            return value
        text = str(value)
        head, colon, effect = text.rpartition(":")
        if not colon:
            head, effect = text, ""
        if effect and effect not in _EFFECTS:
            self.fail(f'"{effect}" is not an effect ({", ".join(_EFFECTS)})', param, ctx)
        key, equals, val = head.partition("=")
        if not key:
            self.fail(f'"{text}" has no key', param, ctx)
        if equals:
            return Toleration(key, "Equal", val, effect or None)
        return Toleration(key, "Exists", None, effect or None)


TARGET = TargetType()
LISTEN = ListenType()
DURATION = DurationType()
KEY_VALUE = KeyValueType()
TOLERATION = TolerationType()

# -- common options --------------------------------------------------------------------------


def _connection_options(namespace_help: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """kubectl's connection flags, ``-n`` described for the command."""

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        options = [
            click.option(
                "--kubeconfig",
                type=click.Path(dir_okay=False),
                metavar="PATH",
                help="Path to the kubeconfig file.",
            ),
            click.option(
                "--context",
                metavar="NAME",
                shell_complete=_complete_contexts,
                help="The kubeconfig context to use.",
            ),
            click.option(
                "-n",
                "--namespace",
                metavar="NAME",
                shell_complete=_complete_namespaces,
                help=namespace_help,
            ),
            click.option("--as", "as_user", metavar="USER", help="Impersonate this user."),
            click.option(
                "--as-group",
                "as_groups",
                metavar="GROUP",
                multiple=True,
                help="Impersonate a group.",
            ),
            click.option(
                "--request-timeout",
                type=DURATION,
                metavar="DURATION",
                help="Timeout of single API requests (0: none). [default: 30s]",
            ),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


#: kubectl's connection flags, for the commands that make tunnels.
kube_options = _connection_options("Namespace of the targets (default: the context's namespace).")
#: The same for ``ls`` and ``gc``, which look at every namespace unless told.
listing_kube_options = _connection_options(
    "Only this namespace (default: every namespace you may list)."
)


def trace_options(function: Callable[..., T]) -> Callable[..., T]:
    """The trace flags (``-v`` is on by default)."""
    options = [
        click.option(
            "-v",
            "--verbose",
            "verbose",
            is_flag=True,
            default=None,
            help="Trace the data as text (socat -v). On by default.",
        ),
        click.option(
            "-x",
            "--hex",
            "hexdump",
            is_flag=True,
            help="Trace the data in hex (socat -x); with -v, hex and text.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="No data trace; only errors."),
        click.option(
            "--summary",
            is_flag=True,
            help="Instead of the data trace, one line per HTTP request and response "
            "(method, path, status, bytes, duration), or per connection.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def pod_options(function: Callable[..., T]) -> Callable[..., T]:
    """How relay pods are made."""
    default = PodSettings()
    options = [
        click.option("--image", default=default.image, show_default=True, help="The relay image."),
        click.option(
            "--relay-namespace",
            metavar="NAME",
            shell_complete=_complete_namespaces,
            help="Run the relay pods here instead of the targets' namespace.",
        ),
        click.option(
            "--node-selector",
            "node_selector",
            type=KEY_VALUE,
            multiple=True,
            help="Labels of the node for the relay pod.",
        ),
        click.option(
            "--toleration",
            "tolerations",
            type=TOLERATION,
            multiple=True,
            help="A taint the relay pod tolerates.",
        ),
        click.option(
            "--requests",
            type=KEY_VALUE,
            metavar="cpu=..,memory=..",
            help="Resource requests of the relay (default cpu=10m,memory=32Mi).",
        ),
        click.option(
            "--limits",
            type=KEY_VALUE,
            metavar="cpu=..,memory=..",
            help="Resource limits of the relay (default cpu=1,memory=128Mi).",
        ),
        click.option(
            "--idle-timeout",
            type=DURATION,
            default="10m",
            show_default=True,
            help="A relay with no new connection for this long exits (and is replaced "
            "when needed).",
        ),
        click.option(
            "--max-lifetime",
            type=DURATION,
            default="12h",
            show_default=True,
            help="Deadline of a relay pod (activeDeadlineSeconds).",
        ),
        click.option(
            "--keep-finished",
            type=DURATION,
            default="30s",
            show_default=True,
            help="How long the cluster keeps a finished relay (ttlSecondsAfterFinished).",
        ),
        click.option(
            "--pod-timeout",
            type=DURATION,
            default="2m",
            show_default=True,
            help="How long a relay pod may take to start.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def tunnel_options(function: Callable[..., T]) -> Callable[..., T]:
    """``--listen`` (one per TARGET, in order)."""
    return click.option(
        "-l",
        "--listen",
        "listens",
        type=LISTEN,
        multiple=True,
        help="Local [ADDRESS:]PORT for the TARGET at the same position (default: "
        "127.0.0.1 and the target's port; 0 picks a free port).",
    )(function)


# -- the terminal ------------------------------------------------------------------------------


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
    _ready: set[int] = field(default_factory=set)

    def __call__(self, event: events.SessionEvent) -> None:
        self.show(event)

    def _prefix(self, tunnel: int, connection: int | None = None) -> str:
        """``[tunnel] `` when there are several, ``#connection `` when the line is about one."""
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
        self.console.print(out)

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
            case tracing.Output():
                self.line(f"{prefix}{event.text}", "dim")

    def close(self) -> None:
        """Stop the spinner."""
        self._stop_spinning()


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


# -- running the library -------------------------------------------------------------------------

#: Signals that end a session (then the relay pods are deleted); Windows has no SIGHUP.
SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(Exception):
    """A handled signal ended the command (``signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run_session(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a new event loop; a handled signal cancels it (``Interrupted``)."""
    received: list[int] = []

    async def until_signal() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(signum: int) -> None:
            if not received:
                received.append(signum)
                task.cancel()

        for signum in SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await coroutine
        except asyncio.CancelledError:
            if received:
                raise Interrupted(received[0]) from None
            raise
        finally:
            for signum in SIGNALS:
                with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                    loop.remove_signal_handler(signum)

    with asyncio.Runner() as runner:
        try:
            return runner.run(until_signal())
        except KeyboardInterrupt:
            # Where the loop cannot handle signals (Windows), the runner turns
            # Ctrl-C into KeyboardInterrupt after cancelling the session.
            raise Interrupted(signal.SIGINT) from None


async def _with_cluster(
    options: KubeOptions, use: Callable[[Cluster], Coroutine[Any, Any, T]]
) -> T:
    cluster = Cluster.from_options(options)
    try:
        return await use(cluster)
    finally:
        await cluster.aclose()


def _kube(
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    as_user: str | None,
    as_groups: tuple[str, ...],
    request_timeout: float | None,
) -> KubeOptions:
    if request_timeout == 0:
        request_timeout = 365 * 24 * 3600.0
    return KubeOptions(kubeconfig, context, namespace, as_user, tuple(as_groups), request_timeout)


# -- shell completion -----------------------------------------------------------------------------

#: How long completion waits for the API server: a shell must not hang on TAB.
COMPLETION_TIMEOUT = 5.0


def _items(candidates: Sequence[completion.Candidate]) -> list[CompletionItem]:
    return [CompletionItem(c.value, help=c.help or None) for c in candidates]


def _complete_from_cluster(
    ctx: click.Context,
    ask: Callable[[Cluster], Coroutine[Any, Any, list[completion.Candidate]]],
) -> list[CompletionItem]:
    """Candidates from the cluster of the flags typed so far; none if it cannot answer."""
    given = ctx.params
    kube = _kube(
        given.get("kubeconfig"),
        given.get("context"),
        given.get("namespace"),
        given.get("as_user"),
        tuple(given.get("as_groups") or ()),
        min(given.get("request_timeout") or COMPLETION_TIMEOUT, COMPLETION_TIMEOUT),
    )
    try:
        return _items(asyncio.run(_with_cluster(kube, ask)))
    except Exception:  # completion stays silent: a TAB is no place for errors
        return []


def _complete_namespaces(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    del param
    return _complete_from_cluster(
        ctx, lambda cluster: completion.namespace_candidates(cluster, incomplete)
    )


def _complete_contexts(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    del param
    from kubernetes import config  # noqa: PLC0415 - slow import, only when needed

    try:
        contexts, _ = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig_path(ctx.params.get("kubeconfig"))
        )
    except Exception:  # no kubeconfig, no candidates
        return []
    return _items(completion.context_candidates(contexts, incomplete))


def _trace_level(verbose: bool | None, hexdump: bool, quiet: bool) -> TraceLevel:
    if quiet and (verbose or hexdump):
        raise click.UsageError("--quiet cannot be combined with -v or -x")
    if quiet:
        return "quiet"
    if hexdump:
        return "rows" if verbose else "hex"
    return "text"


def _pod_settings(params: dict[str, Any]) -> PodSettings:
    default = PodSettings()
    node_selector: dict[str, str] = {}
    for item in params["node_selector"]:
        node_selector.update(item)
    return PodSettings(
        image=params["image"],
        node_selector=node_selector,
        tolerations=tuple(params["tolerations"]),
        requests={**default.requests, **(params["requests"] or {})},
        limits={**default.limits, **(params["limits"] or {})},
        idle_timeout=params["idle_timeout"],
        max_lifetime=max(1, int(params["max_lifetime"])),
        keep_finished=int(params["keep_finished"]),
    )


def _listens(targets: Sequence[Target], listens: Sequence[ListenAddress]) -> list[ListenAddress]:
    """Pair ``--listen`` with TARGETs in order; a missing one takes the target's port."""
    if listens and len(listens) != len(targets):
        raise click.UsageError(
            f"{len(targets)} TARGET(s) but {len(listens)} --listen: give one --listen per "
            "TARGET, in the same order, or none"
        )
    if listens:
        return list(listens)
    paired = []
    for target in targets:
        if not isinstance(target.port, int):
            raise click.UsageError(f"{target} has a named port: give the local port with --listen")
        paired.append(ListenAddress(port=target.port))
    return paired


def _tunnel_command(
    terminal: Terminal,
    mode: relaypod.Mode,
    targets: Sequence[Target],
    listens: Sequence[ListenAddress],
    params: dict[str, Any],
    tls: TLSSettings | None = None,
    tls_files: dict[str, bytes] | None = None,
) -> int:
    if not targets:
        raise click.UsageError(f"give at least one TARGET ({TARGET_FORMS})")
    specs = [
        TunnelSpec(mode, target, listen, tls=tls, tls_files=tls_files or {})
        for target, listen in zip(targets, _listens(targets, listens), strict=True)
    ]
    return _run(terminal, specs, params)


def _run(terminal: Terminal, specs: list[TunnelSpec], params: dict[str, Any]) -> int:
    summary = params["summary"]
    if summary and (params["verbose"] or params["hexdump"] or params["quiet"]):
        raise click.UsageError("--summary replaces the data trace: drop -v, -x and -q")
    options = SessionOptions(
        # The summary is made from the local bytes: the relay traces nothing then.
        trace="quiet" if summary else _trace_level(
            params["verbose"], params["hexdump"], params["quiet"]
        ),
        summary=summary,
        pod=_pod_settings(params),
        relay_namespace=params["relay_namespace"],
        pod_timeout=params["pod_timeout"],
    )
    kube = _kube(*(params[k] for k in _KUBE_KEYS))
    renderer = Renderer(terminal.out, tunnels=len(specs))

    async def use(cluster: Cluster) -> int:
        return await Session(cluster, specs, options, renderer).run()

    try:
        return run_session(_with_cluster(kube, use))
    except Interrupted as stop:
        # Ctrl-C is how a tunnel is meant to end; other signals end it from outside.
        renderer.close()
        return 0 if stop.signum == signal.SIGINT else 128 + stop.signum
    finally:
        renderer.close()


_KUBE_KEYS = ("kubeconfig", "context", "namespace", "as_user", "as_groups", "request_timeout")

# -- commands --------------------------------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, "--version", prog_name="kubectl relay")
def cli() -> None:
    """Ephemeral tunnels into the cluster, with live traces of the bytes.

    \b
    kubectl relay tcp svc/web:80 --listen 8080
    kubectl relay udp kube-dns.kube-system.svc:53 --listen 5353
    kubectl relay tls mydb.example.net:1433 --listen 1433 --cafile ca.pem
    kubectl relay run -- -u TCP:svc-a:80 TCP:svc-b:80
    kubectl relay ls; kubectl relay gc

    Each tunnel binds its local port first, then runs a relay pod (the
    project's socat-compatible engine) in the target's namespace, under the
    "restricted" Pod Security profile, and reaches it through the API
    server's port-forward. The relay's trace is shown as it happens. The pod
    is deleted when the command ends, and goes away on its own (idle timeout,
    deadline) if the command is killed.
    """


def _terminal(ctx: click.Context) -> Terminal:
    terminal = ctx.find_object(Terminal)
    return terminal if terminal is not None else Terminal.standard()


TARGET_HELP = f"TARGET: {TARGET_FORMS}. Several TARGETs make several tunnels."


@cli.command(epilog=EXIT_CODES_HELP, help="Forward local TCP ports to TARGETs.\n\n" + TARGET_HELP)
@click.argument("targets", type=TARGET, nargs=-1, metavar="TARGET...")
@tunnel_options
@trace_options
@kube_options
@pod_options
@click.pass_context
def tcp(
    ctx: click.Context,
    /,
    targets: tuple[Target, ...],
    listens: tuple[ListenAddress, ...],
    **params: Any,
) -> int:
    return _tunnel_command(_terminal(ctx), "tcp", targets, listens, params)


@cli.command(
    epilog=EXIT_CODES_HELP,
    help="Forward local UDP ports to TARGETs (datagram boundaries kept).\n\n" + TARGET_HELP,
)
@click.argument("targets", type=TARGET, nargs=-1, metavar="TARGET...")
@tunnel_options
@trace_options
@kube_options
@pod_options
@click.pass_context
def udp(
    ctx: click.Context,
    /,
    targets: tuple[Target, ...],
    listens: tuple[ListenAddress, ...],
    **params: Any,
) -> int:
    return _tunnel_command(_terminal(ctx), "udp", targets, listens, params)


@cli.command(
    epilog=EXIT_CODES_HELP,
    help="Forward local TCP ports to TARGETs over TLS that the relay originates.\n\n"
    "The certificate is verified unless --insecure. " + TARGET_HELP,
)
@click.argument("targets", type=TARGET, nargs=-1, metavar="TARGET...")
@tunnel_options
@click.option("-k", "--insecure", is_flag=True, help="Do not verify the target's certificate.")
@click.option(
    "--cafile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificates (PEM) to verify the target with.",
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Client certificate (PEM).",
)
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Client key (PEM) for --cert.",
)
@click.option(
    "--tls-secret",
    metavar="NAME",
    help="A Secret with ca.crt and/or tls.crt and tls.key, instead of files.",
)
@click.option(
    "--server-name",
    metavar="NAME",
    help="The name to send (SNI) and verify (default: the target's host).",
)
@trace_options
@kube_options
@pod_options
@click.pass_context
def tls(
    ctx: click.Context,
    /,
    targets: tuple[Target, ...],
    listens: tuple[ListenAddress, ...],
    insecure: bool,
    cafile: Path | None,
    cert: Path | None,
    key: Path | None,
    tls_secret: str | None,
    server_name: str | None,
    **params: Any,
) -> int:
    if tls_secret and (cafile or cert or key):
        raise click.UsageError("--tls-secret cannot be combined with --cafile, --cert or --key")
    if (cert is None) != (key is None):
        raise click.UsageError("--cert and --key go together")
    if insecure and (cafile or tls_secret):
        raise click.UsageError("--insecure turns verification off: drop --cafile/--tls-secret")
    files: dict[str, bytes] = {}
    for name, path in (("ca.crt", cafile), ("tls.crt", cert), ("tls.key", key)):
        if path is not None:
            files[name] = path.read_bytes()
    settings = TLSSettings(
        verify=not insecure,
        secret=tls_secret,
        ca_key="ca.crt" if cafile else None,
        cert_key="tls.crt" if cert else None,
        key_key="tls.key" if key else None,
        server_name=server_name,
    )
    return _tunnel_command(_terminal(ctx), "tls", targets, listens, params, settings, files)


def _relay_parser() -> Callable[[Sequence[str]], Any]:
    """The engine's command-line parser, for ``run``.

    Imported here, not with the module: the engine's runtime beside it
    (``termios``, ``resource``) is POSIX-only, and every other command runs
    on Windows too.
    """
    try:
        from ..engine.cli import parse_command_line  # noqa: PLC0415 - see above
    except ImportError as exc:
        raise click.UsageError(
            f"`kubectl relay run` checks the relay's command line with the engine, which "
            f"does not load here ({exc}); use tcp, udp or tls, or run it from Linux or macOS"
        ) from None
    return parse_command_line


@cli.command(
    epilog=EXIT_CODES_HELP,
    context_settings={"ignore_unknown_options": True},
)
@click.option(
    "-l",
    "--listen",
    "listen",
    type=LISTEN,
    help="Forward this local [ADDRESS:]PORT to the port of the relay's listening first address.",
)
@trace_options
@kube_options
@pod_options
@click.argument(
    "command", nargs=-1, type=click.UNPROCESSED, metavar="-- [OPTIONS] ADDRESS1 ADDRESS2"
)
@click.pass_context
def run(
    ctx: click.Context, /, listen: ListenAddress | None, command: tuple[str, ...], **params: Any
) -> int:
    """Run any relay command line in the cluster and stream its trace.

    \b
    kubectl relay run --listen 8080 -- TCP-LISTEN:8080,fork TCP:web:80
    kubectl relay run -- -u TCP:web:80 OPEN:/dev/null

    Options of kubectl relay go before "--". The trace options (-v by
    default) are added; the command ends when the relay ends, with its exit
    status.
    """
    args = list(command)
    if not args:
        raise click.UsageError("give the relay's command line after --: ADDRESS1 ADDRESS2")
    try:
        line = _relay_parser()(args)
        addresses = [parse_address(text) for text in line.addresses]
    except RelayError as exc:
        raise click.BadParameter(str(exc), param_hint="command") from None
    port = None
    if listen is not None:
        first = addresses[0]
        keyword = getattr(first, "keyword", "")
        if keyword not in ("TCP-LISTEN", "TCP4-LISTEN", "TCP6-LISTEN", "OPENSSL-LISTEN"):
            raise click.UsageError(
                "--listen needs a relay whose first address listens on TCP "
                "(TCP-LISTEN:PORT or OPENSSL-LISTEN:PORT)"
            )
        port = int(first.params[0])  # type: ignore[union-attr]
    spec = TunnelSpec("run", listen=listen, run_args=tuple(args), run_port=port)
    return _run(_terminal(ctx), [spec], params)


LS_EXIT_CODES_HELP = """\b
Exit status:
  0    listed (also when there is no relay pod)
  2    bad command line
  3    the cluster refused or lacks something: kubeconfig, the right
       to list pods
"""

GC_EXIT_CODES_HELP = """\b
Exit status:
  0    every chosen relay pod was deleted (or, with --dry-run, listed)
  2    bad command line
  3    the cluster refused or lacks something: kubeconfig, the right
       to list or delete pods and Jobs (what was deleted before stays deleted)
"""

#: ``ls -o``: kubectl's spellings; without it, the table.
OUTPUT_FORMATS = ("wide", "json", "yaml")


def _listing(
    params: dict[str, Any], current_namespace: bool, all_users: bool
) -> Callable[[Cluster], Coroutine[Any, Any, inventory.Inventory]]:
    all_namespaces = not current_namespace and params["namespace"] is None

    async def list_relays(cluster: Cluster) -> inventory.Inventory:
        return await inventory.list_relays(
            cluster, all_namespaces=all_namespaces, user=None if all_users else cluster.user
        )

    return list_relays


@cli.command(name="ls", epilog=LS_EXIT_CODES_HELP)
@click.option("--all-users", is_flag=True, help="Every user's relays, not only yours.")
@click.option(
    "--current-namespace",
    is_flag=True,
    help="Only the context's namespace (default: every namespace you may list).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUT_FORMATS),
    help="wide: a table with the Job, user, session and deadline too; json, yaml: every "
    "field, for scripts (notes go to stderr then). [default: a table]",
)
@listing_kube_options
@click.pass_context
def list_command(
    ctx: click.Context,
    /,
    all_users: bool,
    current_namespace: bool,
    output: str | None,
    **params: Any,
) -> int:
    """List your relay pods across namespaces; orphans are marked."""
    terminal = _terminal(ctx)
    kube = _kube(*(params[k] for k in _KUBE_KEYS))
    found = run_session(_with_cluster(kube, _listing(params, current_namespace, all_users)))
    if output in ("json", "yaml"):
        if found.note:
            terminal.err.print(Text(found.note, style="yellow"))
        relays = [relay.as_dict() for relay in found.relays]
        if output == "json":
            text = json.dumps(relays, indent=2)
        else:
            text = yaml.safe_dump(relays, sort_keys=False).rstrip()
        terminal.out.print(Text(text), crop=False)
    else:
        show_inventory(terminal.out, found, wide=output == "wide")
    return 0


@cli.command(epilog=GC_EXIT_CODES_HELP)
@click.option("--all", "everything", is_flag=True, help="Delete all your relays, not only orphans.")
@click.option("--all-users", is_flag=True, help="Every user's relays, not only yours.")
@click.option(
    "--dry-run", is_flag=True, help="Only show what would be deleted (the same pods a run deletes)."
)
@click.option(
    "--current-namespace",
    is_flag=True,
    help="Only the context's namespace (default: every namespace you may list).",
)
@listing_kube_options
@click.pass_context
def gc(
    ctx: click.Context,
    /,
    everything: bool,
    all_users: bool,
    dry_run: bool,
    current_namespace: bool,
    **params: Any,
) -> int:
    """Delete orphaned relay pods: finished, past their deadline, or whose client is gone."""
    terminal = _terminal(ctx)
    kube = _kube(*(params[k] for k in _KUBE_KEYS))
    listing = _listing(params, current_namespace, all_users)

    async def use(cluster: Cluster) -> tuple[inventory.Inventory, list[inventory.RelayInfo]]:
        found = await listing(cluster)
        deleted = await inventory.collect_garbage(
            cluster, found, everything=everything, dry_run=dry_run
        )
        return found, deleted

    found, deleted = run_session(_with_cluster(kube, use))
    if found.note:
        terminal.out.print(Text(found.note, style="yellow"))
    verb = "would delete" if dry_run else "deleted"
    for relay in deleted:
        why = relay.orphan or "requested with --all"
        terminal.out.print(Text(f"{verb} {relay.namespace}/{relay.pod} ({why})"))
    # The same count either way: a dry run names exactly what a run deletes.
    left = len(found.relays) - len(deleted)
    summary = "would be deleted" if dry_run else "deleted"
    terminal.out.print(Text(f"{len(deleted)} relay pod(s) {summary}, {left} left", style="dim"))
    return 0


def show_inventory(
    console: Console, found: inventory.Inventory, now: datetime | None = None, *, wide: bool = False
) -> None:
    """The ``ls`` table (``wide``: with the Job, user, session and deadline)."""
    now = now or datetime.now(UTC)
    if found.note:
        console.print(Text(found.note, style="yellow"))
    if not found.relays:
        where = f"namespace {found.namespace}" if found.namespace else "any namespace"
        console.print(Text(f"No relay pods in {where}.", style="dim"))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["NAMESPACE", "POD", "TARGET", "CLIENT", "AGE", "STATUS"]
    if wide:
        columns += ["JOB", "USER", "SESSION", "DEADLINE"]
    for column in columns:
        table.add_column(column)
    for relay in found.relays:
        status = relay.phase + (f" (orphan: {relay.orphan})" if relay.orphan else "")
        row: list[str | Text] = [
            relay.namespace,
            relay.pod,
            relay.target,
            relay.client,
            _age(relay.started, now),
            Text(status, style="yellow" if relay.orphan else ""),
        ]
        if wide:
            deadline = inventory.format_time(relay.deadline) or "<none>"
            row += [relay.job or "<none>", relay.user, relay.session, deadline]
        table.add_row(*row)
    console.print(table)


def _age(started: datetime | None, now: datetime) -> str:
    if started is None:
        return "?"
    seconds = max(0, int((now - started).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


# -- the entry point -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, terminal: Terminal | None = None) -> int:
    """Run ``kubectl relay``; every failure becomes its exit code here, and only here."""
    terminal = terminal or Terminal.standard()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="kubectl relay", standalone_mode=False, obj=terminal)
    except click.exceptions.NoArgsIsHelpError as exc:
        terminal.err.print(Text(exc.ctx.get_help() if exc.ctx else ""))
        return errors.EXIT_USAGE
    except click.ClickException as exc:
        terminal.err.print(Text(_usage_line(exc), style="red"))
        return errors.EXIT_USAGE
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        return 128 + signal.SIGINT
    except errors.PluginError as exc:
        terminal.err.print(Text(f"error: {exc}", style="bold red"))
        return exc.exit_code
    except Interrupted as stop:
        return 128 + stop.signum
    if isinstance(result, int):
        return result
    return errors.EXIT_OK


def _usage_line(exc: click.ClickException) -> str:
    """click's usage error as one line: ``error: <message>; see 'kubectl relay CMD --help'``."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "kubectl relay"
    # click ends some messages with a full stop; "; see" follows it otherwise.
    message = exc.format_message().rstrip().removesuffix(".")
    return f"error: {message}; see '{command} --help'"


def complete_main(argv: Sequence[str] | None = None) -> int:
    """``kubectl_complete-relay``: kubectl's plugin completion (see ``completion``).

    kubectl runs it with the words after ``relay``, the last one being the
    word under completion; click's completion machinery finds what that word
    is (a command, a flag, a flag's value, a TARGET) and asks its parameter.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    args, incomplete = words[:-1], words[-1] if words else ""
    completer = ShellComplete(cli, {}, "kubectl relay", "_KUBECTL_RELAY_COMPLETE")
    try:
        items = completer.get_completions(args, incomplete)
    except Exception:  # a TAB never shows a traceback
        items = []
    if any(item.type in ("file", "dir") for item in items):
        # A path: the shell completes file names itself.
        sys.stdout.write(completion.protocol_output([], completion.Directive.DEFAULT))
        return 0
    candidates = [completion.Candidate(str(item.value), item.help or "") for item in items]
    directive = completion.directive_for(candidates)
    sys.stdout.write(completion.protocol_output(candidates, directive))
    return 0
