"""``kubectl relay expose``: the command over ``exposing.Exposer``."""

from __future__ import annotations

import re
from typing import Any

import click

from ..exposing import Exposer, ExposeSpec
from .params import EXIT_CODES_HELP, kube_options, pod_options, trace_options
from .terminal import terminal_of
from .tunnels import run_rendered, session_options

#: A Service name: an RFC 1035 label, as the API server checks it.
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


class ServiceNameType(click.ParamType[str]):
    """A Service name (lower-case letters, digits and '-', starting with a letter, at most 63)."""

    name = "NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not _DNS_LABEL.fullmatch(text):
            self.fail(
                f'"{text}" is not a Service name: accepted are lower-case letters, digits '
                "and '-', starting with a letter and ending with a letter or digit, "
                "at most 63 characters",
                param,
                ctx,
            )
        return text


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("local_port", type=click.IntRange(1, 65535), metavar="LOCALPORT")
@click.option(
    "--name",
    required=True,
    type=ServiceNameType(),
    help="Name of the Service to create (it must not exist).",
)
@click.option(
    "--port",
    "service_port",
    type=click.IntRange(1, 65535),
    default=80,
    show_default=True,
    help="The Service's port.",
)
@trace_options
@kube_options
@pod_options
@click.pass_context
def expose(
    ctx: click.Context, /, local_port: int, name: str, service_port: int, **params: Any
) -> int:
    """Make a local port reachable in the cluster, as a Service (a reverse tunnel).

    \b
    kubectl relay expose 8080 --name dev-api -n shop --port 80
    # in the cluster: curl http://dev-api.shop.svc/ reaches 127.0.0.1:8080

    A relay pod listens behind the Service and carries every connection
    back over one port-forward; each is connected to 127.0.0.1:LOCALPORT.
    The Service and the pod are deleted when the command ends, and the
    cluster deletes them by itself after the relay's lease if the command is
    killed. The relay pod has no idle timeout here.
    """
    if params["relay_namespace"]:
        raise click.UsageError(
            "--relay-namespace does not apply to expose: the Service and its relay pod "
            "are both in the namespace of -n"
        )
    if params["summary"]:
        raise click.UsageError("--summary is not available for expose yet: use -v, -x or -q")
    options = session_options(params)
    spec = ExposeSpec(local_port=local_port, name=name, service_port=service_port)
    return run_rendered(
        terminal_of(ctx),
        1,
        params,
        lambda cluster, renderer: Exposer(cluster, spec, options, renderer).run(),
    )
