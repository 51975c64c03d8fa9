"""The tunnels of a file, run together: one ``Session`` per namespace and settings.

A ``Session`` has one namespace and one set of options (trace, pod settings)
for all of its tunnels, and it keeps the order of side effects and the
cleanup guarantees (``session`` module docstring). A file's tunnels differ
in both, so ``run_tunnels`` groups them: tunnels of one namespace with the
same options share a session (one hygiene pass, one cleanup), and the
sessions run in one task group:

1. every session binds its local listeners before any session does anything
   else, so a local port in use fails before anything exists in the cluster,
   whichever group it is in;
2. the sessions then run side by side; the first to fail cancels the others,
   and each deletes what it created (a session cancelled by Ctrl-C does too);
3. each session numbers its tunnels from 0; their events are renumbered to
   the tunnel's place in the file, so the renderer can prefix them by name.

An ``expose`` tunnel runs as ``kubectl relay expose`` runs it (``Exposer``,
with a session of its own, its Service and its mux client) beside the
sessions, in the same task group.

Why one relay pod per tunnel and not one per namespace: the engine runs one
address pair per process, and a relay pod's life is its tunnel's: its lease,
its idle exit (``accept-timeout``), its replacement when it fails or when a
Deployment target's backend moves, and the log the trace is read from. Several
relays in one pod (one container each) would tie those together: replacing one
tunnel's relay, or one relay's idle exit, would restart or end the others, and
a pod's containers cannot be added or restarted one by one. Grouping by
namespace therefore happens one level up: one session, one cleanup, one set
of labels (``kubectl relay ls`` shows the group's pods under one session).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import cast

from .errors import first_error
from .events import EventSink, Notice, SessionEvent
from .exposing import Exposer, ExposeSpec
from .kube import Cluster
from .session import Session, SessionOptions, TunnelSpec
from .tunnelfile import FileTunnel


@dataclasses.dataclass(frozen=True)
class Group:
    """Tunnels that share a session: their namespace, options and places in the file."""

    namespace: str
    options: SessionOptions
    members: tuple[int, ...]


def groups(tunnels: Sequence[FileTunnel], default_namespace: str) -> list[Group]:
    """Group ``tunnels`` by namespace and options, in the file's order.

    An ``expose`` tunnel is a group of its own: it runs its own session (``Exposer``).
    """
    found: list[Group] = []
    for index, tunnel in enumerate(tunnels):
        namespace = tunnel.namespace or default_namespace
        options = dataclasses.replace(
            tunnel.options, relay_namespace=namespace, target_namespace=namespace
        )
        if isinstance(tunnel.spec, ExposeSpec):
            found.append(Group(namespace, options, (index,)))
            continue
        for number, group in enumerate(found):
            if isinstance(tunnels[group.members[0]].spec, ExposeSpec):
                continue
            if group.options == options:
                found[number] = dataclasses.replace(group, members=(*group.members, index))
                break
        else:
            found.append(Group(namespace, options, (index,)))
    return found


def _renumbered(on_event: EventSink, members: tuple[int, ...]) -> EventSink:
    """A sink that gives a session's events the file's tunnel numbers."""

    def sink(event: SessionEvent) -> None:
        if not isinstance(event, Notice):
            event = dataclasses.replace(event, tunnel=members[event.tunnel])
        on_event(event)

    return sink


async def run_tunnels(cluster: Cluster, tunnels: Sequence[FileTunnel], on_event: EventSink) -> int:
    """Run ``tunnels`` until cancelled (or every ``run`` relay ended); the highest exit status.

    Raises the first failure of any session (after every session cleaned up).
    """
    sessions: list[Session] = []
    exposers: list[Exposer] = []
    for group in groups(tunnels, cluster.namespace):
        sink = _renumbered(on_event, group.members)
        specs = [tunnels[index].spec for index in group.members]
        if isinstance(specs[0], ExposeSpec):
            exposers.append(Exposer(cluster, specs[0], group.options, sink))
        else:
            sessions.append(Session(cluster, cast(list[TunnelSpec], specs), group.options, sink))
    try:
        for session in sessions:
            session.bind()
    except BaseException:
        for session in sessions:
            for tunnel in session.tunnels:
                tunnel.close()
        raise
    try:
        async with asyncio.TaskGroup() as task_group:
            runs = [task_group.create_task(session.run()) for session in sessions]
            runs += [task_group.create_task(exposer.run()) for exposer in exposers]
    except BaseExceptionGroup as failures:
        raise first_error(failures) from None
    return max(task.result() for task in runs)
