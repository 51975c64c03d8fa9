"""Exceptions of the SocatTunnel operator.

Every exception carries the facts as fields and builds its message in
``__str__``. A message names the field that is wrong, says what is wrong
and, where it can, how to fix it: it is shown as is in the tunnel's status
condition and in its events, so ``kubectl describe`` tells the whole story::

    OperatorError
    ├── SettingsError         a setting of the operator itself (environment) is malformed
    ├── ApiError              a request to the API server failed
    │   └── TransientApiError   ...in a way that retrying may cure (5xx, 429, timeout, network)
    └── TunnelError           a SocatTunnel cannot be reconciled as written
        ├── SpecError         a field of the spec is invalid (path, problem, fix)
        │   ├── AddressError  the engine's parser refused spec.listen or spec.connect
        │   └── DestinationError  the admin's destination policy refuses spec.connect
        ├── SecretError       a Secret the spec refers to is missing or lacks a key
        ├── ConflictError     an object the tunnel needs exists and belongs to someone else
        ├── RejectedError     the API server refused one of the tunnel's objects (422)
        └── ReconcileError    anything else went wrong: said in the status, never silent

``TunnelError.condition_reason`` is the ``reason`` of the status condition
(CamelCase, as Kubernetes conditions use), so handlers need no mapping table.
"""

from __future__ import annotations

from typing import ClassVar

from kubectl_relay.engine.errors import RelayError


class OperatorError(Exception):
    """Root of the operator's exceptions."""


class SettingsError(OperatorError):
    """An operator setting, read from the environment, is malformed."""

    def __init__(self, variable: str, value: str, problem: str) -> None:
        super().__init__(variable, value, problem)
        self.variable = variable
        self.value = value
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r}: {self.problem}"


class TunnelError(OperatorError):
    """A SocatTunnel that cannot be reconciled until its author changes something.

    Retrying does not help (the handlers turn it into a permanent failure), so
    the message must say what to change.
    """

    #: The ``reason`` of the ``Valid=False`` status condition and of the event.
    REASON: ClassVar[str] = "Invalid"

    @property
    def condition_reason(self) -> str:
        """The CamelCase ``reason`` for the status condition and the event."""
        return self.REASON


class SpecError(TunnelError):
    """A field of ``spec`` is invalid.

    ``path`` is the field's path as ``kubectl explain`` spells it
    (``spec.service.port``, ``spec.allowedSources[1]``); ``fix`` is an
    optional hint that follows the problem after a semicolon.
    """

    REASON: ClassVar[str] = "InvalidSpec"

    def __init__(self, path: str, problem: str, fix: str | None = None) -> None:
        super().__init__(path, problem, fix)
        self.path = path
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.path}: {self.problem}; {self.fix}"
        return f"{self.path}: {self.problem}"


class AddressError(SpecError):
    """The engine's address parser refused ``spec.listen`` or ``spec.connect``.

    The problem is the engine's own message (``str()`` of its exception), so
    the status says exactly what ``relay`` says on the command line for the
    same text.
    """

    REASON: ClassVar[str] = "InvalidAddress"

    def __init__(self, path: str, text: str, cause: RelayError) -> None:
        super().__init__(path, str(cause))
        self.text = text
        self.cause = cause


class DestinationError(SpecError):
    """The operator's destination policy refuses the host of ``spec.connect``.

    ``rule`` names the denying entry (``the network 169.254.0.0/16``), or is
    None when the host is simply not on the allow list.
    """

    REASON: ClassVar[str] = "DestinationDenied"

    def __init__(self, path: str, host: str, rule: str | None, fix: str) -> None:
        if rule is None:
            problem = f"{host} is not among the destinations the operator's policy allows"
        else:
            problem = (
                f"connecting to {host} is denied by the operator's destination policy ({rule})"
            )
        super().__init__(path, problem, fix)
        self.host = host
        self.rule = rule


