"""The report of a run: the table printed to stdout and the JSON kept in benchmarks/results."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .apimetrics import OPERATOR_ROWS, Key


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (``share`` 0.5 is the median); NaN without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True)
class Spread:
    """p50, p99 and max of one series, with how many values it has."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(len(values), percentile(values, 0.5), percentile(values, 0.99),
                   max(values) if values else math.nan)


def _seconds(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def render(title: str, spreads: Sequence[tuple[str, Spread]], facts: Sequence[tuple[str, str]],
           requests: Counter[Key], tunnels: int) -> str:
    """The table: per-tunnel times, single figures, then API requests per tunnel."""
    width = max(len(label) for label, _ in [*spreads, *facts]) + 2
    lines = [title, "", f"{'per tunnel, seconds':<{width}}{'n':>6}{'p50':>9}{'p99':>9}{'max':>9}"]
    for label, spread in spreads:
        lines.append(f"{label:<{width}}{spread.count:>6}{_seconds(spread.p50):>9}"
                     f"{_seconds(spread.p99):>9}{_seconds(spread.max):>9}")
    lines.append("")
    lines += [f"{label:<{width}}{value}" for label, value in facts]
    lines += ["", f"API requests during the wave (every client), per tunnel (of {tunnels}); "
              "* = only the operator sends these", ""]
    lines.append(f"  {'verb':<8}{'resource':<28}{'total':>8}{'per tunnel':>12}")
    significant = [(key, n) for key, n in requests.items() if n >= max(1, tunnels // 20)]
    for (verb, resource, sub), total in sorted(significant, key=lambda row: -row[1]):
        name = f"{resource}/{sub}" if sub else resource
        mark = "*" if (verb, resource, sub) in OPERATOR_ROWS else " "
        lines.append(f"{mark} {verb:<8}{name:<28}{total:>8}{total / tunnels:>12.2f}")
    operator = sum(n for key, n in requests.items() if key in OPERATOR_ROWS)
    lines.append(f"* {'all':<8}{'(the operator only)':<28}{operator:>8}{operator / tunnels:>12.2f}")
    return "\n".join(lines) + "\n"
