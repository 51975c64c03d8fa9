"""What can go wrong in ``kubectl relay``, each with its cause, its fix and its exit code.

Every error is one line for the user: ``str(error)`` is "<cause>; <fix>". The
CLI maps ``exit_code`` to the process status in one place (``cli.main``)::

    PluginError                      exit 1  a runtime failure
    ├── TargetSyntaxError            exit 2  a TARGET or --listen that does not parse
    ├── TunnelFileError              exit 2  a tunnel file with mistakes (each with its line)
    ├── ClusterError                 exit 3  the cluster refused or lacks something
    │   ├── ConfigError                      no usable kubeconfig / context
    │   ├── ApiError                         an API request failed (status, reason)
    │   │   └── AccessDenied                 403: no rights in the namespace
    │   ├── TargetNotFound                   the Service, pod or Deployment does not exist
    │   ├── PortNotFound                     the named or numbered port is not there
    │   └── CleanupError                     what the session created could not be deleted
    ├── LocalPortInUse               exit 4  the local listener cannot be bound
    ├── RelayPodError                exit 5  the relay pod cannot start
    │   ├── ImagePullError                   ErrImagePull / ImagePullBackOff
    │   ├── Unschedulable                    the scheduler cannot place it
    │   └── PodNotReady                      not ready before --pod-timeout
    └── TunnelError                  exit 1  the tunnel failed while running
        └── PortForwardError                 the API server's port-forward failed
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Exit statuses (``kubectl relay --help`` lists them).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CLUSTER = 3
EXIT_LOCAL_PORT = 4
EXIT_POD = 5


class PluginError(Exception):
    """Root of the plugin's errors: a cause, a fix, an exit code."""

    exit_code = EXIT_FAILURE

    def __init__(self, cause: str, fix: str = "") -> None:
        super().__init__(cause, fix)
        self.cause = cause
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.cause}; {self.fix}" if self.fix else self.cause


class TargetSyntaxError(PluginError):
    """A TARGET or listen address that does not parse (``text``: what was given)."""

    exit_code = EXIT_USAGE

    def __init__(self, text: str, reason: str, accepted: str) -> None:
        super().__init__(f'"{text}": {reason}', f"accepted: {accepted}")
        self.text = text
        self.reason = reason
        self.accepted = accepted


@dataclass(frozen=True)
class Mistake:
    """One mistake in a tunnel file: where (file, 1-based line and column, key path) and what."""

    source: str
    line: int
    column: int
    #: The key path of the offending value, ``tunnels[2].target`` (empty: the whole file).
    path: str
    #: What was wrong.
    problem: str
    #: What is accepted there (empty when the problem says it).
    accepted: str = ""

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}: "
        key = f"{self.path}: " if self.path else ""
        accepted = f" (accepted: {self.accepted})" if self.accepted else ""
        return where + key + self.problem + accepted


class TunnelFileError(PluginError):
    """A tunnel file that cannot be used: every mistake at once, nothing was started."""

    exit_code = EXIT_USAGE

    def __init__(self, source: str, mistakes: Sequence[Mistake]) -> None:
        count = f"{len(mistakes)} mistake{'s' if len(mistakes) != 1 else ''}"
        super().__init__(f"{source}: {count}, nothing was started")
        self.source = source
        self.mistakes = tuple(mistakes)

    def __str__(self) -> str:
        return "\n".join([self.cause, *(f"  {mistake}" for mistake in self.mistakes)])


class ClusterError(PluginError):
    """The cluster refused a request or lacks what the command names."""

    exit_code = EXIT_CLUSTER


class ConfigError(ClusterError):
    """No kubeconfig, no such context, or a kubeconfig that cannot be used."""


class ApiError(ClusterError):
    """An API request failed: HTTP ``status``, the Status ``reason`` and ``message``."""

    def __init__(self, status: int, reason: str, message: str, fix: str = "") -> None:
        super().__init__(message or f"{status} {reason}", fix)
        self.status = status
        self.reason = reason
        self.message = message


class AccessDenied(ApiError):
    """403 Forbidden: the user may not do what the tunnel needs in the namespace."""


class TargetNotFound(ClusterError):
    """The named Service, pod or Deployment does not exist in the namespace."""


class PortNotFound(ClusterError):
    """The target has no port of that name or number."""


class CleanupError(ClusterError):
    """Deleting what the session created failed (``left``: the objects still there)."""

    def __init__(self, cause: str, fix: str, left: tuple[str, ...]) -> None:
        super().__init__(cause, fix)
        self.left = left


class LocalPortInUse(PluginError):
    """The local listener's address is taken (or not bindable)."""

    exit_code = EXIT_LOCAL_PORT


class RelayPodError(PluginError):
    """The relay pod did not start (``pod``: its namespace/name)."""

    exit_code = EXIT_POD

    def __init__(self, pod: str, cause: str, fix: str) -> None:
        super().__init__(cause, fix)
        self.pod = pod


class ImagePullError(RelayPodError):
    """The relay image cannot be pulled."""


class Unschedulable(RelayPodError):
    """No node can run the relay pod."""


class PodNotReady(RelayPodError):
    """The relay pod did not become ready in time (or ended before it did)."""


class TunnelError(PluginError):
    """The tunnel failed after it was up."""


class PortForwardError(TunnelError):
    """The API server's port-forward to the relay pod failed or broke."""

    def __init__(self, cause: str, fix: str = "", *, refused: bool = False) -> None:
        super().__init__(cause, fix)
        #: The pod's side refused the connection (nothing listens on the port).
        self.refused = refused


def first_error(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a task group's failures: the first plugin error, if any."""
    flat: list[BaseException] = []

    def walk(group: BaseExceptionGroup[BaseException]) -> None:
        for exc in group.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                walk(exc)
            else:
                flat.append(exc)

    walk(failures)
    return next((e for e in flat if isinstance(e, PluginError)), flat[0])
