"""A candidate forwarding to the common echo server: the setup of the small-message workloads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..candidates import Candidate, Forward
from ..peers.common import HOST
from ..processes import Proc
from .base import Context


@contextlib.contextmanager
def forwarding(
    ctx: Context, candidate: Candidate | None, upstream: int
) -> Iterator[tuple[Proc | None, int]]:
    """``candidate`` forwarding a port to ``upstream`` while the block runs.

    (For socat and relay: ``TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:UPSTREAM``.)

    Yields the candidate's process and the port to connect to; without a
    candidate (direct), no process and ``upstream`` itself.
    """
    if candidate is None:
        yield None, upstream
        return

    def argv(port: int) -> list[str]:
        return candidate.forward_argv(Forward(port, upstream, host=HOST), ctx.workdir)

    proc, port = ctx.processes.listener(candidate.name, argv)
    try:
        yield proc, port
    finally:
        ctx.processes.stop(proc)


@contextlib.contextmanager
def echo_server(ctx: Context) -> Iterator[int]:
    """The common upstream (``peers.echo``) while the block runs; yields its port."""
    proc, port = ctx.processes.server("echo")
    try:
        yield port
    finally:
        ctx.processes.stop(proc)
