"""Fixtures shared by the local cluster's tests."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own (its iptables tables and ipsets are its own too)."""
    name = f"relay-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
