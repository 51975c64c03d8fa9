"""Tunnels from a file (``kubectl relay -f tunnels.yaml``): the format, its checks, its values.

The file is YAML::

    namespace: shop              # default of every tunnel (else -n, else the context's)
    trace: verbose               # verbose (the default), hex, [verbose, hex], quiet or summary
    pod:                         # pod settings, named as the flags: image, node-selector,
      idle-timeout: 10m          # tolerations, requests, limits, idle-timeout, max-lifetime,
                                 # keep-finished, pod-timeout
    tunnels:
      - name: web                # its trace lines start with [web]
        kind: tcp                # tcp, udp, tls, run, proxy or expose
        target: svc/web:80       # a TARGET, or a list of them
        listen: 8080             # [ADDRESS:]PORT, or a list (one per target); default: the
                                 # target's port
      - name: dns
        kind: udp
        namespace: kube-system   # the targets' namespace, where the relay pods run
        target: kube-dns:53
        listen: 5353
        session-idle: 10s        # a sender's session ends this long after its last
                                 # datagram either way (default 60s)
        trace: quiet             # replaces the default trace
      - name: db
        kind: tls
        target: db.example.net:5432
        cafile: ca.pem           # relative to the file; also insecure, cert, key,
                                 # tls-secret, server-name as the flags of `tls`
      - name: raw
        kind: run
        command: TCP-LISTEN:9000,fork TCP:10.0.0.7:80   # or a list of words
        listen: 9000
      - name: socks
        kind: proxy              # SOCKS5/SOCKS4a/HTTP CONNECT, as `kubectl relay proxy`
        listen: 1080             # the default
        deny: [169.254.0.0/16]   # and allow: CIDRs and host name patterns
      - name: dev-api
        kind: expose             # a Service reaching a local port, as `kubectl relay expose`
        local-port: 8080
        service: dev-api         # the default: the tunnel's name
        port: 80                 # the Service's port (the default)
        pod: {idle-timeout: 1h}  # merged key by key over the default pod settings

Every key is checked before anything happens: ``load`` collects every
mistake (``errors.Mistake``: file, line and column of the offending value
from PyYAML's node marks, its key path, what was wrong and what is
accepted) and raises them together as ``TunnelFileError``. It never touches
the cluster or a socket; local TLS files are read. What it returns is the
session's own values: one ``FileTunnel`` (a ``TunnelSpec``, its namespace
and ``SessionOptions``) per target. A tunnel with several targets makes
``NAME.1``, ``NAME.2``...; names are DNS labels, so those cannot clash.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Mistake, TunnelFileError
from .exposing import ExposeSpec
from .portforward import UDP_SESSION_IDLE
from .proxying import DEFAULT_PROXY_PORT, ProxySettings, check_pattern
from .relaypod import PodSettings, TLSSettings, Toleration, TraceLevel
from .runcommand import RunCommandError, run_spec
from .session import SessionOptions, TunnelSpec
from .targets import LISTEN_FORMS, TARGET_FORMS, ListenAddress, Target, parse_listen, parse_target
from .values import DURATION_FORMS, TOLERATION_FORMS, parse_duration, parse_toleration
from .yamlcheck import NodeReader, compose, describe, did_you_mean, key_path, line_of

#: The kinds of tunnel a file may hold, and the keys each takes besides ``COMMON_KEYS``.
KIND_KEYS: Mapping[str, tuple[str, ...]] = {
    "tcp": ("target", "listen"),
    "udp": ("target", "listen", "session-idle"),
    "tls": ("target", "listen", "insecure", "cafile", "cert", "key", "tls-secret", "server-name"),
    "run": ("command", "listen"),
    "proxy": ("listen", "allow", "deny"),
    "expose": ("local-port", "service", "port"),
}
#: Kinds the format reserves for commands this version does not have yet.
NOT_YET: tuple[str, ...] = ()
COMMON_KEYS = ("name", "kind", "namespace", "trace", "pod")
TOP_KEYS = ("namespace", "trace", "pod", "tunnels")
POD_KEYS = (
    "image",
    "node-selector",
    "tolerations",
    "requests",
    "limits",
    "idle-timeout",
    "max-lifetime",
    "keep-finished",
    "pod-timeout",
)
TRACE_WORDS = ("verbose", "hex", "quiet", "summary")
TRACE_FORMS = "verbose, hex, [verbose, hex], quiet or summary"
NAME_FORMS = "lower-case letters, digits and inner '-', at most 63 characters"
_ALL_TUNNEL_KEYS = tuple(dict.fromkeys(COMMON_KEYS + sum(KIND_KEYS.values(), ())))
#: A Service name: an RFC 1035 label, as the API server checks it.
_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
SERVICE_FORMS = "lower-case letters, digits and inner '-', starting with a letter, at most 63"
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True)
class FileTunnel:
    """One tunnel of a file, as a session runs it."""

    #: The prefix of its lines (``web``, or ``web.2`` for a tunnel's second target).
    name: str
    #: A tunnel of a session, or a reverse tunnel (``expose``), which runs its own.
    spec: TunnelSpec | ExposeSpec
    #: Where its targets are and its relay pods run (None: ``-n`` or the context's).
    namespace: str | None
    options: SessionOptions = field(default_factory=SessionOptions)


@dataclass(frozen=True)
class _Trace:
    level: TraceLevel = "text"
    summary: bool = False


@dataclass(frozen=True)
class _Defaults:
    namespace: str | None = None
    trace: _Trace = _Trace()
    pod: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Port:
    """A local port taken by a tunnel, for the duplicate check."""

    protocol: str
    listen: ListenAddress
    tunnel: str
    line: int


def _keys_of_kind(node: yaml.Node) -> tuple[str, ...]:
    """The keys a tunnel's kind takes, read ahead from its node (all when it has no valid kind)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if (
                key.value == "kind"
                and isinstance(value, yaml.ScalarNode)
                and value.value in KIND_KEYS
            ):
                return COMMON_KEYS + KIND_KEYS[str(value.value)]
    return _ALL_TUNNEL_KEYS


