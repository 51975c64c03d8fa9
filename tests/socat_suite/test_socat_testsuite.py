"""socat 1.8.0.3's own test suite, run against relay and against socat 1.8.0.3 itself.

The tests run are listed in ``selected-tests.txt`` (what relay implements,
loopback only). relay must pass every one of them, except those in
``expected-failures.txt``, each listed with its reason; a listed test that
passes must leave the list, so the list only shrinks. Reasons starting with
"timing:" mark tests that race with the program's start-up on a loaded
machine: they are run, counted, and not judged. socat 1.8.0.3 runs the
same list at the same time, and both counts are printed side by side.

A test that socat itself cannot perform here (``CANT``: the machine lacks
something, such as a second IPv6 address) may be ``CANT`` for relay too.

Environment: ``RELAY_SOCAT_SUITE_SHARDS`` (test.sh processes per program,
default 4), ``RELAY_SOCAT_SUITE_PORT_BASE`` (default 20000), ``RELAY_SOCAT_SUITE_RELAY`` (the relay command to test) and
``RELAY_SOCAT_SUITE_T`` (test.sh's ``-t``, default 0.2 s,
multiplied by ``RELAY_TEST_TIMEOUT_SCALE``).
"""

from __future__ import annotations

import compileall
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import kubectl_relay
from scripts import socat18
from tests.conftest import TIMEOUT_SCALE
from tests.socat_suite.testsh import (
    EXPECTED_FAILURES_FILE,
    SELECTION_FILE,
    Program,
    SuiteRun,
    SuiteRunner,
    read_expected_failures,
    read_names,
    side_by_side,
)

SHARDS = int(os.environ.get("RELAY_SOCAT_SUITE_SHARDS", "4"))
#: The first of the ports test.sh may use (two runs at once need different ones).
PORT_BASE = int(os.environ.get("RELAY_SOCAT_SUITE_PORT_BASE", "20000"))
T = float(os.environ.get("RELAY_SOCAT_SUITE_T", "0.2")) * TIMEOUT_SCALE


def relay_program() -> Program:
    """relay as users run it: the console script installed next to this Python.

    ``RELAY_SOCAT_SUITE_RELAY`` names another one (an older build, to compare).
    """
    script = Path(os.environ.get("RELAY_SOCAT_SUITE_RELAY") or Path(sys.executable).parent / "relay")
    if not script.is_file():
        pytest.fail(f"{script} is missing: ./dev setup installs the project with its scripts")
    # An installed wheel has its bytecode; an editable install run with
    # PYTHONDONTWRITEBYTECODE would compile the engine at every start, and
    # test.sh gives a program tenths of a second.
    compileall.compile_dir(Path(kubectl_relay.__file__).parent, quiet=1)
    return Program("relay", script)


def test_lists_are_consistent() -> None:
    """Every expected failure is a selected test, and no test is selected twice."""
    selected = read_names(SELECTION_FILE)
    assert len(selected) == len(set(selected)), "a test is selected twice"
    strays = set(read_expected_failures(EXPECTED_FAILURES_FILE)) - set(selected)
    assert not strays, f"expected failures that are not selected: {sorted(strays)}"


#: A reason starting so marks a test whose outcome depends on the machine's
#: speed: listed, it may pass or fail without failing the suite.
TIMING = "timing:"


def _judge(relay: str, socat: str, reason: str | None) -> str | None:
    """What is wrong with relay's outcome of one test (``reason``: why it is listed), or None."""
    listed = reason is not None
    if reason is not None and reason.startswith(TIMING):
        return None
    acceptable = relay == "OK" or (relay == "CANT" and socat == "CANT")
    if acceptable and listed and relay == "OK":
        return "passes now: remove it from the list"
    if not acceptable and not listed:
        return f"{relay} with relay ({socat} with socat 1.8.0.3)"
    return None


@pytest.mark.timeout(1800)
def test_socat_testsuite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """relay passes socat 1.8.0.3's test.sh on the selected tests, but for the listed ones."""
    selected = read_names(SELECTION_FILE)
    expected = read_expected_failures(EXPECTED_FAILURES_FILE)
    socat = Program(f"socat {socat18.VERSION}", socat18.build())
    relay = relay_program()
    suite = SuiteRunner(socat18.source_dir(), tmp_path, timeout_base=f"{T:.3f}", shards=SHARDS,
                        first_port=PORT_BASE)
    certificates = suite.certificates(
        socat, socat18.cache_dir() / f"socat-{socat18.VERSION}-testcerts")

    with ThreadPoolExecutor(max_workers=2) as pool:
        relay_future = pool.submit(suite.run, relay, selected, certificates)
        socat_future = pool.submit(suite.run, socat, selected, certificates)
        runs: dict[str, SuiteRun] = {"relay": relay_future.result(),
                                     socat.label: socat_future.result()}
    relay_run, socat_run = runs["relay"], runs[socat.label]

    def problems(run: SuiteRun, names: list[str]) -> dict[str, str]:
        found = {}
        for name in names:
            verdict = _judge(run.outcomes[name], socat_run.outcomes[name], expected.get(name))
            if verdict:
                found[name] = verdict
        return found

    first = problems(relay_run, selected)
    # test.sh races on loaded machines: judge a surprise only when a second
    # run (without socat's run beside it) agrees with the first.
    confirmed: dict[str, str] = {}
    if first:
        retry_suite = SuiteRunner(socat18.source_dir(), tmp_path, timeout_base=f"{T:.3f}",
                                  shards=SHARDS, first_port=suite.first_port)
        second = retry_suite.run(relay, list(first), certificates, tag="-again")
        confirmed = {name: why for name, why in problems(second, list(first)).items()
                     if name in first and first[name] == why}
        relay_run.log_dirs.extend(second.log_dirs)

    flaky = sorted(set(first) - set(confirmed))
    with capsys.disabled():  # the counts belong in every run's log, CI's too
        print(f"\nsocat {socat18.VERSION}'s test.sh, {len(selected)} tests, "
              f"{len(expected)} expected to fail with relay:")
        print(side_by_side(runs))
        if flaky:
            print(f"outcome changed on a second run (not judged): {' '.join(flaky)}")

    report = [
        f"{name}: {why}\n    {relay_run.stderr_of(name).replace(chr(10), chr(10) + '    ')}"
        if "remove it" not in why else f"{name}: {why} ({EXPECTED_FAILURES_FILE.name})"
        for name, why in sorted(confirmed.items())
    ]
    assert not confirmed, (
        f"{len(confirmed)} of socat's tests disagree with "
        f"{EXPECTED_FAILURES_FILE.name}:\n" + "\n".join(report)
    )
