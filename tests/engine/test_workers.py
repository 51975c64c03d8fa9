"""``relay --workers N``: real relay processes whose workers share one listening port."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from kubectl_relay.engine import workers
from tests.conftest import scaled
from tests.engine.test_bridge import closed_by_peer, scrape
from tests.engine.test_data_in_flight import (
    DOWNLOAD_SIZE,
    READ_RATE,
    SlowDownload,
    logged,
    replier,
    wait_until_refused,
)
from tests.support import (
    PeakCounter,
    RelayProcess,
    ThreadedServer,
    echo,
    exchange,
    exchange_at_once,
    free_port,
    relay_listening,
    run_relay,
    wait_for_output,
)


def worker_pids(relay: RelayProcess, count: int) -> list[int]:
    """The workers' pids, from the supervisor's ``forked off child process`` notices."""
    _, stderr = wait_for_output(
        relay, lambda _, err: len(re.findall(r"forked off child process \d+", err)) >= count
    )
    return [int(pid) for pid in re.findall(r"forked off child process (\d+)", stderr)]


def counters_once_settled(port: int, sessions: int) -> dict[str, int]:
    """The summed counters once ``sessions`` sessions have ended (workers share them as
    each ends, just after their client's)."""
    deadline = time.monotonic() + scaled(10)
    counters = scrape(port)
    while (counters["relay_sessions_total"] < sessions or counters["relay_sessions_active"]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
        counters = scrape(port)
    return counters


def workers_args(listen: int, upstream: int, *options: str, listen_options: str = "") -> list[str]:
    """``relay -d -d --workers 2 OPTIONS TCP-LISTEN:listen,fork... TCP:127.0.0.1:upstream``."""
    return ["-d", "-d", "--workers", "2", *options, f"TCP-LISTEN:{listen},fork{listen_options}",
            f"TCP:127.0.0.1:{upstream}"]  # fmt: skip


@pytest.mark.parametrize("path", ["fast", "general"])
def test_max_children_is_one_limit_for_all_workers(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_FAST_PATH", "1" if path == "fast" else "0")
    upstream = PeakCounter()
    with ThreadedServer(upstream) as server:
        listen = free_port()
        args = workers_args(listen, server.port, listen_options=",max-children=1")
        with relay_listening(args, listen) as relay:
            replies = exchange_at_once(listen, 12)
    assert sorted(replies) == sorted(b"%d" % i for i in range(12))
    assert upstream.peak == 1
    assert relay.proc.returncode == 128 + signal.SIGTERM
    assert logged(relay.stderr_text, "E") == []


@pytest.mark.parametrize("path", ["fast", "general"])
def test_metrics_count_the_sessions_of_every_worker(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_FAST_PATH", "1" if path == "fast" else "0")
    metrics_port = free_port()
    sessions = 24
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = workers_args(listen, server.port, "--metrics", f"127.0.0.1:{metrics_port}")
        with relay_listening(args, listen) as relay:
            pids = worker_pids(relay, 2)
            payloads = [b"x" * (index + 1) for index in range(sessions)]
            for payload in payloads:
                assert exchange(listen, payload) == payload
            counters = counters_once_settled(metrics_port, sessions)
    assert counters["relay_sessions_total"] == sessions
    assert counters["relay_sessions_active"] == 0
    assert counters["relay_session_errors_total"] == 0
    total = sum(map(len, payloads))
    assert counters['relay_bytes_total{direction="left-to-right"}'] == total
    assert counters['relay_bytes_total{direction="right-to-left"}'] == total
    # -d -d: each accept is logged by the worker that made it, under its own pid.
    accepting = re.findall(r"relay\[(\d+)\] N accepting connection from", relay.stderr_text)
    assert len(accepting) == sessions
    assert {int(pid) for pid in accepting} <= set(pids)


def test_sigterm_stops_every_worker_and_lets_a_download_finish() -> None:
    payload = os.urandom(DOWNLOAD_SIZE)
    with replier(payload) as server:
        listen = free_port()
        args = workers_args(listen, server.port, listen_options=",reuseaddr")
        with relay_listening(args, listen) as relay:
            pids = worker_pids(relay, 2)
            with SlowDownload(listen, READ_RATE) as download:
                relay.proc.send_signal(signal.SIGTERM)
                wait_until_refused(listen)  # every worker closed the port, the download goes on
                assert download.received < len(payload), "the download ended before the signal"
            status = relay.wait()
    assert download.error is None
    assert (download.received, download.digest) == (
        len(payload), hashlib.sha256(payload).hexdigest()
    )
    assert status == 128 + signal.SIGTERM
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the relay"
    assert logged(relay.stderr_text, "E") == []
    assert logged(relay.stderr_text, "W") == [f"exiting on signal {int(signal.SIGTERM)}"]
    assert "Traceback" not in relay.stderr_text


def test_a_killed_worker_is_logged_and_its_slot_given_back() -> None:
    metrics_port = free_port()
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = workers_args(listen, server.port, "--metrics", f"127.0.0.1:{metrics_port}",
                            listen_options=",max-children=1")
        with relay_listening(args, listen) as relay:
            pids = worker_pids(relay, 2)
            with socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as held:
                held.sendall(b"held")
                assert held.recv(4) == b"held"
                client_port = held.getsockname()[1]
                _, stderr = wait_for_output(
                    relay, lambda _, err: f"127.0.0.1:{client_port} on" in err
                )
                holder = re.search(
                    rf"relay\[(\d+)\] N accepting connection from AF=2 127\.0\.0\.1:{client_port} ",
                    stderr,
                )
                assert holder is not None, stderr
                killed = int(holder.group(1))
                assert killed in pids
                os.kill(killed, signal.SIGKILL)
                assert closed_by_peer(held)
            # The one max-children slot was the dead worker's: the other worker
            # serves only if it was given back.
            assert exchange(listen, b"still served") == b"still served"
            counters = counters_once_settled(metrics_port, 2)
        status = relay.wait()
    assert counters["relay_sessions_total"] == 2
    assert counters["relay_sessions_active"] == 0
    assert status == 128 + signal.SIGKILL  # the workers' worst
    assert logged(relay.stderr_text, "E") == [
        f"waitpid(): child {killed} exited on signal {int(signal.SIGKILL)}"
    ]
    assert "Traceback" not in relay.stderr_text


BAD_RUNS = [
    (["--workers", "0", "TCP-LISTEN:0,fork", "TCP:127.0.0.1:9"],
     'option "--workers": invalid count "0", expected a number of processes from 1 to 1024'
     " such as 2, or auto (one per usable core)"),
    (["--workers", "x", "TCP-LISTEN:0,fork", "TCP:127.0.0.1:9"],
     'option "--workers": invalid count "x", expected a number of processes from 1 to 1024'
     " such as 2, or auto (one per usable core)"),
    (["--workers=2", "TCP-LISTEN:0", "TCP:127.0.0.1:9"],
     'option "--workers": workers share a forking TCP listener, so address 1 must be one such'
     ' as TCP-LISTEN:8080,fork (not "TCP-LISTEN:0")'),
    (["--workers", "auto", "UDP-LISTEN:0,fork", "TCP:127.0.0.1:9"],
     'option "--workers": workers share a forking TCP listener, so address 1 must be one such'
     ' as TCP-LISTEN:8080,fork (not "UDP-LISTEN:0,fork")'),
    (["--workers", "2", "TCP-LISTEN:0,fork,accept-timeout=1", "TCP:127.0.0.1:9"],
     'option "--workers": option "accept-timeout" of address 1 is for one process;'
     " leave one out"),
    (["--workers", "2", "TCP-LISTEN:0,fork", "TCP-LISTEN:0"],
     'option "--workers": address 2 "TCP-LISTEN:0" listens itself, and only one process can;'
     " leave one out"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_RUNS)
def test_a_run_workers_cannot_share_is_one_clear_error(args: list[str], message: str) -> None:
    result = run_relay(args)
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert logged(stderr, "E") == [message], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", None), ("150000 100000", 1.5), ("100000 100000", 1.0), ("garbage", None)],
)
def test_the_cgroup_cpu_quota(
    cpu_max: str, expected: float | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    monkeypatch.setattr(workers, "CGROUP_V2_CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.setattr(workers, "CGROUP_V1_CPU", (tmp_path / "none", tmp_path / "none"))
    assert workers._cgroup_cpu_quota() == expected
    cores = len(os.sched_getaffinity(0))
    assert workers.worker_count("auto") == (
        cores if expected is None else min(cores, max(1, int(-(-expected // 1))))
    )
    assert workers.worker_count(3) == 3


def test_the_cgroup_v1_cpu_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "quota").write_text("50000\n")
    (tmp_path / "period").write_text("100000\n")
    monkeypatch.setattr(workers, "CGROUP_V2_CPU_MAX", tmp_path / "none")
    monkeypatch.setattr(workers, "CGROUP_V1_CPU", (tmp_path / "quota", tmp_path / "period"))
    assert workers._cgroup_cpu_quota() == 0.5
    assert workers.usable_cores() == 1  # half a CPU: one worker
