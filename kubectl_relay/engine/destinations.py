"""``--deny-connect`` and ``--allow-connect``: where the relay may connect, checked after resolving.

A relay extension for relays that run someone else's address (the SocatTunnel
operator's pods): a host name is checked where it resolves, in the relay, so
a name that points at the cloud metadata service or the API server is
refused even though its text looked harmless. Every address a connecting
transport (TCP, UDP, OPENSSL over TCP) is about to connect to is checked:

- an address inside a ``--deny-connect`` network is refused;
- with any ``--allow-connect``, an address outside all of them is refused.

IPv4-mapped IPv6 addresses count as their IPv4 address. The policy is the
process's own, set once from the command line (``configure``): one relay
process runs one command line.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from .errors import OpenError, UsageError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ConnectPolicy:
    """Denied networks, and allowed ones (None: no allow list)."""

    denied: tuple[Network, ...] = ()
    allowed: tuple[Network, ...] | None = None

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be connected to, or None when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for network in self.denied:
            if address.version == network.version and address in network:
                return f"denied by --deny-connect {network}"
        if self.allowed is not None and not any(
            address.version == n.version and address in n for n in self.allowed
        ):
            return "not in any --allow-connect network"
        return None


_policy = ConnectPolicy()


def configure(policy: ConnectPolicy) -> None:
    """Set the process's policy (the command line's)."""
    global _policy  # one policy per process, set once by the CLI
    _policy = policy


def parse_networks(text: str, option: str) -> tuple[Network, ...]:
    """``10.0.0.0/8,fd00::/8,192.0.2.1``: networks, or ``UsageError`` naming the bad one."""
    networks: list[Network] = []
    for item in text.split(","):
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise UsageError(
                f'option "{option}": "{item}" is not a network; expected CIDRs such as '
                "169.254.0.0/16 or fd00::/8, separated by commas"
            ) from None
    return tuple(networks)


def check(family: int, sockaddr: tuple[object, ...], text: str) -> None:
    """Raise ``OpenError`` unless the policy lets the relay connect to ``sockaddr``."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = str(sockaddr[0]).partition("%")[0]  # a scope id ("fe80::1%eth0") is no part of it
    reason = _policy.refusal(ipaddress.ip_address(host))
    if reason is not None:
        raise OpenError(text, f"connecting to {host}: {reason}")


def permits(host: str) -> bool:
    """Whether the policy lets the relay connect to the IP address ``host``."""
    return _policy.refusal(ipaddress.ip_address(host)) is None
