"""The two programs compared: the relay engine and the real socat (1.8.0.3, built by ``./dev``).

Each runs at its default settings (no ``-b``, no tuning): what a user gets.
``direct`` is not a program but the absence of one: the client talks to the
server itself, which shows what the machine can do at all.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

from scripts import socat18

CandidateName = Literal["relay", "socat", "direct"]

#: The order of a first run; later runs rotate it (see ``runner``).
ORDER: tuple[CandidateName, ...] = ("socat", "relay", "direct")

#: How a user runs the engine (the ``relay`` console script is the same entry point).
RELAY_COMMAND = (sys.executable, "-m", "kubectl_relay.engine")


@dataclass(frozen=True)
class Candidate:
    """A socat-compatible program: the command before its options and addresses."""

    name: CandidateName
    command: tuple[str, ...]

    def argv(self, *args: str) -> list[str]:
        """The full command line for socat-style ``args``."""
        return [*self.command, *args]

    def version(self) -> str:
        """The program's own version line (``-V``), or why there is none."""
        try:
            done = subprocess.run(
                self.argv("-V"), capture_output=True, timeout=20, check=False, text=True
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unavailable ({exc})"
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
        versions = [line for line in lines if " version " in line.lower()]
        if done.returncode != 0 and not versions:
            return f"unavailable (-V exited with {done.returncode})"
        return versions[0] if versions else (lines[0] if lines else "unknown")


def relay(command: str | None = None) -> Candidate:
    """The engine, or another command standing in for it (``--relay-command``)."""
    return Candidate("relay", tuple(shlex.split(command)) if command else RELAY_COMMAND)


def socat(path: str | None = None) -> Candidate:
    """The real socat: ``path``, else socat 1.8.0.3 as ``./dev setup`` builds it."""
    found = path or socat18.built_socat()
    if not found:
        raise SystemExit(
            f"socat {socat18.VERSION} is not built: ./dev setup builds it "
            "(python scripts/socat18.py), or give --socat PATH"
        )
    return Candidate("socat", (str(found),))
