"""Which runs take the fast path (``bridge``), and when its event loop connects by itself."""

from __future__ import annotations

import ipaddress
import socket

from . import destinations
from .addresses import Address, AddressSpec
from .transfer import TransferSettings
from .transports.base import OpenContext
from .transports.sockopt import CONNECTION_FORMS
from .transports.tcp import family_of, strip_brackets

#: First addresses the fast path serves: forking TCP listeners.
LISTENERS = frozenset({"TCP-LISTEN", "TCP4-LISTEN", "TCP6-LISTEN"})
#: Second addresses whose opener hands back a connected ``SocketStream``.
CONNECTORS = frozenset({"TCP", "TCP4", "TCP6", "UNIX-CONNECT"})
#: Options that need the general path: the listener's accept loop
#: (``accept-timeout``) or the pump's per-block work. (``max-children`` is
#: the ``Acceptor``'s.)
GENERAL_PATH_OPTIONS = frozenset(
    {
        "accept-timeout", "readbytes", "ignoreeof", "crnl", "cr", "frame",
        "escape", "cool-write", "end-close", *CONNECTION_FORMS,
    }
)

_IP_FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}

def eligible(
    first: AddressSpec, second: AddressSpec, settings: TransferSettings, tracing: bool
) -> bool:
    """Whether a run takes the fast path: fork TCP listener, socket upstream, no per-block work."""
    if not (isinstance(first, Address) and isinstance(second, Address)):
        return False
    if first.keyword not in LISTENERS or second.keyword not in CONNECTORS:
        return False
    if not first.options.flag("fork") or tracing or settings.unidirectional != "both":
        return False
    return not any(
        name in address.options for address in (first, second) for name in GENERAL_PATH_OPTIONS
    )


def direct_upstream(second: AddressSpec, family: int) -> tuple[str, int, int] | None:
    """``(host, port, family)`` when the event loop can open ``second`` itself.

    Only ``TCP``/``TCP4``/``TCP6`` to an IP address of the address's family,
    with a numeric port and no options: the loop then connects in C. Names
    go through the general opener, so that every lookup is ``tcp.resolve``'s
    (``loop.getaddrinfo``).
    """
    if not isinstance(second, Address) or second.keyword not in ("TCP", "TCP4", "TCP6"):
        return None
    if second.options or len(second.params) != 2:
        return None
    host, port = strip_brackets(second.params[0]), second.params[1]
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    family = family_of(second, OpenContext(family=family))
    if not port.isdigit() or family not in (socket.AF_UNSPEC, _IP_FAMILIES[version]):
        return None
    if not destinations.permits(host):
        return None  # the general opener refuses it, in its words (--deny-connect)
    return host, int(port), family
