"""``./dev bench-tunnel`` (``python -m benchmarks.tunnel``): the flow, the rounds, the table.

Needs a cluster: the local one (``./dev cluster up``, under the cluster lock:
see ``benchmarks/README.md``) or the one ``KUBECONFIG`` names, with the
relay image. The flow:

1. a namespace of its own and one target pod (``target.py``: a sink and echo
   server on port 8080);
2. three tunnels to that pod, each timed from its start until it is ready:
   ``kubectl port-forward pod/T LOCAL:8080`` (the cluster's kubectl),
   ``kubectl relay tcp pod/T:8080 --listen LOCAL -q`` (no data trace, as
   port-forward prints none either: one port-forward, a mux stream per
   connection) and the same with ``KUBECTL_RELAY_MUX=0`` (a port-forward
   per connection, as before the mux);
   and ``kubectl relay proxy -q`` and ``kubectl relay udp -q``, each with the mux
   and with a port-forward per connection (tables of their own: port-forward
   has no proxy, and no UDP);
3. interleaved rounds: round ``i`` runs every workload on every tunnel, in
   an order rotated by ``i``; each figure is the median over the rounds and
   each ratio ``relay / port-forward`` the median of the ratios within the
   rounds; the load average is printed per round;
4. the tunnels stop, the namespace is deleted (also after a failure or Ctrl-C).

Exit status: 0 when every figure was measured, 1 when one failed (listed
under the table), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from ..processes import free_port
from ..report import RESULTS_DIR
from . import target, workloads

DEFAULT_IMAGE = "ghcr.io/kubectl-relay/relay:0.1.0"
PORT_FORWARD, PER_CONNECTION, RELAY = "port-forward", "relay-per-connection", "relay"
CANDIDATES = (PORT_FORWARD, PER_CONNECTION, RELAY)
#: The table's column for each candidate.
HEADINGS = {
    PORT_FORWARD: "kubectl port-forward",
    PER_CONNECTION: "kubectl relay tcp, KUBECTL_RELAY_MUX=0",
    RELAY: "kubectl relay tcp",
}

#: Tunnels compared only with themselves, the mux on and off (KUBECTL_RELAY_MUX): one
#: client's SOCKS5 short connections through a proxy tunnel, new senders through a udp one.
PROXY_MUX, PROXY_PER_CONNECTION = "proxy", "proxy-per-connection"
PROXIES = {PROXY_MUX: "1", PROXY_PER_CONNECTION: "0"}
UDP_MUX, UDP_PER_CONNECTION = "udp", "udp-per-connection"
UDPS = {UDP_MUX: "1", UDP_PER_CONNECTION: "0"}

#: Each figure: its label, whether more is better, and how to print it.
FIGURES: dict[str, tuple[str, bool, str]] = {
    "bulk_mbps": ("bulk MB/s (one way, {bulk} MiB)", True, "{:,.1f}"),
    "conn_1": ("short connections/s, 1 client", True, "{:,.1f}"),
    "conn_10": ("short connections/s, 10 clients", True, "{:,.1f}"),
    "rtt_p50_us": ("1-byte round trip p50, µs", False, "{:,.0f}"),
    "rtt_p99_us": ("1-byte round trip p99, µs", False, "{:,.0f}"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./dev bench-tunnel",
        description="kubectl relay tcp against kubectl port-forward to the same pod: bulk "
        "MB/s, short connections per second, 1-byte round trips, in interleaved rounds.",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--bulk-mib", type=int, default=256, metavar="MIB",
                        help="bytes sent one way per bulk figure, in MiB (default 256)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="window of each connection-rate figure (default 3)")
    parser.add_argument("--round-trips", type=int, default=500, metavar="N",
                        help="timed 1-byte round trips per latency figure (default 500)")
    parser.add_argument("--udp-senders", type=int, default=100, metavar="N",
                        help="new UDP senders per round and udp tunnel (default 100)")
    parser.add_argument("--image", default=os.environ.get("RELAY_E2E_IMAGE") or DEFAULT_IMAGE,
                        help="image of the target pod and the relay pod")
    parser.add_argument("--relay-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for kubectl relay tcp (repeatable)")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="JSON file to write (default: benchmarks/results/DATE-tunnel.json)")
    return parser


def _measure(port: int, args: argparse.Namespace) -> dict[str, float]:
    figures: dict[str, float] = {}
    figures["bulk_mbps"] = workloads.bulk(port, args.bulk_mib << 20)
    for clients in (1, 10):
        rate = workloads.connection_rate(port, clients, args.seconds)
        figures[f"conn_{clients}"] = rate["rate"]
        figures[f"conn_{clients}_errors"] = rate["errors"]
    trips = workloads.latency(port, args.round_trips)
    figures["rtt_p50_us"] = trips["median_us"]
    figures["rtt_p99_us"] = trips["p99_us"]
    return figures


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run(args: argparse.Namespace, report: Callable[[str], None]) -> dict[str, object]:
    """Set up, run the rounds, clean up; every sample and the medians."""
    namespace = f"relay-bench-tunnel-{os.getpid()}"
    pod = "bench-target"
    document: dict[str, object] = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "cores": os.cpu_count(), "load_before": _load(), "args": vars(args) | {"output": None},
    }
    rounds: list[dict[str, dict[str, float]]] = []
    failures: list[str] = []
    tunnels: dict[str, target.Tunnel] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    try:
        report(f"target pod {namespace}/{pod} ({args.image}) ...")
        target.create_target(namespace, pod, args.image)
        pf_port = free_port()
        tunnels[PORT_FORWARD] = target.start_tunnel(
            PORT_FORWARD,
            ["kubectl", "port-forward", "-n", namespace, f"pod/{pod}",
             f"{pf_port}:{target.TARGET_PORT}"],
            pf_port, "Forwarding from", scratch / "port-forward.log")

        def relay_tunnel(name: str, mux: str, mode: str, *mode_args: str) -> target.Tunnel:
            """``kubectl relay MODE ... -q`` on a free port, the mux on (``mux`` "1") or off."""
            port = free_port()  # free for TCP a moment ago (and, for udp, almost surely for UDP)
            return target.start_tunnel(
                name,
                ["kubectl", "relay", mode, "--image", args.image, "-n", namespace, "-q",
                 *mode_args, "--listen", str(port)],
                port, "Press Ctrl-C", scratch / f"{name}.log", env={"KUBECTL_RELAY_MUX": mux})

        in_pod = f"pod/{pod}:{target.TARGET_PORT}"
        for name, mux in ((PER_CONNECTION, "0"), (RELAY, "1")):
            tunnels[name] = relay_tunnel(name, mux, "tcp", *args.relay_arg, in_pod)
        for name, mux in PROXIES.items():
            tunnels[name] = relay_tunnel(name, mux, "proxy")
        for name, mux in UDPS.items():
            tunnels[name] = relay_tunnel(name, mux, "udp", in_pod)
        pod_ip = target.kubectl("get", "pod", "-n", namespace, pod,
                                "-o", "jsonpath={.status.podIP}").strip()
        document["ready_seconds"] = {n: t.ready_after for n, t in tunnels.items()}
        # The tunnels measured only against themselves (mux on and off), and how.
        pairs: list[tuple[list[str], Callable[[int], dict[str, float]]]] = [
            (list(PROXIES), lambda port: workloads.socks5_rate(
                port, pod_ip, target.TARGET_PORT, args.seconds)),
            (list(UDPS), lambda port: workloads.udp_senders(port, args.udp_senders)),
        ]
        for number in range(args.rounds):
            shift = number % len(CANDIDATES)
            order = CANDIDATES[shift:] + CANDIDATES[:shift]
            samples: dict[str, dict[str, float]] = {}
            for name in order:
                try:
                    samples[name] = _measure(tunnels[name].port, args)
                except (OSError, RuntimeError, ValueError) as exc:
                    failures.append(f"round {number + 1}, {name}: {exc}")
                    samples[name] = {}
            for names, measure in pairs:
                for name in names[number % 2 :] + names[: number % 2]:
                    try:
                        rate = measure(tunnels[name].port)
                        samples[name] = {"conn_1": rate["rate"], "conn_1_errors": rate["errors"]}
                    except (OSError, RuntimeError, ValueError) as exc:
                        failures.append(f"round {number + 1}, {name}: {exc}")
                        samples[name] = {}
            samples["load"] = {"load1": os.getloadavg()[0]}
            rounds.append(samples)
            report(f"round {number + 1}/{args.rounds} done ({', '.join(order)}); "
                   f"load {_load()}")
    finally:
        for name, tunnel in tunnels.items():
            status = tunnel.stop()
            if status not in (0, -2, 130):
                failures.append(f"{name} exited with status {status}")
        try:
            target.delete_target(namespace)
        except (OSError, RuntimeError) as exc:
            failures.append(f"deleting {namespace}: {exc}")
    document.update(rounds=rounds, failures=failures, load_after=_load())
    return document


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def render(document: dict[str, object], bulk_mib: int) -> str:
    """The table: each figure's median per tunnel and the medians of the ratios in the rounds."""
    rounds: list[dict[str, dict[str, float]]] = document["rounds"]  # type: ignore[assignment]
    relays = (PER_CONNECTION, RELAY)
    lines = [
        "| workload | " + " | ".join(HEADINGS[name] for name in CANDIDATES) + " | "
        + " | ".join(f"{name} / port-forward" for name in relays) + " |",
        "|---" * (1 + len(CANDIDATES) + len(relays)) + "|",
    ]
    for key, (label, higher, fmt) in FIGURES.items():
        cells = []
        for name in CANDIDATES:
            value = _median([r[name][key] for r in rounds if key in r[name]])
            cells.append("-" if value is None else fmt.format(value))
        for name in relays:
            ratio = _median([r[name][key] / r[PORT_FORWARD][key] for r in rounds
                             if key in r[name] and r[PORT_FORWARD].get(key)])
            cells.append("-" if ratio is None else f"{ratio:.2f}x")
        better = "" if higher else " (lower is better)"
        lines.append(f"| {label.format(bulk=bulk_mib)}{better} | " + " | ".join(cells) + " |")
    ready: dict[str, float] = document.get("ready_seconds", {})  # type: ignore[assignment]
    if ready:
        lines.append("| tunnel start to ready, s (one sample) | "
                     + " | ".join(f"{ready.get(name, 0):.2f}" for name in CANDIDATES)
                     + " |" + " |" * len(relays))
    errors = {name: sum(r[name].get(f"conn_{c}_errors", 0) for r in rounds for c in (1, 10))
              for name in CANDIDATES}
    lines.append("")
    lines.append(f"rounds: {len(rounds)}; cores: {document['cores']}; load before: "
                 f"{document['load_before']}; after: {document['load_after']}; per round: "
                 + ", ".join(f"{r['load']['load1']:.2f}" for r in rounds))
    lines.append("failed short connections: "
                 + ", ".join(f"{name} {errors[name]:g}" for name in CANDIDATES))
    for failure in document["failures"]:  # type: ignore[attr-defined]
        lines.append(f"FAILED: {failure}")
    return "\n".join(lines) + "".join([
        _render_pair(rounds, PROXY_MUX, PROXY_PER_CONNECTION, "kubectl relay proxy -q",
                     "SOCKS5 short connections/s, 1 client", "proxied connections"),
        _render_pair(rounds, UDP_MUX, UDP_PER_CONNECTION, "kubectl relay udp -q",
                     "new UDP senders/s (a datagram and its echo each), 1 client",
                     "UDP senders"),
    ])


