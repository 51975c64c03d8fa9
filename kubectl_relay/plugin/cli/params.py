"""The option types and shared options of ``kubectl relay``'s commands.

Parameter types parse what the user typed with the library's parsers (a bad
value fails through click, as a usage error); the option decorators give
every command that needs them the same flags with the same help.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem

from .. import completion, errors, relaypod
from ..relaypod import PodSettings, Toleration
from ..targets import ListenAddress, Target, parse_listen, parse_target
from ..values import DURATION_FORMS, parse_duration, parse_toleration
from .completing import (
    complete_contexts,
    complete_from_cluster,
    complete_namespaces,
    completion_items,
)

T = TypeVar("T")

EXIT_CODES_HELP = """\b
Exit status:
  0    the tunnel was ended with Ctrl-C (or `run`: the relay exited 0)
  1    the tunnel failed while it ran
  2    bad command line (usage, TARGET or --listen syntax), or a
       tunnel file (-f) with mistakes
  3    the cluster refused or lacks something: kubeconfig, rights,
       target not found, wrong port; or Ctrl-C could not delete the
       relay's Job (the message names the missing right)
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
            return completion_items(completion.kind_candidates(incomplete))
        return complete_from_cluster(
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


class DurationType(click.ParamType[float]):
    """``30``, ``30s``, ``10m``, ``1h30m``: seconds as a float (``values.parse_duration``).

    Never negative; ``positive``: not 0 either (where 0 would end things at once).
    """

    name = "DURATION"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value) if isinstance(value, int | float) else parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds < 0 or (self.positive and seconds == 0):
            least = "more than 0" if self.positive else "0 or more"
            self.fail(f'"{value}" is not a duration of {least} (accepted: {DURATION_FORMS})',
                      param, ctx)
        return seconds


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


class TolerationType(click.ParamType[Toleration]):
    """``KEY[=VALUE][:EFFECT]`` (``values.parse_toleration``)."""

    name = "KEY[=VALUE][:EFFECT]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Toleration:
        if isinstance(value, Toleration):
            return value
        try:
            return parse_toleration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TARGET = TargetType()
LISTEN = ListenType()
DURATION = DurationType()
SESSION_IDLE = DurationType(positive=True)
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
                shell_complete=complete_contexts,
                help="The kubeconfig context to use.",
            ),
            click.option(
                "-n",
                "--namespace",
                metavar="NAME",
                shell_complete=complete_namespaces,
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


def _check_lease(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value < relaypod.MIN_LEASE_SECONDS:
        raise click.BadParameter(
            f"{value:g}s is shorter than a relay pod's lease may be "
            f"(accepted: {relaypod.MIN_LEASE_SECONDS}s or more)", ctx, param)
    return value


def pod_options(function: Callable[..., T]) -> Callable[..., T]:
    """How relay pods are made."""
    default = PodSettings()
    options = [
        click.option("--image", default=default.image, show_default=True, help="The relay image."),
        click.option(
            "--relay-namespace",
            metavar="NAME",
            shell_complete=complete_namespaces,
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
        click.option(
            "--lease",
            type=DURATION,
            default=f"{relaypod.LEASE_SECONDS}s",
            callback=_check_lease,
            hidden=True,  # for tests that wait for a lease to run out
            help="How long a relay pod outlives its client's last renewal.",
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
