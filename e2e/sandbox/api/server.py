"""The sandbox API server: an aiohttp application around a :class:`Store`.

::

    server = ApiServer(backend=cluster)      # backend: logs and port-forwards of pods
    await server.start()                     # listens on 127.0.0.1, a free port by default
    server.write_kubeconfig(path)            # for kubectl, kopf and the kubernetes client
    ...
    await server.stop()                      # ends watches and port-forwards, then closes
"""

from __future__ import annotations

import os
import ssl

from aiohttp import web

from . import kubeconfig
from .auth import ADMIN, Authenticator, User
from .faults import Faults
from .routes import Routes
from .store import Store
from .streams import PodBackend

#: How long stop() lets open requests finish before closing their connections.
_SHUTDOWN_TIMEOUT = 2.0


class ApiServer:
    """A Kubernetes API server for tests and demos, on plain HTTP."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, backend: PodBackend | None = None,
        store: Store | None = None, tls: bool = False,
    ) -> None:
        """``tls``: serve HTTPS with a certificate of a CA made for this server (the kubeconfig
        carries the CA). Only then do kubectl's requests carry the user's token: client-go sends
        no credentials over plain HTTP, where requests without any count as admin's.
        """
        self.host = host
        self.port = port
        self.backend = backend
        self.store = store or Store()
        self.faults = Faults()
        self.auth = Authenticator()
        self.tls = tls
        self._ca_pem = b""
        self._ssl: ssl.SSLContext | None = None
        if tls:
            self._ssl, self._ca_pem = _tls_context(host)
        self._runner: web.AppRunner | None = None
        self._routes = Routes(self)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the real port once started)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen and serve."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._routes.handle)
        # Cancel handlers whose client went away: an abandoned watch must not linger.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                               shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """End open watches and port-forwards, then close every connection."""
        self.store.close_watches()
        self.faults.break_portforwards()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def add_user(self, name: str, *, namespaces: set[str], verbs: set[str] | None = None) -> str:
        """Register a user limited to ``namespaces`` (and ``verbs``); return its token."""
        return self.auth.add(User(name, frozenset(namespaces),
                                  frozenset(verbs) if verbs is not None else None))

    def write_kubeconfig(
        self, path: str | os.PathLike[str], *, namespace: str = "default", user: str = ADMIN,
    ) -> None:
        """Write a kubeconfig for ``user`` (``admin`` or one from :meth:`add_user`)."""
        token = self.auth.token_of(user)
        kubeconfig.write(path, kubeconfig.kubeconfig(self.url, token, namespace=namespace,
                                                     user=user, ca_pem=self._ca_pem))


def _tls_context(host: str) -> tuple[ssl.SSLContext, bytes]:
    """A server context with a certificate for ``host`` and localhost, and the CA's PEM."""
    import trustme  # noqa: PLC0415  (a test dependency, needed only with tls=True)

    ca = trustme.CA()
    cert = ca.issue_cert(host, "localhost", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context, ca.cert_pem.bytes()
