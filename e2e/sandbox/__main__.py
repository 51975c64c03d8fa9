"""``python -m e2e.sandbox``: run the sandbox cluster until Ctrl-C, for kubectl by hand.

::

    python -m e2e.sandbox --kubeconfig /tmp/sandbox.kubeconfig
    export KUBECONFIG=/tmp/sandbox.kubeconfig     # in another shell
    kubectl get nodes

Images: the relay image (``ghcr.io/kubectl-relay/relay:*`` or any name with
``kubectl-relay``) and the stock ``sandbox.local/echo``, ``sandbox.local/http``
and ``sandbox.local/toolbox``; ``--image NAME=COMMAND`` adds one running a
local command line (its ENTRYPOINT).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys
from collections.abc import Sequence

from .cluster.sandbox import RELAY_IMAGE, Sandbox
from .cluster.workloads import ECHO_IMAGE, HTTP_IMAGE, TOOLBOX_IMAGE


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.sandbox", description="Run the sandbox Kubernetes cluster."
    )
    parser.add_argument("--kubeconfig", help="where to write the kubeconfig (default: a temp dir)")
    parser.add_argument("--port", type=int, default=0, help="API server port (default: any free)")
    parser.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="register an image running a local command line (repeatable)",
    )
    return parser.parse_args(argv)


async def serve(options: argparse.Namespace) -> int:
    """Start, print how to connect, wait for SIGINT or SIGTERM, stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Sandbox(
        kubeconfig=options.kubeconfig, port=options.port, namespace=options.namespace
    ) as sandbox:
        for spec in options.image:
            name, _, command = spec.partition("=")
            sandbox.register_image(name, shlex.split(command))
        images = [
            RELAY_IMAGE,
            ECHO_IMAGE,
            HTTP_IMAGE,
            TOOLBOX_IMAGE,
            *(s.partition("=")[0] for s in options.image),
        ]
        print(f"sandbox API server: {sandbox.url}")
        print(f"kubeconfig: {sandbox.kubeconfig}")
        print(f"images: {', '.join(images)}")
        print(f"export KUBECONFIG={sandbox.kubeconfig}")
        print("Ctrl-C stops the sandbox and every pod process.", flush=True)
        await stop.wait()
        print("stopping...", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox until interrupted."""
    return asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
