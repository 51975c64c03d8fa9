"""Container logs: one file per container run, read back for ``pods/log``.

The container's stdout and stderr go straight into the file (the child holds
the descriptor, no pump task in between), interleaved as they are written, as
a container runtime's log does. Each restart starts a new file; ``pods/log``
reads the current one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

#: How often a follower looks for new output.
FOLLOW_POLL = 0.05

#: Largest chunk handed to the API server at once.
CHUNK = 64 * 1024


def log_path(pod_dir: Path, container: str, run: int) -> Path:
    """The log file of run ``run`` (0 = first start) of a container."""
    return pod_dir / "logs" / container / f"{run}.log"


def _tail(data: bytes, lines: int) -> bytes:
    """The last ``lines`` lines of ``data`` (a last line without newline counts)."""
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


async def read_log(
    path: Path,
    *,
    follow: bool,
    tail_lines: int | None,
    finished: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """Yield the log's content; with ``follow``, keep yielding until ``finished()`` and EOF."""
    try:
        with open(path, "rb") as f:
            data = f.read()
            if tail_lines is not None:
                data = _tail(data, tail_lines)
            for start in range(0, len(data), CHUNK):
                yield data[start : start + CHUNK]
            if not follow:
                return
            while True:
                # Read "finished" before reading: output written before the end is never lost.
                done = finished()
                chunk = f.read(CHUNK)
                if chunk:
                    yield chunk
                    continue
                if done:
                    return
                await asyncio.sleep(FOLLOW_POLL)
    except FileNotFoundError:
        return
