"""Address allocation: one loopback address per pod and per Service, one for the node.

Linux routes the whole of 127.0.0.0/8 to the loopback interface, so any
127.x.y.z can be bound without configuring anything. Each sandbox takes one
block number ``B`` and uses

- ``127.42.B.0/24`` for pod IPs (``status.podIP``),
- ``127.43.B.0/24`` for Service cluster IPs (``spec.clusterIP``),
- ``127.44.B.1`` as the node's address (``hostIP``, node ports),

so a trace or a log line shows at a glance which kind of address it is, and
sandboxes running at the same time on one machine (parallel test runs, the
demo next to a test run) never share an address. A sandbox holds its block by
binding a UDP socket to ``127.42.B.255``: the claim ends with the process, and
a second sandbox that finds the socket taken picks another block.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from dataclasses import dataclass, field

#: The node port range of a real cluster.
NODE_PORTS = range(30000, 32768)

#: Port of the socket that claims a block (outside Linux's ephemeral range).
_CLAIM_PORT = 65535


class PoolExhausted(RuntimeError):
    """Every address (or port) of a pool is in use."""


class AddressPool:
    """Hands out the addresses of a network, never the same one twice while in use.

    Released addresses go back to the end of the queue, so a new pod seldom
    gets the address a just-deleted pod had (stale connections to the old pod
    would otherwise reach the new one).
    """

    def __init__(self, network: ipaddress.IPv4Network, *, skip_first: int = 1) -> None:
        self.network = network
        self._next = int(network.network_address) + skip_first
        self._last = int(network.broadcast_address) - 1
        self._in_use: set[str] = set()
        self._released: list[str] = []

    def allocate(self, wanted: str | None = None) -> str:
        """A free address; ``wanted`` when given, free and inside the network."""
        if wanted:
            if ipaddress.IPv4Address(wanted) not in self.network:
                raise ValueError(f"{wanted} is outside {self.network}")
            if wanted in self._in_use:
                raise ValueError(f"{wanted} is already allocated")
            self._in_use.add(wanted)
            return wanted
        while self._next <= self._last:
            address = str(ipaddress.IPv4Address(self._next))
            self._next += 1
            if address not in self._in_use:
                self._in_use.add(address)
                return address
        while self._released:
            address = self._released.pop(0)
            if address not in self._in_use:
                self._in_use.add(address)
                return address
        raise PoolExhausted(f"no free address left in {self.network}")

    def release(self, address: str | None) -> None:
        """Give ``address`` back (ignores addresses that were not allocated)."""
        if address and address in self._in_use:
            self._in_use.discard(address)
            self._released.append(address)

    def __contains__(self, address: object) -> bool:
        return address in self._in_use


class PortPool:
    """Hands out node ports from ``NODE_PORTS``."""

    def __init__(self, ports: range = NODE_PORTS) -> None:
        self._ports = ports
        self._in_use: set[int] = set()

    def allocate(self, wanted: int | None = None) -> int:
        """A free port; ``wanted`` when given and free."""
        if wanted:
            if wanted in self._in_use:
                raise ValueError(f"node port {wanted} is already allocated")
            self._in_use.add(wanted)
            return wanted
        for port in self._ports:
            if port not in self._in_use:
                self._in_use.add(port)
                return port
        raise PoolExhausted("no free node port left")

    def release(self, port: int | None) -> None:
        """Give ``port`` back."""
        if port is not None:
            self._in_use.discard(port)


@dataclass
class Networks:
    """The addresses of one sandbox (see the module docstring)."""

    block: int
    claim: socket.socket | None = field(default=None, repr=False)

    @property
    def pods(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"127.42.{self.block}.0/24")

    @property
    def services(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"127.43.{self.block}.0/24")

    @property
    def node_ip(self) -> str:
        return f"127.44.{self.block}.1"

    def release(self) -> None:
        """Give the block back (close the claiming socket)."""
        if self.claim is not None:
            self.claim.close()
            self.claim = None


def claim_networks(block: int | None = None) -> Networks:
    """Claim a free block (``block`` itself when given); OSError when none is free."""
    candidates = [block] if block is not None else random.sample(range(1, 255), 254)
    for candidate in candidates:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((f"127.42.{candidate}.255", _CLAIM_PORT))
        except OSError:
            sock.close()
            continue
        return Networks(candidate, sock)
    if block is not None:
        raise OSError(f"address block {block} is in use by another sandbox")
    raise OSError("every sandbox address block is in use")
