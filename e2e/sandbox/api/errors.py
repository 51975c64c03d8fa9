"""API errors, rendered as the ``kind: Status`` bodies of the real API server.

Tree::

    ApiError                  any failure answered with a Status body (code, reason, message)
    ├── BadRequest            400 BadRequest
    ├── Unauthorized          401 Unauthorized
    ├── Forbidden             403 Forbidden
    ├── NotFound              404 NotFound
    ├── MethodNotAllowed      405 MethodNotAllowed
    ├── Conflict              409 Conflict or AlreadyExists
    ├── Gone                  410 Expired (a watch or list from a compacted resourceVersion)
    ├── UnsupportedMediaType  415 UnsupportedMediaType
    └── Invalid               422 Invalid, with one cause per failed field

The wording follows the real server (``k8s.io/apimachinery/pkg/api/errors``), because kubectl
prints these messages as they are and tests compare them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Cause:
    """One failed field of an Invalid (422) error: ``spec.replicas: Invalid value: -1: ...``."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ApiError(Exception):
    """A request failed; the HTTP layer answers ``code`` with :meth:`status`."""

    code: ClassVar[int] = 500
    default_reason: ClassVar[str] = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        code: int | None = None,
        name: str | None = None,
        group: str | None = None,
        kind: str | None = None,
        causes: tuple[Cause, ...] = (),
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.status_code = code if code is not None else self.code
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = causes
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status_code} {self.reason}: {self.message}"

    def status(self) -> dict[str, Any]:
        """The ``kind: Status`` body of this error."""
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.group:  # omitted when empty (the core group), as the server's omitempty
            details["group"] = self.group
        if self.kind is not None:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [
                {"reason": c.reason, "message": c.message, "field": c.field} for c in self.causes
            ]
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.status_code,
        }
        if details:
            body["details"] = details
        return body


class BadRequest(ApiError):
    code = 400
    default_reason = "BadRequest"


class Unauthorized(ApiError):
    code = 401
    default_reason = "Unauthorized"


class Forbidden(ApiError):
    code = 403
    default_reason = "Forbidden"


class NotFound(ApiError):
    code = 404
    default_reason = "NotFound"


class MethodNotAllowed(ApiError):
    code = 405
    default_reason = "MethodNotAllowed"


class Conflict(ApiError):
    code = 409
    default_reason = "Conflict"


class Gone(ApiError):
    code = 410
    default_reason = "Expired"


class UnsupportedMediaType(ApiError):
    code = 415
    default_reason = "UnsupportedMediaType"


class Invalid(ApiError):
    code = 422
    default_reason = "Invalid"


@dataclass(frozen=True)
class Ref:
    """Names an object in messages: ``pods "web"``, ``SocatTunnel.relay.example.io "x"``."""

    plural: str
    group: str
    kind: str
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def qualified_plural(self) -> str:
        """``pods`` for the core group, ``deployments.apps`` otherwise (as the server prints)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Pod`` or ``SocatTunnel.relay.example.io``, as in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


def not_found(ref: Ref) -> NotFound:
    """``pods "web" not found``."""
    return NotFound(
        f'{ref.qualified_plural} "{ref.name}" not found',
        name=ref.name, group=ref.group, kind=ref.plural,
    )


def already_exists(ref: Ref) -> Conflict:
    """``pods "web" already exists``."""
    return Conflict(
        f'{ref.qualified_plural} "{ref.name}" already exists',
        reason="AlreadyExists", name=ref.name, group=ref.group, kind=ref.plural,
    )


def conflict(ref: Ref, why: str) -> Conflict:
    """``Operation cannot be fulfilled on pods "web": <why>``."""
    return Conflict(
        f'Operation cannot be fulfilled on {ref.qualified_plural} "{ref.name}": {why}',
        name=ref.name, group=ref.group, kind=ref.plural,
    )


#: What the server says when an update carries an outdated resourceVersion.
MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(ref: Ref, causes: list[Cause] | tuple[Cause, ...]) -> Invalid:
    """``SocatTunnel.relay.example.io "x" is invalid: spec.replicas: Invalid value: ...``.

    Several causes are joined as the server does: ``[cause1, cause2]``.
    """
    text = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(str(c) for c in causes) + "]"
    return Invalid(
        f'{ref.qualified_kind} "{ref.name}" is invalid: {text}',
        name=ref.name, group=ref.group, kind=ref.kind, causes=tuple(causes),
    )
