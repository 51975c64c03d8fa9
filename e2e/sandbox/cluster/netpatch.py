"""Make a process behave as if it ran inside a pod: its own IP and the cluster's DNS.

Installed by the pod shim before the program starts. Nothing outside the
process changes (no /etc/hosts, no network namespaces): the patches work at
the three places a Python program reaches the network:

- the ``socket`` module (``getaddrinfo``, ``gethostbyname``; ``bind``,
  ``connect`` and ``sendto`` on ``socket.socket``), which the standard asyncio
  loop and plain blocking code go through;
- the event loop, for uvloop: its ``getaddrinfo`` and its ``create_*`` methods
  resolve names in C (libuv), so ``SandboxLoop`` resolves cluster names first
  and hands uvloop addresses only.

Rules:

- Binding the wildcard (``0.0.0.0``, ``::``, ``""``), ``127.0.0.1`` or ``localhost``
  binds the pod's IP instead, so two pods can both listen on port 8080.
- ``localhost`` and the pod's hostname resolve to the pod's IP; Service names
  resolve through the cluster's DNS table (see ``dns``).
- A literal ``127.0.0.1`` destination is left alone: it is the host, which is
  how a process in a pod reaches the sandbox's API server.
- Pods have no IPv6 address: passive lookups (listeners) answer IPv4 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from .dns import DnsTableReader, PodIdentity, lookup

_WILDCARDS_V4 = ("", "0.0.0.0", "127.0.0.1", "localhost", "<any>")
_WILDCARDS_V6 = ("", "::", "::1", "localhost")

#: ``socket.socket.bind`` before ``install`` patches it.
_ORIGINAL_BIND = socket.socket.bind


class PodNetwork:
    """The pod's view of the network: who it is and where the DNS table lives."""

    def __init__(self, identity: PodIdentity, table: DnsTableReader) -> None:
        self.identity = identity
        self.table = table
        self._getaddrinfo = socket.getaddrinfo  # the host's resolver, kept before patching

    def cluster_addresses(self, host: str) -> list[str] | None:
        """The addresses for ``host`` from cluster DNS; None when the host resolver decides.

        Raises ``socket.gaierror`` for cluster names that do not exist.
        """
        answer = lookup(host, self.table.records(), self.identity)
        if answer is None:
            return None
        if answer.cname:
            infos = self._getaddrinfo(answer.cname, None, socket.AF_INET, socket.SOCK_STREAM)
            return [str(info[4][0]) for info in infos]
        if not answer.addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answer.addresses

    def getaddrinfo(
        self,
        host: str | bytes | None,
        port: str | bytes | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        """``socket.getaddrinfo`` with cluster names and an IPv4-only passive answer."""
        if isinstance(host, bytes):
            host = host.decode("idna")
        if host is None and flags & socket.AI_PASSIVE and family == socket.AF_UNSPEC:
            family = socket.AF_INET
        addresses = self.cluster_addresses(host) if host else None
        if addresses is None:
            return self._getaddrinfo(host, port, family, type, proto, flags)
        results: list[Any] = []
        for address in addresses:
            with contextlib.suppress(socket.gaierror):
                results += self._getaddrinfo(
                    address, port, family, type, proto, flags | socket.AI_NUMERICHOST
                )
        if not results:
            raise socket.gaierror(
                socket.EAI_ADDRFAMILY, "Address family for hostname not supported"
            )
        return results

    def bind_address(self, family: int, address: Any) -> Any:
        """Where a bind to ``address`` really goes: the pod's IP for the wildcard and loopback."""
        if family == socket.AF_INET and isinstance(address, tuple):
            host = address[0]
            if host in _WILDCARDS_V4:
                return (self.identity.pod_ip, *address[1:])
            return (self._first_address(host, family), *address[1:])
        if family == socket.AF_INET6 and isinstance(address, tuple):
            host = address[0]
            if host in _WILDCARDS_V6:
                return (f"::ffff:{self.identity.pod_ip}", *address[1:])
            return (self._first_address(host, family), *address[1:])
        return address

    def peer_address(self, family: int, address: Any) -> Any:
        """Where a connect or sendto to ``address`` goes: cluster names resolved first."""
        if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            return (self._first_address(address[0], family), *address[1:])
        return address

    def bind_source(self, sock: socket.socket, destination: Any) -> None:
        """Bind an unbound IPv4 socket to the pod's IP before it connects to a loopback address.

        Peers then see the pod's IP as the source, as in a cluster (the kernel
        would pick 127.0.0.1 for any loopback destination).
        """
        if sock.family != socket.AF_INET or not isinstance(destination, tuple):
            return
        if not _is_loopback(destination[0]):
            return
        try:
            if sock.getsockname() != ("0.0.0.0", 0):
                return
            _ORIGINAL_BIND(sock, (self.identity.pod_ip, 0))
        except OSError:
            pass  # leave the choice to the kernel

    def _first_address(self, host: Any, family: int) -> Any:
        if not isinstance(host, str) or _is_literal(host):
            return host
        addresses = self.cluster_addresses(host)
        if not addresses:
            return host
        if family == socket.AF_INET6:
            return f"::ffff:{addresses[0]}"
        return addresses[0]


def _is_loopback(host: Any) -> bool:
    try:
        return isinstance(host, str) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def install(network: PodNetwork) -> None:
    """Patch the ``socket`` module for this process (the pod shim calls this once)."""

    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        return network.getaddrinfo(host, port, family, type, proto, flags)

    def gethostbyname(host: str) -> str:
        return str(getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])

    def gethostbyname_ex(host: str) -> tuple[str, list[str], list[str]]:
        infos = getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
        return host, [], sorted({str(info[4][0]) for info in infos})

    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex

    cls: Any = socket.socket
    original_bind: Callable[..., Any] = _ORIGINAL_BIND
    original_connect: Callable[..., Any] = cls.connect
    original_connect_ex: Callable[..., Any] = cls.connect_ex
    original_sendto: Callable[..., Any] = cls.sendto

    def bind(self: socket.socket, address: Any) -> None:
        original_bind(self, network.bind_address(self.family, address))

    def connect(self: socket.socket, address: Any) -> None:
        target = network.peer_address(self.family, address)
        network.bind_source(self, target)
        original_connect(self, target)

    def connect_ex(self: socket.socket, address: Any) -> int:
        target = network.peer_address(self.family, address)
        network.bind_source(self, target)
        return int(original_connect_ex(self, target))

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        # sendto(data, address) or sendto(data, flags, address)
        if args:
            args = (*args[:-1], network.peer_address(self.family, args[-1]))
        return int(original_sendto(self, data, *args))

    cls.bind = bind
    cls.connect = connect
    cls.connect_ex = connect_ex
    cls.sendto = sendto


