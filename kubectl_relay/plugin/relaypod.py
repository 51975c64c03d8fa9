"""The ephemeral relay pod, built as plain data (no client, no I/O).

A tunnel's relay runs as a Job of one pod, so that it goes away on its own:

- the engine stops accepting after ``idle_timeout`` seconds without a new
  connection (``accept-timeout`` on its forking listener), lets its running
  connections finish and exits 0;
- the Job's ``activeDeadlineSeconds`` is a lease that the client renews
  (see ``LEASE_SECONDS``): a client that was killed or a laptop that sleeps
  stops renewing it, and the Job controller ends the relay pod at most
  ``LEASE_SECONDS`` later, whatever the idle timeout;
- the pod's own ``activeDeadlineSeconds`` bounds its life (``--max-lifetime``);
- ``ttlSecondsAfterFinished`` makes the cluster delete the finished Job and
  its pod (the TTL-after-finished controller), so a client that was killed or
  a laptop that slept leaves nothing behind; ``kubectl relay gc`` removes what
  a cluster without that controller keeps;
- ``backoffLimit: 0`` and ``restartPolicy: Never``: a relay that fails is not
  restarted in place; the client decides whether to start a new one.

The pod passes the Pod Security "restricted" profile: non-root with a
numeric uid, seccomp ``RuntimeDefault``, all capabilities dropped, no
privilege escalation; beyond it, a read-only root filesystem, no service
account token (the relay never talks to the API) and requests and limits.
The security contexts come from ``kubectl_relay.podsecurity``, shared with
the operator's builders.

Labels name the manager, the user and the session (``kubectl relay ls`` and
``gc`` select on them); annotations record the client's host and pid, when it
started, the target and the deadline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from .. import __version__
from ..podsecurity import (
    restricted_container_security_context,
    restricted_pod_security_context,
)

#: The project's relay image for this version of the plugin.
RELAY_IMAGE = f"ghcr.io/kubectl-relay/relay:{__version__}"
#: The relay container's name.
CONTAINER = "relay"
#: Seconds the kubelet waits after SIGTERM (pod deleted) before it kills the relay.
TERMINATION_GRACE_SECONDS = 5
#: The relay's own ``--grace-period``, inside the pod's: sessions still
#: running when it ends are cut with a log line before the kubelet's SIGKILL.
RELAY_GRACE_SECONDS = 3
#: The relay's ``-t`` in the pods of stream tunnels: after a client's half-close, how long
#: its session waits for the first (and each further) byte of the reply. socat's 0.5 s is
#: made for a peer next door; here the reply crosses the port-forward to a laptop, and a
#: server may think for a while about a request it has read to the end: at 0.5 s the client
#: got an empty reply. A session whose both directions end closes at once regardless.
CLOSE_TIMEOUT = 30.0
#: The port the relay listens on inside its pod (any port works: the pod has its own network).
POD_PORT = 8000
#: The relay pod's lease, renewed by its client every ``LEASE_RENEW_PERIOD`` seconds.
#:
#: Why a lease on the Job rather than a heartbeat through the port-forward:
#: the relay cannot tell an idle client from a gone one (a tunnel with no
#: connection has no port-forward stream at all, and a laptop that sleeps
#: leaves its streams open without closing them), and a heartbeat connection
#: through the relay's listener would open a connection to the target each
#: time. The Job's ``activeDeadlineSeconds`` may be changed while it runs and
#: is enforced by the cluster itself (the Job controller deletes the pod when
#: it passes, even if the relay hangs), so the client only has to push it
#: forward: ``elapsed + LEASE_SECONDS`` every ``LEASE_RENEW_PERIOD``. A killed
#: client stops pushing and the pod ends at most ``LEASE_SECONDS`` later (plus
#: the pod's termination grace), then ``ttlSecondsAfterFinished`` deletes the
#: Job; a client that comes back within the lease (a short sleep) renews it and
#: keeps its tunnel. No engine option is needed, and nothing reaches the target.
#: ``--lease`` (hidden; for the end-to-end tests, which would otherwise wait a
#: whole lease for a killed client's pod) sets another length, renewed every
#: quarter of it when that is shorter, and never below ``MIN_LEASE_SECONDS``.
LEASE_SECONDS = 40
LEASE_RENEW_PERIOD = 10.0
#: The shortest lease accepted: renewed every 3 s, it still outlives two
#: renewals that a slow API server answers late.
MIN_LEASE_SECONDS = 12

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kubectl-relay"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_USER = "relay.kubectl-relay.io/user"
LABEL_SESSION = "relay.kubectl-relay.io/session"
LABEL_TUNNEL = "relay.kubectl-relay.io/tunnel"
ANNOTATION_CLIENT = "relay.kubectl-relay.io/client"
ANNOTATION_STARTED = "relay.kubectl-relay.io/started"
ANNOTATION_DEADLINE = "relay.kubectl-relay.io/deadline"
ANNOTATION_TARGET = "relay.kubectl-relay.io/target"
ANNOTATION_COMMAND = "relay.kubectl-relay.io/command"

#: Where a TLS Secret's files appear in the relay container.
TLS_MOUNT = "/etc/kubectl-relay/tls"
TLS_VOLUME = "tls"

Mode = Literal["tcp", "udp", "tls", "run", "proxy"]
TraceLevel = Literal["quiet", "text", "hex", "rows"]
Body = dict[str, object]


@dataclass(frozen=True)
class Toleration:
    """One pod toleration (``KEY[=VALUE]:EFFECT`` or ``KEY:Exists`` on the command line)."""

    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: str | None = None


@dataclass(frozen=True)
class PodSettings:
    """How relay pods are made, from the command line's pod options."""

    #: ``--image``: the relay image.
    image: str = RELAY_IMAGE
    #: ``--node-selector``: labels a node must have.
    node_selector: Mapping[str, str] = field(default_factory=dict)
    #: ``--toleration``: taints the pod tolerates.
    tolerations: tuple[Toleration, ...] = ()
    #: ``--requests`` / ``--limits``: container resources (``cpu``, ``memory``).
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "10m", "memory": "32Mi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "128Mi"})
    #: ``--idle-timeout``: the relay exits after this long without a new connection.
    idle_timeout: float = 600.0
    #: ``--max-lifetime``: activeDeadlineSeconds of the relay's Job and pod.
    max_lifetime: int = 12 * 3600
    #: ``--keep-finished``: how long a finished relay stays (ttlSecondsAfterFinished).
    keep_finished: int = 30
    #: ``--lease`` (hidden): how long a relay pod outlives its client's last renewal.
    lease: float = LEASE_SECONDS


