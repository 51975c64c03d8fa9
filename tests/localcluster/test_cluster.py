"""``up`` and ``down``: order, waiting, undo on failure, and what they report."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.localcluster import cluster
from e2e.localcluster.component import ClusterError, ComponentError
from e2e.localcluster.settings import ClusterSettings


class Recorder:
    """A component that records its calls in a shared journal."""

    ready_timeout = 2.0

    def __init__(self, name: str, journal: list[str], *, fail: str = "", ready_after: int = 0):
        self.name = name
        self.journal = journal
        self.fail = fail
        self.polls_left = ready_after

    def start(self) -> None:
        self.journal.append(f"start {self.name}")
        if self.fail == "start":
            raise ComponentError(self.name, "could not start")

    def ready(self) -> bool:
        if self.fail == "ready":
            raise ComponentError(self.name, "crashed", "last log line")
        if self.fail == "never":
            return False
        self.polls_left -= 1
        return self.polls_left < 0

    def stop(self) -> None:
        self.journal.append(f"stop {self.name}")
        if self.fail == "stop":
            raise OSError("device busy")


def factories(journal: list[str], **failures: str) -> list[cluster.ComponentFactory]:
    return [
        (lambda _s, n=name: Recorder(n, journal, fail=failures.get(n, ""), ready_after=2))
        for name in ("a", "b", "c")
    ]


@pytest.fixture
def settings(tmp_path: Path) -> ClusterSettings:
    return ClusterSettings(state_dir=tmp_path / "state", cache_root=tmp_path / "cache")


def test_up_starts_in_order_and_waits_for_each(settings: ClusterSettings) -> None:
    journal: list[str] = []
    lines: list[str] = []
    cluster.up(settings, lines.append, factories(journal))
    assert journal == ["start a", "start b", "start c"]
    assert [line.split(" (")[0] for line in lines if "ready" in line] == [
        "  a ready",
        "  b ready",
        "  c ready",
    ]
    assert all(line.endswith("s)") for line in lines if "ready" in line)


@pytest.mark.parametrize("how", ["start", "ready", "never"])
def test_a_failure_undoes_what_was_started_in_reverse(settings: ClusterSettings, how: str) -> None:
    journal: list[str] = []
    lines: list[str] = []
    with pytest.raises(ComponentError) as failure:
        cluster.up(settings, lines.append, factories(journal, b=how))
    assert journal == ["start a", "start b", "stop b", "stop a"]
    assert failure.value.component == "b"
    assert any(line.startswith("  failed: b: ") for line in lines)


def test_a_timeout_names_the_component(settings: ClusterSettings) -> None:
    with pytest.raises(ComponentError, match=r"^b: not ready after 2s$"):
        cluster.up(settings, lambda _l: None, factories([], b="never"))


def test_down_stops_everything_in_reverse_even_past_failures(settings: ClusterSettings) -> None:
    journal: list[str] = []
    lines: list[str] = []
    with pytest.raises(ClusterError, match=r"down could not undo everything:\n  b: device busy"):
        cluster.down(settings, lines.append, factories(journal, b="stop"))
    assert journal == ["stop c", "stop b", "stop a"]
    assert "  b NOT stopped: device busy" in lines


def test_down_twice(settings: ClusterSettings) -> None:
    journal: list[str] = []
    cluster.down(settings, lambda _l: None, factories(journal))
    cluster.down(settings, lambda _l: None, factories(journal))
    assert journal == ["stop c", "stop b", "stop a"] * 2


def test_the_real_list_starts_with_credentials_then_etcd_then_the_apiserver() -> None:
    names = [component.name for component in cluster.build_components(ClusterSettings())]
    assert names[0] == "credentials"
    assert names.index("etcd") < names.index("kube-apiserver")
    assert names.index("kube-apiserver") < names.index("kube-controller-manager")
    assert names.index("kube-apiserver") < names.index("kube-scheduler")
    assert len(set(names)) == len(names)


def test_component_error_shows_the_log_tail() -> None:
    text = str(ComponentError("etcd", "not running", "line 1\nline 2"))
    assert text == "etcd: not running\n  last lines of its log:\n    line 1\n    line 2"


def test_keep_on_failure_leaves_what_started(settings: ClusterSettings) -> None:
    journal: list[str] = []
    lines: list[str] = []
    with pytest.raises(ComponentError):
        cluster.up(settings, lines.append, factories(journal, b="ready"), keep_on_failure=True)
    assert journal == ["start a", "start b"]
    assert lines[-1] == "  left running as it is (--keep-on-failure); `down` removes it"
