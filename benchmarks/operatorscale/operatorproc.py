"""The operator under test: ``relay-operator`` as a process, with the deployed settings.

The settings are those of ``manifests/operator.yaml`` (its container's
``RELAY_OPERATOR_*`` values), read from the file so that the benchmark
follows the manifest, with the namespace of the run (the manifest serves
every namespace) and standalone (the manifest runs one replica). It runs on
this machine rather than in a pod: its CPU time and peak memory are read
from ``/proc`` of the process, and no image needs building. Unlike in the
manifest, no CPU limit applies.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..processes import REPO_ROOT

MANIFEST = REPO_ROOT / "manifests" / "operator.yaml"
_TICKS = os.sysconf("SC_CLK_TCK")


def manifest_environment(manifest: Path = MANIFEST) -> dict[str, str]:
    """The ``RELAY_OPERATOR_*`` variables the manifest gives the operator as plain values."""
    for doc in yaml.safe_load_all(manifest.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            return {item["name"]: str(item["value"]) for item in container.get("env", ())
                    if item["name"].startswith("RELAY_OPERATOR_") and "value" in item}
    raise RuntimeError(f"{manifest} has no Deployment")


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) so far and the peak resident memory, of one process."""

    cpu_seconds: float
    peak_rss_mib: float


def usage(pid: int) -> Usage:
    with open(f"/proc/{pid}/stat") as stat:
        # The command (field 2) may hold spaces: count from its closing parenthesis.
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    peak = 0.0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return Usage(cpu, peak)


@contextlib.contextmanager
def background(command: list[str], log: Path, *, stop_timeout: float,
               env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running, its output in ``log``; stopped with SIGTERM (as Kubernetes stops
    a pod), killed after ``stop_timeout`` seconds, and waited for."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def operator_process(kubeconfig: Path, namespace: str, log: Path, health_port: int,
                     extra_environment: dict[str, str]
                     ) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``relay-operator`` serving ``namespace``, its liveness endpoint on ``health_port``."""
    environment = {
        **os.environ,
        **manifest_environment(),
        **extra_environment,
        "POD_ID": "relay-bench-operator",
    }
    command = [
        str(Path(sys.executable).parent / "relay-operator"),
        "--kubeconfig", str(kubeconfig),
        "--standalone",
        "-n", namespace,
        "--health-port", str(health_port),
        "--metrics-port", "0",
    ]
    return background(command, log, stop_timeout=30, env=environment)
