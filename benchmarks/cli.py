"""``python -m benchmarks`` (``./dev bench``): options and the top-level flow.

Exit status: 0 when every candidate produced a figure in every workload
(whether targets were met or not: that is in the table), 1 when some
measurement failed (listed under the table and in the JSON file), 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from . import candidates as programs
from .candidates import Candidate, CandidateName
from .processes import Processes, raise_fd_limit
from .profiling import Profiler, find_py_spy
from .report import (
    RESULTS_DIR,
    machine_info,
    print_descriptions,
    print_header,
    render_table,
    to_json,
    write_json,
)
from .results import WorkloadResult
from .runner import run_workload
from .settings import PROFILES, Mode, Settings, format_size, parse_size
from .workloads import Context, Workload, all_workloads


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of the harness."""
    names = [w.name for w in all_workloads()]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare the relay engine with socat, HAProxy and nginx, side by side "
        "(medians, ratios, PASS/MISS against the targets).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes and counts (~1 min)")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny sizes, 1 run: only proves every workload works")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only these workloads (repeatable or comma-separated): "
                        f"{', '.join(names)}")
    parser.add_argument("--rounds", "--runs", dest="runs", type=_positive, metavar="N",
                        help="interleaved rounds (one run of every candidate each) for every "
                        "workload (default: 5 for fast workloads, 3 for bulk ones)")
    parser.add_argument("--bulk-size", type=_size, metavar="SIZE",
                        help="bytes of the throughput workload (default 2G)")
    parser.add_argument("--tls-size", type=_size, metavar="SIZE",
                        help="bytes of the TLS workload (default 1G)")
    parser.add_argument("--trace-size", type=_size, metavar="SIZE",
                        help="bytes of the -v trace workload (default 32M)")
    parser.add_argument("--connections", type=_positive, metavar="N",
                        help="idle connections of the memory workload (default 1000)")
    parser.add_argument("--relay-command", metavar="CMD",
                        help="run this instead of 'python -m kubectl_relay.engine' as the "
                        "relay (e.g. 'socat' to check the harness with socat on both sides)")
    parser.add_argument("--relay-workers", type=_positive, metavar="N",
                        help="--workers of the relay-workers candidate, measured beside relay "
                        f"in connrate (default {programs.DEFAULT_RELAY_WORKERS}; with "
                        "--relay-command, only when given: other programs lack --workers)")
    parser.add_argument("--socat", metavar="PATH", help="the socat to compare with")
    parser.add_argument("--profile", nargs="?", const=True, type=Path, metavar="DIR",
                        help="sample the relay with py-spy while measuring; print where its "
                        "time went (stacks to DIR, default benchmarks/results/profile-<time>)")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="JSON file to write (default: benchmarks/results/<time>-<mode>.json)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The mode's profile with the command line's overrides."""
    mode: Mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = PROFILES[mode].with_runs(args.runs)
    overrides = {
        "bulk_bytes": args.bulk_size,
        "tls_bytes": args.tls_size,
        "trace_bytes": args.trace_size,
        "idle_connections": args.connections,
    }
    changes = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(settings, **changes)


def candidates_from(args: argparse.Namespace) -> tuple[dict[CandidateName, Candidate], list[str]]:
    """Every candidate that can run here, and why the others cannot."""
    socat = programs.socat(args.socat)
    compared: dict[CandidateName, Candidate] = {
        "relay": programs.relay(args.relay_command),
        "relay-general": programs.relay_general(args.relay_command),
        "socat": socat,
        "socat-b1M": programs.socat_tuned(socat),
        **{name: programs.floor(name) for name in programs.FLOORS},
    }
    skipped = []
    if args.relay_command and args.relay_workers is None:
        skipped.append("relay-workers: --relay-command without --relay-workers N")
    else:
        compared["relay-workers"] = programs.relay_workers(
            args.relay_command, args.relay_workers or programs.DEFAULT_RELAY_WORKERS
        )
    for found in (programs.haproxy(), programs.nginx()):
        if isinstance(found, str):
            skipped.append(found)
        else:
            compared[found.name] = found
    return compared, skipped


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def selected_workloads(parser: argparse.ArgumentParser, only: list[str] | None) -> list[Workload]:
    """The workloads ``--only`` names (all by default), in their usual order."""
    workloads = all_workloads()
    if not only:
        return workloads
    wanted = {name.strip() for entry in only for name in entry.split(",") if name.strip()}
    unknown = wanted - {w.name for w in workloads}
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(w.name for w in workloads)}")
    return [w for w in workloads if w.name in wanted]


def make_profiler(parser: argparse.ArgumentParser, profile: Path | bool | None) -> Profiler | None:
    """A py-spy profiler writing to ``profile`` (or a fresh results folder), if asked for."""
    if not profile:
        return None
    spy = find_py_spy()
    if spy is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    directory = profile if isinstance(profile, Path) else (
        RESULTS_DIR / f"profile-{datetime.now():%Y%m%d-%H%M%S}")
    directory.mkdir(parents=True, exist_ok=True)
    return Profiler(directory, spy)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected workloads and report; see the module docstring for the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from(args)
    workloads = selected_workloads(parser, args.only)
    profiler = make_profiler(parser, args.profile)

    # SIGTERM and SIGHUP end the run like Ctrl-C does: through the finally blocks
    # that stop every process, instead of leaving them behind.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    raise_fd_limit()
    compared, skipped = candidates_from(args)
    info = machine_info(compared)
    info["skipped"] = skipped
    print_header(info, settings, sys.stdout)
    if profiler is not None:
        print("PROFILING with py-spy: relay's figures are slowed by the sampling.\n")
    print(f"sizes: throughput {format_size(settings.bulk_bytes)}, TLS "
          f"{format_size(settings.tls_bytes)}, trace {format_size(settings.trace_bytes)}; "
          f"{settings.idle_connections} idle connections; progress on stderr\n", flush=True)

    started = time.monotonic()
    results: list[WorkloadResult] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="relay-bench-") as scratch,
            Processes(Path(scratch), profiler) as processes,
        ):
            ctx = Context(processes=processes, settings=settings, workdir=Path(scratch))
            for workload in workloads:
                runs = settings.runs_bulk if workload.bulk else settings.runs_fast
                print(f"{workload.title}: {runs} run(s) per candidate", file=sys.stderr,
                      flush=True)
                results.append(run_workload(workload, ctx, compared, runs))
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); every process started was stopped",
              file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]

    print_descriptions(results, sys.stdout)
    sys.stdout.write(render_table(results))
    if profiler is not None:
        sys.stdout.write("\n" + profiler.summary())
    path = write_json(to_json(results, info, settings, elapsed), args.output, settings.mode)
    print(f"\nload average after the run: {info['load_average_after']} (before: "
          f"{info['load_average']})")
    print(f"{len(results)} workload(s) in {elapsed:.0f} s; JSON: {path}")
    return 1 if any(result.failures() for result in results) else 0
