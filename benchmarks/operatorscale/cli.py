"""``./dev bench-operator`` (``python -m benchmarks.operatorscale``): options and the flow.

Needs a cluster: the local one (``./dev cluster up``, under the cluster
lock: see ``benchmarks/README.md``) or the one ``--kubeconfig`` names, with
rights to create nodes, CRDs and namespaces. Everything it creates (a
namespace, the fake node, the tunnels) is deleted at the end, also after a
failure or Ctrl-C; the CRD stays (other runs and tests share it).

Exit status: 0 when every tunnel became Valid and Ready and was deleted in
time, 1 when not (the table says how far it got), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from relay_operator.client import Kube, load_configuration, path
from relay_operator.errors import ApiError
from scripts.gotools import ToolUnavailable, kwok_path, kwok_stages

from ..processes import REPO_ROOT, free_port
from ..report import RESULTS_DIR, machine_info
from . import apimetrics, kwok
from .conditions import conditions
from .operatorproc import operator_process, usage
from .table import Spread, render
from .wave import PROBE, Timeline, create_wave, delete_wave, wait_for, watchers

CRD = REPO_ROOT / "manifests" / "crd" / "socattunnels.yaml"


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 5000:
        raise argparse.ArgumentTypeError(f"expected 1 to 5000 tunnels, got {value}")
    return value


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("RELAY_OPERATOR_"):
        raise argparse.ArgumentTypeError(f"expected RELAY_OPERATOR_NAME=VALUE, got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./dev bench-operator",
        description="Create N SocatTunnels at once on a cluster (their relay pods on a kwok "
        "fake node) and measure the operator: time to Valid and Ready, API requests, CPU, "
        "memory, a tunnel created mid-wave, time to delete.",
    )
    parser.add_argument("--tunnels", type=_count, default=1000, metavar="N",
                        help="tunnels in the wave (default 1000)")
    parser.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                        help="give up on the wave, and again on the deletion, after this "
                        "(default 600)")
    parser.add_argument("--kubeconfig", type=Path,
                        help="the cluster (default: $RELAY_E2E_KUBECONFIG, else $KUBECONFIG)")
    parser.add_argument("--set", type=_setting, action="append", default=[],
                        metavar="RELAY_OPERATOR_X=VALUE",
                        help="an operator setting on top of the manifest's (repeatable)")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="JSON file to write (default: benchmarks/results/"
                        "<time>-operator-scale.json)")
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    kubeconfig = args.kubeconfig or os.environ.get("RELAY_E2E_KUBECONFIG") or os.environ.get(
        "KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).is_file():
        parser.error("no cluster: pass --kubeconfig, or run under the cluster lock after "
                     "`./dev cluster up` with KUBECONFIG from `./dev cluster env`")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        binary = kwok_path()
    except ToolUnavailable as exc:
        print(f"bench-operator: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(run(args, Path(kubeconfig), binary))
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); what the run created was deleted",
              file=sys.stderr)
        return 130
    except (RuntimeError, ApiError) as exc:
        print(f"bench-operator: {exc}; what the run created was deleted", file=sys.stderr)
        return 1


async def install_crd(kube: Kube) -> None:
    """The SocatTunnel CRD, created if missing (never deleted: it is shared), then served."""
    url = path("apiextensions.k8s.io/v1", "customresourcedefinitions", None)
    for body in yaml.safe_load_all(CRD.read_text()):
        try:
            await kube.create(url, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        for _ in range(60):
            crd = await kube.get(f"{url}/{body['metadata']['name']}")
            if conditions(crd).get("Established") == "True":
                break
            await asyncio.sleep(0.5)


def scrape_requests(api: Any) -> Counter[apimetrics.Key]:
    """The API server's request counters now."""
    serialized = api.param_serialize(method="GET", resource_path="/metrics",
                                     header_params={"Accept": "text/plain"},
                                     auth_settings=["BearerToken"])
    response = api.call_api(*serialized[:4], _request_timeout=60)
    return apimetrics.parse(response.read().decode())


