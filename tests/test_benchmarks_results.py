"""The benchmark's ratios: within each round, against one peer or the best of several."""

from __future__ import annotations

from benchmarks.results import Metric, Samples, WorkloadResult, versus


def result(**series: list[float]) -> WorkloadResult:
    target = versus("haproxy", "nginx", relation=">=", factor=1.1)
    metric = Metric("rate", "rate", "conn/s", higher_is_better=True, targets=(target,))
    return WorkloadResult(
        name="connrate", title="t", description="d", runs=3, metrics=(metric,),
        candidates={name: Samples(values={"rate": values}) for name, values in series.items()},
    )


def test_a_ratio_is_the_median_of_the_ratios_within_each_round() -> None:
    # Load doubles every figure of round 2: the ratio within each round stays 2,
    # where the ratio of the medians (400 / 150) would say 2.67.
    measured = result(relay=[200, 400, 800], socat=[100, 200, 400])
    assert measured.ratio("rate", "socat") == 2.0


def test_a_goal_against_several_peers_takes_the_best_of_each_round() -> None:
    measured = result(relay=[110, 300, 90], haproxy=[100, 100, 100], nginx=[90, 200, 120])
    [verdict] = measured.verdicts(measured.metrics[0])
    # Rounds: 110/100, 300/200, 90/120 -> 1.1, 1.5, 0.75; the median is 1.1.
    assert verdict.ratio is not None and abs(verdict.ratio - 1.1) < 1e-9
    assert verdict.passed and verdict.missing == ()


def test_a_peer_not_measured_is_named_and_the_others_still_count() -> None:
    measured = result(relay=[100, 100], nginx=[200, 200])
    [verdict] = measured.verdicts(measured.metrics[0])
    assert verdict.ratio == 0.5 and not verdict.passed
    assert verdict.missing == ("haproxy",)


def test_without_any_peer_figure_there_is_no_ratio_and_no_pass() -> None:
    measured = result(relay=[100, 100])
    [verdict] = measured.verdicts(measured.metrics[0])
    assert verdict.ratio is None and not verdict.passed
