"""What a workload measures and what came out: metrics, targets, samples, verdicts."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .candidates import CandidateName
from .errors import ProcessFailed

Relation = Literal[">=", "<=", "<"]


def number(message: Mapping[str, object], key: str) -> float:
    """``message[key]`` as a float: a peer's answer or a run's details."""
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProcessFailed("peer", f"gave {key}={value!r}, not a number")
    return float(value)


@dataclass(frozen=True)
class Target:
    """``relay <relation> factor x <versus>``, e.g. relay >= 1.1x the best of HAProxy and nginx.

    With several names in ``versus``, each round compares relay with the best
    of them in that round (the fastest, or the smallest where lower is better).
    """

    versus: tuple[CandidateName, ...]
    relation: Relation
    factor: float
    #: The goal this target checks, in words (the verdict lines under the table).
    goal: str = ""
    #: The relay candidate held to it (``relay-workers`` has rows of its own).
    relay: CandidateName = "relay"

    def holds(self, ratio: float) -> bool:
        """Whether the ratio relay/versus meets the target."""
        if self.relation == ">=":
            return ratio >= self.factor
        if self.relation == "<=":
            return ratio <= self.factor
        return ratio < self.factor

    def __str__(self) -> str:
        against = self.versus[0] if len(self.versus) == 1 else (
            "best of " + ", ".join(self.versus))
        return f"{self.relation} {self.factor:g}x {against}"


def versus(
    *names: CandidateName,
    relation: Relation,
    factor: float,
    goal: str = "",
    relay: CandidateName = "relay",
) -> Target:
    """A target for ``relay`` against one candidate or the best of several."""
    return Target(tuple(names), relation, factor, goal, relay)


@dataclass(frozen=True)
class Metric:
    """One number a workload reports per run, with its unit and targets."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    targets: tuple[Target, ...] = ()


@dataclass
class Samples:
    """One candidate's results in one workload."""

    values: dict[str, list[float]] = field(default_factory=dict)
    #: Extra facts of each run (retries, errors, cipher...), kept for the JSON file.
    details: list[dict[str, object]] = field(default_factory=list)
    #: Why the candidate's runs stopped, if one failed.
    failure: str | None = None

    def median(self, key: str) -> float | None:
        """The median over the runs, or None without any value."""
        values = self.values.get(key)
        return statistics.median(values) if values else None


@dataclass(frozen=True)
class Verdict:
    """A target checked against the medians."""

    target: Target
    ratio: float | None
    #: The peers the target names that were not measured (not installed, or failed).
    missing: tuple[CandidateName, ...] = ()

    @property
    def passed(self) -> bool:
        """PASS only with a ratio that meets the target; a missing figure is a MISS."""
        return self.ratio is not None and self.target.holds(self.ratio)


@dataclass
class WorkloadResult:
    """Everything one workload produced in one benchmark run."""

    name: str
    title: str
    description: str
    runs: int
    metrics: tuple[Metric, ...]
    candidates: dict[CandidateName, Samples]
    notes: list[str] = field(default_factory=list)

    def median(self, candidate: CandidateName, key: str) -> float | None:
        """A candidate's median for one metric (None if it failed or was not measured)."""
        samples = self.candidates.get(candidate)
        return samples.median(key) if samples else None

    def ratio(
        self, key: str, versus: CandidateName, relay: CandidateName = "relay"
    ) -> float | None:
        """The median over rounds of relay's value over ``versus``'s in the same round.

        Rounds are interleaved (see ``runner``), so a ratio within a round
        compares runs made under the same load; its median is steadier on a
        busy machine than the ratio of two medians.
        """
        return self.ratio_to_best(key, (versus,), True, relay)

    def ratio_to_best(
        self,
        key: str,
        names: tuple[CandidateName, ...],
        higher_is_better: bool,
        relay: CandidateName = "relay",
    ) -> float | None:
        """Median over rounds of relay's value over the best of ``names`` in that round."""
        mine = self.candidates.get(relay)
        values = mine.values.get(key, []) if mine else []
        theirs = [
            s.values.get(key, []) for name in names if (s := self.candidates.get(name))
        ]
        ratios = []
        for index, value in enumerate(values):
            round_values = [series[index] for series in theirs if index < len(series)]
            if not round_values:
                continue
            best = max(round_values) if higher_is_better else min(round_values)
            if best:
                ratios.append(value / best)
        return statistics.median(ratios) if ratios else None

    def verdicts(self, metric: Metric) -> list[Verdict]:
        """Every target of ``metric``, checked."""
        verdicts = []
        for target in metric.targets:
            ratio = self.ratio_to_best(
                metric.key, target.versus, metric.higher_is_better, target.relay
            )
            missing = tuple(
                name for name in target.versus if self.median(name, metric.key) is None
            )
            verdicts.append(Verdict(target, ratio, missing))
        return verdicts

    def failures(self) -> dict[CandidateName, str]:
        """Candidates whose runs failed, with the reason."""
        return {name: s.failure for name, s in self.candidates.items() if s.failure}
