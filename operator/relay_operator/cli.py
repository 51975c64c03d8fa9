"""``relay-operator``: run the SocatTunnel operator.

Settings come from the environment (``RELAY_OPERATOR_*``, see ``settings``),
which the Helm chart and ``manifests/operator.yaml`` set; flags override
them, for running the operator by hand::

    relay-operator                       # every namespace, standalone
    relay-operator -n team-a -n team-b   # these namespaces only
    relay-operator --peering relay-operator   # one of several replicas
    relay-operator --kubeconfig ~/.kube/aks -v

Exit status: 0 after a clean stop (SIGTERM, SIGINT), 1 when the operator
fails, 2 for bad flags or settings (the message says which).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from .client import Kube, load_configuration
from .errors import SettingsError
from .handlers import configure_logging, run
from .settings import ENV_NAMESPACES, Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-operator",
        description="Reconcile SocatTunnel resources into relay pods, Services and "
        "NetworkPolicies.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NAMESPACE",
        help=f"serve this namespace (repeatable; default: ${ENV_NAMESPACES}, else every one)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="serve every namespace"
    )
    peers = parser.add_mutually_exclusive_group()
    peers.add_argument(
        "--peering",
        metavar="NAME",
        help="find the other replicas through this kopf peering object; the one with the "
        "highest priority serves",
    )
    peers.add_argument(
        "--standalone", action="store_true", help="run without peering (one replica only)"
    )
    parser.add_argument(
        "--priority", type=int, help="peering priority (default: random, so replicas differ)"
    )
    parser.add_argument("--health-port", type=_port, help="port of /healthz (0: off)")
    parser.add_argument("--metrics-port", type=_port, help="port of /metrics (0: off)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG)")
    parser.add_argument("--context", help="kubeconfig context")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    noise.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """The environment's settings with the flags applied."""
    settings = Settings.from_environ(environ)
    changes: dict[str, object] = {}
    if args.all_namespaces:
        changes["namespaces"] = ()
    elif args.namespaces:
        merged = ",".join(args.namespaces)
        changes["namespaces"] = Settings.from_environ({ENV_NAMESPACES: merged}).namespaces
    if args.standalone:
        changes["peering"] = None
    elif args.peering:
        changes["peering"] = Settings.from_environ({"RELAY_OPERATOR_PEERING": args.peering}).peering
    if args.health_port is not None:
        changes["health_port"] = args.health_port
    if args.metrics_port is not None:
        changes["metrics_port"] = args.metrics_port
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """The console script ``relay-operator``."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args, dict(os.environ))
    except SettingsError as exc:
        parser.error(str(exc))  # exits with status 2
    configure_logging(verbose=args.verbose, quiet=args.quiet)
    try:
        kube = Kube(
            load_configuration(args.kubeconfig, args.context),
            timeout=settings.api_timeout,
            workers=settings.api_concurrency,
        )
    except Exception as exc:  # the client's config errors have no common base
        sys.stderr.write(f"relay-operator: cannot load the cluster configuration: {exc}\n")
        return 1
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    metrics = ("0.0.0.0", settings.metrics_port) if settings.metrics_port else None
    try:
        asyncio.run(
            run(settings, kube, liveness=liveness, metrics_address=metrics, priority=args.priority)
        )
    except KeyboardInterrupt:
        pass
    except Exception:
        logging.getLogger("relay_operator").exception("the operator failed")
        return 1
    finally:
        kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
