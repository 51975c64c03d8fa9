"""What the benchmark prints and saves: machine information, the table, the JSON file."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

from .candidates import Candidate, CandidateName
from .processes import REPO_ROOT
from .results import Metric, Verdict, WorkloadResult
from .settings import Settings

#: Where the JSON results go (ignored by git).
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

CONTENTION_NOTE = (
    "The machine has {cores} cores: the relay, the source and the sink (or the client and "
    "the server) are separate processes that compete for them, so no figure here is what "
    "a program gets with a core to itself; direct shows what is left without any relay."
)


def machine_info(candidates: Mapping[CandidateName, Candidate]) -> dict[str, object]:
    """Cores, CPU, memory, kernel, Python, versions of the candidates, commit, load."""
    info: dict[str, object] = {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "uvloop": _module_version("uvloop"),
        "openssl": ssl.OPENSSL_VERSION,
        "commit": _commit(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    for name, candidate in candidates.items():
        info[name] = {"command": " ".join(candidate.command), "version": candidate.version()}
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _module_version(name: str) -> str:
    try:
        module = __import__(name)
    except ImportError:
        return "not installed"
    return str(getattr(module, "__version__", "unknown"))


def _commit() -> str:
    """The checked-out commit, marked when the tree has changes (read-only git calls)."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=20, check=False,
        )

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("diff", "--quiet", "HEAD").returncode != 0
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def print_header(info: Mapping[str, object], settings: Settings, out: TextIO) -> None:
    """The machine and what is compared, before any result."""
    lines = [
        f"kubectl-relay benchmark ({settings.mode} mode), {datetime.now():%Y-%m-%d %H:%M:%S}",
        f"  machine: {info['cores']} cores ({info['usable_cores']} usable), {info['cpu']}, "
        f"{info['memory_gib']} GiB RAM",
        f"  kernel:  {info['kernel']}",
        f"  python:  {info['python']}, uvloop {info['uvloop']}, {info['openssl']}",
    ]
    for name in COLUMN_ORDER:
        entry = info.get(name)
        if isinstance(entry, dict):
            lines.append(f"  {name + ':':<14} {entry['version']} [{entry['command']}]")
    skipped = info.get("skipped")
    if isinstance(skipped, list):
        lines += [f"  SKIPPED: {reason}" for reason in skipped]
    lines += [
        f"  commit:  {info['commit']}",
        f"  load average before the run: {info['load_average']} (1, 5, 15 min; above 0.5 or"
        " so, other work on the machine makes every figure noisier)",
        "",
        CONTENTION_NOTE.format(cores=info["cores"]),
        "relay and socat run at their default settings (socat-b1M: socat -b 1048576; HAProxy "
        "and nginx in TCP mode, one thread or worker per core), in interleaved rounds; "
        "figures are medians over the rounds, ratios the median of the ratios within each "
        "round (steadier than a ratio of medians when the load changes).",
        "",
    ]
    out.write("\n".join(_wrap(line) for line in lines) + "\n")
    out.flush()


def _wrap(line: str, width: int = 100) -> str:
    """Wrap a long prose line (not the table) at ``width``, indenting what follows."""
    indent = " " * (len(line) - len(line.lstrip()))
    return textwrap.fill(line, width, subsequent_indent=indent + "    ", break_long_words=False)


