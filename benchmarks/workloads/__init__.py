"""The workloads, in the order they run (cheap and robust first)."""

from __future__ import annotations

from .base import Context, Measured, Workload
from .connrate import ConnectionRate
from .latency import Latency
from .memory import IdleMemory
from .startup import Startup
from .throughput import Throughput
from .tls import TlsTermination
from .trace import Trace


def all_workloads() -> list[Workload]:
    """Fresh instances of every workload (some keep state such as a certificate)."""
    return [
        Startup(), Throughput(), ConnectionRate(), Latency(), TlsTermination(), Trace(),
        IdleMemory(),
    ]


__all__ = ["Context", "Measured", "Workload", "all_workloads"]
