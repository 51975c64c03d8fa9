"""What every part of the local cluster implements, and the base for daemons.

A component is one small named step of ``up`` (kind's create "actions" are the
model): ``start()`` does its work, ``ready()`` is polled (bounded) until it
holds, and ``stop()`` undoes everything ``start()`` did. ``stop()`` must be
safe when ``start()`` never ran or failed half-way, and safe to call twice:
``down`` calls it after crashes and reboots too.

Exceptions::

    ClusterError                 what went wrong, for the user (no traceback)
    └── ComponentError           one component failed: which, why, its log's tail
"""

from __future__ import annotations

import ssl
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from e2e.localcluster.processes import Daemon
from e2e.localcluster.settings import ClusterSettings


class ClusterError(Exception):
    """The local cluster could not be built, started or stopped; the message says why."""


class ComponentError(ClusterError):
    """Component ``component`` failed (``reason``); ``log`` is the tail of its log, if any."""

    def __init__(self, component: str, reason: str, log: str = "") -> None:
        super().__init__(component, reason, log)
        self.component = component
        self.reason = reason
        self.log = log

    def __str__(self) -> str:
        text = f"{self.component}: {self.reason}"
        if self.log:
            indented = "\n".join(f"    {line}" for line in self.log.splitlines())
            text += f"\n  last lines of its log:\n{indented}"
        return text


class Component(Protocol):
    """One step of ``up``, undone by ``down`` (see the module docstring)."""

    name: str
    """Short name shown in the progress lines (``etcd``, ``kubelet``...)."""

    ready_timeout: float
    """Seconds ``up`` polls ``ready()`` before it gives up."""

    def start(self) -> None:
        """Do the work: write configuration, start the daemon, create the device..."""

    def ready(self) -> bool:
        """Whether the component works (raise ``ComponentError`` when it never will)."""

    def stop(self) -> None:
        """Undo ``start()``; safe when it never ran, ran half-way, or was stopped already."""


#: How ``cluster.py`` builds a component from the settings (a class is one).
ComponentFactory = Callable[[ClusterSettings], Component]


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25
) -> None:
    """Poll ``check`` until it holds; raise ``ComponentError(what)`` after ``timeout`` s.

    An exception from ``check`` other than ``ComponentError`` counts as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            if check():
                return
        except ComponentError:
            raise
        except Exception as exc:
            last_error = f" (last error: {exc})"
        if time.monotonic() >= deadline:
            raise ComponentError(what, f"not ready after {timeout:g}s{last_error}")
        time.sleep(interval)


class DaemonComponent(ABC):
    """A component that is one long-running process of ``processes.Daemon``.

    Subclasses give ``name``, ``argv()`` and ``ready()``, and may override
    ``prepare()`` (write configuration before the start) and ``cleanup()``
    (remove what the process left, after it stopped).
    """

    name: str
    ready_timeout: float = 60.0
    stop_timeout: float = 15.0
    process_name: str = ""
    """Name of the log and pidfile when ``name`` is a sentence (empty: ``name``)."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings

    @abstractmethod
    def argv(self) -> Sequence[str]:
        """The daemon's command line (``argv[0]`` a path); no side effects (``stop`` calls it)."""

    @abstractmethod
    def ready(self) -> bool:
        """Whether the daemon serves; call ``check_alive()`` first in it."""

    def prepare(self) -> None:
        """Before the start: write configuration files, create directories."""
        return

    def cleanup(self) -> None:
        """After the stop: remove what the process left behind (mounts, sockets...)."""
        return

    @property
    def daemon(self) -> Daemon:
        """The process, with its log and pidfile in the state directory."""
        process = self.process_name or self.name
        return Daemon(
            name=process,
            argv=list(self.argv()),
            log_path=self.settings.log_file(process),
            pid_path=self.settings.pid_file(process),
        )

    def start(self) -> None:
        """``prepare()``, then spawn the daemon."""
        self.prepare()
        self.daemon.start()

    def check_alive(self) -> None:
        """Raise ``ComponentError`` with the log's tail when the daemon has exited."""
        daemon = self.daemon
        if not daemon.running():
            raise ComponentError(self.name, "not running", daemon.log_tail())

    def stop(self) -> None:
        """Stop the daemon (if it runs), then ``cleanup()``."""
        self.daemon.stop(self.stop_timeout)
        self.cleanup()


def admin_kubectl(
    settings: ClusterSettings, component: str, *arguments: str, stdin: str | None = None
) -> str:
    """Run kubectl as the cluster's admin for ``component``; its stdout, or ``ComponentError``."""
    command = [str(settings.binary("kubectl")), f"--kubeconfig={settings.admin_kubeconfig}"]
    result = subprocess.run(
        [*command, *arguments], input=stdin, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise ComponentError(
            component, f"`kubectl {' '.join(arguments)}` failed", result.stderr.strip()
        )
    return result.stdout


def https_get(
    url: str,
    *,
    ca_file: Path | None = None,
    client_cert: tuple[Path, Path] | None = None,
    timeout: float = 5.0,
) -> tuple[int, str]:
    """GET ``url`` over HTTPS; return (status, body). Health checks of the daemons.

    ``ca_file`` None skips the server check (loopback endpoints whose serving
    certificate is self-signed by the component, like the scheduler's).
    """
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if ca_file is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(errors="replace")
