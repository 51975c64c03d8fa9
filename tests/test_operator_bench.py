"""The operator's scale benchmark (``benchmarks/operatorscale``): its pure parts.

The benchmark itself needs a cluster and minutes (``./dev bench-operator``);
these check what it computes from what it reads: the API server's request
counters, the percentiles, the operator's settings taken from the manifest.
"""

from __future__ import annotations

from benchmarks.operatorscale import apimetrics
from benchmarks.operatorscale.operatorproc import manifest_environment, usage
from benchmarks.operatorscale.table import Spread, percentile
from relay_operator.settings import Settings

SCRAPE = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="apps",\
resource="deployments",scope="resource",subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="409",component="apiserver",dry_run="",group="apps",\
resource="deployments",scope="resource",subresource="",verb="POST",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="relay.kubectl-relay.io",\
resource="socattunnels",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 2e+01
apiserver_request_total_other{verb="GET"} 99
"""


def test_requests_are_summed_over_codes_by_verb_resource_and_subresource() -> None:
    counts = apimetrics.parse(SCRAPE)
    assert counts == {("POST", "deployments", ""): 8, ("PATCH", "socattunnels", "status"): 20}


def test_the_difference_keeps_only_what_grew() -> None:
    before = apimetrics.parse(SCRAPE)
    after = before.copy()
    after[("POST", "deployments", "")] += 5
    after[("GET", "services", "")] = 3
    assert apimetrics.difference(before, after) == {
        ("POST", "deployments", ""): 5,
        ("GET", "services", ""): 3,
    }


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    spread = Spread.of([3.0, 1.0, 2.0])
    assert (spread.count, spread.p50, spread.p99, spread.max) == (3, 2.0, 3.0, 3.0)
    assert Spread.of([]).count == 0


def test_the_operator_runs_with_the_manifests_settings() -> None:
    environment = manifest_environment()
    assert environment["RELAY_OPERATOR_RELAY_PULL_POLICY"] == "IfNotPresent"
    assert all(name.startswith("RELAY_OPERATOR_") for name in environment)
    Settings.from_environ(environment)  # the operator accepts them


def test_the_usage_of_a_process_is_read_from_proc() -> None:
    import os  # noqa: PLC0415

    own = usage(os.getpid())
    assert own.cpu_seconds > 0
    assert own.peak_rss_mib > 1