async def wait_operator(port: int, process: Any, timeout: float = 60) -> None:
    """Until the operator's liveness endpoint answers (kopf is watching)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"relay-operator exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            await asyncio.sleep(0.5)
    raise RuntimeError(f"relay-operator was not up within {timeout:g} s")


async def run(args: argparse.Namespace, kubeconfig: Path, binary: Path) -> int:
    namespace = f"relay-bench-{os.getpid()}"
    kube = Kube(load_configuration(str(kubeconfig)), timeout=60, workers=16)
    api = kubernetes.client.ApiClient(load_configuration(str(kubeconfig)))
    scratch = Path(tempfile.mkdtemp(prefix="relay-bench-operator-"))
    timeline = Timeline()
    watches = watchers(api, namespace, timeline)
    health = free_port()
    try:
        await install_crd(kube)
        await kube.create(path("v1", "namespaces", None),
                          {"metadata": {"name": namespace, "labels": {"relay-bench": "1"}}})
        await kwok.create_node(kube)
        with (
            kwok.kwok_process(binary, kwok_stages(binary), kubeconfig, scratch / "kwok.log")
            as faker,
            operator_process(kubeconfig, namespace, scratch / "operator.log", health,
                             dict(args.set))
            as operator,
        ):
            await kwok.wait_node_ready(kube, faker, 60)
            await wait_operator(health, operator)
            return await measure(args, kube, api, namespace, timeline, watches, operator.pid,
                                 scratch)
    finally:
        for watcher in watches:
            watcher.stopping.set()
        await cleanup(kube, namespace)
        kube.close()
        api.close()  # type: ignore[no-untyped-call]


async def cleanup(kube: Kube, namespace: str) -> None:
    """Delete the namespace (and whatever the run left in it), then the fake node."""
    url = path("v1", "namespaces", None, namespace)
    await kube.delete(url)
    for _ in range(240):
        if await kube.get(url) is None:
            break
        await asyncio.sleep(0.5)
    else:
        print(f"warning: namespace {namespace} still terminating", file=sys.stderr)
    await kwok.delete_node(kube)


async def measure(args: argparse.Namespace, kube: Kube, api: Any, namespace: str,
                  timeline: Timeline, watches: list[Any], pid: int, scratch: Path) -> int:
    count: int = args.tunnels
    total = count + 1  # and the probe
    for watcher in watches:
        watcher.start()
    before = scrape_requests(api)
    start_usage = usage(pid)
    print(f"creating {count} tunnels in {namespace} (logs in {scratch})", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    create_seconds = await create_wave(kube, namespace, count, timeline)
    all_valid = await wait_for("Valid", lambda: len(timeline.valid), total, deadline, watches)
    all_ready = all_valid and await wait_for("Ready", lambda: len(timeline.ready), total,
                                             deadline, watches)
    wave_usage = usage(pid)
    after = scrape_requests(api)
    print("deleting them", file=sys.stderr)
    tunnels_gone, pods_gone = await delete_wave(kube, namespace, sorted(timeline.created),
                                                time.monotonic() + args.timeout)
    end_usage = usage(pid)

    lag = [timeline.ready[name] - timeline.pods_ready[name] for name in timeline.ready
           if name in timeline.pods_ready and name != PROBE]
    spreads = [
        ("to Valid", Spread.of(timeline.since_created(timeline.valid))),
        ("to Ready", Spread.of(timeline.since_created(timeline.ready))),
        ("  to a ready relay pod (cluster)", Spread.of(
            timeline.since_created(timeline.pods_ready))),
        ("  pod ready to status Ready", Spread.of(lag)),
        ("probe: to first status", Spread.of(
            timeline.since_created(timeline.first_status, probe=True))),
        ("probe: to Ready", Spread.of(timeline.since_created(timeline.ready, probe=True))),
    ]
    facts = [
        ("creates sent in", f"{create_seconds:.1f} s (16 at a time)"),
        ("all Valid / all Ready", f"{'yes' if all_valid else 'NO'} / "
         f"{'yes' if all_ready else 'NO'} (timeout {args.timeout:g} s)"),
        ("delete: tunnels gone", _maybe(tunnels_gone)),
        ("delete: relay pods gone", _maybe(pods_gone)),
        ("operator CPU, wave", f"{wave_usage.cpu_seconds - start_usage.cpu_seconds:.1f} s"),
        ("operator CPU, deletion", f"{end_usage.cpu_seconds - wave_usage.cpu_seconds:.1f} s"),
        ("operator peak RSS", f"{end_usage.peak_rss_mib:.0f} MiB"),
        ("operator settings", " ".join(f"{k}={v}" for k, v in args.set) or "the manifest's"),
    ]
    requests = apimetrics.difference(before, after)
    title = (f"operator-scale: {count} SocatTunnels at once, relay pods on a kwok node "
             f"({datetime.now():%Y-%m-%d %H:%M})")
    sys.stdout.write(render(title, spreads, facts, requests, total))
    info = machine_info({})
    print(f"\nmachine: {info['cores']} cores {info['cpu']}, {info['memory_gib']} GiB, "
          f"load {info['load_average']}, commit {info['commit']}")
    output = args.output or RESULTS_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-operator-scale.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "machine": info, "tunnels": count, "settings": dict(args.set),
        "spreads": {label.strip(): vars(spread) for label, spread in spreads},
        "facts": dict(facts),
        "requests": {" ".join(filter(None, key)): n for key, n in requests.items()},
    }, indent=1, default=str))
    print(f"JSON: {output}")
    ok = all_ready and tunnels_gone is not None and pods_gone is not None
    return 0 if ok else 1


def _maybe(seconds: float | None) -> str:
    return "not within the timeout" if seconds is None else f"{seconds:.1f} s"
