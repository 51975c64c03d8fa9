"""TARGET and ``--listen`` arguments as frozen values; parsing never talks to the cluster.

TARGET forms::

    svc/NAME:PORT        a Service; PORT is a Service port's number or name
    pod/NAME:PORT        a pod; PORT is a number or a container port's name
    deploy/NAME:PORT     a Deployment's ready pods (followed through rollouts)
    HOST:PORT            a DNS name or IP, resolved inside the cluster (numeric PORT)

Kinds have kubectl's spellings (``svc``, ``service``, ``services``, ``po``,
``pod``, ``pods``, ``deploy``, ``deployment``, ``deployments`` and the
``.apps`` forms). An IPv6 host is written in brackets: ``[fd00::1]:53``.
``str()`` gives the canonical spelling (``svc/web:http``).

Listen addresses: ``PORT`` or ``ADDRESS:PORT`` (``127.0.0.1:8080``,
``[::1]:8080``, ``0.0.0.0:8080``); the default address is 127.0.0.1, port 0
picks a free port.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from .errors import TargetSyntaxError


class Kind(enum.Enum):
    """What a target names; the value is the canonical prefix."""

    SERVICE = "svc"
    POD = "pod"
    DEPLOYMENT = "deploy"
    HOST = "host"


#: Every accepted kind prefix (lower case) -> the kind.
KIND_PREFIXES: dict[str, Kind] = {
    **dict.fromkeys(("svc", "service", "services"), Kind.SERVICE),
    **dict.fromkeys(("po", "pod", "pods"), Kind.POD),
    **dict.fromkeys(
        ("deploy", "deployment", "deployments", "deployment.apps", "deployments.apps"),
        Kind.DEPLOYMENT,
    ),
}

TARGET_FORMS = "svc/NAME:PORT, pod/NAME:PORT, deploy/NAME:PORT or HOST:PORT"
LISTEN_FORMS = "PORT or ADDRESS:PORT (8080, 127.0.0.1:8080, [::1]:8080)"

# A DNS-1123 subdomain: object names of Services, pods and Deployments.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# An IANA service name, as Kubernetes validates port names: at most 15
# characters, lower-case letters, digits and inner single hyphens, one letter at least.
_PORT_NAME = re.compile(r"(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-)){0,13}[a-z0-9]|[a-z]")
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\.?"
)


@dataclass(frozen=True)
class Target:
    """One parsed TARGET: ``kind``, the object name or host, and the port (number or name)."""

    kind: Kind
    name: str
    port: int | str

    @property
    def named_port(self) -> bool:
        """Whether the port is a name to look up on the object."""
        return isinstance(self.port, str)

    def __str__(self) -> str:
        if self.kind is Kind.HOST:
            host = f"[{self.name}]" if ":" in self.name else self.name
            return f"{host}:{self.port}"
        return f"{self.kind.value}/{self.name}:{self.port}"


@dataclass(frozen=True)
class ListenAddress:
    """Where the local listener binds."""

    host: str = "127.0.0.1"
    port: int = 0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(text: str) -> Target:
    """Parse a TARGET; raise ``TargetSyntaxError`` naming what is wrong."""
    head, slash, rest = text.partition("/")
    if slash and not _looks_like_ipv6(text):
        kind = KIND_PREFIXES.get(head.lower())
        if kind is None:
            raise _target_error(text, f'unknown kind "{head}"')
        name, port_text = _split_port(text, rest)
        if not _OBJECT_NAME.fullmatch(name):
            raise _target_error(
                text,
                f'"{name}" is not a valid object name (lower-case letters, digits, "-" and ".")',
            )
        return Target(kind, name, _port(text, port_text, names_allowed=True))
    host, port_text = _split_port(text, text)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _target_error(text, f'"{host}" is not an IPv6 address') from None
        host = host[1:-1]
    elif not _HOST_NAME.fullmatch(host):
        raise _target_error(text, f'"{host}" is not a host name or IP address')
    port = _port(text, port_text, names_allowed=False)
    return Target(Kind.HOST, host, port)


def parse_listen(text: str) -> ListenAddress:
    """Parse ``[ADDRESS:]PORT``; raise ``TargetSyntaxError``."""
    host, colon, port_text = text.rpartition(":")
    if not colon:
        host, port_text = "127.0.0.1", text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host, 6):
            raise TargetSyntaxError(text, f'"{host}" is not an IPv6 address', LISTEN_FORMS)
    elif not host or ":" in host:
        raise TargetSyntaxError(text, "write an IPv6 address in brackets", LISTEN_FORMS)
    elif not (_is_ip(host, 4) or _HOST_NAME.fullmatch(host)):
        raise TargetSyntaxError(text, f'"{host}" is not an address', LISTEN_FORMS)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise TargetSyntaxError(text, f'"{port_text}" is not a port number (0-65535)', LISTEN_FORMS)
    return ListenAddress(host, int(port_text))


def _split_port(text: str, rest: str) -> tuple[str, str]:
    name, colon, port = rest.rpartition(":")
    if not colon:
        raise _target_error(text, "the port is missing")
    if not name:
        raise _target_error(text, "the name before the port is missing")
    if ":" in name and not (name.startswith("[") and name.endswith("]")):
        raise _target_error(text, "write an IPv6 address in brackets")
    return name, port


def _port(text: str, port: str, *, names_allowed: bool) -> int | str:
    if port.isdigit():
        number = int(port)
        if not 1 <= number <= 65535:
            raise _target_error(text, f"port {number} is out of range (1-65535)")
        return number
    if not names_allowed:
        raise _target_error(
            text, f'"{port}" is not a port number (named ports need svc/, pod/ or deploy/)'
        )
    if not _PORT_NAME.fullmatch(port):
        raise _target_error(text, f'"{port}" is neither a port number nor a port name')
    return port


def _target_error(text: str, reason: str) -> TargetSyntaxError:
    return TargetSyntaxError(text, reason, TARGET_FORMS)


def _looks_like_ipv6(text: str) -> bool:
    return text.startswith("[")


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False
