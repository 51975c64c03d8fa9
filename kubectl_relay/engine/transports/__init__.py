"""Transports: one module per address family, looked up by canonical keyword.

``OPENERS`` hold addresses that are opened actively (connect, open, spawn);
``LISTENERS`` hold passive addresses that yield one stream per peer.

Both tables name each transport's function as ``"module:function"`` and
import the module the first time an address of it is opened: a relay of
two UNIX sockets never imports ``ssl``-using or PTY code, and ``relay -V``
imports no transport at all (start-up time is what socat's own tests and
short-lived ``kubectl exec`` relays wait for).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

# Not ``typing``'s: a TCP listener binds (``sockbind``, in this package)
# before anything imports ``typing`` (milliseconds at start-up).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import TypeVar

    from ..addresses import Address
    from .base import Listener, OpenContext, Stream

    Opener = Callable[[Address, OpenContext], Awaitable[Stream]]
    ListenerFactory = Callable[[Address, OpenContext], Awaitable[Listener]]

    _Function = TypeVar("_Function")
else:
    _Function = object


class TransportTable(Mapping[str, _Function]):
    """Keyword -> transport function, each module imported on first use.

    ``keyword in table`` and iterating the keywords import nothing.
    """

    def __init__(self, entries: Mapping[str, str]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, keyword: str) -> _Function:
        module_name, _, function_name = self._entries[keyword].partition(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        function: _Function = getattr(module, function_name)
        return function

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, keyword: object) -> bool:
        return keyword in self._entries


OPENERS: TransportTable[Opener] = TransportTable({
    "STDIO": "stdio:open_stdio",
    "STDIN": "stdio:open_stdio",
    "STDOUT": "stdio:open_stdio",
    "STDERR": "stdio:open_stdio",
    "FD": "stdio:open_fd",
    "TCP": "tcp:connect",
    "TCP4": "tcp:connect",
    "TCP6": "tcp:connect",
    "UNIX-CONNECT": "unix:connect",
    "UNIX-CLIENT": "unix:connect",
    "ABSTRACT-CONNECT": "unix:connect",
    "ABSTRACT-CLIENT": "unix:connect",
    "PIPE": "files:open_pipe",
    "OPEN": "files:open_file",
    "GOPEN": "files:open_file",
    "CREATE": "files:open_file",
    "EXEC": "process:spawn",
    "SYSTEM": "process:spawn",
    "SHELL": "process:spawn",
    "UDP": "udp:connect",
    "UDP4": "udp:connect",
    "UDP6": "udp:connect",
    "UDP-SENDTO": "udp:sendto",
    "UDP4-SENDTO": "udp:sendto",
    "UDP6-SENDTO": "udp:sendto",
    "OPENSSL": "tls:connect",
    "SOCKS4": "socks:connect4",
    "SOCKS4A": "socks:connect4",
    "SOCKS5-CONNECT": "socks:connect5",
    "SOCKS5-LISTEN": "socks:connect5",
    "PROXY": "proxy:connect",
    "PROXY-SERVER": "proxyserver:serve",
    "UDP-RECV": "udp:recv",
    "UDP4-RECV": "udp:recv",
    "UDP6-RECV": "udp:recv",
    "UDP-DATAGRAM": "udp:datagram",
    "UDP4-DATAGRAM": "udp:datagram",
    "UDP6-DATAGRAM": "udp:datagram",
    "UNIX-SENDTO": "datagrams:unix_sendto",
    "UNIX-RECV": "datagrams:unix_recv",
    "ABSTRACT-SENDTO": "datagrams:unix_sendto",
    "ABSTRACT-RECV": "datagrams:unix_recv",
    "SOCKETPAIR": "datagrams:socketpair",
    "PTY": "pty:open_pty",
    "SOCKET-CONNECT": "generic:connect",
    "SOCKET-SENDTO": "generic:sendto",
    "SOCKET-DATAGRAM": "generic:datagram",
    "SOCKET-RECV": "generic:recv",
    "VSOCK-CONNECT": "vsock:connect",
    "MUX-LISTEN": "mux:open_stream",
})

LISTENERS: TransportTable[ListenerFactory] = TransportTable({
    "TCP-LISTEN": "tcp:listen",
    "TCP4-LISTEN": "tcp:listen",
    "TCP6-LISTEN": "tcp:listen",
    "UNIX-LISTEN": "unix:listen",
    "UDP-LISTEN": "udp:listen",
    "UDP4-LISTEN": "udp:listen",
    "UDP6-LISTEN": "udp:listen",
    "UDP-RECVFROM": "udp:recvfrom",
    "UDP4-RECVFROM": "udp:recvfrom",
    "UDP6-RECVFROM": "udp:recvfrom",
    "OPENSSL-LISTEN": "tls:listen",
    "UNIX-RECVFROM": "datagrams:unix_recvfrom",
    "ABSTRACT-LISTEN": "unix:listen",
    "ABSTRACT-RECVFROM": "datagrams:unix_recvfrom",
    "ACCEPT-FD": "acceptfd:accept_fd",
    "SOCKET-LISTEN": "generic:listen",
    "SOCKET-RECVFROM": "generic:recvfrom",
    "VSOCK-LISTEN": "vsock:listen",
    "MUX-ACCEPT": "mux:accept_streams",
})

#: Openers that answer the first address's peer before they connect (``OpenContext.peer``).
ANSWERING = frozenset({"PROXY-SERVER"})


def preload(*keywords: str) -> None:
    """Import the transports of ``keywords`` now rather than when they are first opened."""
    for keyword in keywords:
        table: Mapping[str, object] = LISTENERS if keyword in LISTENERS else OPENERS
        if keyword in table:
            table[keyword]  # looking the function up imports its module


__all__ = ["ANSWERING", "LISTENERS", "OPENERS", "TransportTable", "preload"]
