"""Starting and stopping the processes of a benchmark, and looking at them.

Every process is started in a session (and so a process group) of its own,
so that stopping it also stops what it forked: socat runs one child per
connection. ``Processes`` remembers every process it started and stops all
of them when its ``with`` block ends, however it ends, so a run leaves
nothing behind.

Processes are signalled by their own group id only, and only while their
leader is not yet reaped, so the id cannot belong to anybody else.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .errors import MeasurementTimeout, ProcessFailed
from .profiling import FLUSH_TIMEOUT, Profiler

#: The repository root: peers run as ``python -m benchmarks.peers.NAME`` from here.
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Seconds a process gets to exit after SIGTERM before its group gets SIGKILL.
STOP_GRACE = 3.0

#: ``prctl`` option (linux/prctl.h): the signal a child gets when its parent dies.
PR_SET_PDEATHSIG = 1

#: Seconds a candidate gets to start listening (the relay imports a lot on startup).
START_TIMEOUT = 20.0


class Proc:
    """A started process: its name, its ``Popen``, its stderr log and its JSON messages."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self._pending = b""

    @property
    def pid(self) -> int:
        """The process id, which is also its process group id."""
        return self.popen.pid

    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 2, limit: int = 4096) -> str:
        """The last lines the process wrote to stderr (a traceback's last line is the error)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - limit))
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(kept)[-400:]

    def read_message(self, timeout: float, what: str = "an answer") -> dict[str, object]:
        """The next JSON line the process prints on stdout."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MeasurementTimeout(self.name, what, timeout)
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.popen.wait(timeout=STOP_GRACE)
                raise ProcessFailed(
                    self.name,
                    f"exited with status {self.popen.returncode} before giving {what}",
                    self.log_tail(),
                )
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            raise ProcessFailed(self.name, f"printed {line[:200]!r}, not JSON") from None
        if not isinstance(message, dict):
            raise ProcessFailed(self.name, f"printed {line[:200]!r}, not a JSON object")
        return message

    def finish(self, timeout: float) -> None:
        """Wait for a process that ends by itself (a client) and check its status."""
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MeasurementTimeout(self.name, "its exit", timeout) from None
        if self.popen.returncode != 0:
            raise ProcessFailed(
                self.name, f"exited with status {self.popen.returncode}", self.log_tail()
            )


class Processes:
    """Every process of one benchmark run; all are stopped when the ``with`` block ends."""

    def __init__(self, workdir: Path, profiler: Profiler | None = None) -> None:
        self.workdir = workdir
        #: With ``--profile``: py-spy is attached to every relay that listens.
        self.profiler = profiler
        self._started: list[Proc] = []
        self._profiles: dict[Proc, tuple[Proc, Path]] = {}
        self._count = 0

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stderr_path: Path | None = None,
    ) -> Proc:
        """Start ``argv`` in its own session, with pipes on stdin and stdout.

        stderr goes to ``stderr_path`` (the trace file of ``-v`` runs) or to a
        log file of its own, never to a pipe that nobody reads.
        """
        proc = self._spawn(name, argv, stderr_path)
        self._started.append(proc)
        return proc

    def _spawn(self, name: str, argv: Sequence[str], stderr_path: Path | None) -> Proc:
        self._count += 1
        log_path = stderr_path or self.workdir / f"{self._count:03d}-{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO_ROOT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - the harness has no threads
                bufsize=0,
            )
        return Proc(name, popen, log_path)

    def peer(self, program: str, *args: object) -> Proc:
        """Start ``python -m benchmarks.peers.PROGRAM ARGS``."""
        argv = [sys.executable, "-m", f"benchmarks.peers.{program}", *map(str, args)]
        return self.start(program, argv)

    def server(self, program: str, *args: object) -> tuple[Proc, int]:
        """Start a peer server and wait for the port it listens on."""
        proc = self.peer(program, *args)
        port = proc.read_message(START_TIMEOUT, "its port")["port"]
        assert isinstance(port, int)
        return proc, port

    def listener(
        self,
        name: str,
        argv_for_port: Callable[[int], Sequence[str]],
        *,
        stderr_path: Path | None = None,
    ) -> tuple[Proc, int]:
        """Start a candidate listening on a free port; wait until it listens.

        The port is chosen free just before; if something else took it in
        between and the candidate exits, it is tried again with another port.
        """
        attempts = 3
        for attempt in range(attempts):
            port = free_port()
            proc = self.start(name, argv_for_port(port), stderr_path=stderr_path)
            try:
                wait_listening(proc, port, START_TIMEOUT)
            except ProcessFailed:
                self.stop(proc)
                if attempt == attempts - 1:
                    raise
                continue
            if self.profiler is not None and name == "relay":
                # Not in _started: it must outlive the relay to write its file (see stop).
                argv, output = self.profiler.command(proc.pid)
                self._profiles[proc] = (self._spawn("py-spy", argv, None), output)
            return proc, port
        raise AssertionError("unreachable")

    def stop(self, proc: Proc) -> None:
        """Stop a process and everything in its process group.

        SIGTERM first (socat and the relay exit cleanly on it), SIGKILL for
        whatever is left after ``STOP_GRACE``. The leader is reaped last, so
        its id stays ours while its group is signalled.
        """
        if proc in self._started:
            self._started.remove(proc)
        if proc.popen.stdin is not None:
            proc.popen.stdin.close()  # peers take stdin EOF as "stop now"
        if proc.popen.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            if not _wait_group(proc.pid, STOP_GRACE):
                _signal_group(proc.pid, signal.SIGKILL)
                _wait_group(proc.pid, STOP_GRACE)
            proc.popen.wait()
        if proc.popen.stdout is not None:
            proc.popen.stdout.close()
        if proc in self._profiles:
            self._finish_profile(*self._profiles.pop(proc))

    def _finish_profile(self, spy: Proc, output: Path) -> None:
        """Let py-spy notice that its relay is gone and write its file, then record it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.popen.wait(timeout=FLUSH_TIMEOUT)
        self.stop(spy)
        if self.profiler is not None:
            self.profiler.wrote(output)

    def stop_all(self) -> None:
        """Stop every process still known, newest first (clients before servers)."""
        while self._started:
            self.stop(self._started[-1])
        while self._profiles:  # only if a relay was never stopped through stop()
            self._finish_profile(*self._profiles.popitem()[1])


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the harness dies without cleaning up.

    ``Processes`` stops everything on any exception or signal the harness
    survives; this covers the one it cannot, SIGKILL. The harness is
    single-threaded, so ``preexec_fn`` is safe here.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pgid, sig)


def _leader_exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited, without reaping it (``WNOWAIT``)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_group(pgid: int, timeout: float) -> bool:
    """Wait until the leader exited and no other live member is left; True if so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _leader_exited(pgid) and not group_members(pgid):
            return True
        time.sleep(0.01)
    return False


