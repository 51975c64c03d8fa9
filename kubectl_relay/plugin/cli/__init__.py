"""``kubectl relay``: the commands, their option types, the exit codes, and the terminal.

This package is the only part of the plugin that imports click and rich.
Commands collect options, reject conflicting ones with ``click.UsageError``
and call the library; ``main`` turns every error into its exit code in one
place; the ``Renderer`` shows the library's events (progress, the relay's
trace) on the one pair of consoles the CLI creates.

Its modules:

- ``params``: the option types (TARGET, ``--listen``, durations...) and the
  options several commands share;
- ``terminal``: the consoles and the ``Renderer`` of session events;
- ``running``: the event loop, the signals that end a command, the cluster;
- ``tunnels``: ``tcp``, ``udp``, ``tls``, ``run`` and ``-f FILE`` (the group's option);
- ``proxy``: ``proxy`` (over ``proxying.ProxySettings``);
- ``expose``: ``expose``, a Service reaching a local port;
- ``listing``: ``ls`` and ``gc``;
- ``completing``: shell completion of flag values and TARGETs;
- here: the command group, ``main`` (exit codes, error lines) and
  ``complete_main`` (kubectl's plugin completion).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import Any

import click
from click.shell_completion import ShellComplete
from rich.text import Text

from ... import __version__
from .. import completion, errors
from .expose import expose
from .listing import gc, list_command, show_inventory
from .params import EXIT_CODES_HELP, kube_options
from .proxy import proxy
from .running import Interrupted
from .terminal import Renderer, Terminal, terminal_of
from .tunnels import run, run_file, tcp, tls, udp

__all__ = ["Renderer", "Terminal", "cli", "complete_main", "main", "show_inventory"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
    invoke_without_command=True,
    no_args_is_help=True,
)
@click.version_option(__version__, "--version", prog_name="kubectl relay")
@click.option(
    "-f",
    "--filename",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Start the tunnels of a YAML file together (- reads stdin); every mistake in it "
    "is shown with its line, and nothing starts then.",
)
@kube_options
@click.pass_context
def cli(ctx: click.Context, /, filename: str | None, **params: Any) -> int | None:
    """Ephemeral tunnels into the cluster, with live traces of the bytes.

    \b
    kubectl relay tcp svc/web:80 --listen 8080
    kubectl relay udp kube-dns.kube-system.svc:53 --listen 5353
    kubectl relay tls mydb.example.net:1433 --listen 1433 --cafile ca.pem
    kubectl relay run -- -u TCP:svc-a:80 TCP:svc-b:80
    kubectl relay proxy -n shop --listen 1080
    kubectl relay expose 8080 --name dev-api -n shop --port 80
    kubectl relay -f tunnels.yaml
    kubectl relay ls; kubectl relay gc

    Each tunnel binds its local port first, then runs a relay pod (the
    project's socat-compatible engine) in the target's namespace, under the
    "restricted" Pod Security profile, and reaches it through the API
    server's port-forward. The relay's trace is shown as it happens. The pod
    is deleted when the command ends, and goes away on its own (idle timeout,
    deadline) if the command is killed.

    The options here go with -f only (-n: the namespace of the file's
    tunnels that name none); a command takes its own after its name.
    """
    given = [name for name, value in params.items() if value not in (None, ())]
    if ctx.invoked_subcommand is not None:
        if filename is not None or given:
            raise click.UsageError(
                f"-f and the options before the command go without a command; give "
                f"'{ctx.invoked_subcommand}' its options after its name"
            )
        return None
    if filename is None:
        commands = ", ".join(cli.list_commands(ctx))
        raise click.UsageError(f"give a command ({commands}) or -f FILE")
    return run_file(terminal_of(ctx), filename, params)


for _command in (tcp, udp, tls, run, proxy, expose, list_command, gc):
    cli.add_command(_command)


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
