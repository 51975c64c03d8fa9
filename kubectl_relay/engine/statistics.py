"""``--statistics`` and SIGUSR1: socat's transfer statistics.

socat 1.8's man page: "--statistics, -S: Logs transfer statistics (bytes and
blocks counters for both directions) before terminating socat. See also
signal USR1. This feature is experimental and might change in future
versions." (socat 1.8.0's own parser takes only the long form: its ``-S``
stays the signal bitmap, and so ``relay`` has no ``-S``.) The lines are
socat's, its "packets(s)" included: a warning, then one info line per
direction in use, shown whatever the ``-d`` level::

    W statistics are experimental
    I STATISTICS: left to right: 3 packets(s), 1024 byte(s)
    I STATISTICS: right to left: 3 packets(s), 1024 byte(s)

Blocks and bytes are counted where they are written (``transfer.py`` and
``bridge.py``, into ``metrics.METRICS``), for all sessions of the run.
"""

from __future__ import annotations

import logging

from .log import logger
from .metrics import METRICS, Metrics


def statistics_lines(unidirectional: str, metrics: Metrics = METRICS) -> list[str]:
    """The info lines, numbers right-aligned to a common width as socat does."""
    directions = [
        (name, text)
        for name, text, skipped_by in (
            ("left-to-right", "left to right", "right-to-left"),
            ("right-to-left", "right to left", "left-to-right"),
        )
        if unidirectional != skipped_by
    ]
    cells = [metrics.bytes_total[name] for name, _ in directions]
    blocks_width = max(len(str(cell[1])) for cell in cells)
    bytes_width = max(len(str(cell[0])) for cell in cells)
    return [
        f"STATISTICS: {text}: {cell[1]:>{blocks_width}} packets(s), "
        f"{cell[0]:>{bytes_width}} byte(s)"
        for (_, text), cell in zip(directions, cells, strict=True)
    ]


def log_statistics(unidirectional: str, metrics: Metrics = METRICS) -> None:
    """Log the statistics; socat shows them at info level even without ``-d -d -d``."""
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        logger.warning("statistics are experimental")
        for line in statistics_lines(unidirectional, metrics):
            logger.info("%s", line)
    finally:
        logger.setLevel(previous)
