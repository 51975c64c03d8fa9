"""Long-running daemons of the local cluster: started detached, stopped by pidfile.

A daemon outlives ``./dev cluster up``: it is spawned in a session of its own
(``setsid``), with stdin on ``/dev/null`` and stdout and stderr appended to
its log file. Its pidfile holds the pid and the process's start time (field 22
of ``/proc/<pid>/stat``), so that ``down`` after a crash or a reboot never
signals an unrelated process that reused the pid.

Stopping sends SIGTERM to the daemon's process group, waits (bounded), then
sends SIGKILL. Stopping a daemon that is not running only removes its pidfile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class DaemonError(Exception):
    """A daemon could not be started (bad executable, already running, died at once)."""


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks since boot), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19]


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (it is, in the ``up`` that started it)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    _reap(pid)
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@dataclass(frozen=True)
class Daemon:
    """One background process: its command line, log file and pidfile."""

    name: str
    """Short name, used in messages (``etcd``, ``kube-apiserver``...)."""

    argv: Sequence[str]
    """The command line; ``argv[0]`` is a path to the executable."""

    log_path: Path
    """stdout and stderr are appended here."""

    pid_path: Path
    """``<pid> <start time>``, written when the daemon started."""

    env: Mapping[str, str] | None = None
    """The environment (None: this process's)."""

    cwd: Path | None = None
    """The working directory (None: this process's)."""

    def pid(self) -> int | None:
        """The daemon's pid when its pidfile names a process that still runs, else None."""
        try:
            pid_text, started = self.pid_path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if not process_alive(pid) or _start_time(pid) != started:
            return None
        return pid

    def running(self) -> bool:
        """Whether the daemon runs."""
        return self.pid() is not None

    def start(self) -> int:
        """Spawn the daemon detached; return its pid. Refuses when it already runs."""
        if (pid := self.pid()) is not None:
            raise DaemonError(f"{self.name} already runs (pid {pid}, {self.pid_path})")
        executable = self.argv[0]
        if not os.access(executable, os.X_OK):
            raise DaemonError(f"{self.name}: {executable} is not an executable file")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with self.log_path.open("a") as log:
            log.write(f"--- {stamp} starting: {' '.join(self.argv)}\n")
        pid = self._spawn()
        started = _start_time(pid)
        if started is None:
            _reap(pid)
            raise DaemonError(f"{self.name} exited at once; see {self.log_path}")
        self.pid_path.write_text(f"{pid} {started}\n")
        return pid

    def _spawn(self) -> int:
        """posix_spawn the daemon in a new session with its log as stdout and stderr.

        Not subprocess.Popen: the daemon must outlive this process, and a Popen
        object dropped while its process runs warns (an error in the tests).
        posix_spawn has no working directory, so ours changes around the call.
        """
        log_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        previous = Path.cwd()
        if self.cwd is not None:
            os.chdir(self.cwd)
        try:
            return os.posix_spawn(
                self.argv[0],
                list(self.argv),
                dict(self.env if self.env is not None else os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, str(self.log_path), log_flags, 0o644),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
            )
        finally:
            os.chdir(previous)

    def stop(self, timeout: float = 15.0) -> bool:
        """TERM the daemon's process group, KILL it after ``timeout``; remove the pidfile.

        Returns whether a running daemon was stopped. Safe to call when it never ran.
        """
        pid = self.pid()
        stopped = False
        if pid is not None:
            stopped = True
            # The whole group must be gone, not only its leader: a child that
            # outlives the daemon would keep ports, mounts or files busy.
            _signal_group(pid, signal.SIGTERM)
            if not _wait_group_gone(pid, timeout):
                _signal_group(pid, signal.SIGKILL)
                _wait_group_gone(pid, 5.0)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        return stopped

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the daemon's log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is the state, fields[2] the process group.
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until group ``pgid`` has no live process (reaping our child); False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        _reap(pgid)
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _signal_group(pid: int, signum: int) -> None:
    """Signal the daemon's process group (it leads one: it was started with setsid)."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
