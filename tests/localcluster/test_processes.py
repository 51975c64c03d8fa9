"""Detached daemons: started in their own session, stopped by pidfile, never the wrong pid."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from e2e.localcluster.processes import Daemon, DaemonError, process_alive
from tests.conftest import scaled


def daemon(tmp_path: Path, *argv: str, name: str = "d") -> Daemon:
    return Daemon(name, list(argv), tmp_path / f"{name}.log", tmp_path / f"{name}.pid")


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_start_detaches_and_stop_ends_the_process_group(tmp_path: Path) -> None:
    # The daemon's child must end with it: stop signals the whole group.
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); print('chi' + 'ld on', flush=True); time.sleep(300)"
    d = daemon(tmp_path, sys.executable, "-c", script)
    pid = d.start()
    try:
        assert os.getsid(pid) == pid  # its own session, so it outlives `up`
        assert d.pid() == pid and d.running()
        wait_for(lambda: "child on" in d.log_path.read_text())
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == pid]
        assert children
    finally:
        assert d.stop(timeout=scaled(10))
    assert not process_alive(pid)
    assert all(not process_alive(child) for child in children)
    assert not d.pid_path.exists()
    log = d.log_path.read_text()
    assert log.startswith("--- ") and "starting: " in log


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_stop_kills_a_daemon_that_ignores_term(tmp_path: Path) -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ar' + 'med', flush=True); time.sleep(300)"
    d = daemon(tmp_path, sys.executable, "-c", script)
    pid = d.start()
    wait_for(lambda: "\narmed" in d.log_path.read_text())
    assert d.stop(timeout=0.5)
    assert not process_alive(pid)


def test_stop_is_safe_when_never_started_and_twice(tmp_path: Path) -> None:
    d = daemon(tmp_path, "/bin/sleep", "300")
    assert d.stop() is False
    d.start()
    assert d.stop() is True
    assert d.stop() is False


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    """A pidfile naming a live process with another start time (pid reuse) is stale."""
    d = daemon(tmp_path, "/bin/sleep", "300")
    d.pid_path.write_text(f"{os.getpid()} 1\n")
    assert d.pid() is None
    assert d.stop() is False
    assert process_alive(os.getpid())  # this test process was not signalled
    assert not d.pid_path.exists()


def test_garbage_pidfile_means_not_running(tmp_path: Path) -> None:
    d = daemon(tmp_path, "/bin/sleep", "300")
    d.pid_path.write_text("not a pid\n")
    assert not d.running()


def test_refuses_to_start_twice(tmp_path: Path) -> None:
    d = daemon(tmp_path, "/bin/sleep", "300")
    pid = d.start()
    try:
        with pytest.raises(DaemonError, match=rf"d already runs \(pid {pid}"):
            d.start()
    finally:
        d.stop()


def test_refuses_a_missing_executable(tmp_path: Path) -> None:
    d = daemon(tmp_path, str(tmp_path / "nope"))
    with pytest.raises(DaemonError, match="is not an executable file"):
        d.start()
    assert not d.pid_path.exists()


def test_a_daemon_that_exits_is_not_running(tmp_path: Path) -> None:
    d = daemon(tmp_path, "/bin/sh", "-c", "echo bye; exit 3")
    d.start()
    wait_for(lambda: not d.running())
    assert "bye" in d.log_tail()
    assert d.stop() is False


def test_working_directory(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    d = Daemon("pwd", ["/bin/pwd"], tmp_path / "pwd.log", tmp_path / "pwd.pid", cwd=workdir)
    before = Path.cwd()
    d.start()
    assert Path.cwd() == before
    wait_for(lambda: not d.running())
    assert d.log_tail(1) == str(workdir)
