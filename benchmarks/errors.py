"""Errors of a measurement: they fail one candidate's run, never the harness.

::

    BenchmarkError
    ├── ProcessFailed       a process exited or answered wrongly
    └── MeasurementTimeout  a process did not answer in time

Anything else raised during a run is a bug of the harness and stops it.
"""

from __future__ import annotations


class BenchmarkError(Exception):
    """Root of the errors that mark one candidate's run as failed."""


class ProcessFailed(BenchmarkError):
    """A process exited early or said something unexpected."""

    def __init__(self, name: str, reason: str, log_tail: str = "") -> None:
        super().__init__(name, reason, log_tail)
        self.name = name
        self.reason = reason
        self.log_tail = log_tail

    def __str__(self) -> str:
        text = f"{self.name}: {self.reason}"
        if self.log_tail:
            text += f" (its stderr ends with: {self.log_tail!r})"
        return text


class MeasurementTimeout(BenchmarkError):
    """A process did not do what was expected within its time limit."""

    def __init__(self, name: str, what: str, seconds: float) -> None:
        super().__init__(name, what, seconds)
        self.name = name
        self.what = what
        self.seconds = seconds

    def __str__(self) -> str:
        return f"{self.name}: {self.what} did not happen within {self.seconds:.0f} s"
