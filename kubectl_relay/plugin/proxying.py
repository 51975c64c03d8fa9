"""``kubectl relay proxy``: a local SOCKS5/SOCKS4a/HTTP proxy that connects from the cluster.

The relay pod runs the engine's ``PROXY-SERVER`` behind the tunnel's usual
listener::

    relay -d -d ... [--deny-connect ...] [--allow-connect ...] \\
        MUX-ACCEPT:8000,fork,reuseaddr,accept-timeout=600 PROXY-SERVER

so every local connection is a stream of the tunnel's one port-forward,
exactly as a ``tcp`` tunnel's (``muxforward.py``; with ``KUBECTL_RELAY_MUX=0``
a framed ``TCP-LISTEN`` and a port-forward per connection), and the relay
reads the proxy request from it, resolves the name with the cluster's DNS
(from the relay pod's namespace: ``web.shop`` and
``web.shop.svc.cluster.local`` both work, ``web`` for the pod's own
namespace), checks the destination and connects. Its ``N`` line ``proxy:
SOCKS5 request from ... to web.shop:8080`` is what the trace shows for each
connection.

``--allow``/``--deny`` take CIDRs and host name patterns and become the
engine's ``--allow-connect``/``--deny-connect``, which check a name before it
resolves and every address it resolves to (``engine/destinations.py``).

``ProxySettings`` is all a proxy tunnel needs, frozen and built from plain
values (a bad pattern raises ``PatternError``, a ``ValueError``), so that a
tunnel file (``kubectl relay -f``) can make one as the command line does; the
session runs it as ``TunnelSpec("proxy", listen=settings.listen, proxy=settings)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..engine.destinations import parse_destinations
from ..engine.errors import UsageError
from . import relaypod
from .relaypod import TraceLevel
from .targets import ListenAddress

#: The local port of ``kubectl relay proxy`` when ``--listen`` is not given (SOCKS's own).
DEFAULT_PROXY_PORT = 1080
#: What the tunnel shows as its target.
DESCRIPTION = "proxy (SOCKS5, SOCKS4a, HTTP CONNECT)"
#: The relay's notice for each proxy request (``transports/proxyserver.py``).
_REQUEST_NOTICE = re.compile(r"proxy: (.+) request from .* to (\S+)")


class PatternError(ValueError):
    """An ``--allow``/``--deny`` value that is neither a CIDR nor a host name pattern."""


@dataclass(frozen=True)
class ProxySettings:
    """One proxy tunnel: where it listens locally, and where its connections may go."""

    #: The local listener (``--listen``).
    listen: ListenAddress = field(default_factory=lambda: ListenAddress(port=DEFAULT_PROXY_PORT))
    #: ``--allow``: CIDRs and name patterns; when any is given, only those destinations.
    allow: tuple[str, ...] = ()
    #: ``--deny``: CIDRs and name patterns refused (checked before ``allow``).
    deny: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for option, patterns in (("--allow", self.allow), ("--deny", self.deny)):
            for pattern in patterns:
                check_pattern(pattern, option)


def check_pattern(text: str, option: str) -> str:
    """``text`` if it is one CIDR or host name pattern, else ``PatternError`` saying what is."""
    if "," in text:
        raise PatternError(f'"{text}": give one CIDR or name per {option}, without commas')
    try:
        parse_destinations(text, option)
    except UsageError:
        raise PatternError(
            f'"{text}" is neither a CIDR (10.0.0.0/8, fd00::/8, 10.1.2.3) nor a host name '
            "pattern (web.shop, *.kube-system.svc.cluster.local)"
        ) from None
    return text


def policy_flags(settings: ProxySettings) -> list[str]:
    """The engine's ``--deny-connect``/``--allow-connect`` for the settings' patterns."""
    flags = []
    if settings.deny:
        flags += ["--deny-connect", ",".join(settings.deny)]
    if settings.allow:
        flags += ["--allow-connect", ",".join(settings.allow)]
    return flags


def relay_command(
    trace: TraceLevel, idle_timeout: float, settings: ProxySettings, *, mux: bool = True
) -> list[str]:
    """The relay pod's command: the tunnel's listener (mux, else framed), ``PROXY-SERVER``."""
    first = relaypod.listen_address(idle_timeout, mux=mux)
    # A session's notices say where each request went (``proxied``): they stay.
    command = relaypod.relay_command(trace, first, "PROXY-SERVER", session_notices=True)
    # Global options go before the addresses.
    return [*command[:-2], *policy_flags(settings), *command[-2:]]


def patterns(values: Sequence[str], option: str) -> tuple[str, ...]:
    """Every value checked (``PatternError`` for the first bad one)."""
    return tuple(check_pattern(value, option) for value in values)


def proxied(message: str) -> tuple[str, str] | None:
    """``(protocol, destination)`` from the relay's notice of a proxy request, else None."""
    match = _REQUEST_NOTICE.fullmatch(message)
    return None if match is None else (match.group(1), match.group(2))
