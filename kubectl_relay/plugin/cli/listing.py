"""The inventory commands of ``kubectl relay``: ``ls`` and ``gc`` of relay pods."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import inventory
from ..kube import Cluster
from .params import listing_kube_options
from .running import kube_from_params, run_session, with_cluster
from .terminal import terminal_of

LS_EXIT_CODES_HELP = """\b
Exit status:
  0    listed (also when there is no relay pod)
  2    bad command line
  3    the cluster refused or lacks something: kubeconfig, the right
       to list pods
"""

GC_EXIT_CODES_HELP = """\b
Exit status:
  0    every chosen relay pod was deleted (or, with --dry-run, listed)
  2    bad command line
  3    the cluster refused or lacks something: kubeconfig, the right
       to list or delete pods and Jobs (what was deleted before stays deleted)
"""

#: ``ls -o``: kubectl's spellings; without it, the table.
OUTPUT_FORMATS = ("wide", "json", "yaml")


def _listing(
    params: dict[str, Any], current_namespace: bool, all_users: bool
) -> Callable[[Cluster], Coroutine[Any, Any, inventory.Inventory]]:
    all_namespaces = not current_namespace and params["namespace"] is None

    async def list_relays(cluster: Cluster) -> inventory.Inventory:
        return await inventory.list_relays(
            cluster, all_namespaces=all_namespaces, user=None if all_users else cluster.user
        )

    return list_relays


@click.command(name="ls", epilog=LS_EXIT_CODES_HELP)
@click.option("--all-users", is_flag=True, help="Every user's relays, not only yours.")
@click.option(
    "--current-namespace",
    is_flag=True,
    help="Only the context's namespace (default: every namespace you may list).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUT_FORMATS),
    help="wide: a table with the Job, user, session and deadline too; json, yaml: every "
    "field, for scripts (notes go to stderr then). [default: a table]",
)
@listing_kube_options
@click.pass_context
def list_command(
    ctx: click.Context,
    /,
    all_users: bool,
    current_namespace: bool,
    output: str | None,
    **params: Any,
) -> int:
    """List your relay pods across namespaces; orphans are marked."""
    terminal = terminal_of(ctx)
    kube = kube_from_params(params)
    found = run_session(with_cluster(kube, _listing(params, current_namespace, all_users)))
    if output in ("json", "yaml"):
        if found.note:
            terminal.err.print(Text(found.note, style="yellow"))
        relays = [relay.as_dict() for relay in found.relays]
        if output == "json":
            text = json.dumps(relays, indent=2)
        else:
            text = yaml.safe_dump(relays, sort_keys=False).rstrip()
        terminal.out.print(Text(text), crop=False)
    else:
        show_inventory(terminal.out, found, wide=output == "wide")
    return 0


@click.command(epilog=GC_EXIT_CODES_HELP)
@click.option("--all", "everything", is_flag=True, help="Delete all your relays, not only orphans.")
@click.option("--all-users", is_flag=True, help="Every user's relays, not only yours.")
@click.option(
    "--dry-run", is_flag=True, help="Only show what would be deleted (the same pods a run deletes)."
)
@click.option(
    "--current-namespace",
    is_flag=True,
    help="Only the context's namespace (default: every namespace you may list).",
)
@listing_kube_options
@click.pass_context
def gc(
    ctx: click.Context,
    /,
    everything: bool,
    all_users: bool,
    dry_run: bool,
    current_namespace: bool,
    **params: Any,
) -> int:
    """Delete orphaned relay pods: finished, past their deadline, or whose client is gone."""
    terminal = terminal_of(ctx)
    kube = kube_from_params(params)
    listing = _listing(params, current_namespace, all_users)

    async def use(cluster: Cluster) -> tuple[inventory.Inventory, list[inventory.RelayInfo]]:
        found = await listing(cluster)
        deleted = await inventory.collect_garbage(
            cluster, found, everything=everything, dry_run=dry_run
        )
        return found, deleted

    found, deleted = run_session(with_cluster(kube, use))
    if found.note:
        terminal.out.print(Text(found.note, style="yellow"))
    verb = "would delete" if dry_run else "deleted"
    for relay in deleted:
        why = relay.orphan or "requested with --all"
        terminal.out.print(Text(f"{verb} {relay.namespace}/{relay.pod} ({why})"))
    # The same count either way: a dry run names exactly what a run deletes.
    left = len(found.relays) - len(deleted)
    summary = "would be deleted" if dry_run else "deleted"
    terminal.out.print(Text(f"{len(deleted)} relay pod(s) {summary}, {left} left", style="dim"))
    return 0


def show_inventory(
    console: Console, found: inventory.Inventory, now: datetime | None = None, *, wide: bool = False
) -> None:
    """The ``ls`` table (``wide``: with the Job, user, session and deadline)."""
    now = now or datetime.now(UTC)
    if found.note:
        console.print(Text(found.note, style="yellow"))
    if not found.relays:
        where = f"namespace {found.namespace}" if found.namespace else "any namespace"
        console.print(Text(f"No relay pods in {where}.", style="dim"))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["NAMESPACE", "POD", "TARGET", "CLIENT", "AGE", "STATUS"]
    if wide:
        columns += ["JOB", "USER", "SESSION", "DEADLINE"]
    for column in columns:
        table.add_column(column)
    for relay in found.relays:
        status = relay.phase + (f" (orphan: {relay.orphan})" if relay.orphan else "")
        row: list[str | Text] = [
            relay.namespace,
            relay.pod,
            relay.target,
            relay.client,
            _age(relay.started, now),
            Text(status, style="yellow" if relay.orphan else ""),
        ]
        if wide:
            deadline = inventory.format_time(relay.deadline) or "<none>"
            row += [relay.job or "<none>", relay.user, relay.session, deadline]
        table.add_row(*row)
    console.print(table)


def _age(started: datetime | None, now: datetime) -> str:
    if started is None:
        return "?"
    seconds = max(0, int((now - started).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
