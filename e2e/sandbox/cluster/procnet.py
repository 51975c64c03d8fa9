"""A pod's own ``/proc/net/{tcp,tcp6,udp,udp6}``, for exec probes that read the socket tables.

In a real pod these tables list the sockets of the pod's network namespace
only; here every process shares the host's. The operator's readiness probe
(``grep`` for a LISTEN socket on the relay's port in ``/proc/net/tcp``) would
then pass as soon as any process on the machine listens on that port. So
before an exec probe runs, the kubelet writes the host's tables filtered to
the sockets bound to the pod's IP, and points the probe's paths at them (the
same rewriting as volume mounts).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

TABLES = ("tcp", "tcp6", "udp", "udp6")


def _hex_v4(ip: str) -> str:
    """An IPv4 address as /proc/net/tcp prints it: a 32-bit word in host byte order."""
    packed = socket.inet_aton(ip)
    return (packed[::-1] if sys.byteorder == "little" else packed).hex().upper()


def _hex_v4_mapped(ip: str) -> str:
    """``::ffff:<ip>`` as /proc/net/tcp6 prints it: four 32-bit words in host byte order."""
    words = [b"\0\0\0\0", b"\0\0\0\0", b"\0\0\xff\xff", socket.inet_aton(ip)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    return b"".join(words).hex().upper()


def write_pod_view(target: Path, pod_ip: str) -> dict[str, str]:
    """Write the filtered tables under ``target``; return ``/proc/net/<table>`` -> file."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = (_hex_v4(pod_ip) + ":", _hex_v4_mapped(pod_ip) + ":")
    mounts = {}
    for table in TABLES:
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines(keepends=True)
        except OSError:
            continue  # no IPv6 in this kernel: the probe reads a missing file, as in the pod
        kept = lines[:1] + [
            line for line in lines[1:] if line.split()[1:2] and line.split()[1].startswith(wanted)
        ]
        path = target / table
        path.write_text("".join(kept))
        mounts[f"/proc/net/{table}"] = str(path)
    return mounts