def _render_pair(rounds: list[dict[str, dict[str, float]]], mux: str, per_connection: str,
                 tunnel: str, label: str, counted: str) -> str:
    """A table of one tunnel with the mux and without (empty when no round measured it)."""
    if not any(mux in r for r in rounds):
        return ""
    rates = [_median([r[name]["conn_1"] for r in rounds if "conn_1" in r.get(name, {})])
             for name in (mux, per_connection)]
    ratio = _median([r[mux]["conn_1"] / r[per_connection]["conn_1"] for r in rounds
                     if "conn_1" in r.get(mux, {}) and r.get(per_connection, {}).get("conn_1")])
    errors = sum(r.get(name, {}).get("conn_1_errors", 0) for r in rounds
                 for name in (mux, per_connection))
    cells = ["-" if value is None else f"{value:,.1f}" for value in rates]
    return "\n".join([
        "",
        "",
        f"| through `{tunnel}` | mux | KUBECTL_RELAY_MUX=0 | mux / per connection |",
        "|---|---|---|---|",
        f"| {label} | " + " | ".join(cells) + " | "
        + ("-" if ratio is None else f"{ratio:.2f}x") + " |",
        f"failed {counted}: {errors:g}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, print the table, write the JSON."""
    args = build_parser().parse_args(argv)
    if args.rounds < 1 or args.bulk_mib < 1 or args.seconds <= 0 or args.round_trips < 10:
        build_parser().error("--rounds and --bulk-mib at least 1, --seconds above 0, "
                             "--round-trips at least 10")

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        document = run(args, report)
    except KeyboardInterrupt:
        report("interrupted; the namespace was deleted")
        return 1
    print(render(document, args.bulk_mib))
    path = args.output
    if path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-tunnel.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"samples: {path}")
    return 1 if document["failures"] else 0