def _proc_stat(pid: str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state is field 0)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live processes of the group ``pgid``, other than its leader."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pgid:
            continue
        fields = _proc_stat(entry)
        if fields and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry))
    return members


def descendants(root: int, *, zombies: bool = False) -> list[int]:
    """``root`` and every live process below it (from the parent links in /proc).

    ``zombies``: also those that exited and wait to be reaped.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _proc_stat(entry)
        if fields and (zombies or fields[0] != "Z"):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found = [root]
    for pid in found:  # grows while iterating: a breadth-first walk
        found.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of ``root`` and its live descendants, with reaped children.

    socat's per-connection children are counted once their parent reaped
    them (``cutime``/``cstime``); nginx's workers and HAProxy's threads while live.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in descendants(root, zombies=True):  # an exited child not yet reaped counts
        fields = _proc_stat(str(pid))
        if fields:  # utime, stime, cutime, cstime: fields 14-17 of stat
            total += sum(int(value) for value in fields[11:15])
    return total / ticks


@dataclass(frozen=True)
class Memory:
    """Memory of a process tree in KiB: RSS counts shared pages in every process,
    PSS splits them between the processes that share them (``None`` if unknown)."""

    rss_kib: int
    pss_kib: int | None
    processes: int


def tree_memory(root: int) -> Memory:
    """Sum of RSS and PSS over ``root`` and its descendants."""
    rss = 0
    pss: int | None = 0
    pids = descendants(root)
    for pid in pids:
        fields = _smaps_rollup(pid)
        if fields is None:
            rss += _status_rss(pid)
            pss = None
            continue
        rss += fields.get("Rss", 0)
        if pss is not None:
            pss += fields.get("Pss", 0)
    return Memory(rss, pss, len(pids))


def _smaps_rollup(pid: int) -> dict[str, int] | None:
    """The kB fields of ``/proc/PID/smaps_rollup`` (Linux 4.14+), or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            lines = rollup.read().splitlines()[1:]
    except OSError:
        return None
    fields = {}
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0])
    return fields


def _status_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sockets_in_time_wait() -> int | None:
    """TCP sockets in TIME_WAIT on the machine (``/proc/net/sockstat``), or None.

    Short connections leave one on the side that closes first for a minute;
    tens of thousands of them (this run's and other work's) make ``connect``
    hunt for a free ephemeral port, and every candidate's rate collapses.
    """
    try:
        with open("/proc/net/sockstat") as sockstat:
            for line in sockstat:
                if line.startswith("TCP:"):
                    fields = line.split()
                    return int(fields[fields.index("tw") + 1])
    except (OSError, ValueError, IndexError):
        pass
    return None


#: Listening ports for the candidates: below the ephemeral range (32768 and up by
#: default), where the connection-rate workload's clients take tens of thousands of
#: source ports, any of which a port picked a moment earlier could become.
LISTEN_PORTS = range(20000, 30000)


def free_port() -> int:
    """A loopback TCP port of ``LISTEN_PORTS`` that was free a moment ago."""
    for port in random.sample(LISTEN_PORTS, 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or in TIME_WAIT after an earlier run
            return port
    raise OSError(f"no free port among {LISTEN_PORTS}")


def is_listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port``, from the kernel's tables.

    Reading /proc instead of connecting keeps the probe from becoming a
    session of the relay (and a forked child of socat).
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows)
                for row in rows:
                    fields = row.split(maxsplit=4)
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            continue
    return False


def wait_listening(proc: Proc, port: int, timeout: float) -> None:
    """Wait until ``proc`` listens on ``port``; fail early if it exits."""
    deadline = time.monotonic() + timeout
    while not is_listening(port):
        if not proc.running():
            raise ProcessFailed(
                proc.name,
                f"exited with status {proc.popen.returncode} instead of listening on {port}",
                proc.log_tail(),
            )
        if time.monotonic() > deadline:
            raise MeasurementTimeout(proc.name, f"listening on port {port}", timeout)
        time.sleep(0.01)


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; children inherit it.

    The memory workload holds 1,000 connections: the client needs 1,000
    descriptors, a relay in one process 2,000.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def on_one_cpu() -> Iterator[int]:
    """Run what the block starts on one CPU (children inherit this process's affinity).

    The latency workload's way of measuring each candidate's own work per round trip:
    spread over two cores, where the scheduler wakes the client, the candidate and the
    echo server moves every candidate's median by a fifth from run to run.
    """
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)