def loop_factory(network: PodNetwork) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of uvloop loops that resolve through ``network`` (asyncio's loop without uvloop).

    The standard loop needs nothing more than ``install``: it resolves with
    ``socket.getaddrinfo`` and binds with ``socket.socket.bind``.
    """
    try:
        import uvloop  # noqa: PLC0415 - optional, as in the engine
    except ImportError:
        return asyncio.new_event_loop

    class SandboxLoop(uvloop.Loop):
        """uvloop, with cluster names resolved before libuv sees them."""

        async def getaddrinfo(
            self,
            host: Any,
            port: Any,
            *,
            family: int = 0,
            type: int = 0,
            proto: int = 0,
            flags: int = 0,
        ) -> list[Any]:
            if isinstance(host, bytes):
                host = host.decode("idna")
            if host is None and flags & socket.AI_PASSIVE and family == socket.AF_UNSPEC:
                family = socket.AF_INET
            addresses = network.cluster_addresses(host) if host else None
            if addresses is None:
                return list(
                    await super().getaddrinfo(
                        host, port, family=family, type=type, proto=proto, flags=flags
                    )
                )
            results: list[Any] = []
            for address in addresses:
                with contextlib.suppress(socket.gaierror):
                    results += await super().getaddrinfo(
                        address,
                        port,
                        family=family,
                        type=type,
                        proto=proto,
                        flags=flags | socket.AI_NUMERICHOST,
                    )
            if not results:
                raise socket.gaierror(socket.EAI_ADDRFAMILY, "Address family not supported")
            return results

        async def create_connection(
            self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
        ) -> Any:
            host = _resolved(network, host)
            local = kwargs.get("local_addr")
            if local:
                kwargs["local_addr"] = network.bind_address(socket.AF_INET, tuple(local))
            elif kwargs.get("sock") is None and _is_loopback(host):
                kwargs["local_addr"] = (network.identity.pod_ip, 0)
            return await super().create_connection(protocol_factory, host, port, **kwargs)

        async def create_server(
            self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
        ) -> Any:
            if kwargs.get("sock") is None:
                hosts = host if isinstance(host, list | tuple) else [host]
                host = [network.bind_address(socket.AF_INET, (h or "", 0))[0] for h in hosts]
                host = host[0] if len(host) == 1 else host
            return await super().create_server(protocol_factory, host, port, **kwargs)

        async def create_datagram_endpoint(
            self,
            protocol_factory: Any,
            local_addr: Any = None,
            remote_addr: Any = None,
            **kwargs: Any,
        ) -> Any:
            if local_addr:
                local_addr = network.bind_address(socket.AF_INET, tuple(local_addr))
            if remote_addr:
                remote_addr = (_resolved(network, remote_addr[0]), *remote_addr[1:])
            return await super().create_datagram_endpoint(
                protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kwargs
            )

    return SandboxLoop


def _resolved(network: PodNetwork, host: Any) -> Any:
    """``host`` with a cluster name replaced by its first address."""
    if isinstance(host, str) and host and not _is_literal(host):
        addresses = network.cluster_addresses(host)
        if addresses:
            return addresses[0]
    return host
