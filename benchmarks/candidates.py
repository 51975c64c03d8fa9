"""The programs compared: the relay engine, socat 1.8.0.3 (default and ``-b 1M``), HAProxy, nginx.

Beside them, in the connection-rate and latency workloads, Python's floor:
two relays written for this harness that only pass bytes and EOFs on
(``peers.floor``), one on uvloop's transports and one on a bare epoll loop.

socat and the relay run at their default settings (no ``-b``): what a user
gets; "socat-b1M" is socat with a 1 MiB buffer, its best bulk setting.
HAProxy and nginx (its ``stream`` module) forward TCP in TCP mode with a
configuration written to the run's scratch directory: foreground, no daemon,
their pid files there too, nothing under /etc or /var. ``direct`` is not a
program but the absence of one: the client talks to the server itself, which
shows what the machine can do at all.

A peer that is not installed is left out of the run, with the reason printed
(``./dev bench`` installs them from Debian's packages).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from scripts import socat18

#: A candidate's name: ``relay``, ``relay-workers``, ``relay-general``, ``socat``,
#: ``socat-b1M``, ``haproxy``, ``nginx``, ``floor-uvloop``, ``floor-epoll`` or
#: ``direct`` (no program at all).
CandidateName = str

#: Every name, in the order of a first round; later rounds rotate it (see ``runner``).
ORDER: tuple[CandidateName, ...] = (
    "socat", "relay", "haproxy", "socat-b1M", "nginx", "relay-general", "relay-workers",
    "floor-uvloop", "floor-epoll", "direct",
)

#: The candidates compared with relay in every goal that names "every peer".
PEERS: tuple[CandidateName, ...] = ("socat", "socat-b1M", "haproxy", "nginx")

#: Python's floor (``peers.floor``): relays that only pass bytes on, measured
#: where the engine's figure is mostly per-connection or per-message work.
FLOORS: tuple[CandidateName, ...] = ("floor-uvloop", "floor-epoll")

#: How a user runs the engine (the ``relay`` console script is the same entry point).
RELAY_COMMAND = (sys.executable, "-m", "kubectl_relay.engine")

#: Where Debian's libnginx-mod-stream puts the dynamic ``stream`` module.
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

#: The environment that puts the relay on its general path (``session.FAST_PATH_VARIABLE``).
GENERAL_PATH_ENVIRONMENT = "RELAY_FAST_PATH=0"

#: ``relay-workers``' ``--workers`` unless ``--relay-workers`` says otherwise.
DEFAULT_RELAY_WORKERS = 2


@dataclass(frozen=True)
class Forward:
    """What a forwarding candidate does: listen on ``port``, relay to ``upstream``.

    ``tls_cert`` (one PEM file with certificate and key) terminates TLS on
    the listening side; ``options`` are socat-style global options (``-v``),
    which only socat-style candidates take.
    """

    port: int
    upstream: int
    tls_cert: Path | None = None
    options: tuple[str, ...] = ()
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Candidate:
    """A socat-compatible program: the command before its options and addresses."""

    name: CandidateName
    command: tuple[str, ...]
    #: Options added to the listening address.
    listen_options: tuple[str, ...] = ()
    #: Whether it takes socat's command line (``-V``, ``-v``, any address).
    socat_style: bool = True

    def argv(self, *args: str) -> list[str]:
        """The full command line for socat-style ``args``."""
        return [*self.command, *args]

    def forward_argv(self, forward: Forward, workdir: Path) -> list[str]:
        """The command line that forwards ``forward.port`` to ``forward.upstream``."""
        options = "".join(f",{option}" for option in self.listen_options)
        if forward.tls_cert is not None:
            listen = (f"OPENSSL-LISTEN:{forward.port},cert={forward.tls_cert},verify=0,"
                      f"fork,reuseaddr{options}")
        else:
            listen = f"TCP-LISTEN:{forward.port},fork,reuseaddr{options}"
        return self.argv(*forward.options, listen, f"TCP:{forward.host}:{forward.upstream}")

    def version(self) -> str:
        """The program's own version line (``-V``), or why there is none."""
        return _version_line(self.argv("-V"))


@dataclass(frozen=True)
class ConfiguredProxy(Candidate):
    """HAProxy or nginx: a configuration file per run, written to the scratch directory."""

    socat_style: bool = False
    version_flag: str = "-v"

    def forward_argv(self, forward: Forward, workdir: Path) -> list[str]:
        if forward.options:
            raise ValueError(f"{self.name} takes no socat options {forward.options}")
        directory = workdir / f"{self.name}-{forward.port}"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / f"{self.name}.conf"
        if self.name == "haproxy":
            config.write_text(haproxy_config(forward, directory))
            # -db: stay in the foreground, no daemon, no master process.
            return self.argv("-db", "-f", str(config))
        config.write_text(nginx_config(forward, directory))
        return self.argv("-p", str(directory), "-c", str(config), "-e", "stderr")

    def version(self) -> str:
        return _version_line([*self.command, self.version_flag])


