"""``--statistics``, SIGUSR1 and ``-0``: socat 1.8's global options, on real processes."""

from __future__ import annotations

import re
import signal
import socket

from kubectl_relay.engine.metrics import Metrics
from kubectl_relay.engine.statistics import statistics_lines
from tests.engine.transports.test_tcp import needs_ipv6
from tests.support import (
    ThreadedServer,
    echo,
    exchange,
    free_port,
    log_lines,
    relay_listening,
    run_relay,
    wait_for_output,
)

STATISTICS = re.compile(
    r"STATISTICS: (left to right|right to left): +(\d+) packets\(s\), +(\d+) byte\(s\)"
)


def counts(stderr: str) -> dict[str, tuple[int, int]]:
    """Direction -> (packets, bytes) from the statistics lines."""
    found = {}
    for line in log_lines(stderr, "I"):
        match = STATISTICS.fullmatch(line)
        if match:
            found[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return found


def test_lines_are_socats_with_aligned_numbers() -> None:
    metrics = Metrics()
    metrics.bytes_total["left-to-right"][0], metrics.bytes_total["left-to-right"][1] = 1024, 3
    metrics.bytes_total["right-to-left"][0], metrics.bytes_total["right-to-left"][1] = 7, 12
    assert statistics_lines("both", metrics) == [
        "STATISTICS: left to right:  3 packets(s), 1024 byte(s)",
        "STATISTICS: right to left: 12 packets(s),    7 byte(s)",
    ]
    assert statistics_lines("left-to-right", metrics) == [
        "STATISTICS: left to right: 3 packets(s), 1024 byte(s)"
    ]
    assert statistics_lines("right-to-left", metrics) == [
        "STATISTICS: right to left: 12 packets(s), 7 byte(s)"
    ]


def test_statistics_on_exit_whatever_the_log_level() -> None:
    payload = b"hello statistics\n" * 64
    result = run_relay(["--statistics", "-", "SYSTEM:cat"], input=payload)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert log_lines(stderr, "W") == ["statistics are experimental"]
    found = counts(stderr)
    assert found["left to right"][1] == found["right to left"][1] == len(payload)
    assert found["left to right"][0] >= 1 and found["right to left"][0] >= 1


def test_statistics_of_one_direction() -> None:
    result = run_relay(["-u", "--statistics", "-", "/dev/null"], input=b"abc")
    assert counts(result.stderr.decode()) == {"left to right": (1, 3)}


def test_sigusr1_logs_statistics_and_the_relay_goes_on() -> None:
    port = free_port()
    args = [f"TCP-LISTEN:{port},bind=127.0.0.1,fork", "SYSTEM:cat"]
    with relay_listening(args, port) as relay:
        assert exchange(port, b"x" * 1000) == b"x" * 1000
        relay.proc.send_signal(signal.SIGUSR1)
        wait_for_output(relay, lambda _, stderr: "STATISTICS: right to left" in stderr)
        # Still serving after the signal.
        assert exchange(port, b"again") == b"again"
        assert relay.proc.poll() is None
    found = counts(relay.stderr_text)
    assert found["left to right"][1] == found["right to left"][1] == 1000


@needs_ipv6
def test_dash_zero_listens_for_both_ip_versions() -> None:
    port = free_port(socket.AF_INET6)
    with relay_listening(["-0", f"TCP-LISTEN:{port},fork", "SYSTEM:cat"], port):
        assert exchange(port, b"over IPv4") == b"over IPv4"
        assert exchange(port, b"over IPv6", host="::1") == b"over IPv6"


def test_dash_zero_takes_no_value() -> None:
    result = run_relay(["-0x", "-", "-"])
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E")


def test_statistics_count_the_fast_path_too() -> None:
    # TCP-LISTEN,fork to TCP runs on bridge.py's transports, which count as well.
    with ThreadedServer(echo) as server:
        port = free_port()
        args = [
            "--statistics",
            f"TCP-LISTEN:{port},bind=127.0.0.1,fork",
            f"TCP:127.0.0.1:{server.port}",
        ]
        with relay_listening(args, port) as relay:
            for _ in range(3):
                assert exchange(port, b"y" * 500) == b"y" * 500
            assert relay.stop() == 128 + signal.SIGTERM
    found = counts(relay.stderr_text)
    assert found["left to right"][1] == found["right to left"][1] == 1500
