"""Authentication by bearer token and a small authorizer, enough to test "no rights".

Users are bearer tokens in the kubeconfig. ``admin`` may do everything, including impersonating
another user with the ``Impersonate-User`` header (as ``kubectl --as``). Other users are limited
to a set of namespaces and, optionally, of verbs; they never get cluster-scoped resources. Every
authenticated user may read discovery and OpenAPI documents, as ``system:discovery`` grants.
Refusals use the real server's wording: ``pods is forbidden: User "x" cannot create resource
"pods" in API group "" in the namespace "default"``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import Forbidden, Unauthorized

ADMIN = "admin"
ANONYMOUS = "system:anonymous"

#: Paths anyone may GET (health and version), as the real server's public-info-viewer role.
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")


@dataclass(frozen=True)
class User:
    """A user's rights: ``namespaces`` None means everything (admin)."""

    name: str
    namespaces: frozenset[str] | None = None
    verbs: frozenset[str] | None = None

    @property
    def is_admin(self) -> bool:
        return self.namespaces is None


class Authenticator:
    """Tokens to users, and the authorization decisions."""

    def __init__(self) -> None:
        self._by_token: dict[str, User] = {}
        self._by_name: dict[str, User] = {}
        self.admin_token = self.add(User(ADMIN))

    def add(self, user: User) -> str:
        """Register a user; return a fresh token for it."""
        token = secrets.token_hex(16)
        self._by_token[token] = user
        self._by_name[user.name] = user
        return token

    def token_of(self, name: str) -> str:
        """The (first) token of a registered user."""
        for token, user in self._by_token.items():
            if user.name == name:
                return token
        raise KeyError(name)

    def authenticate(self, headers: Mapping[str, str], *, secure: bool = True) -> User:
        """The user behind a request's ``Authorization`` (and ``Impersonate-User``) headers.

        Without credentials, a request is anonymous on a TLS server. On plain HTTP it is admin,
        as on the real server's old insecure port: client-go (so kubectl) never sends
        credentials over plain HTTP, while the Python client and kopf do.
        """
        header = headers.get("Authorization", "")
        if not header:
            user = (User(ANONYMOUS, namespaces=frozenset(), verbs=frozenset()) if secure
                    else self._by_name[ADMIN])
        else:
            scheme, _, token = header.partition(" ")
            found = self._by_token.get(token.strip()) if scheme.lower() == "bearer" else None
            if found is None:
                raise Unauthorized("Unauthorized")
            user = found
        target = headers.get("Impersonate-User")
        if target:
            if not user.is_admin:
                raise Forbidden(f'users "{target}" is forbidden: User "{user.name}" cannot '
                                f'impersonate resource "users" in API group "" at the cluster '
                                f"scope", name=target, kind="users")
            # Unknown names are valid users without rights, as under RBAC.
            user = self._by_name.get(target) or User(target, frozenset(), frozenset())
        return user

    @staticmethod
    def authorize(
        user: User, verb: str, *, resource: str, group: str, namespace: str | None,
        name: str | None = None,
    ) -> None:
        """Raise Forbidden unless ``user`` may ``verb`` the resource (``pods``, ``pods/log``)."""
        if user.is_admin:
            return
        allowed = (
            namespace is not None
            and user.namespaces is not None and namespace in user.namespaces
            and (user.verbs is None or verb in user.verbs)
        )
        if allowed:
            return
        plural = resource.split("/", 1)[0]
        what = f'{plural}.{group}' if group else plural
        subject = f'{what} "{name}"' if name else what
        scope = (f'in the namespace "{namespace}"' if namespace is not None
                 else "at the cluster scope")
        raise Forbidden(
            f'{subject} is forbidden: User "{user.name}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" {scope}',
            name=name, group=group or None, kind=plural,
        )

    @staticmethod
    def authorize_path(user: User, path: str) -> None:
        """Non-resource paths: discovery for authenticated users, health for everyone."""
        if path in PUBLIC_PATHS or user.name != ANONYMOUS:
            return
        raise Forbidden(f'forbidden: User "{user.name}" cannot get path "{path}"')
