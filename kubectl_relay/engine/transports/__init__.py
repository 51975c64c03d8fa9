"""Transports: one module per address family, looked up by canonical keyword.

``OPENERS`` hold addresses that are opened actively (connect, open, spawn);
``LISTENERS`` hold passive addresses that yield one stream per peer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..addresses import Address
from . import (
    acceptfd,
    datagrams,
    files,
    generic,
    process,
    proxy,
    pty,
    socks,
    stdio,
    tcp,
    tls,
    udp,
    unix,
    vsock,
)
from .base import Listener, OpenContext, Stream

Opener = Callable[[Address, OpenContext], Awaitable[Stream]]
ListenerFactory = Callable[[Address, OpenContext], Awaitable[Listener]]

OPENERS: dict[str, Opener] = {
    "STDIO": stdio.open_stdio,
    "STDIN": stdio.open_stdio,
    "STDOUT": stdio.open_stdio,
    "STDERR": stdio.open_stdio,
    "FD": stdio.open_fd,
    "TCP": tcp.connect,
    "TCP4": tcp.connect,
    "TCP6": tcp.connect,
    "UNIX-CONNECT": unix.connect,
    "UNIX-CLIENT": unix.connect,
    "PIPE": files.open_pipe,
    "OPEN": files.open_file,
    "GOPEN": files.open_file,
    "CREATE": files.open_file,
    "EXEC": process.spawn,
    "SYSTEM": process.spawn,
    "SHELL": process.spawn,
    "UDP": udp.connect,
    "UDP4": udp.connect,
    "UDP6": udp.connect,
    "UDP-SENDTO": udp.sendto,
    "UDP4-SENDTO": udp.sendto,
    "UDP6-SENDTO": udp.sendto,
    "OPENSSL": tls.connect,
    "SOCKS4": socks.connect4,
    "SOCKS4A": socks.connect4,
    "SOCKS5-CONNECT": socks.connect5,
    "SOCKS5-LISTEN": socks.connect5,
    "PROXY": proxy.connect,
    "UDP-RECV": udp.recv,
    "UDP4-RECV": udp.recv,
    "UDP6-RECV": udp.recv,
    "UDP-DATAGRAM": udp.datagram,
    "UDP4-DATAGRAM": udp.datagram,
    "UDP6-DATAGRAM": udp.datagram,
    "UNIX-SENDTO": datagrams.unix_sendto,
    "UNIX-RECV": datagrams.unix_recv,
    "SOCKETPAIR": datagrams.socketpair,
    "PTY": pty.open_pty,
    "SOCKET-CONNECT": generic.connect,
    "SOCKET-SENDTO": generic.sendto,
    "SOCKET-DATAGRAM": generic.datagram,
    "SOCKET-RECV": generic.recv,
    "VSOCK-CONNECT": vsock.connect,
}

LISTENERS: dict[str, ListenerFactory] = {
    "TCP-LISTEN": tcp.listen,
    "TCP4-LISTEN": tcp.listen,
    "TCP6-LISTEN": tcp.listen,
    "UNIX-LISTEN": unix.listen,
    "UDP-LISTEN": udp.listen,
    "UDP4-LISTEN": udp.listen,
    "UDP6-LISTEN": udp.listen,
    "UDP-RECVFROM": udp.recvfrom,
    "UDP4-RECVFROM": udp.recvfrom,
    "UDP6-RECVFROM": udp.recvfrom,
    "OPENSSL-LISTEN": tls.listen,
    "UNIX-RECVFROM": datagrams.unix_recvfrom,
    "ACCEPT-FD": acceptfd.accept_fd,
    "SOCKET-LISTEN": generic.listen,
    "SOCKET-RECVFROM": generic.recvfrom,
    "VSOCK-LISTEN": vsock.listen,
}

__all__ = ["LISTENERS", "OPENERS", "Listener", "OpenContext", "Stream"]