@dataclass(frozen=True)
class TLSSettings:
    """How the relay originates TLS (``kubectl relay tls``).

    ``secret`` names the Secret mounted at ``TLS_MOUNT``; the file options
    are key names in it (``ca.crt``, ``tls.crt``, ``tls.key``).
    """

    verify: bool = True
    secret: str | None = None
    ca_key: str | None = None
    cert_key: str | None = None
    key_key: str | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class ClientInfo:
    """Who started a relay: user, session, and the client process."""

    user: str
    session: str
    host: str
    pid: int
    started: datetime


#: The engine's option that keeps a session's notices out of the pod's log.
QUIET_SESSIONS = "--quiet-sessions"
#: The engine's option that keeps the listener's notice per connection out of it.
QUIET_ACCEPTS = "--quiet-accepts"


def trace_flags(level: TraceLevel) -> list[str]:
    """The engine's options for a trace level.

    ``-d -d`` always: its notices say when the relay listens (the client
    waits for that) and when a connection is accepted (the client shows
    them with the trace), and errors always reach the client. Quiet, the
    client shows no accepts (only its own connection lines):
    ``--quiet-accepts`` keeps the listener to its first notice, where each
    line per connection would cross the container runtime, the kubelet and
    the API server only to be dropped.
    ``-lu`` gives log lines microseconds like the trace's headers.
    ``--trace-session-ids`` numbers the sessions in the trace and the log,
    so that the client can tell which connection a block or error is about.
    """
    data = {"quiet": [QUIET_ACCEPTS], "text": ["-v"], "hex": ["-x"], "rows": ["-v", "-x"]}[level]
    return ["-d", "-d", "-lu", "--trace-session-ids", *data]


def listen_address(
    idle_timeout: float, *, port: int = POD_PORT, mux: bool = False, datagrams: bool = False
) -> str:
    """The relay's tunnel-facing address: framed (or mux streams), forking, idle exit.

    ``datagrams``: mux streams framed too (``udp``), which keep the datagrams' boundaries.
    """
    idle = f"{idle_timeout:g}"
    if mux:
        framed = ",frame=len16" if datagrams else ""
        return f"MUX-ACCEPT:{port},fork,reuseaddr,accept-timeout={idle}{framed}"
    return f"TCP-LISTEN:{port},fork,reuseaddr,frame=len16,accept-timeout={idle}"


