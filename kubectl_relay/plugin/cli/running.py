"""Running the library from a command: the event loop, the signals that end it, the cluster."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ...engine.loops import uvloop_factory
from ..kube import Cluster, KubeOptions

T = TypeVar("T")

#: Signals that end a session (then the relay pods are deleted); Windows has no SIGHUP.
SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(Exception):
    """A handled signal ended the command (``signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_open_files_limit() -> None:
    """Let a tunnel hold as many local connections as the hard limit allows (Linux, macOS).

    Each local connection is a descriptor, and the soft limit many shells set
    is 1,024. Windows has no such limit (nor the ``resource`` module).
    """
    try:
        from ...engine.descriptors import raise_open_files_limit as raise_soft_limit  # noqa: PLC0415
    except ImportError:
        return
    raise_soft_limit()


def run_session(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a new event loop; a handled signal cancels it (``Interrupted``)."""
    raise_open_files_limit()
    received: list[int] = []

    async def until_signal() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(signum: int) -> None:
            if not received:
                received.append(signum)
                task.cancel()

        for signum in SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await coroutine
        except asyncio.CancelledError:
            if received:
                raise Interrupted(received[0]) from None
            raise
        finally:
            for signum in SIGNALS:
                with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                    loop.remove_signal_handler(signum)

    # On uvloop where it is installed: a tunnel's every message crosses the loop and,
    # to the API server, TLS, and uvloop's C loop and TLS layer took the plugin's CPU
    # per 1-byte round trip through a tunnel from 211-234 µs to 166-175 (the local
    # cluster, /proc over 4,000 round trips, two runs each).
    with asyncio.Runner(loop_factory=uvloop_factory()) as runner:
        try:
            return runner.run(until_signal())
        except KeyboardInterrupt:
            # Where the loop cannot handle signals (Windows), the runner turns
            # Ctrl-C into KeyboardInterrupt after cancelling the session.
            raise Interrupted(signal.SIGINT) from None


async def with_cluster(
    options: KubeOptions, use: Callable[[Cluster], Coroutine[Any, Any, T]]
) -> T:
    """Run ``use`` with a client of the cluster ``options`` name; the client is closed after."""
    cluster = Cluster.from_options(options)
    try:
        return await use(cluster)
    finally:
        await cluster.aclose()


def kube_from_flags(
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    as_user: str | None,
    as_groups: tuple[str, ...],
    request_timeout: float | None,
) -> KubeOptions:
    """``KubeOptions`` from kubectl's connection flags (``--request-timeout 0``: none)."""
    if request_timeout == 0:
        request_timeout = 365 * 24 * 3600.0
    return KubeOptions(kubeconfig, context, namespace, as_user, tuple(as_groups), request_timeout)


#: The connection flags (``kube_options``) in ``kube_from_flags``' order.
KUBE_FLAGS = ("kubeconfig", "context", "namespace", "as_user", "as_groups", "request_timeout")


def kube_from_params(params: dict[str, Any]) -> KubeOptions:
    """``KubeOptions`` from a command's parameters (its connection flags)."""
    return kube_from_flags(*(params[k] for k in KUBE_FLAGS))
