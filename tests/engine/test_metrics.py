"""``relay --metrics``: Prometheus counters scraped over real HTTP while a relay runs."""

from __future__ import annotations

import re
import urllib.request

import pytest

from kubectl_relay.engine.errors import UsageError
from kubectl_relay.engine.metrics import Metrics, parse_metrics_address
from tests.conftest import scaled
from tests.support import ThreadedServer, echo, exchange, free_port, relay_listening


def scrape(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=scaled(5)) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    return {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^(relay_\S+) (\d+)$", text, re.MULTILINE)
    }


def test_counters_follow_real_traffic() -> None:
    metrics_port = free_port()
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = [
            "--metrics",
            f"127.0.0.1:{metrics_port}",
            f"TCP-LISTEN:{listen},fork",
            f"TCP:127.0.0.1:{server.port}",
        ]
        with relay_listening(args, listen):
            before = scrape(metrics_port)
            assert exchange(listen, b"x" * 1000) == b"x" * 1000
            assert exchange(listen, b"y" * 24) == b"y" * 24
            after = scrape(metrics_port)
    assert before["relay_sessions_total"] == 0
    assert after["relay_sessions_total"] == 2
    assert after["relay_sessions_active"] == 0
    assert after['relay_bytes_total{direction="left-to-right"}'] == 1024
    assert after['relay_bytes_total{direction="right-to-left"}'] == 1024


def test_render_names_every_counter() -> None:
    metrics = Metrics(sessions_total=3, sessions_active=1, session_errors_total=2)
    metrics.bytes_total["left-to-right"][0] = 7
    text = metrics.render()
    assert "relay_sessions_total 3\n" in text
    assert "relay_sessions_active 1\n" in text
    assert "relay_session_errors_total 2\n" in text
    assert 'relay_bytes_total{direction="left-to-right"} 7\n' in text
    assert 'relay_bytes_total{direction="right-to-left"} 0\n' in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("9090", ("0.0.0.0", 9090)), ("127.0.0.1:9", ("127.0.0.1", 9)), ("[::1]:80", ("::1", 80))],
)
def test_metrics_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_metrics_address(text) == expected


@pytest.mark.parametrize("text", ["", "x", "127.0.0.1:", ":0", "1:70000"])
def test_bad_metrics_address(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_metrics_address(text)
    assert str(caught.value) == (
        f'option "--metrics": invalid address "{text}", expected [HOST:]PORT such as 9090'
    )
