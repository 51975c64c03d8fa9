"""Exceptions of the SocatTunnel operator.

Every exception carries the facts as fields and builds its message in
``__str__``. A message names the field that is wrong, says what is wrong
and, where it can, how to fix it: it is shown as is in the tunnel's status
condition and in its events, so ``kubectl describe`` tells the whole story::

    OperatorError
    ├── SettingsError         a setting of the operator itself (environment) is malformed
    └── TunnelError           a SocatTunnel cannot be reconciled as written
        ├── SpecError         a field of the spec is invalid (path, problem, fix)
        │   └── AddressError  the engine's parser refused spec.listen or spec.connect
        └── SecretError       a Secret the spec refers to is missing or lacks a key

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
