"""Start-up: how long the program takes to answer ``-V``, to run a trivial relay, to listen.

socat is a small C program that starts in about a millisecond; relay is a
Python program whose interpreter alone takes ten or more. socat's own test
suite starts its programs thousands of times and sleeps a fixed time before
talking to a listener, and short relays (``kubectl exec``, init containers)
pay the start-up every time, so it is measured here like any throughput.

``direct`` is the bare interpreter that runs relay doing the least it can:
``python -c pass`` for the commands that exit at once, and a ``socket``
listener (no asyncio) for ``listen``; relay/direct is the price of the
engine's own imports.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from ..candidates import Candidate
from ..errors import MeasurementTimeout, ProcessFailed
from ..processes import free_port
from ..results import Metric, WorkloadResult, versus
from .base import Context, Measured, Workload

#: The goal of issue 16: a relay listens within this many milliseconds of its start.
LISTEN_GOAL_MS = 50.0
#: How long one start may take before the run fails (a hung program, not a slow one).
START_TIMEOUT = 20.0
#: Pause between connection attempts while waiting for the listener.
POLL_INTERVAL = 0.0002

_DIRECT_EXIT = (sys.executable, "-c", "pass")
_DIRECT_LISTEN = (
    "import socket, sys\n"
    "server = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
    "server.accept()\n"
)


class Startup(Workload):
    """Wall time from ``fork`` to exit (``-V``, a no-op relay) and to a listening socket."""

    name = "startup"
    title = "start-up"
    with_direct = True
    #: Starting a program that takes socat's command line: the two socat-style ones.
    candidates = frozenset({"relay", "socat"})

    def __init__(self) -> None:
        self.description = (
            "each run starts the program N times in a row and takes the median wall time "
            "(and the mean CPU time of the exiting commands, from wait4): '-V' to its exit; "
            "'-u /dev/null /dev/null' (a whole relay of nothing) to its exit; "
            "'TCP4-LISTEN:P,bind=127.0.0.1,reuseaddr /dev/null' from the start until a "
            "connect() to P succeeds (polled every 0.2 ms; the program is then killed). "
            "direct: the same interpreter running 'pass', and a plain socket listener"
        )

    def metrics(self, ctx: Context) -> tuple[Metric, ...]:
        starts = ctx.settings.starts
        return (
            Metric("version_ms", f"-V, median of {starts}", "ms", higher_is_better=False,
                   targets=(versus("direct", relation="<=", factor=2,
                                           goal="-V within 2x the bare interpreter"),)),
            Metric("version_cpu_ms", "-V, CPU per start", "ms", higher_is_better=False),
            Metric("noop_ms", "relay of /dev/null, to exit", "ms", higher_is_better=False),
            Metric("noop_cpu_ms", "relay of /dev/null, CPU", "ms", higher_is_better=False),
            Metric("listen_ms", "start to listening", "ms", higher_is_better=False),
        )

    def measure(self, ctx: Context, candidate: Candidate | None) -> Measured:
        starts = ctx.settings.starts
        workdir = ctx.workdir
        version = [_run_to_exit(_exit_argv(candidate, "-V"), workdir) for _ in range(starts)]
        noop = [
            _run_to_exit(_exit_argv(candidate, "-u", "/dev/null", "/dev/null"), workdir)
            for _ in range(starts)
        ]
        listen = [_time_to_listen(candidate, workdir) for _ in range(starts)]
        values = {
            "version_ms": statistics.median(wall for wall, _ in version),
            "version_cpu_ms": statistics.fmean(cpu for _, cpu in version),
            "noop_ms": statistics.median(wall for wall, _ in noop),
            "noop_cpu_ms": statistics.fmean(cpu for _, cpu in noop),
            "listen_ms": statistics.median(listen),
        }
        details: dict[str, object] = {"listen_max_ms": max(listen)}
        return Measured(values, details)

    def notes(self, result: WorkloadResult) -> list[str]:
        """The absolute goal: a listener within ``LISTEN_GOAL_MS``."""
        listen = result.median("relay", "listen_ms")
        if listen is None:
            return []
        verdict = "PASS" if listen <= LISTEN_GOAL_MS else "MISS"
        return [f"relay listens {listen:.1f} ms after its start (goal: within "
                f"{LISTEN_GOAL_MS:.0f} ms): {verdict}"]


def _exit_argv(candidate: Candidate | None, *args: str) -> list[str]:
    return list(_DIRECT_EXIT) if candidate is None else candidate.argv(*args)


def _spawn(argv: list[str], stderr_path: Path) -> int:
    """Start ``argv`` with stdin and stdout on /dev/null; posix_spawn, so the start is cheap."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(stderr_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]
    return os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)


def _reap(pid: int) -> tuple[int, float]:
    """Wait for ``pid`` (killed after ``START_TIMEOUT``); its exit code and CPU seconds."""
    watchdog = threading.Timer(START_TIMEOUT, os.kill, (pid, signal.SIGKILL))
    watchdog.start()
    try:
        _, status, usage = os.wait4(pid, 0)
    finally:
        watchdog.cancel()
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def _run_to_exit(argv: list[str], workdir: Path) -> tuple[float, float]:
    """Wall and CPU milliseconds of one run of ``argv``, which must exit 0 by itself."""
    stderr_path = workdir / "startup-stderr.txt"
    started = time.perf_counter()
    code, cpu = _reap(_spawn(argv, stderr_path))
    wall = time.perf_counter() - started
    if code != 0:
        tail = stderr_path.read_text(errors="replace").strip()[-300:]
        raise ProcessFailed(argv[0], f"{' '.join(argv)} exited with {code}", tail)
    return wall * 1000, cpu * 1000


def _time_to_listen(candidate: Candidate | None, workdir: Path) -> float:
    """Milliseconds from starting a listener on a free port to a successful connect()."""
    port = free_port()
    if candidate is None:
        argv = [sys.executable, "-c", _DIRECT_LISTEN, str(port)]
    else:
        argv = candidate.argv(f"TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr", "/dev/null")
    started = time.perf_counter()
    pid = _spawn(argv, workdir / "startup-stderr.txt")
    try:
        deadline = started + START_TIMEOUT
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                status = probe.connect_ex(("127.0.0.1", port))
            if status == 0:
                return (time.perf_counter() - started) * 1000
            if status != errno.ECONNREFUSED:
                raise ProcessFailed(argv[0], f"connect to {port}: {os.strerror(status)}")
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                pid = 0
                raise ProcessFailed(argv[0], f"exited before listening on {port}")
            if time.perf_counter() > deadline:
                raise MeasurementTimeout(argv[0], f"listening on port {port}", START_TIMEOUT)
            time.sleep(POLL_INTERVAL)
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