def target_address(mode: Mode, endpoint: str, tls: TLSSettings | None = None) -> str:
    """The relay's target address for ``tcp``, ``udp`` or ``tls`` mode."""
    if mode == "tcp":
        return f"TCP:{endpoint}"
    if mode == "udp":
        # No empty datagram towards the target when the tunnel's connection ends.
        return f"UDP:{endpoint},shut-none"
    if mode != "tls":
        raise ValueError(f"no target address for mode {mode}")
    tls = tls or TLSSettings()
    options = []
    if not tls.verify:
        options.append("verify=0")
    if tls.ca_key:
        options.append(f"cafile={TLS_MOUNT}/{tls.ca_key}")
    if tls.cert_key:
        options.append(f"cert={TLS_MOUNT}/{tls.cert_key}")
    if tls.key_key:
        options.append(f"key={TLS_MOUNT}/{tls.key_key}")
    if tls.server_name:
        options.append(f"snihost={tls.server_name}")
        options.append(f"commonname={tls.server_name}")
    return ",".join([f"OPENSSL:{endpoint}", *options])


def close_timeout(mode: Mode) -> float | None:
    """The relay pod's ``-t`` for a tunnel of ``mode``: ``CLOSE_TIMEOUT``, but socat's default
    for ``udp``, whose target never ends and would hold each finished session that long."""
    return None if mode == "udp" else CLOSE_TIMEOUT


def relay_command(
    trace: TraceLevel,
    first: str,
    second: str,
    *,
    session_notices: bool = False,
    close_timeout: float | None = CLOSE_TIMEOUT,
) -> list[str]:
    """The container's command: ``relay [trace, stop and -t options] FIRST SECOND``.

    ``close_timeout``: the ``-t`` (``None``: socat's default; see ``close_timeout()``).

    ``--quiet-sessions`` unless ``session_notices``: of a session the client
    shows its trace, warnings and errors, not its other notices (opening,
    connected, transfer loop, EOF). Logged, each would cross the container
    runtime, the kubelet and the API server to be dropped here, at several
    lines per connection.
    """
    quiet = [] if session_notices else [QUIET_SESSIONS]
    patience = [] if close_timeout is None else ["-t", f"{close_timeout:g}"]
    return ["relay", *trace_flags(trace), *quiet, *stop_flags(), *patience, first, second]


def stop_flags() -> list[str]:
    """The engine's graceful stop on SIGTERM, fitted inside the pod's termination grace period."""
    return ["--grace-period", f"{RELAY_GRACE_SECONDS:g}"]


def job_name(session: str, tunnel: int, generation: int) -> str:
    """``kubectl-relay-<session>-<tunnel>-<generation>``: unique per relay pod started."""
    return f"kubectl-relay-{session}-{tunnel}-{generation}"


def label_value(text: str) -> str:
    """``text`` as a valid label value: at most 63 of ``[A-Za-z0-9._-]``, alphanumeric ends."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in text)
    cleaned = cleaned[:63].strip("._-")
    return cleaned or "unknown"


def labels(client: ClientInfo, tunnel: int) -> dict[str, str]:
    """The labels of a relay's Job and pod."""
    return {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_NAME: "kubectl-relay",
        LABEL_USER: label_value(client.user),
        LABEL_SESSION: client.session,
        LABEL_TUNNEL: str(tunnel),
    }


def relay_job(
    *,
    name: str,
    namespace: str,
    command: Sequence[str],
    client: ClientInfo,
    tunnel: int,
    target: str,
    settings: PodSettings,
    tls: TLSSettings | None = None,
    port: int | None = POD_PORT,
    lease: float | None = None,
    check_host: str | None = None,
) -> Body:
    """The Job running one relay pod (see the module docstring).

    ``lease``: the Job's first ``activeDeadlineSeconds`` (long enough for
    the pod to start; the client renews it, see ``LEASE_SECONDS``), capped
    by ``--max-lifetime``. ``check_host``: a ``HOST:PORT`` the pod resolves
    before the relay starts (``resolve_init_container``).
    """
    deadline = client.started + timedelta(seconds=settings.max_lifetime)
    metadata: Body = {
        "name": name,
        "namespace": namespace,
        "labels": labels(client, tunnel),
        "annotations": {
            ANNOTATION_CLIENT: f"{client.host}:{client.pid}",
            ANNOTATION_STARTED: _timestamp(client.started),
            ANNOTATION_DEADLINE: _timestamp(deadline),
            ANNOTATION_TARGET: target,
            ANNOTATION_COMMAND: " ".join(command),
        },
    }
    template_metadata = {
        "labels": labels(client, tunnel),
        "annotations": dict(metadata["annotations"]),  # type: ignore[call-overload]
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": lease_deadline(lease, settings),
            "ttlSecondsAfterFinished": settings.keep_finished,
            "template": {
                "metadata": template_metadata,
                "spec": relay_pod_spec(
                    command, settings, tls=tls, port=port, check_host=check_host
                ),
            },
        },
    }


