"""The interface every workload implements, and what the runner hands it."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

from ..candidates import PEERS, Candidate, CandidateName
from ..processes import Processes
from ..results import Metric, WorkloadResult
from ..settings import Settings


@dataclass
class Context:
    """What a workload may use: processes, settings and a scratch directory."""

    processes: Processes
    settings: Settings
    workdir: Path


@dataclass(frozen=True)
class Measured:
    """The outcome of one run: a value per metric key, and facts worth keeping."""

    values: dict[str, float]
    details: dict[str, object] = field(default_factory=dict)


class Workload(abc.ABC):
    """One thing measured for every candidate, run by ``runner.run_workload``.

    ``measure`` does one run for one candidate and returns one value per
    metric; it starts what it needs through ``ctx.processes`` and stops it
    before returning (the ``Processes`` block stops anything left over).
    A ``BenchmarkError`` fails that candidate's runs of this workload only.
    """

    #: Short name, for ``--only``.
    name: str
    #: Heading in the table.
    title: str
    #: Exactly what is measured, printed with the results.
    description: str
    #: Whether it is slow (bulk) and gets ``runs_bulk`` runs rather than ``runs_fast``.
    bulk: bool = False
    #: Whether ``measure(ctx, None)`` (no relay at all) is meaningful.
    with_direct: bool = False
    #: The candidates it measures, when they are there (HAProxy and nginx only
    #: forward; ``relay-general`` is for the bulk comparison of the two paths).
    candidates: frozenset[CandidateName] = frozenset({"relay", *PEERS})

    @abc.abstractmethod
    def metrics(self, ctx: Context) -> tuple[Metric, ...]:
        """What ``measure`` returns, with labels and targets."""

    def prepare(self, ctx: Context) -> None:  # noqa: B027 - optional hook, not abstract
        """Set up what every run shares (a certificate...); nothing by default."""

    @abc.abstractmethod
    def measure(self, ctx: Context, candidate: Candidate | None) -> Measured:
        """One run through ``candidate`` (``None``: directly)."""

    def notes(self, result: WorkloadResult) -> list[str]:
        """Facts from the runs' details worth printing under the table; none by default."""
        return []