def haproxy_config(forward: Forward, directory: Path) -> str:
    """HAProxy in TCP mode, all threads (one per core by default), long timeouts.

    No ``maxconn``: HAProxy derives it from the open-file limit, and refuses to
    start when a set one needs more descriptors than the limit allows.
    """
    tls = f" ssl crt {forward.tls_cert}" if forward.tls_cert else ""
    return f"""global
    pidfile {directory}/haproxy.pid
defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h
frontend bench
    bind {forward.host}:{forward.port}{tls}
    default_backend upstream
backend upstream
    server upstream {forward.host}:{forward.upstream}
"""


def nginx_config(forward: Forward, directory: Path) -> str:
    """nginx's ``stream`` proxy, one worker per core (``auto``), no daemon.

    TLS 1.3 is named because nginx 1.22's stream module offers only up to
    TLS 1.2 by default, and the others negotiate 1.3.
    """
    tls = " ssl" if forward.tls_cert else ""
    certificate = (
        f"        ssl_certificate {forward.tls_cert};\n"
        f"        ssl_certificate_key {forward.tls_cert};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
    ) if forward.tls_cert else ""
    return f"""load_module {NGINX_STREAM_MODULE};
daemon off;
worker_processes auto;
pid {directory}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 8192;
}}
stream {{
    server {{
        listen {forward.host}:{forward.port}{tls};
{certificate}        proxy_pass {forward.host}:{forward.upstream};
    }}
}}
"""


def _version_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, check=False, text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
    versions = [line for line in lines if " version" in line.lower()]
    if done.returncode != 0 and not versions:
        return f"unavailable ({argv[-1]} exited with {done.returncode})"
    return versions[0] if versions else (lines[0] if lines else "unknown")


def relay(command: str | None = None) -> Candidate:
    """The engine, or another command standing in for it (``--relay-command``)."""
    return Candidate("relay", tuple(shlex.split(command)) if command else RELAY_COMMAND)


def relay_general(command: str | None = None) -> Candidate:
    """The engine forced onto its general path, to compare the fast path with."""
    base = relay(command)
    return Candidate("relay-general", ("env", GENERAL_PATH_ENVIRONMENT, *base.command))


def floor(name: CandidateName) -> Candidate:
    """``floor-uvloop`` or ``floor-epoll``: the least a Python relay does (``peers.floor``)."""
    mode = name.removeprefix("floor-")
    return Candidate(name, (sys.executable, "-m", "benchmarks.peers.floor", mode),
                     socat_style=False)


def relay_workers(command: str | None = None, workers: int = DEFAULT_RELAY_WORKERS) -> Candidate:
    """The engine with ``--workers``: that many processes accepting on the one port."""
    base = relay(command)
    return Candidate("relay-workers", (*base.command, "--workers", str(workers)))


def socat(path: str | None = None) -> Candidate:
    """The real socat: ``path``, else socat 1.8.0.3 as ``./dev setup`` builds it."""
    found = path or socat18.built_socat()
    if not found:
        raise SystemExit(
            f"socat {socat18.VERSION} is not built: ./dev setup builds it "
            "(python scripts/socat18.py), or give --socat PATH"
        )
    return Candidate("socat", (str(found),))


def socat_tuned(plain: Candidate) -> Candidate:
    """The same socat with a 1 MiB buffer (``-b 1048576``): its best bulk figure."""
    return Candidate("socat-b1M", (*plain.command, "-b", "1048576"))


def _sbin(program: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return shutil.which(program, path=path)


def haproxy() -> Candidate | str:
    """HAProxy, or why it cannot run (the reason is printed and the peer skipped)."""
    found = _sbin("haproxy")
    if found is None:
        return "haproxy is not installed (Debian package haproxy; ./dev bench installs it)"
    return ConfiguredProxy("haproxy", (found,))


def nginx() -> Candidate | str:
    """nginx with its ``stream`` module, or why it cannot run."""
    found = _sbin("nginx")
    if found is None:
        return "nginx is not installed (Debian package nginx-light; ./dev bench installs it)"
    if not NGINX_STREAM_MODULE.exists():
        return (f"nginx has no stream module ({NGINX_STREAM_MODULE} is missing: Debian "
                "package libnginx-mod-stream; ./dev bench installs it)")
    return ConfiguredProxy("nginx", (found,), version_flag="-v")
