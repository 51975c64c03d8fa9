"""Fixtures shared by every test: bounded timeouts, the relay command, leak checks."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
import uvloop

from kubectl_relay.engine import log
from scripts import socat18

#: Multiply every timeout in the tests by this (slow or loaded machines).
TIMEOUT_SCALE = float(os.environ.get("RELAY_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A timeout for the tests, scaled by ``RELAY_TEST_TIMEOUT_SCALE``."""
    return seconds * TIMEOUT_SCALE


#: How to run the engine as a user does: ``[*RELAY, "TCP-LISTEN:...", "-"]``.
RELAY = [sys.executable, "-m", "kubectl_relay.engine"]

#: The real socat the tests talk to: socat 1.8.0.3 as ``./dev setup`` builds it
#: (scripts/socat18.py), not whatever older socat the machine has.
_BUILT_SOCAT = socat18.built_socat()
SOCAT = str(_BUILT_SOCAT) if _BUILT_SOCAT else None
requires_socat = pytest.mark.skipif(
    SOCAT is None and not os.environ.get("CI"),
    reason=f"socat {socat18.VERSION} is not built (./dev setup builds it)",
)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run every async test on both loops the engine runs on: uvloop, and asyncio without it."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


#: Byte strings longer than this are compared by summary, not by pytest's full diff: in CI
#: (where pytest does not truncate) a diff of a megabyte is 40,000 lines, and the log's tail,
#: all that may survive of it, then no longer names the test or says where the bytes differ.
LONG_BYTES = 4096


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """``a == b`` on long bytes: the lengths, and where they first differ."""
    if op != "==" or not isinstance(left, bytes | bytearray) or not isinstance(right, bytes | bytearray):
        return None
    if max(len(left), len(right)) <= LONG_BYTES:
        return None
    same = next((i for i, (a, b) in enumerate(zip(left, right, strict=False)) if a != b),
                min(len(left), len(right)))
    lines = [f"{len(left):,} bytes == {len(right):,} bytes: they first differ at offset {same:,}"]
    if same == len(left):
        lines.append(f"the left side is the right side's first {same:,} bytes: "
                     f"its last {len(right) - same:,} are missing")
    elif same == len(right):
        lines.append(f"the left side is the right side and {len(left) - same:,} bytes more")
    else:
        lines.append(f"left:  ...{bytes(left[max(0, same - 8):same + 24])!r}")
        lines.append(f"right: ...{bytes(right[max(0, same - 8):same + 24])!r}")
    return lines


@pytest.fixture(autouse=True)
def fresh_engine_logging() -> Iterator[None]:
    """Undo the engine's log configuration after tests that run the CLI in-process."""
    yield
    log.reset()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running behind it."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.daemon
    ]
    for thread in leaked:
        thread.join(timeout=scaled(2))
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"threads left running: {still}"


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """Fail a test that leaves child processes behind it (relay, socat, openssl...)."""
    yield
    children = _children()
    assert not children, f"child processes left running: {children}"


def _children() -> list[str]:
    """Live (non-zombie) children of this process, from /proc."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[1] == me and fields[0] != "Z":
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found
