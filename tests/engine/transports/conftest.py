"""Fixtures shared by the transport tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ThreadedServer, echo


@pytest.fixture
def echo_server() -> Iterator[ThreadedServer]:
    """A loopback TCP echo server (the target behind the SOCKS and HTTP proxies)."""
    with ThreadedServer(echo) as server:
        yield server
