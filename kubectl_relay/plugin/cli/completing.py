"""Shell completion of flag values and TARGETs, asked of the cluster the typed flags name.

The candidates themselves come from the library (``plugin.completion``); this
module turns them into click's completion items and keeps a TAB from hanging
or showing an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import click
from click.shell_completion import CompletionItem

from .. import completion
from ..kube import Cluster, kubeconfig_path
from .running import kube_from_flags, with_cluster

#: How long completion waits for the API server: a shell must not hang on TAB.
COMPLETION_TIMEOUT = 5.0


def completion_items(candidates: Sequence[completion.Candidate]) -> list[CompletionItem]:
    """The library's candidates as click's completion items."""
    return [CompletionItem(c.value, help=c.help or None) for c in candidates]


def complete_from_cluster(
    ctx: click.Context,
    ask: Callable[[Cluster], Coroutine[Any, Any, list[completion.Candidate]]],
) -> list[CompletionItem]:
    """Candidates from the cluster of the flags typed so far; none if it cannot answer."""
    given = ctx.params
    kube = kube_from_flags(
        given.get("kubeconfig"),
        given.get("context"),
        given.get("namespace"),
        given.get("as_user"),
        tuple(given.get("as_groups") or ()),
        min(given.get("request_timeout") or COMPLETION_TIMEOUT, COMPLETION_TIMEOUT),
    )
    try:
        return completion_items(asyncio.run(with_cluster(kube, ask)))
    except Exception:  # completion stays silent: a TAB is no place for errors
        return []


def complete_namespaces(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """``-n`` and ``--relay-namespace``: the namespaces of the cluster."""
    del param
    return complete_from_cluster(
        ctx, lambda cluster: completion.namespace_candidates(cluster, incomplete)
    )


def complete_contexts(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """``--context``: the contexts of the kubeconfig."""
    del param
    from kubernetes import config  # noqa: PLC0415 - slow import, only when needed

    try:
        contexts, _ = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig_path(ctx.params.get("kubeconfig"))
        )
    except Exception:  # no kubeconfig, no candidates
        return []
    return completion_items(completion.context_candidates(contexts, incomplete))
