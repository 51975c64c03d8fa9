"""Shell completion's answers from the cluster, and kubectl's plugin completion protocol.

``kubectl relay <TAB>`` makes kubectl (1.26 and later) run the executable
``kubectl_complete-relay`` found on PATH with the words after ``relay``, the
last one being the word under completion (empty after a space). It expects one
candidate a line, optionally followed by a tab and a description, and a last
line ``:N`` where N is a bit set of cobra's directives (``Directive``).

The CLI asks click which parameter the word belongs to; this module answers
for the parameters that name things in the cluster:

- TARGET: ``svc/``, ``pod/`` and ``deploy/`` first, then ``svc/NAME:PORT``
  for every Service port (by name where it has one, else by number), and the
  same for pods' and Deployments' container ports;
- namespaces (``-n``, ``--relay-namespace``) and the kubeconfig's contexts.

Completion must never disturb the shell: a cluster that cannot be reached,
or refuses, gives no candidates (and no message).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .kube import Cluster
from .targets import KIND_PREFIXES, Kind

#: The canonical prefix of each kind a TARGET may name, with its description.
KIND_CANDIDATES = (("svc/", "a Service"), ("pod/", "a pod"), ("deploy/", "a Deployment's pods"))


class Directive(enum.IntFlag):
    """cobra's ``ShellCompDirective`` bits, as kubectl passes them to the shell."""

    DEFAULT = 0  # the shell may complete file names when there is no candidate
    ERROR = 1
    NO_SPACE = 2  # no space after the candidate: the word goes on (``svc/``)
    NO_FILE_COMP = 4


@dataclass(frozen=True)
class Candidate:
    """One completion: the word and a few words about it."""

    value: str
    help: str = ""


def protocol_output(candidates: Iterable[Candidate], directive: Directive) -> str:
    """kubectl's plugin completion answer: ``value<TAB>help`` lines, then ``:directive``."""
    lines = []
    for candidate in candidates:
        # A tab or newline inside a value or help would break the line format.
        value = " ".join(candidate.value.split())
        text = " ".join(candidate.help.split())
        lines.append(f"{value}\t{text}" if text else value)
    lines.append(f":{int(directive)}")
    return "\n".join(lines) + "\n"


def directive_for(candidates: Iterable[Candidate]) -> Directive:
    """No space after a candidate that the user goes on typing (``svc/``, ``svc/web:``)."""
    values = [c.value for c in candidates]
    if values and all(v.endswith(("/", ":", "=")) for v in values):
        return Directive.NO_FILE_COMP | Directive.NO_SPACE
    return Directive.NO_FILE_COMP


def kind_candidates(incomplete: str) -> list[Candidate]:
    """The kind prefixes that start with ``incomplete`` (before any ``/`` is typed)."""
    return [Candidate(v, h) for v, h in KIND_CANDIDATES if v.startswith(incomplete)]


async def target_candidates(cluster: Cluster, namespace: str, incomplete: str) -> list[Candidate]:
    """Candidates for a TARGET being typed: kinds, then ``KIND/NAME:PORT`` from the cluster."""
    prefix, slash, _ = incomplete.partition("/")
    kind = KIND_PREFIXES.get(prefix.lower()) if slash else None
    if kind is None:
        return kind_candidates(incomplete)
    typed = f"{prefix}/"  # the user's own spelling of the kind is kept
    found = await _objects(cluster, kind, namespace)
    candidates = [
        Candidate(f"{typed}{name}:{port}", description)
        for name, ports in found
        for port, description in ports or [("", f"{kind.value}/{name}: no ports declared")]
    ]
    return [c for c in candidates if c.value.startswith(incomplete)]


async def namespace_candidates(cluster: Cluster, incomplete: str) -> list[Candidate]:
    """The namespaces that start with ``incomplete``."""
    items = await cluster.list_items("/api/v1/namespaces")
    names = sorted(str((item.get("metadata") or {}).get("name", "")) for item in items)
    return [Candidate(name) for name in names if name and name.startswith(incomplete)]


def context_candidates(contexts: Iterable[dict[str, Any]], incomplete: str) -> list[Candidate]:
    """The kubeconfig's context names that start with ``incomplete``."""
    candidates = []
    for context in contexts:
        name = str(context.get("name") or "")
        details = context.get("context") or {}
        where = f"cluster {details.get('cluster', '?')}, user {details.get('user', '?')}"
        if name and name.startswith(incomplete):
            candidates.append(Candidate(name, where))
    return candidates


Ports = list[tuple[str, str]]


async def _objects(cluster: Cluster, kind: Kind, namespace: str) -> list[tuple[str, Ports]]:
    """``(name, [(port, description)])`` of every object of ``kind`` in ``namespace``."""
    if kind is Kind.SERVICE:
        items = await cluster.list_items(f"/api/v1/namespaces/{namespace}/services")
        return [(_name(item), _service_ports(item)) for item in items]
    if kind is Kind.POD:
        items = await cluster.list_items(f"/api/v1/namespaces/{namespace}/pods")
        return [(_name(item), _container_ports(item.get("spec") or {})) for item in items]
    items = await cluster.list_items(f"/apis/apps/v1/namespaces/{namespace}/deployments")
    return [
        (
            _name(item),
            _container_ports(((item.get("spec") or {}).get("template") or {}).get("spec") or {}),
        )
        for item in items
    ]


def _name(item: dict[str, Any]) -> str:
    return str((item.get("metadata") or {}).get("name", ""))


def _service_ports(service: dict[str, Any]) -> Ports:
    ports = []
    for port in (service.get("spec") or {}).get("ports") or []:
        number, name = port.get("port"), port.get("name")
        protocol = port.get("protocol", "TCP")
        about = f"port {number}/{protocol}" + (f" ({name})" if name else "")
        ports.append((str(name or number), about))
    return ports


def _container_ports(pod_spec: dict[str, Any]) -> Ports:
    ports = []
    for container in pod_spec.get("containers") or []:
        for port in container.get("ports") or []:
            number, name = port.get("containerPort"), port.get("name")
            protocol = port.get("protocol", "TCP")
            about = f"container {container.get('name', '?')}, port {number}/{protocol}"
            ports.append((str(name or number), about + (f" ({name})" if name else "")))
    return ports
