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
    relay, socat = info.get("relay"), info.get("socat")
    lines = [
        f"kubectl-relay benchmark ({settings.mode} mode), {datetime.now():%Y-%m-%d %H:%M:%S}",
        f"  machine: {info['cores']} cores ({info['usable_cores']} usable), {info['cpu']}, "
        f"{info['memory_gib']} GiB RAM",
        f"  kernel:  {info['kernel']}",
        f"  python:  {info['python']}, uvloop {info['uvloop']}, {info['openssl']}",
    ]
    for name, entry in (("relay", relay), ("socat", socat)):
        if isinstance(entry, dict):
            lines.append(f"  {name}:   {entry['version']} [{entry['command']}]")
    lines += [
        f"  commit:  {info['commit']}",
        f"  load average before the run: {info['load_average']} (1, 5, 15 min; above 0.5 or"
        " so, other work on the machine makes every figure noisier)",
        "",
        CONTENTION_NOTE.format(cores=info["cores"]),
        "Both candidates run at their default settings (no -b), alternately, run after run;",
        "figures are medians over the runs.",
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


COLUMNS = ("{:<34}", "{:<9}", "{:>10}", "{:>10}", "{:>10}", "{:>12}", "{:>13}", "  {:<16}", "{}")
HEADINGS = ("workload / metric", "unit", "relay", "socat", "direct", "relay/socat",
            "relay/direct", "target", "verdict")


def _row(*cells: str) -> str:
    return "".join(fmt.format(cell) for fmt, cell in zip(COLUMNS, cells, strict=True)).rstrip()


def render_table(results: Sequence[WorkloadResult]) -> str:
    """The human table: medians, ratios, targets and PASS/MISS, then notes and failures."""
    lines = [_row(*HEADINGS), "-" * 118]
    for result in results:
        lines.append(f"{result.title} ({result.runs} run{'s' if result.runs != 1 else ''})")
        for metric in result.metrics:
            verdicts: list[Verdict | None] = [*result.verdicts(metric)] or [None]
            for index, verdict in enumerate(verdicts):
                cells = ["", "", "", "", "", "", ""]
                if index == 0:
                    direct = "direct" in result.candidates
                    cells = [
                        f"  {metric.label}", metric.unit,
                        _cell(result, "relay", metric), _cell(result, "socat", metric),
                        _cell(result, "direct", metric),
                        _ratio(result.ratio(metric.key, "socat")),
                        _ratio(result.ratio(metric.key, "direct")) if direct else "",
                    ]
                if verdict is None:
                    lines.append(_row(*cells, "", ""))
                    continue
                word = "PASS" if verdict.passed else "MISS"
                if verdict.ratio is None:
                    word += " (no figure)"
                lines.append(_row(*cells, str(verdict.target), word))
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
                "ratio_vs_socat": result.ratio(metric.key, "socat"),
                "ratio_vs_direct": result.ratio(metric.key, "direct"),
                "verdicts": [
                    {"target": str(v.target), "ratio": v.ratio, "passed": v.passed}
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