def relay_pod_spec(
    command: Sequence[str],
    settings: PodSettings,
    *,
    tls: TLSSettings | None = None,
    port: int | None = POD_PORT,
    check_host: str | None = None,
) -> Body:
    """The relay pod's spec: one restricted container running ``command``."""
    container: Body = {
        "name": CONTAINER,
        "image": settings.image,
        "command": list(command),
        "resources": {"requests": dict(settings.requests), "limits": dict(settings.limits)},
        "securityContext": restricted_container_security_context(),
    }
    if port is not None:
        # No readiness probe: each probe would be a connection through the
        # relay to the target. The client retries its first connection instead.
        container["ports"] = [{"name": "tunnel", "containerPort": port, "protocol": "TCP"}]
    spec: Body = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "activeDeadlineSeconds": settings.max_lifetime,
        "securityContext": restricted_pod_security_context(),
        "containers": [container],
    }
    if check_host is not None:
        spec["initContainers"] = [resolve_init_container(check_host, settings)]
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [_toleration(t) for t in settings.tolerations]
    if tls is not None and tls.secret:
        container["volumeMounts"] = [{"name": TLS_VOLUME, "mountPath": TLS_MOUNT, "readOnly": True}]
        # 0440 with fsGroup: only the relay's group reads the private key.
        spec["volumes"] = [
            {"name": TLS_VOLUME, "secret": {"secretName": tls.secret, "defaultMode": 0o440}}
        ]
    return spec


def renew_period(lease: float) -> float:
    """How often a lease of ``lease`` seconds is renewed: every ``LEASE_RENEW_PERIOD``,
    or every quarter of a shorter lease."""
    return min(LEASE_RENEW_PERIOD, lease / 4)


def lease_deadline(seconds: float | None, settings: PodSettings) -> int:
    """The Job's ``activeDeadlineSeconds`` for a lease ending ``seconds`` after the Job started.

    Never past ``--max-lifetime``; no lease at all (None) is the whole lifetime.
    """
    if seconds is None:
        return settings.max_lifetime
    return max(1, min(math.ceil(seconds), settings.max_lifetime))


#: The init container that resolves a ``HOST:PORT`` target from the relay pod.
RESOLVE_CONTAINER = "resolve"


def resolve_init_container(host_port: str, settings: PodSettings) -> Body:
    """An init container that fails, with the engine's resolver error, if ``host_port`` does not
    resolve from the pod (the cluster's DNS, the pod's search path).

    It "connects" a UDP socket, which resolves the name and sends nothing:
    ``-u`` relays only from ``/dev/null`` (at once at its end) and
    ``shut-none`` keeps the end from becoming an empty datagram. The target
    sees no packet, and the relay starts only once the name is known good.
    """
    return {
        "name": RESOLVE_CONTAINER,
        "image": settings.image,
        "command": ["relay", "-u", "OPEN:/dev/null,rdonly", f"UDP:{host_port},shut-none"],
        "resources": {"requests": dict(settings.requests), "limits": dict(settings.limits)},
        "securityContext": restricted_container_security_context(),
    }


def tls_secret(
    *, name: str, namespace: str, files: Mapping[str, bytes], client: ClientInfo, tunnel: int
) -> Body:
    """A Secret carrying local TLS files into the relay pod (deleted with the tunnel)."""
    import base64  # noqa: PLC0415 - only TLS tunnels with local files need it

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(client, tunnel)},
        "data": {key: base64.b64encode(value).decode() for key, value in files.items()},
    }


def _toleration(toleration: Toleration) -> Body:
    item: Body = {"key": toleration.key, "operator": toleration.operator}
    if toleration.value is not None:
        item["value"] = toleration.value
    if toleration.effect is not None:
        item["effect"] = toleration.effect
    return item


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
