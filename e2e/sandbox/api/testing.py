"""An ApiServer on its own event loop and thread, for synchronous clients in tests.

kubectl runs as a subprocess and the kubernetes client blocks its caller, so tests that use them
cannot share one event loop with the server. :class:`ServerThread` runs the server's loop in a
thread it joins on exit (no thread outlives the ``with`` block)::

    with ServerThread(backend=FakePods()) as sandbox:
        sandbox.server.write_kubeconfig(path)
        sandbox.call(sandbox.server.store.compact)     # code that must run on the server's loop
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from .server import ApiServer
from .streams import PodBackend

T = TypeVar("T")

#: Bound for starting and stopping the server (seconds).
_STARTUP_TIMEOUT = 10.0


class ServerThread:
    """Runs an :class:`ApiServer` in a background thread while the ``with`` block lasts."""

    def __init__(self, *, backend: PodBackend | None = None, tls: bool = False,
                 **store_options: Any) -> None:
        self._backend = backend
        self._tls = tls
        self._store_options = store_options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sandbox-api", daemon=True)
        self._server: ApiServer | None = None

    @property
    def server(self) -> ApiServer:
        assert self._server is not None, "the server runs only inside the with block"
        return self._server

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = _STARTUP_TIMEOUT) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the server's loop (the store is not thread-safe)."""
        async def wrapper() -> T:
            return fn(*args)
        return self.run(wrapper())

    def __enter__(self) -> ServerThread:
        self._thread.start()

        async def start() -> ApiServer:
            from .store import Store  # noqa: PLC0415
            server = ApiServer(backend=self._backend, tls=self._tls,
                               store=Store(**self._store_options))
            await server.start()
            return server
        self._server = self.run(start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._server is not None:
                self.run(self._server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_STARTUP_TIMEOUT)
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            self._server = None


class FakePods:
    """A :class:`PodBackend` for tests: canned log lines and ports mapped to local servers.

    ``logs[(namespace, pod)]`` lists the lines a pod printed; with ``follow`` the stream waits
    for more lines (:meth:`emit`) until :meth:`finish`. ``ports[(namespace, pod, port)]`` is
    the ``(host, port)`` a port-forward connects to. Use it on the server's loop only.
    """

    def __init__(self) -> None:
        self.logs_by_pod: dict[tuple[str, str], list[bytes]] = {}
        self.ports: dict[tuple[str, str, int], tuple[str, int]] = {}
        self._changed: dict[tuple[str, str], asyncio.Event] = {}
        self._finished: set[tuple[str, str]] = set()

    def emit(self, namespace: str, pod: str, line: bytes) -> None:
        """The pod prints a line."""
        self.logs_by_pod.setdefault((namespace, pod), []).append(line)
        self._changed.setdefault((namespace, pod), asyncio.Event()).set()

    def finish(self, namespace: str, pod: str) -> None:
        """The pod's container ends: following streams end."""
        self._finished.add((namespace, pod))
        self._changed.setdefault((namespace, pod), asyncio.Event()).set()

    async def logs(
        self, namespace: str, pod: str, container: str | None, *, follow: bool,
        tail_lines: int | None = None,
    ) -> AsyncIterator[bytes]:
        key = (namespace, pod)
        lines = self.logs_by_pod.get(key, [])
        sent = max(len(lines) - tail_lines, 0) if tail_lines is not None else 0
        while True:
            lines = self.logs_by_pod.get(key, [])
            while sent < len(lines):
                yield lines[sent]
                sent += 1
            if not follow or key in self._finished:
                return
            changed = self._changed.setdefault(key, asyncio.Event())
            changed.clear()
            await changed.wait()

    async def connect(
        self, namespace: str, pod: str, port: int,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = self.ports.get((namespace, pod, port))
        if address is None:
            raise ConnectionRefusedError(f"connect: connection refused (port {port})")
        return await asyncio.open_connection(*address)