class _Reader(NodeReader):
    """Walks the composed YAML, builds the values and collects the mistakes."""

    def __init__(self, source: str, base: Path) -> None:
        super().__init__(source)
        self.base = base
        self._names: dict[str, int] = {}
        self._ports: list[_Port] = []
        #: (namespace, Service name) of each expose tunnel -> the line it is on.
        self._services: dict[tuple[str | None, str], int] = {}

    # -- the file ---------------------------------------------------------------------------------

    def file(self, root: yaml.Node) -> list[FileTunnel]:
        top = self.mapping(root, "", TOP_KEYS, "the file")
        if top is None:
            return []
        defaults = _Defaults(
            namespace=self.namespace(top["namespace"], "namespace") if "namespace" in top else None,
            trace=self.trace(top["trace"], "trace") if "trace" in top else _Trace(),
            pod=self.pod(top["pod"], "pod") if "pod" in top else {},
        )
        if "tunnels" not in top:
            self.mistake(root, "", '"tunnels" is missing', "tunnels: a list of tunnels")
            return []
        node = top["tunnels"]
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            what = "an empty list" if isinstance(node, yaml.SequenceNode) else describe(node)
            self.mistake(
                node,
                "tunnels",
                f"must be a list of tunnels, not {what}",
                "- name: NAME, kind: KIND, ... (one item per tunnel)",
            )
            return []
        tunnels: list[FileTunnel] = []
        for index, item in enumerate(node.value):
            tunnels += self.tunnel(item, key_path("tunnels", index), defaults)
        return tunnels

    def namespace(self, node: yaml.Node, path: str) -> str | None:
        text = self.scalar(node, path, NAME_FORMS)
        if text is not None and not _LABEL.fullmatch(text):
            self.mistake(node, path, f'"{text}" is not a namespace name', NAME_FORMS)
            return None
        return text

    def trace(self, node: yaml.Node, path: str) -> _Trace:
        words: dict[str, yaml.Node] = {}
        for item, item_path in self.one_or_more(node, path):
            word = self.scalar(item, item_path, TRACE_FORMS)
            if word is None:
                continue
            if word not in TRACE_WORDS:
                hint = did_you_mean(word, TRACE_WORDS)
                self.mistake(item, item_path, f'unknown trace "{word}"{hint}', TRACE_FORMS)
            words[word] = item
        if "summary" in words and len(words) > 1:
            self.mistake(
                node,
                path,
                "summary replaces the data trace: drop verbose, hex and quiet",
                TRACE_FORMS,
            )
        elif "quiet" in words and ("verbose" in words or "hex" in words):
            self.mistake(node, path, "quiet cannot be combined with verbose or hex", TRACE_FORMS)
        if "summary" in words:
            return _Trace("quiet", summary=True)
        if "quiet" in words:
            return _Trace("quiet")
        if "hex" in words:
            return _Trace("rows" if "verbose" in words else "hex")
        return _Trace("text")

    # -- pod settings -----------------------------------------------------------------------------

    def pod(self, node: yaml.Node, path: str) -> dict[str, Any]:
        """The pod settings given (by key), checked; merged over the defaults by ``_options``."""
        found = self.mapping(node, path, POD_KEYS, "pod")
        if found is None:
            return {}
        settings: dict[str, Any] = {}
        for key, value in found.items():
            where = key_path(path, key)
            if key == "image":
                settings[key] = self.scalar(value, where, "an image reference")
            elif key in ("node-selector", "requests", "limits"):
                settings[key] = self.string_map(value, where)
            elif key == "tolerations":
                settings[key] = tuple(
                    self.parsed(item, item_path, parse_toleration, TOLERATION_FORMS)
                    for item, item_path in self.one_or_more(value, where)
                )
            else:
                seconds = self.parsed(value, where, parse_duration, DURATION_FORMS, numbers=True)
                if seconds is not None and seconds < 0:
                    self.mistake(value, where, "a duration cannot be negative", DURATION_FORMS)
                settings[key] = seconds
        return settings

    def options(
        self, defaults: _Defaults, trace: _Trace | None, pod: Mapping[str, Any]
    ) -> SessionOptions:
        merged = {**defaults.pod, **pod}
        if any(value is None for value in merged.values()):
            return SessionOptions()  # a mistake was told; nothing will run
        base = PodSettings()
        tolerations: tuple[Toleration, ...] = merged.get("tolerations", ())
        settings = PodSettings(
            image=merged.get("image", base.image),
            node_selector=merged.get("node-selector", {}),
            tolerations=tolerations,
            requests={**base.requests, **merged.get("requests", {})},
            limits={**base.limits, **merged.get("limits", {})},
            idle_timeout=merged.get("idle-timeout", base.idle_timeout),
            max_lifetime=max(1, int(merged.get("max-lifetime", base.max_lifetime))),
            keep_finished=int(merged.get("keep-finished", base.keep_finished)),
        )
        trace = trace or defaults.trace
        return SessionOptions(
            trace=trace.level,
            summary=trace.summary,
            pod=settings,
            pod_timeout=merged.get("pod-timeout", SessionOptions().pod_timeout),
        )

    # -- one tunnel -------------------------------------------------------------------------------

    def tunnel(self, node: yaml.Node, path: str, defaults: _Defaults) -> list[FileTunnel]:
        found = self.mapping(node, path, _ALL_TUNNEL_KEYS, "a tunnel", _keys_of_kind(node))
        if found is None:
            return []
        name = self.name(node, found, path)
        kind = self.kind(node, found, path)
        if kind is None:
            return []
        for key, value in found.items():
            if key not in COMMON_KEYS and key not in KIND_KEYS[kind]:
                self.mistake(
                    value,
                    key_path(path, key),
                    f'"{key}" does not apply to a {kind} tunnel',
                    ", ".join(COMMON_KEYS + KIND_KEYS[kind]),
                )
        namespace = defaults.namespace
        if "namespace" in found:
            namespace = self.namespace(found["namespace"], key_path(path, "namespace"))
        trace = self.trace(found["trace"], key_path(path, "trace")) if "trace" in found else None
        pod = self.pod(found["pod"], key_path(path, "pod")) if "pod" in found else {}
        options = self.options(defaults, trace, pod)
        specs: list[TunnelSpec | ExposeSpec] = []
        if kind == "run":
            specs += self.run_specs(node, found, path)
        elif kind == "proxy":
            specs += self.proxy_specs(found, path)
        elif kind == "expose":
            specs += self.expose_specs(node, found, path, namespace, name, trace)
        else:
            specs += self.specs(kind, node, found, path)
        if name is None:
            return []
        names = [name] if len(specs) == 1 else [f"{name}.{n}" for n in range(1, len(specs) + 1)]
        return [
            FileTunnel(each, spec, namespace, options)
            for each, spec in zip(names, specs, strict=True)
        ]

    def name(self, node: yaml.Node, found: dict[str, yaml.Node], path: str) -> str | None:
        name = self.required(node, found, path, "name", NAME_FORMS)
        where = key_path(path, "name")
        if name is None:
            return None
        if not _LABEL.fullmatch(name):
            self.mistake(found["name"], where, f'"{name}" is not a tunnel name', NAME_FORMS)
            return None
        if name in self._names:
            self.mistake(
                found["name"],
                where,
                f'"{name}" is already the name of the tunnel on line {self._names[name]}',
                "a name of its own for each tunnel",
            )
            return None
        self._names[name] = line_of(found["name"])
        return name

    @staticmethod
    def tunnel_name(found: dict[str, yaml.Node]) -> str:
        """The tunnel's name as written, for messages about another tunnel."""
        node = found.get("name")
        return str(node.value) if isinstance(node, yaml.ScalarNode) else "?"

    def kind(self, node: yaml.Node, found: dict[str, yaml.Node], path: str) -> str | None:
        accepted = ", ".join(KIND_KEYS)
        kind = self.required(node, found, path, "kind", accepted)
        where = key_path(path, "kind")
        if kind in NOT_YET:
            self.mistake(
                found["kind"],
                where,
                f'kind "{kind}" is not supported yet by this kubectl relay',
                accepted,
            )
            return None
        if kind is not None and kind not in KIND_KEYS:
            hint = did_you_mean(kind, [*KIND_KEYS, *NOT_YET])
            self.mistake(found["kind"], where, f'unknown kind "{kind}"{hint}', accepted)
            return None
        return kind

    def specs(
        self, kind: str, node: yaml.Node, found: dict[str, yaml.Node], path: str
    ) -> list[TunnelSpec]:
        """``tcp``, ``udp``, ``tls``: one spec per target, each with its local port."""
        if "target" not in found:
            self.mistake(node, path, '"target" is missing', TARGET_FORMS)
            return []
        targets: list[tuple[yaml.Node, str, Target | None]] = [
            (item, item_path, self.parsed(item, item_path, parse_target, TARGET_FORMS))
            for item, item_path in self.one_or_more(found["target"], key_path(path, "target"))
        ]
        listens: list[tuple[yaml.Node, str, ListenAddress | None]] = []
        if "listen" in found:
            where = key_path(path, "listen")
            listens = [
                (
                    item,
                    item_path,
                    self.parsed(item, item_path, parse_listen, LISTEN_FORMS, numbers=True),
                )
                for item, item_path in self.one_or_more(found["listen"], where)
            ]
            if len(listens) != len(targets):
                self.mistake(
                    found["listen"],
                    where,
                    f"{len(targets)} target(s) but {len(listens)} local port(s)",
                    "one listen per target, in the same order, or none",
                )
                return []
        else:
            for item, item_path, target in targets:
                if target is not None and not isinstance(target.port, int):
                    self.mistake(
                        item,
                        item_path,
                        f'"{target}" has a named port: give the local port with listen',
                        LISTEN_FORMS,
                    )
                listen = (
                    ListenAddress(port=target.port)
                    if target is not None and isinstance(target.port, int)
                    else None
                )
                listens.append((item, item_path, listen))
        tls, files = self.tls(found, path) if kind == "tls" else (None, {})
        session_idle = self.session_idle(found, path)
        specs = []
        name = self.tunnel_name(found)
        for (_, _, target), (listen_node, listen_path, listen) in zip(
            targets, listens, strict=True
        ):
            if listen is not None:
                protocol = "udp" if kind == "udp" else "tcp"
                self.take_port(protocol, listen, listen_node, listen_path, name)
            if target is not None and listen is not None:
                specs.append(TunnelSpec(kind, target, listen, tls=tls, tls_files=files,  # type: ignore[arg-type]
                                        session_idle=session_idle))
        return specs

    def session_idle(self, found: dict[str, yaml.Node], path: str) -> float:
        """``udp``'s ``session-idle``, as the flag: a duration of more than 0."""
        if "session-idle" not in found:
            return UDP_SESSION_IDLE
        node, where = found["session-idle"], key_path(path, "session-idle")
        seconds = self.parsed(node, where, parse_duration, DURATION_FORMS, numbers=True)
        if seconds is not None and seconds <= 0:
            self.mistake(node, where, "must be more than 0 (0 would end each session at once)",
                         f"a duration of more than 0 ({DURATION_FORMS})")
        return seconds or UDP_SESSION_IDLE

    def take_port(
        self, protocol: str, listen: ListenAddress, node: yaml.Node, path: str, tunnel: str
    ) -> None:
        """A local port two tunnels want is a mistake at the second (port 0 is any free port)."""
        for taken in self._ports:
            hosts = {listen.host, taken.listen.host}
            same_host = len(hosts) == 1 or bool(hosts & set(_WILDCARDS))
            if (
                listen.port
                and (protocol, listen.port) == (taken.protocol, taken.listen.port)
                and same_host
            ):
                self.mistake(
                    node,
                    path,
                    f"local {protocol} port {taken.listen.port} is already taken by tunnel "
                    f'"{taken.tunnel}" (line {taken.line})',
                    "a local port of its own for each tunnel, or 0 for any free port",
                )
                return
        self._ports.append(_Port(protocol, listen, tunnel, line_of(node)))

    def tls(
        self, found: dict[str, yaml.Node], path: str
    ) -> tuple[TLSSettings | None, dict[str, bytes]]:
        """The ``tls`` keys, as the ``tls`` command's flags, with the same rules."""
        files: dict[str, bytes] = {}
        for key, secret_key in (("cafile", "ca.crt"), ("cert", "tls.crt"), ("key", "tls.key")):
            if key in found:
                content = self.local_file(found[key], key_path(path, key))
                if content is not None:
                    files[secret_key] = content
        insecure = (
            self.boolean(found["insecure"], key_path(path, "insecure"))
            if "insecure" in found
            else False
        )
        secret = server_name = None
        if "tls-secret" in found:
            secret = self.scalar(
                found["tls-secret"], key_path(path, "tls-secret"), "a Secret's name"
            )
        if "server-name" in found:
            server_name = self.scalar(found["server-name"], key_path(path, "server-name"), "a name")
        given = [key for key in ("cafile", "cert", "key") if key in found]
        if "tls-secret" in found and given:
            self.mistake(
                found["tls-secret"],
                key_path(path, "tls-secret"),
                f"cannot be combined with {', '.join(given)}",
                "tls-secret or files",
            )
        if ("cert" in found) != ("key" in found):
            missing, given_key = ("key", "cert") if "cert" in found else ("cert", "key")
            self.mistake(
                found[given_key],
                key_path(path, given_key),
                f'goes with "{missing}"',
                "cert and key together",
            )
        if insecure and ("cafile" in found or "tls-secret" in found):
            self.mistake(
                found["insecure"],
                key_path(path, "insecure"),
                "turns verification off: drop cafile and tls-secret",
                "insecure, or cafile/tls-secret",
            )
        settings = TLSSettings(
            verify=not insecure,
            secret=secret,
            ca_key="ca.crt" if "cafile" in found else None,
            cert_key="tls.crt" if "cert" in found else None,
            key_key="tls.key" if "key" in found else None,
            server_name=server_name,
        )
        return settings, files

    def local_file(self, node: yaml.Node, path: str) -> bytes | None:
        text = self.scalar(node, path, "a path, relative to the tunnel file")
        if text is None:
            return None
        file = self.base / Path(text).expanduser()
        try:
            return file.read_bytes()
        except OSError as exc:
            self.mistake(
                node,
                path,
                f'cannot read "{file}": {exc.strerror or exc}',
                "a readable PEM file, its path relative to the tunnel file",
            )
            return None

    def run_specs(
        self, node: yaml.Node, found: dict[str, yaml.Node], path: str
    ) -> list[TunnelSpec]:
        """``run``: the engine's command line (a list of words, or one string split as sh does)."""
        if "command" not in found:
            self.mistake(node, path, '"command" is missing', "[ADDRESS1, ADDRESS2]")
            return []
        where = key_path(path, "command")
        command = found["command"]
        words: list[str] = []
        if isinstance(command, yaml.ScalarNode) and command.tag == "tag:yaml.org,2002:str":
            try:
                words = shlex.split(command.value)
            except ValueError as exc:
                self.mistake(
                    command,
                    where,
                    f"cannot be split into words: {exc}",
                    "a list of words, or a line with balanced quotes",
                )
                return []
        elif isinstance(command, yaml.SequenceNode):
            if self.split_at_commas(command, where):
                return []
            for item, item_path in self.one_or_more(command, where):
                word = self.scalar(item, item_path, "relay's options and addresses", numbers=True)
                if word is None:
                    return []
                words.append(word)
        else:
            self.mistake(
                command,
                where,
                f"must be a list of words, not {describe(command)}",
                "[OPTIONS..., ADDRESS1, ADDRESS2]",
            )
            return []
        listen: ListenAddress | None = None
        if "listen" in found:
            listen = self.parsed(
                found["listen"], key_path(path, "listen"), parse_listen, LISTEN_FORMS, numbers=True
            )
            if listen is None:
                return []
        try:
            spec = run_spec(words, listen)
        except RunCommandError as exc:
            if exc.about == "listen":
                self.mistake(found["listen"], key_path(path, "listen"), str(exc))
            else:
                self.mistake(command, where, str(exc))
            return []
        if listen is not None:
            where = key_path(path, "listen")
            self.take_port("tcp", listen, found["listen"], where, self.tunnel_name(found))
        return [spec]

    def proxy_specs(self, found: dict[str, yaml.Node], path: str) -> list[TunnelSpec]:
        """``proxy``: its local port (default 1080) and the ``allow``/``deny`` patterns."""
        listen = ListenAddress(port=DEFAULT_PROXY_PORT)
        where = key_path(path, "listen") if "listen" in found else path
        if "listen" in found:
            listen = self.parsed(found["listen"], where, parse_listen, LISTEN_FORMS, numbers=True)
        patterns: dict[str, tuple[str, ...]] = {}
        for key in ("allow", "deny"):
            if key in found:
                check = functools.partial(check_pattern, option=key)
                # check_pattern's messages say what is accepted.
                patterns[key] = tuple(
                    self.parsed(item, item_path, check, "")
                    for item, item_path in self.one_or_more(found[key], key_path(path, key))
                )
        if listen is None or any(None in values for values in patterns.values()):
            return []
        self.take_port(
            "tcp", listen, found.get("listen", found["kind"]), where, self.tunnel_name(found)
        )
        settings = ProxySettings(listen, patterns.get("allow", ()), patterns.get("deny", ()))
        return [TunnelSpec("proxy", listen=listen, proxy=settings)]

    def expose_specs(
        self,
        node: yaml.Node,
        found: dict[str, yaml.Node],
        path: str,
        namespace: str | None,
        name: str | None,
        trace: _Trace | None,
    ) -> list[ExposeSpec]:
        """``expose``: the local port, the Service (default: the tunnel's name) and its port."""
        local = self.port_number(node, found, path, "local-port", required=True)
        service_port = self.port_number(node, found, path, "port", required=False) or 80
        service, where = name, key_path(path, "name")
        if "service" in found:
            where = key_path(path, "service")
            service = self.scalar(found["service"], where, SERVICE_FORMS)
        service_node = found.get("service", found.get("name", node))
        if service is not None and not _SERVICE_NAME.fullmatch(service):
            named = "" if "service" in found else " (the tunnel's name, unless service is given)"
            self.mistake(
                service_node, where, f'"{service}" is not a Service name{named}', SERVICE_FORMS
            )
            service = None
        if trace is not None and trace.summary:
            self.mistake(
                found["trace"],
                key_path(path, "trace"),
                "summary is not available for expose yet",
                "verbose, hex or quiet",
            )
        if service is None or local is None:
            return []
        other = self._services.get((namespace, service))
        if other is not None:
            self.mistake(
                service_node,
                where,
                f'Service "{service}" is already exposed by the tunnel on line {other}',
                "a Service name of its own for each expose tunnel",
            )
            return []
        self._services[(namespace, service)] = line_of(service_node)
        return [ExposeSpec(local_port=local, name=service, service_port=service_port)]

    def port_number(
        self, node: yaml.Node, found: dict[str, yaml.Node], path: str, key: str, *, required: bool
    ) -> int | None:
        """A port number (1-65535) at ``key``; a mistake when it is missing and ``required``."""
        if key not in found:
            if required:
                self.mistake(node, path, f'"{key}" is missing', "a port number, 1 to 65535")
            return None
        value, where = found[key], key_path(path, key)
        if (
            isinstance(value, yaml.ScalarNode)
            and value.tag == "tag:yaml.org,2002:int"
            and 1 <= int(self._constructor.construct_object(value)) <= 65535
        ):
            return int(self._constructor.construct_object(value))
        what = f'"{value.value}"' if isinstance(value, yaml.ScalarNode) else describe(value)
        self.mistake(value, where, f"{what} is not a port number", "1 to 65535")
        return None

    def split_at_commas(self, node: yaml.SequenceNode, path: str) -> bool:
        """Whether a flow list cut an address at its options' commas (``[TCP-LISTEN:80,fork]``
        is two words in YAML): a mistake then, since the relay would get other addresses."""
        for index, (before, after) in enumerate(zip(node.value, node.value[1:], strict=False), 1):
            if node.flow_style and after.start_mark.index - before.end_mark.index == 1:
                self.mistake(
                    after,
                    key_path(path, index),
                    f'YAML splits "{before.value},{after.value}" at the comma into two words',
                    'a quoted word ("TCP-LISTEN:80,fork"), one word per line, or the command '
                    "as one string",
                )
                return True
        return False


def load(text: str, source: str, base: Path) -> list[FileTunnel]:
    """The tunnels of a file's ``text`` (named ``source``; relative paths from ``base``).

    Raises ``TunnelFileError`` with every mistake found.
    """
    reader = _Reader(source, base)
    tunnels = reader.file(compose(text, source, "tunnels: a list of tunnels"))
    reader.raise_mistakes()
    return tunnels


def read(path: str, stdin: Callable[[], str]) -> list[FileTunnel]:
    """Load the file at ``path`` (``-``: ``stdin()``, relative paths from the working directory)."""
    if path == "-":
        return load(stdin(), "<stdin>", Path.cwd())
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TunnelFileError(
            path, [Mistake(path, 1, 1, "", f"not UTF-8 text ({exc.reason})")]
        ) from None
    except OSError as exc:
        raise TunnelFileError(
            path, [Mistake(path, 1, 1, "", f"cannot read the file: {exc.strerror or exc}")]
        ) from None
    return load(text, path, Path(path).parent)