def format_value(value: float | None) -> str:
    """Four significant digits or so, without exponent."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(result: WorkloadResult, name: CandidateName, metric: Metric) -> str:
    samples = result.candidates.get(name)
    if samples is None:
        return ""
    value = samples.median(metric.key)
    if value is None and samples.failure:
        return "FAILED"
    return format_value(value)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


LABEL_WIDTH, UNIT_WIDTH, VALUE_WIDTH = 34, 9, 14


def _row(label: str, unit: str, cells: Sequence[str]) -> str:
    line = f"{label:<{LABEL_WIDTH}}{unit:<{UNIT_WIDTH}}"
    return (line + "".join(f"{cell:>{VALUE_WIDTH}}" for cell in cells)).rstrip()


#: The table's columns: relay first, the peers, then what is not a program.
COLUMN_ORDER: tuple[CandidateName, ...] = (
    "relay", "relay-workers", "relay-general", "socat", "socat-b1M", "haproxy", "nginx",
    "floor-uvloop", "floor-epoll", "direct",
)


def columns_of(results: Sequence[WorkloadResult]) -> list[CandidateName]:
    """Every candidate measured in some workload, in ``COLUMN_ORDER``."""
    seen = {name for result in results for name in result.candidates}
    return [name for name in COLUMN_ORDER if name in seen]


def render_table(results: Sequence[WorkloadResult]) -> str:
    """Medians per candidate; under each, relay's ratio to that candidate; then the goals."""
    columns = columns_of(results)
    width = LABEL_WIDTH + UNIT_WIDTH + VALUE_WIDTH * len(columns)
    lines = [_row("workload / metric", "unit", columns), "-" * width]
    for result in results:
        lines.append(f"{result.title} ({result.runs} round{'s' if result.runs != 1 else ''})")
        for metric in result.metrics:
            lines.append(_row(f"  {metric.label}", metric.unit,
                              [_cell(result, name, metric) for name in columns]))
            ratios = [
                "" if name == "relay" or name not in result.candidates
                else _ratio(result.ratio(metric.key, name))
                for name in columns
            ]
            if any(ratios):
                lines.append(_row("    relay / this, per round", "", ratios))
    lines += ["", "Goals (issue 16), each a median of per-round ratios:"]
    for result in results:
        for metric in result.metrics:
            for verdict in result.verdicts(metric):
                lines.append(_wrap("  " + verdict_line(result, metric, verdict)))
    lines.append("")
    for result in results:
        for note in result.notes:
            lines.append(_wrap(f"{result.name}: {note}"))
    failures = [
        f"  {result.name} / {name}: {reason}"
        for result in results for name, reason in result.failures().items()
    ]
    if failures:
        lines += ["", "FAILED measurements (no figure, counted as MISS):", *failures]
    return "\n".join(lines) + "\n"


def verdict_line(result: WorkloadResult, metric: Metric, verdict: Verdict) -> str:
    """``PASS  goal: relay 2.1x best of haproxy, nginx (target >= 1.1x) [what was missing]``."""
    target = verdict.target
    word = "PASS" if verdict.passed else "MISS"
    if verdict.ratio is None:
        word = "NO FIGURE"
    goal = target.goal or f"{result.name} {metric.key}"
    shown = "-" if verdict.ratio is None else f"{verdict.ratio:.2f}x"
    missing = f" (not measured: {', '.join(verdict.missing)})" if verdict.missing else ""
    return f"{word:<9} {goal}: {result.name} {metric.label}, {target.relay} {shown} " \
        f"(target {target}){missing}"


def print_descriptions(results: Sequence[WorkloadResult], out: TextIO) -> None:
    """What exactly each workload measured."""
    out.write("What was measured:\n")
    for result in results:
        out.write(_wrap(f"  {result.name}: {result.description}") + "\n")
    out.write("\n")


def to_json(
    results: Sequence[WorkloadResult],
    info: Mapping[str, object],
    settings: Settings,
    elapsed: float,
) -> dict[str, object]:
    """Everything, machine-readable: settings, machine, samples, medians, ratios, verdicts."""
    workloads = []
    for result in results:
        metrics = []
        for metric in result.metrics:
            metrics.append({
                "key": metric.key,
                "label": metric.label,
                "unit": metric.unit,
                "higher_is_better": metric.higher_is_better,
                "medians": {name: result.median(name, metric.key) for name in result.candidates},
                "ratios_per_round": {
                    name: result.ratio(metric.key, name)
                    for name in result.candidates if name != "relay"
                },
                "verdicts": [
                    {"target": str(v.target), "goal": v.target.goal, "ratio": v.ratio,
                     "passed": v.passed, "missing": list(v.missing)}
                    for v in result.verdicts(metric)
                ],
            })
        workloads.append({
            "name": result.name,
            "title": result.title,
            "description": result.description,
            "runs": result.runs,
            "metrics": metrics,
            "candidates": {
                name: dataclasses.asdict(samples) for name, samples in result.candidates.items()
            },
            "notes": result.notes,
        })
    return {
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": sys.argv,
        "settings": dataclasses.asdict(settings),
        "machine": dict(info),
        "elapsed_seconds": round(elapsed, 1),
        "workloads": workloads,
    }


def write_json(document: Mapping[str, object], path: Path | None, mode: str) -> Path:
    """Write the results; by default to ``benchmarks/results/<time>-<mode>.json``."""
    if path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-{mode}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
