"""``python -m e2e.localcluster build|up|down|status`` (what ``./dev cluster`` runs).

build   compile the pinned release's components (and images) into the cache
up      build if needed, start the cluster in the background, print
        ``export KUBECONFIG=...`` (``--keep-on-failure``: leave a failed
        start as it is, to look into; ``down`` removes it)
down    stop everything and remove what ``up`` made (safe twice, and after a crash)
status  each component's state
env     the ``export KUBECONFIG=... PATH=...`` line of ``up``, for ``eval`` in scripts
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator

from e2e.localcluster import build as building
from e2e.localcluster import cluster
from e2e.localcluster.component import ClusterError, ComponentError
from e2e.localcluster.settings import ClusterSettings


def _say(line: str) -> None:
    print(line, flush=True)


@contextlib.contextmanager
def _exclusive(settings: ClusterSettings) -> Iterator[None]:
    """One ``up``/``down`` at a time per state directory."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClusterError(
                f"another `up` or `down` runs on {settings.state_dir}; wait for it"
            ) from None
        yield


def _require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise ClusterError(
            f"{command} needs root (network namespaces, mounts, iptables, containerd): "
            "run it as root or with sudo"
        )


def _export_line(settings: ClusterSettings) -> str:
    return f"export KUBECONFIG={settings.admin_kubeconfig} PATH={settings.bin_dir}:$PATH"


def command_build(settings: ClusterSettings) -> None:
    """``build``: every build step, each cached on its own."""
    elapsed = building.build(settings, _say)
    _say(f"build done in {elapsed:.1f}s")


def _components_state(settings: ClusterSettings) -> list[tuple[str, str]]:
    """(name, "ready" / "not ready" / why it is down) of every component."""
    states = []
    for component in cluster.build_components(settings):
        try:
            state = "ready" if component.ready() else "not ready"
        except ComponentError as exc:
            state = exc.reason
        except Exception as exc:
            state = f"unknown ({exc})"
        states.append((component.name, state))
    return states


def command_up(settings: ClusterSettings, keep_on_failure: bool = False) -> None:
    """``up``: build if needed; unless every component is ready, clean up and start them."""
    _require_root("up")
    began = time.monotonic()
    building.build(settings, _say)
    with _exclusive(settings):
        states = _components_state(settings)
        if states and all(state == "ready" for _, state in states):
            _say("the cluster is already up")
        else:
            # Whatever a crashed or interrupted run left is removed first:
            # `down` is safe on any state.
            cluster.down(settings, lambda _line: None)
            _say(f"up: starting the cluster (state in {settings.state_dir}) ...")
            cluster.up(settings, _say, keep_on_failure=keep_on_failure)
            _say(f"up: the cluster runs ({time.monotonic() - began:.1f}s in all)")
    _say(_export_line(settings))


def command_down(settings: ClusterSettings) -> None:
    """``down``: stop every component, in reverse order, whatever its state."""
    _require_root("down")
    with _exclusive(settings):
        _say("down: stopping the cluster ...")
        elapsed = cluster.down(settings, _say)
    _say(f"down: done ({elapsed:.1f}s)")


def command_status(settings: ClusterSettings) -> None:
    """``status``: one line per component; the ``export`` line when all are ready."""
    states = _components_state(settings)
    width = max((len(name) for name, _ in states), default=0)
    for name, state in states:
        _say(f"{name:<{width}}  {state}")
    if states and all(state == "ready" for _, state in states):
        _say(_export_line(settings))


def command_env(settings: ClusterSettings) -> None:
    """``env``: the admin kubeconfig and the release's kubectl, as ``export`` for ``eval``."""
    _say(_export_line(settings))


COMMANDS = {
    "build": command_build,
    "env": command_env,
    "up": command_up,
    "down": command_down,
    "status": command_status,
}


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (1 with one message when a step fails)."""
    parser = argparse.ArgumentParser(
        prog="./dev cluster",
        description="A real single-node Kubernetes cluster on this machine, built from source.",
    )
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to do")
    parser.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="up: when a component fails, leave what started running to look into",
    )
    args = parser.parse_args(argv)
    settings = ClusterSettings.from_environment()
    try:
        if args.command == "up":
            command_up(settings, keep_on_failure=args.keep_on_failure)
        else:
            COMMANDS[args.command](settings)
    except ClusterError as exc:
        print(f"{args.command} failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.command} interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
