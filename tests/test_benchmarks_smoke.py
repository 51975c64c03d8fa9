"""The benchmark harness still works: ``python -m benchmarks --smoke`` produces numbers.

The harness is not part of the test suite (``./dev bench`` runs it); this one
test only keeps it from rotting silently. No timing is asserted: only that
every workload produced a figure for every candidate it ran (relay and socat
always; HAProxy and nginx when installed, else the run says they were
skipped), that the process exits 0, and that it leaves no process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import requires_socat, scaled

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Every workload of the harness, by its ``--only`` name.
WORKLOADS = {"startup", "throughput", "connrate", "latency", "tls", "trace", "memory"}

# serial: the run drives relay and socat flat out (a load on every test beside it), and
# its measurements would measure the tests beside it too: ./dev test runs it alone.
pytestmark = [pytest.mark.socat, requires_socat, pytest.mark.serial]


def processes_tagged(tag: str) -> list[str]:
    """Live processes whose environment carries ``tag`` (inherited from the harness)."""
    needle = tag.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle not in environ.read():
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                found.append(cmdline.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


@pytest.mark.timeout(scaled(120))
def test_smoke_run_measures_every_workload_for_every_candidate(tmp_path: Path) -> None:
    tag = f"RELAY_BENCH_SMOKE_TAG={uuid.uuid4().hex}"
    name, _, value = tag.partition("=")
    output = tmp_path / "smoke.json"
    harness = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(output)],
        cwd=REPO_ROOT,
        env={**os.environ, name: value},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = harness.communicate(timeout=scaled(90))
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: the harness then stops what it started.
        harness.terminate()
        stdout, stderr = harness.communicate(timeout=scaled(30))
        pytest.fail(f"the smoke run took too long:\n{stdout}\n{stderr}")
    report = f"stdout:\n{stdout}\nstderr:\n{stderr}"

    assert not processes_tagged(tag), "the harness left processes behind"
    assert harness.returncode == 0, report
    assert "relay / this, per round" in stdout, report
    assert "Goals (issue 16)" in stdout, report
    document = json.loads(output.read_text())
    assert {w["name"] for w in document["workloads"]} == WORKLOADS
    skipped = " ".join(document["machine"]["skipped"])
    for peer in ("haproxy", "nginx"):
        measured = any(peer in w["candidates"] for w in document["workloads"])
        assert measured != (peer in skipped), f"{peer}: neither measured nor skipped\n{report}"
    for workload in document["workloads"]:
        assert {"relay", "socat"} <= set(workload["candidates"]), workload["name"]
        for metric in workload["metrics"]:
            for candidate in workload["candidates"]:
                median = metric["medians"][candidate]
                assert isinstance(median, float), (
                    f"{workload['name']} / {metric['key']}: no figure for {candidate}: "
                    f"{workload['candidates'][candidate]['failure']}"
                )
