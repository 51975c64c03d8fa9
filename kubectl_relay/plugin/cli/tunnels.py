"""The tunnel commands of ``kubectl relay``: ``tcp``, ``udp``, ``tls``, ``run`` and ``-f FILE``.

Each collects its options, rejects conflicting ones with ``click.UsageError``
and runs one ``Session`` of the library until it ends or is interrupted.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import click

from .. import relaypod, tunnelfile
from ..kube import Cluster
from ..portforward import UDP_SESSION_IDLE
from ..relaypod import PodSettings, TLSSettings, TraceLevel
from ..runcommand import RunCommandError, run_spec
from ..session import Session, SessionOptions, TunnelSpec
from ..targets import TARGET_FORMS, ListenAddress, Target
from ..tunnelset import run_tunnels
from .params import (
    EXIT_CODES_HELP,
    LISTEN,
    SESSION_IDLE,
    TARGET,
    kube_options,
    pod_options,
    trace_options,
    tunnel_options,
)
from .running import Interrupted, kube_from_params, run_session, with_cluster
from .terminal import Renderer, Terminal, terminal_of


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
        lease=params["lease"],
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
    session_idle: float = UDP_SESSION_IDLE,
) -> int:
    if not targets:
        raise click.UsageError(f"give at least one TARGET ({TARGET_FORMS})")
    specs = [
        TunnelSpec(mode, target, listen, tls=tls, tls_files=tls_files or {},
                   session_idle=session_idle)
        for target, listen in zip(targets, _listens(targets, listens), strict=True)
    ]
    return run_specs(terminal, specs, params)


def run_specs(terminal: Terminal, specs: list[TunnelSpec], params: dict[str, Any]) -> int:
    """Run ``specs`` as one session with the command's options, rendered on ``terminal``."""
    options = session_options(params)
    return run_rendered(
        terminal,
        len(specs),
        params,
        lambda cluster, renderer: Session(cluster, specs, options, renderer).run(),
    )


def session_options(params: dict[str, Any]) -> SessionOptions:
    """The ``SessionOptions`` of a command's trace and pod options."""
    summary = params["summary"]
    if summary and (params["verbose"] or params["hexdump"] or params["quiet"]):
        raise click.UsageError("--summary replaces the data trace: drop -v, -x and -q")
    return SessionOptions(
        # The summary is made from the local bytes: the relay traces nothing then.
        trace="quiet" if summary else _trace_level(
            params["verbose"], params["hexdump"], params["quiet"]
        ),
        summary=summary,
        pod=_pod_settings(params),
        relay_namespace=params["relay_namespace"],
        pod_timeout=params["pod_timeout"],
    )


def run_rendered(
    terminal: Terminal,
    tunnels: int,
    params: dict[str, Any],
    start: Callable[[Cluster, Renderer], Coroutine[Any, Any, int]],
    names: Sequence[str] = (),
) -> int:
    """Run ``start(cluster, renderer)`` until it ends or a signal stops it; the exit status.

    ``names``: the tunnels' names, which prefix their lines (a tunnel file's).
    """
    kube = kube_from_params(params)
    renderer = Renderer(terminal.out, tunnels=tunnels, names=names)

    async def use(cluster: Cluster) -> int:
        return await start(cluster, renderer)

    try:
        status: int = run_session(with_cluster(kube, use))
        return status
    except Interrupted as stop:
        # Ctrl-C is how a tunnel is meant to end; other signals end it from outside.
        renderer.close()
        return 0 if stop.signum == signal.SIGINT else 128 + stop.signum
    finally:
        renderer.close()


def run_file(terminal: Terminal, filename: str, params: dict[str, Any]) -> int:
    """``kubectl relay -f FILE``: the tunnels of a file (``-``: stdin), each line prefixed
    by its tunnel's name. A file with mistakes raises ``TunnelFileError``: nothing starts."""
    tunnels = tunnelfile.read(filename, sys.stdin.read)
    return run_rendered(
        terminal,
        len(tunnels),
        params,
        lambda cluster, renderer: run_tunnels(cluster, tunnels, renderer),
        names=[tunnel.name for tunnel in tunnels],
    )


TARGET_HELP = f"TARGET: {TARGET_FORMS}. Several TARGETs make several tunnels."


@click.command(epilog=EXIT_CODES_HELP, help="Forward local TCP ports to TARGETs.\n\n" + TARGET_HELP)
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
    return _tunnel_command(terminal_of(ctx), "tcp", targets, listens, params)


@click.command(
    epilog=EXIT_CODES_HELP,
    help="Forward local UDP ports to TARGETs (datagram boundaries kept).\n\n" + TARGET_HELP,
)
@click.argument("targets", type=TARGET, nargs=-1, metavar="TARGET...")
@tunnel_options
@click.option(
    "--session-idle",
    type=SESSION_IDLE,
    default="60s",
    show_default=True,
    help="A local sender's session (its stream to the relay and the relay's socket to the "
    "target) ends after this long with no datagram either way; its next datagram starts "
    "a new one.",
)
@trace_options
@kube_options
@pod_options
@click.pass_context
def udp(
    ctx: click.Context,
    /,
    targets: tuple[Target, ...],
    listens: tuple[ListenAddress, ...],
    session_idle: float,
    **params: Any,
) -> int:
    return _tunnel_command(
        terminal_of(ctx), "udp", targets, listens, params, session_idle=session_idle
    )


@click.command(
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
    return _tunnel_command(terminal_of(ctx), "tls", targets, listens, params, settings, files)


@click.command(
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
    if not command:
        raise click.UsageError("give the relay's command line after --: ADDRESS1 ADDRESS2")
    try:
        spec = run_spec(command, listen)
    except RunCommandError as exc:
        if exc.about == "listen":
            raise click.UsageError(f"--listen {exc}") from None
        if exc.about == "engine":
            raise click.UsageError(str(exc)) from None
        raise click.BadParameter(str(exc), param_hint="command") from None
    return run_specs(terminal_of(ctx), [spec], params)
