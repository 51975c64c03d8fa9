"""Cluster DNS for the sandbox: a table file the cluster keeps current, and the lookup rules.

The cluster writes every Service (and every pod that asks for a hostname in a
headless Service's subdomain) to one JSON file; the pod shim reads it on each
lookup when it changed (the file is replaced atomically, so a reader never
sees half of it). This module imports only the standard library because the
shim imports it before anything else in every relay pod.

Lookup follows a pod's ``/etc/resolv.conf`` in a real cluster::

    search <namespace>.svc.cluster.local svc.cluster.local cluster.local
    options ndots:5

so ``svc``, ``svc.ns``, ``svc.ns.svc`` and ``svc.ns.svc.cluster.local`` all
find the Service. ``localhost`` and the pod's own hostname are the pod's IP.
Names that cannot be cluster names (a dotted name outside ``cluster.local``
that no search suffix completes) go to the host's resolver.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLUSTER_DOMAIN = "cluster.local"


@dataclass
class Answer:
    """The result of a cluster lookup: addresses, or a name to resolve elsewhere."""

    addresses: list[str] = field(default_factory=list)
    #: An ExternalName Service: the caller resolves this name with the host's resolver.
    cname: str | None = None


@dataclass
class PodIdentity:
    """Who is asking: the pod's namespace, IP and hostname."""

    namespace: str
    pod_ip: str
    hostname: str = ""


def _dashed_ip(label: str) -> str | None:
    """``127-42-0-5`` -> ``127.42.0.5`` (the ``<ip>.<ns>.pod`` records), else None."""
    candidate = label.replace("-", ".")
    try:
        return str(ipaddress.IPv4Address(candidate))
    except ValueError:
        return None


def lookup(name: str, records: Mapping[str, Any], who: PodIdentity) -> Answer | None:
    """Resolve ``name`` as a pod in the sandbox would.

    Returns None when the name is not for cluster DNS (the caller asks the
    host's resolver), an Answer with no addresses for a cluster name that does
    not exist (NXDOMAIN), or the addresses.
    """
    name = name.strip().lower()
    if not name:
        return None
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return None  # a literal address is not a name
    absolute = name.endswith(".")
    name = name.rstrip(".")
    if name in ("localhost", "localhost.localdomain") or (who.hostname and name == who.hostname):
        return Answer([who.pod_ip])
    domain = str(records.get("domain") or CLUSTER_DOMAIN)
    if absolute:
        candidates = [name]
    else:
        candidates = [
            f"{name}.{who.namespace}.svc.{domain}",
            f"{name}.svc.{domain}",
            f"{name}.{domain}",
            name,
        ]
    for candidate in candidates:
        answer = _lookup_fqdn(candidate, records, domain)
        if answer is not None:
            return answer
    if name.endswith("." + domain) or name == domain or "." not in name:
        return Answer([])  # a cluster-looking name that nothing answers: NXDOMAIN
    return None


def _lookup_fqdn(fqdn: str, records: Mapping[str, Any], domain: str) -> Answer | None:
    """One fully qualified name against the table, or None."""
    suffix = "." + domain
    if not fqdn.endswith(suffix):
        return None
    labels = fqdn[: -len(suffix)].split(".")
    services: Mapping[str, Any] = records.get("services") or {}
    hosts: Mapping[str, Any] = records.get("hosts") or {}
    if len(labels) == 3 and labels[2] == "svc":  # <service>.<namespace>.svc
        entry = services.get(f"{labels[1]}/{labels[0]}")
        if entry is None:
            return None
        if entry.get("cname"):
            return Answer(cname=str(entry["cname"]))
        return Answer([str(a) for a in entry.get("addresses") or []])
    if len(labels) == 4 and labels[3] == "svc":  # <hostname>.<subdomain>.<namespace>.svc
        address = hosts.get(f"{labels[2]}/{labels[1]}/{labels[0]}")
        return Answer([str(address)]) if address else None
    if len(labels) == 3 and labels[2] == "pod":  # <a-b-c-d>.<namespace>.pod
        address = _dashed_ip(labels[0])
        return Answer([address]) if address else None
    return None


class DnsTableFile:
    """The cluster side: keeps the records and rewrites the file when they change."""

    def __init__(self, path: Path, *, domain: str = CLUSTER_DOMAIN) -> None:
        self.path = path
        self.domain = domain
        self._services: dict[str, dict[str, Any]] = {}
        self._hosts: dict[str, str] = {}
        self._write()

    def set_service(
        self, namespace: str, name: str, addresses: list[str], cname: str | None = None
    ) -> None:
        """Publish ``name.namespace.svc`` with these addresses (or as a CNAME)."""
        entry: dict[str, Any] = {"addresses": sorted(addresses)}
        if cname:
            entry["cname"] = cname
        key = f"{namespace}/{name}"
        if self._services.get(key) != entry:
            self._services[key] = entry
            self._write()

    def remove_service(self, namespace: str, name: str) -> None:
        """Withdraw the Service's record."""
        if self._services.pop(f"{namespace}/{name}", None) is not None:
            self._write()

    def set_host(self, namespace: str, subdomain: str, hostname: str, address: str | None) -> None:
        """Publish (or withdraw, with ``address=None``) ``hostname.subdomain.namespace.svc``."""
        key = f"{namespace}/{subdomain}/{hostname}"
        if address is None:
            if self._hosts.pop(key, None) is not None:
                self._write()
        elif self._hosts.get(key) != address:
            self._hosts[key] = address
            self._write()

    def records(self) -> dict[str, Any]:
        """The table as written to the file."""
        return {"domain": self.domain, "services": self._services, "hosts": self._hosts}

    def _write(self) -> None:
        # Replace, never rewrite in place: readers in other processes must see
        # either the old table or the new one.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".dns-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(self.records(), f)
        os.replace(tmp, self.path)


class DnsTableReader:
    """The shim side: the records from the file, reloaded when the file was replaced."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._records: dict[str, Any] = {}

    def records(self) -> dict[str, Any]:
        """The current records (empty when there is no table)."""
        if not self.path:
            return {}
        try:
            stat = os.stat(self.path)
        except OSError:
            return self._records
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp != self._stamp:
            try:
                with open(self.path) as f:
                    self._records = json.load(f)
                self._stamp = stamp
            except (OSError, ValueError):
                pass  # keep the last good table
        return self._records
