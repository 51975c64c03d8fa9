"""``--deny-connect`` and ``--allow-connect``: where the relay may connect, checked after resolving.

A relay extension for relays that run someone else's address (the SocatTunnel
operator's pods): a host name is checked where it resolves, in the relay, so
a name that points at the cloud metadata service or the API server is
refused even though its text looked harmless. Every address a connecting
transport (TCP, UDP, OPENSSL over TCP) is about to connect to is checked:

- an address inside a ``--deny-connect`` network is refused;
- with any ``--allow-connect``, an address outside all of them is refused.

Both options also take host name patterns (``*.kube-system.svc.cluster.local``,
``metadata.google.internal``: shell-style globs, any case), matched against
the name as the client wrote it, before it resolves: a denied name is refused
without a lookup, and with an allow list a destination passes if its name
matches an allowed pattern or its address is in an allowed network. A name
pattern cannot stop another spelling of the same host (a search-path short
name, a bare IP address): what must never be reached is denied by network.

IPv4-mapped IPv6 addresses count as their IPv4 address. The policy is the
process's own, set once from the command line (``configure``): one relay
process runs one command line.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from dataclasses import dataclass

from .errors import DestinationRefused, UsageError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


#: A host name pattern: labels of letters, digits, ``-`` and ``_``, with ``*`` and ``?`` globs.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_*?-]+(\.[A-Za-z0-9_*?-]+)*\.?")
#: Digits and dots only: a mistyped address (``10.0.0.300``), never a name pattern.
_NUMERIC = re.compile(r"[0-9.]+")


@dataclass(frozen=True)
class ConnectPolicy:
    """Denied networks and name patterns, and allowed ones (None: no allow list)."""

    denied: tuple[Network, ...] = ()
    allowed: tuple[Network, ...] | None = None
    denied_names: tuple[str, ...] = ()
    allowed_names: tuple[str, ...] | None = None

    def refusal(self, address: IPAddress, name: str | None = None) -> str | None:
        """Why ``address`` (resolved from ``name``, if given) may not be connected to, or None."""
        by_name = self.name_refusal(name) if name is not None else None
        if by_name is not None:
            return by_name
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for network in self.denied:
            if address.version == network.version and address in network:
                return f"denied by --deny-connect {network}"
        if self.allowed is None and self.allowed_names is None:
            return None
        if any(address.version == n.version and address in n for n in self.allowed or ()):
            return None
        if name is not None and _matching(name, self.allowed_names or ()) is not None:
            return None
        if self.allowed_names is None:
            return "not in any --allow-connect network"
        return "not in any --allow-connect network or name"

    def name_refusal(self, name: str) -> str | None:
        """Why the host ``name`` is refused before it resolves (a denied pattern), or None."""
        pattern = _matching(name, self.denied_names)
        return None if pattern is None else f"denied by --deny-connect {pattern}"


def _matching(name: str, patterns: tuple[str, ...]) -> str | None:
    """The first of ``patterns`` that ``name`` matches (any case, trailing dot ignored)."""
    folded = name.lower().rstrip(".")
    return next((p for p in patterns if fnmatch.fnmatchcase(folded, p)), None)


_policy = ConnectPolicy()


def configure(policy: ConnectPolicy) -> None:
    """Set the process's policy (the command line's)."""
    global _policy  # one policy per process, set once by the CLI
    _policy = policy


def parse_networks(text: str, option: str) -> tuple[Network, ...]:
    """``10.0.0.0/8,fd00::/8,192.0.2.1``: networks, or ``UsageError`` naming the bad one."""
    networks, names = parse_destinations(text, option, names=False)
    assert not names
    return networks


def parse_destinations(
    text: str, option: str, *, names: bool = True
) -> tuple[tuple[Network, ...], tuple[str, ...]]:
    """``10.0.0.0/8,*.kube-system.svc.cluster.local``: networks and (if ``names``) name patterns.

    Raises ``UsageError`` naming the item that is neither.
    """
    networks: list[Network] = []
    patterns: list[str] = []
    for item in text.split(","):
        stripped = item.strip()
        try:
            networks.append(ipaddress.ip_network(stripped, strict=False))
            continue
        except ValueError:
            pass
        if names and _NAME_PATTERN.fullmatch(stripped) and not _NUMERIC.fullmatch(stripped):
            patterns.append(stripped.lower().rstrip("."))
            continue
        accepted = "CIDRs such as 169.254.0.0/16 or fd00::/8"
        if names:
            raise UsageError(
                f'option "{option}": "{item}" is not a network or a host name pattern; '
                f"expected {accepted}, or names such as *.kube-system.svc.cluster.local, "
                "separated by commas"
            )
        raise UsageError(
            f'option "{option}": "{item}" is not a network; expected {accepted}, '
            "separated by commas"
        )
    return tuple(networks), tuple(patterns)


def check(
    family: int, sockaddr: tuple[object, ...], text: str, name: str | None = None
) -> None:
    """Raise ``DestinationRefused`` unless the policy lets the relay connect to ``sockaddr``.

    ``name``: the host name ``sockaddr`` was resolved from, for the name patterns.
    """
    if family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = str(sockaddr[0]).partition("%")[0]  # a scope id ("fe80::1%eth0") is no part of it
    reason = _policy.refusal(ipaddress.ip_address(host), _name_only(name))
    if reason is not None:
        raise DestinationRefused(text, f"connecting to {host}: {reason}")


def check_name(name: str, text: str) -> None:
    """Raise ``DestinationRefused`` if the host ``name`` matches a denied pattern (IPs pass)."""
    if _name_only(name) is None:
        return
    reason = _policy.name_refusal(name)
    if reason is not None:
        raise DestinationRefused(text, f"connecting to {name}: {reason}")


def _name_only(host: str | None) -> str | None:
    """``host`` if it is a name; None for an IP address (patterns are for names)."""
    if host is None:
        return None
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    return None


def permits(host: str) -> bool:
    """Whether the policy lets the relay connect to the IP address ``host``."""
    return _policy.refusal(ipaddress.ip_address(host)) is None
