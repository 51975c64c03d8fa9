"""Run a program the way it would run inside a pod: ``python -m e2e.sandbox.cluster.podshim``.

The kubelet starts every container of the relay image (and every image
registered as a Python callable) through this module::

    python -m e2e.sandbox.cluster.podshim --script socat -- -v TCP-LISTEN:8080,fork TCP:target:80
    python -m e2e.sandbox.cluster.podshim --call tests.workloads:echo -- --port 80

It reads the pod's identity from the environment (the contract below), patches
name resolution and binding (``netpatch``), then calls the program in the same
process: the engine's ``kubectl_relay.engine.cli.main(argv, loop_factory=...)``
for ``relay`` and ``socat``, another console script of the project by name, or
a ``module:function`` taking the argument list.

Environment contract (set by the kubelet, see ``podspec``):

``SANDBOX_POD_IP``           the pod's IP (also in ``POD_IP``)
``SANDBOX_POD_NAMESPACE``    the pod's namespace (the DNS search path starts there)
``SANDBOX_POD_HOSTNAME``     the pod's hostname
``SANDBOX_DNS_TABLE``        the cluster DNS table file (``dns.DnsTableFile``)
``SANDBOX_PARENT_PID``       the sandbox's process: the program dies with it
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib
import importlib.metadata
import inspect
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .dns import DnsTableReader, PodIdentity
from .netpatch import PodNetwork, install, loop_factory

ENV_POD_IP = "SANDBOX_POD_IP"
ENV_NAMESPACE = "SANDBOX_POD_NAMESPACE"
ENV_HOSTNAME = "SANDBOX_POD_HOSTNAME"
ENV_DNS_TABLE = "SANDBOX_DNS_TABLE"
ENV_PARENT_PID = "SANDBOX_PARENT_PID"

#: prctl(2) option: the signal a process gets when its parent thread ends.
_PR_SET_PDEATHSIG = 1

#: Command names that run the relay engine (the image installs it under both).
ENGINE_NAMES = ("relay", "socat")

#: Exit status when the program cannot be found, as a shell reports it.
NOT_FOUND = 127


def die_with_the_sandbox() -> None:
    """Have the kernel kill this process if the sandbox dies without stopping it (SIGKILL).

    A sandbox stops its pods itself; this covers a sandbox killed outright
    (a test run's timeout, ``kill -9``), which would leave servers behind.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: nothing to arrange
    parent = os.environ.get(ENV_PARENT_PID)
    if parent and os.getppid() != int(parent):
        os._exit(128 + signal.SIGKILL)  # the sandbox died before prctl took effect


def network_from_env() -> PodNetwork:
    """The pod's network as the kubelet described it in the environment."""
    pod_ip = os.environ.get(ENV_POD_IP) or os.environ.get("POD_IP") or "127.0.0.1"
    identity = PodIdentity(
        namespace=os.environ.get(ENV_NAMESPACE, "default"),
        pod_ip=pod_ip,
        hostname=os.environ.get(ENV_HOSTNAME, ""),
    )
    return PodNetwork(identity, DnsTableReader(os.environ.get(ENV_DNS_TABLE)))


def run_engine(name: str, args: Sequence[str], network: PodNetwork) -> int:
    """Run the relay engine's command line under ``name`` (``relay`` or ``socat``)."""
    try:
        from kubectl_relay.engine import cli  # noqa: PLC0415 - imported after patching
    except ImportError as exc:
        print(f"{name}: the relay engine cannot be imported: {exc}", file=sys.stderr)
        return NOT_FOUND
    sys.argv = [name, *args]  # the engine names itself after argv[0] in its log lines
    return int(cli.main(list(args), loop_factory=loop_factory(network)))


def run_script(name: str, args: Sequence[str]) -> int:
    """Run one of the installed console scripts (``kubectl-relay``, ``relay-operator``...)."""
    found = importlib.metadata.entry_points(group="console_scripts", name=name)
    if not found:
        print(f"sh: {name}: not found", file=sys.stderr)
        return NOT_FOUND
    function = next(iter(found)).load()
    sys.argv = [name, *args]
    return _exit_status(function)


def run_callable(reference: str, args: Sequence[str], network: PodNetwork) -> int:
    """Run ``module:function(args)``; a coroutine function runs on a patched loop."""
    module_name, _, qualname = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    sys.argv = [reference, *args]

    def call() -> Any:
        result = target(list(args))
        if inspect.iscoroutine(result):
            with asyncio.Runner(loop_factory=loop_factory(network)) as runner:
                return runner.run(result)
        return result

    return _exit_status(call)


def _exit_status(function: Callable[[], Any]) -> int:
    """The process exit status for a function run as a program."""
    try:
        result = function()
    except SystemExit as exc:
        result = exc.code
    except KeyboardInterrupt:
        return 130
    if result is None:
        return 0
    if isinstance(result, int):
        return result
    print(result, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Patch the network for the pod, then run the program."""
    parser = argparse.ArgumentParser(prog="podshim", description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--script", help="a command name: relay, socat or a console script")
    which.add_argument("--call", help="module:function, called with the argument list")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    args = list(options.args)
    if args[:1] == ["--"]:
        args = args[1:]
    die_with_the_sandbox()
    network = network_from_env()
    install(network)
    if options.call:
        return run_callable(options.call, args, network)
    name = os.path.basename(options.script)
    if name in ENGINE_NAMES:
        return run_engine(name, args, network)
    return run_script(name, args)


if __name__ == "__main__":
    sys.exit(main())
