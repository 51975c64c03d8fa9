"""``kubectl relay proxy``: the click wrapper around ``proxying.ProxySettings``."""

from __future__ import annotations

from typing import Any

import click

from ..proxying import DEFAULT_PROXY_PORT, PatternError, ProxySettings, check_pattern
from ..session import TunnelSpec
from ..targets import ListenAddress
from .params import EXIT_CODES_HELP, LISTEN, kube_options, pod_options, trace_options
from .terminal import terminal_of
from .tunnels import run_specs


class PatternType(click.ParamType[str]):
    """One CIDR or host name pattern, checked by ``proxying.check_pattern``."""

    name = "CIDR|NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        option = param.opts[0] if param is not None and param.opts else "--allow"
        try:
            return check_pattern(str(value), option)
        except PatternError as exc:
            self.fail(str(exc), param, ctx)


PATTERN = PatternType()


@click.command(epilog=EXIT_CODES_HELP)
@click.option(
    "-l",
    "--listen",
    type=LISTEN,
    default=str(DEFAULT_PROXY_PORT),
    show_default=True,
    help="Local [ADDRESS:]PORT of the proxy (SOCKS5, SOCKS4a and HTTP CONNECT on one port).",
)
@click.option(
    "--allow",
    "allow",
    type=PATTERN,
    multiple=True,
    help="Only let connections go here: a CIDR (10.96.0.0/12) or a host name pattern "
    "(*.shop.svc.cluster.local); repeat for more. Names match as the client wrote them.",
)
@click.option(
    "--deny",
    "deny",
    type=PATTERN,
    multiple=True,
    help="Refuse connections to this CIDR (169.254.0.0/16) or host name pattern "
    "(*.kube-system.*); checked before --allow, and on every address a name resolves to.",
)
@trace_options
@kube_options
@pod_options
@click.pass_context
def proxy(
    ctx: click.Context,
    /,
    listen: ListenAddress,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    **params: Any,
) -> int:
    """A local SOCKS5/SOCKS4a/HTTP proxy whose connections are opened from the cluster.

    \b
    kubectl relay proxy -n shop
    curl --socks5-hostname 127.0.0.1:1080 http://web.shop.svc:8080/
    curl -p -x http://127.0.0.1:1080 http://web:8080/
    HTTPS_PROXY=http://127.0.0.1:1080 some-tool ...

    Host names are resolved by the cluster's DNS from the relay pod's
    namespace (-n): "web" is a Service there, "web.other" one in namespace
    "other". Each connection's destination is shown in the trace; a refused
    destination gets the protocol's refusal (SOCKS5 reply 2, SOCKS4 91,
    HTTP 403). Use --socks5-hostname (not --socks5) so that the name
    reaches the cluster's DNS.
    """
    settings = ProxySettings(listen=listen, allow=allow, deny=deny)
    spec = TunnelSpec("proxy", listen=settings.listen, proxy=settings)
    return run_specs(terminal_of(ctx), [spec], params)
