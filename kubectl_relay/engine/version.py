"""``relay -V``: version and features in the shape of socat's ``-V`` (socat.c ``socat_version``).

socat 1.8.1 prints::

    socat by Gerhard Rieger and contributors - see www.dest-unreach.org
    socat version 1.8.1.0 on <build date>
       running on Linux version #1 SMP ..., release 6.8.0, machine x86_64
    features:
      #define WITH_HELP 1
      #undef WITH_READLINE
      ...

We keep that shape with our own first line, which carries our version:
``relay from kubectl-relay version 0.1.0 - ...``. The second line reads
``socat version 1.8.1.0 compatible``: scripts that read socat's version
(``awk '{print $3}'`` on the ``socat version`` line, ``socat version
([0-9.]+)``, and socat's own test.sh, whose sed takes the *last* number of the
second line) use it to decide which socat behaviour they may rely on, and the
socat release we reproduce is the answer to that question; so no other
version number may follow it on that line. socat's ``on <build date>`` is left
out: we have no build date, and "socat version X on <date>" would read as a
claim to be a socat build.
"""

from __future__ import annotations

import os
import sys

from .. import __version__

#: The socat release whose command line, logs and traces we reproduce.
SOCAT_COMPATIBLE_VERSION = "1.8.1.0"

#: socat 1.8.1's ``-V`` features in its order, with the value we print for
#: ``#define WITH_<NAME> <value>``, or None for ``#undef WITH_<NAME>``.
#: Defined: what the engine implements (transports in ``transports/``, the
#: CLI's ``-h``, the session's retry options, all message levels).
FEATURES: tuple[tuple[str, str | None], ...] = (
    ("HELP", "1"),  # -h, -hh, -hhh
    ("STATS", "1"),  # --statistics, SIGUSR1
    ("STDIO", "1"),  # STDIO, STDIN, STDOUT, STDERR, "-"
    ("FDNUM", "1"),  # FD:<n> and bare numbers
    ("FILE", "1"),  # OPEN
    ("CREAT", "1"),  # CREATE
    ("GOPEN", "1"),  # GOPEN and bare paths
    ("TERMIOS", None),
    ("PIPE", "1"),  # PIPE (named and unnamed)
    ("STALL", None),
    ("TEXT", None),
    ("SOCKETPAIR", "1"),  # SOCKETPAIR
    ("UNIX", "1"),  # UNIX-CONNECT, UNIX-LISTEN, UNIX-CLIENT
    ("ABSTRACT_UNIXSOCKET", "1"),  # ABSTRACT-CONNECT, -LISTEN, -CLIENT, -SENDTO, -RECV(FROM)
    ("IP4", "1"),
    ("IP6", "1"),
    ("RAWIP", None),
    ("GENERICSOCKET", "1"),  # SOCKET-CONNECT, -LISTEN, -SENDTO, -RECV, -RECVFROM, -DATAGRAM
    ("INTERFACE", None),
    ("TCP", "1"),  # TCP, TCP4, TCP6
    ("UDP", "1"),  # UDP, UDP-SENDTO, UDP-RECVFROM, UDP-LISTEN
    ("SCTP", None),
    ("DCCP", None),
    ("UDPLITE", None),
    ("LISTEN", "1"),  # TCP-LISTEN, UNIX-LISTEN, UDP-LISTEN, OPENSSL-LISTEN
    ("POSIXMQ", None),
    ("SOCKS4", "1"),  # SOCKS4
    ("SOCKS4A", "1"),  # SOCKS4A
    ("SOCKS5", "1"),  # SOCKS5-CONNECT
    ("VSOCK", "1"),  # VSOCK-CONNECT, VSOCK-LISTEN
    ("NAMESPACES", None),
    ("PROXY", "1"),  # PROXY (HTTP CONNECT)
    ("SYSTEM", "1"),
    ("SHELL", "1"),
    ("EXEC", "1"),
    ("READLINE", None),
    ("TUN", None),
    ("PTY", "1"),  # PTY (terminal options on PTY only: TERMIOS stays undefined)
    ("OPENSSL", "1"),  # OPENSSL, OPENSSL-LISTEN
    ("FIPS", None),
    ("LIBWRAP", None),
    ("SYCLS", None),
    ("FILAN", None),  # -D
    ("RETRY", "1"),  # retry=, forever, interval=
    ("DEVTESTS", None),
    # socat prints the lowest level compiled in with its name in a comment;
    # every level down to debug works here (-d -d -d -d).
    ("MSGLEVEL", "0 /*debug*/"),
    # socat's configure-time default IP version; we have none (without -4/-6
    # the transports take what the resolver returns).
    ("DEFAULT_IPV", None),
)


def python_version() -> str:
    """``3.11.7``: what ``platform.python_version()`` says, without importing ``platform``."""
    return sys.version.split()[0]


def version_text(progname: str, *, uname: os.uname_result | None = None) -> str:
    """The text ``-V`` prints to stdout, ending in a newline.

    ``uname`` defaults to ``os.uname()`` (socat: "running on %s version %s,
    release %s, machine %s", from ``uname(2)``).
    """
    system = os.uname() if uname is None else uname
    lines = [
        f"{progname} from kubectl-relay version {__version__} - a socat-compatible relay "
        f"written in Python {python_version()}",
        f"socat version {SOCAT_COMPATIBLE_VERSION} compatible",
        f"   running on {system.sysname} version {system.version}, "
        f"release {system.release}, machine {system.machine}",
        "features:",
    ]
    for name, value in FEATURES:
        if value is None:
            lines.append(f"  #undef WITH_{name}")
        else:
            lines.append(f"  #define WITH_{name} {value}")
    return "\n".join(lines) + "\n"
