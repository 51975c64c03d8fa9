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
    """``relay <relation> factor x <versus>``, e.g. relay >= 2.5x socat."""

    versus: Literal["socat", "direct"]
    relation: Relation
    factor: float

    def holds(self, ratio: float) -> bool:
        """Whether the ratio relay/versus meets the target."""
        if self.relation == ">=":
            return ratio >= self.factor
        if self.relation == "<=":
            return ratio <= self.factor
        return ratio < self.factor

    def __str__(self) -> str:
        return f"{self.relation} {self.factor:g}x {self.versus}"


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

    def ratio(self, key: str, versus: CandidateName) -> float | None:
        """relay's median over ``versus``'s median."""
        mine, theirs = self.median("relay", key), self.median(versus, key)
        if mine is None or not theirs:
            return None
        return mine / theirs

    def verdicts(self, metric: Metric) -> list[Verdict]:
        """Every target of ``metric``, checked."""
        return [Verdict(target, self.ratio(metric.key, target.versus)) for target in metric.targets]

    def failures(self) -> dict[CandidateName, str]:
        """Candidates whose runs failed, with the reason."""
        return {name: s.failure for name, s in self.candidates.items() if s.failure}
