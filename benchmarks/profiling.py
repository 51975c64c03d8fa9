"""``--profile``: sample the relay with py-spy while it is measured, and say where time went.

Every relay process a workload starts gets a ``py-spy record`` attached once
it listens (``--nonblocking``: the relay is never paused, at the price of a
few torn stacks). py-spy ends by itself when the relay exits and writes the
collapsed stacks (``--format raw``) to ``DIR/<workload>-<run>[-n].txt``; the
table then ends with the frames that used the most samples per workload.
Figures measured while profiling are a little slower; compare them with care.
"""

from __future__ import annotations

import collections
import shutil
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

#: Samples per second: enough for a few-second run, cheap for the relay.
RATE = 1000

#: Seconds py-spy gets to write its file after the relay exits.
FLUSH_TIMEOUT = 15.0


def find_py_spy() -> str | None:
    """py-spy next to this Python (the venv) or on the ``PATH``."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profiler:
    """Where profiles go, which workload and run is being measured, and what was written."""

    directory: Path
    executable: str
    #: Set by the runner before each run: ``<workload>-<run>``.
    label: str = "run"
    written: dict[str, list[Path]] = field(default_factory=dict)
    _used: collections.Counter[str] = field(default_factory=collections.Counter)

    def command(self, pid: int) -> tuple[list[str], Path]:
        """The py-spy command line for ``pid`` and the file it will write."""
        self._used[self.label] += 1
        count = self._used[self.label]
        name = self.label if count == 1 else f"{self.label}-{count}"
        output = self.directory / f"{name}.txt"
        argv = [
            self.executable, "record", "--pid", str(pid), "--rate", str(RATE),
            "--format", "raw", "--output", str(output), "--nonblocking",
        ]
        return argv, output

    def wrote(self, output: Path) -> None:
        """Remember a profile that py-spy finished, under its workload's name."""
        if output.exists():
            workload = self.label.split("-", 1)[0]
            self.written.setdefault(workload, []).append(output)

    def summary(self, top: int = 6) -> str:
        """Per workload, the frames with the most samples, self and inclusive."""
        lines = textwrap.wrap(
            f"Where the relay's time went (py-spy at {RATE} Hz, samples while not idle; raw "
            f"stacks in {self.directory}). A line's self time is spent in that line, "
            "including the system call it makes; Runner.run's self time is uvloop's C loop.",
            width=100,
        )
        for workload, paths in self.written.items():
            own, inclusive, total = collapse(paths)
            if not total:
                continue
            lines.append(f"  {workload} ({total} samples), self:")
            lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
            lines.append("    inclusive, engine frames:")
            engine = [
                (f, n) for f, n in inclusive.most_common()
                if "kubectl_relay/" in f and not f.startswith(("<module>", "main ("))
            ]
            lines += [f"    {n / total:6.1%}  {frame}" for frame, n in engine[:top]]
        return "\n".join(lines) + "\n"


def collapse(paths: list[Path]) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """Self and inclusive sample counts per frame from py-spy's raw (collapsed) files."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            samples = int(count)
            frames = stack.split(";")
            total += samples
            own[frames[-1]] += samples
            for frame in set(frames):
                inclusive[frame] += samples
    return own, inclusive, total