class SecretError(TunnelError):
    """A Secret named in ``spec.tls`` is missing, or lacks a key the relay needs.

    ``path`` is the spec field that names the Secret; ``keys`` are the keys
    the relay reads from it; ``missing_key`` is ``None`` when the Secret
    itself is missing.
    """

    def __init__(
        self,
        path: str,
        namespace: str,
        name: str,
        keys: tuple[str, ...],
        missing_key: str | None = None,
    ) -> None:
        super().__init__(path, namespace, name, keys, missing_key)
        self.path = path
        self.namespace = namespace
        self.name = name
        self.keys = keys
        self.missing_key = missing_key

    @property
    def condition_reason(self) -> str:
        # The two cases need different fixes, so they get different reasons
        # (and `kubectl get events` can be filtered by them).
        return "SecretNotFound" if self.missing_key is None else "SecretKeyNotFound"

    def _create_command(self) -> str:
        if set(self.keys) == {"tls.crt", "tls.key"}:
            return (
                f"kubectl create secret tls {self.name} --cert=tls.crt --key=tls.key "
                f"-n {self.namespace}"
            )
        files = " ".join(f"--from-file={key}=<file>" for key in self.keys)
        return f"kubectl create secret generic {self.name} {files} -n {self.namespace}"

    def __str__(self) -> str:
        if self.missing_key is None:
            return (
                f'{self.path}: Secret "{self.name}" not found in namespace "{self.namespace}"; '
                f"create it ({self._create_command()}) or correct {self.path}.secretName"
            )
        return (
            f'{self.path}: Secret "{self.name}" in namespace "{self.namespace}" has no key '
            f'"{self.missing_key}"; add it to the Secret or correct {self.path}'
        )


class ApiError(OperatorError):
    """A request to the API server failed.

    ``status`` is the HTTP status (0 when no answer came), ``reason`` the
    Status body's reason (``NotFound``, ``Invalid``...), ``message`` its
    message, ``field`` the first cause's field when the server named one.
    """

    def __init__(
        self,
        method: str,
        path: str,
        status: int,
        reason: str,
        message: str,
        field: str | None = None,
    ) -> None:
        super().__init__(method, path, status, reason, message, field)
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message
        self.field = field

    def __str__(self) -> str:
        answer = f"{self.status} {self.reason}" if self.status else self.reason
        return f"{self.method} {self.path}: {answer}: {self.message}"


class TransientApiError(ApiError):
    """A failure that retrying may cure: the server was busy, down or unreachable."""


class ConflictError(TunnelError):
    """An object the tunnel would create exists already, and another owner controls it.

    The operator never takes over objects it did not create: the Service
    ``azure-sql`` of a colleague must not start pointing at relay pods.
    """

    REASON: ClassVar[str] = "NameConflict"

    def __init__(self, kind: str, namespace: str, name: str, owner: str | None) -> None:
        super().__init__(kind, namespace, name, owner)
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.owner = owner

    @property
    def condition_reason(self) -> str:
        return f"{self.kind}Conflict"

    def __str__(self) -> str:
        whose = f"is controlled by {self.owner}" if self.owner else "was not created by this tunnel"
        return (
            f'{self.kind} "{self.name}" already exists in namespace "{self.namespace}" and '
            f"{whose}; rename the tunnel, or delete the {self.kind} if it is no longer needed"
        )


class RejectedError(TunnelError):
    """The API server refused an object built from the spec (422 Invalid).

    Most such refusals are caught by ``parse_spec``; what it cannot know is
    the cluster's state, such as a node port another Service holds.
    """

    def __init__(self, kind: str, name: str, cause: ApiError) -> None:
        super().__init__(kind, name, cause)
        self.kind = kind
        self.name = name
        self.cause = cause

    @property
    def condition_reason(self) -> str:
        where = f"{self.cause.field or ''} {self.cause.message}"
        if "nodePort" in where:
            return "NodePortConflict"
        return f"{self.kind}Rejected"

    def __str__(self) -> str:
        hint = ""
        if self.condition_reason == "NodePortConflict":
            hint = "; choose another spec.service.nodePort, or remove it to get a free one"
        return f'the API server refused {self.kind} "{self.name}": {self.cause.message}{hint}'


class ReconcileError(TunnelError):
    """A reconciliation failed in a way no other error describes.

    An API refusal other than 422 (403: the operator lacks a right) or a
    defect of the operator: either way the tunnel's status says what
    happened, rather than a log line nobody reads. ``retry`` is True for
    API refusals (the admin may fix the cluster), False for defects (the
    same spec would fail the same way until it changes).
    """

    REASON: ClassVar[str] = "ReconcileFailed"

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry = isinstance(cause, ApiError)

    def __str__(self) -> str:
        if isinstance(self.cause, ApiError):
            return f"the API server refused a request of the operator: {self.cause}"
        return (
            f"the operator failed on this tunnel ({type(self.cause).__name__}: {self.cause}); "
            "this is a defect of the operator, please report it with the tunnel's spec"
        )
