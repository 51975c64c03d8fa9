"""The cluster's own containerd (never the system one), on runc, with the CRI plugin.

Everything it keeps is under the state directory: its root (images,
snapshots), its state (task state, and the pods' network namespaces, with
``netns_mounts_under_state_dir``), runc's state and its socket. Its
configuration is generated from the settings (``containerd_config``).

Those live on a tmpfs mounted at ``<state>/containerd``: the image store is
re-imported on every ``up`` anyway, and ``down`` then drops it by one
unmount instead of deleting some 40,000 files (28 s on a busy disk here).

Choices, and why:

- ``cgroupfs`` (``SystemdCgroup = false``): the host has cgroup v1 and no
  systemd managing them; the kubelet uses the same driver.
- ``enable_unprivileged_ports``/``_icmp``: containerd 2's defaults, so a
  non-root container may bind ports below 1024 (CoreDNS on 53, a relay on 80)
  without a capability, as on current AKS and kind nodes.
- ``restrict_oom_score_adj``: the sessions on these machines lack
  ``CAP_SYS_RESOURCE``, so runc cannot lower a process's ``oom_score_adj``
  (``nsexec: failed to update /proc/self/oom_score_adj: Permission denied``
  for every sandbox, whose score is -998); containerd then keeps each
  container's score at or above its own.
- ``sandbox_image``: the pause image built here (``images.PAUSE``); no
  registry is configured, and none is reachable.

``stop`` kills every process of the pods (by their cgroups), stops
containerd, kills any shim still bound to its socket (the shims run in
sessions of their own, so they outlive containerd), unmounts everything under
its directories and removes them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

from e2e.localcluster import hostcleanup, network
from e2e.localcluster.component import ComponentError, DaemonComponent
from e2e.localcluster.images import PAUSE
from e2e.localcluster.kubelet import cgroup_root
from e2e.localcluster.settings import ClusterSettings

CONTAINERD = "/usr/bin/containerd"

#: The upper bound of the tmpfs that holds containerd's root and state (pages are
#: only used as images and containers fill it: about 1 GiB for the images here).
TMPFS_SIZE = "8g"

#: containerd 1.6 puts its shims' sockets (``s/``) here whatever its state directory
#: is, and ``ctr`` its fifos: removed on stop when empty (a system containerd keeps
#: its own files there, which an empty-only removal never touches).
SHARED_RUN_DIR = Path("/run/containerd")
CTR = "/usr/bin/ctr"
SHIM = "containerd-shim-runc-v2"


def containerd_dir(settings: ClusterSettings) -> Path:
    """The parent of containerd's root, state, socket and configuration."""
    return settings.containerd_root.parent


def config_path(settings: ClusterSettings) -> Path:
    """containerd's generated configuration file."""
    return settings.config_dir / "containerd.toml"


def runc_root(settings: ClusterSettings) -> Path:
    """runc's state directory (``runc --root``), instead of /run/containerd/runc."""
    return containerd_dir(settings) / "runc"


def _toml(value: str | bool | int | list[str]) -> str:
    """A TOML value; JSON's string and array syntax is TOML's for these."""
    return json.dumps(value)


def containerd_config(settings: ClusterSettings) -> str:
    """containerd 1.6's configuration (version 2) for ``settings``."""
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    values: dict[str, str | int] = {
        "version": 2,
        "root": str(settings.containerd_root),
        "state": str(settings.containerd_state),
    }
    lines = [f"{key} = {_toml(value)}" for key, value in values.items()]
    lines += [
        # Snapshotters this host cannot use only log errors at every start.
        "disabled_plugins = "
        + _toml(
            [
                "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs",
                "io.containerd.tracing.processor.v1.otlp",
                "io.containerd.internal.v1.tracing",
            ]
        ),
        "",
        "[grpc]",
        f"  address = {_toml(str(settings.containerd_socket))}",
        "",
        "[plugins]",
        # Its default is /opt/containerd, outside the state directory.
        '  [plugins."io.containerd.internal.v1.opt"]',
        f"    path = {_toml(str(containerd_dir(settings) / 'opt'))}",
        f"  {cri}]",
        f"    sandbox_image = {_toml(PAUSE.reference)}",
        "    enable_unprivileged_ports = true",
        "    enable_unprivileged_icmp = true",
        "    netns_mounts_under_state_dir = true",
        "    disable_apparmor = true",
        # No CAP_SYS_RESOURCE here: a negative oom_score_adj (the sandboxes' -998) cannot
        # be set, so containerd raises every container's to at least its own.
        "    restrict_oom_score_adj = true",
        '    stream_server_address = "127.0.0.1"',
        '    stream_server_port = "0"',
        f"    {cri}.cni]",
        f"      bin_dir = {_toml(str(network.CNI_BIN_DIR))}",
        f"      conf_dir = {_toml(str(network.cni_config_dir(settings)))}",
        "      max_conf_num = 1",
        f"    {cri}.containerd]",
        '      snapshotter = "overlayfs"',
        '      default_runtime_name = "runc"',
        f"      {cri}.containerd.runtimes.runc]",
        '        runtime_type = "io.containerd.runc.v2"',
        f"        {cri}.containerd.runtimes.runc.options]",
        "          SystemdCgroup = false",
        f"          Root = {_toml(str(runc_root(settings)))}",
        "",
    ]
    return "\n".join(lines)


class Containerd(DaemonComponent):
    """The containerd daemon of the cluster."""

    name = "containerd"
    ready_timeout = 30.0
    stop_timeout = 10.0

    def argv(self) -> list[str]:
        return [CONTAINERD, "--config", str(config_path(self.settings))]

    def prepare(self) -> None:
        """Write the configuration; mount the tmpfs; make the directories."""
        self.settings.config_dir.mkdir(parents=True, exist_ok=True)
        config_path(self.settings).write_text(containerd_config(self.settings))
        directory = containerd_dir(self.settings)
        directory.mkdir(parents=True, exist_ok=True, mode=0o711)
        if not hostcleanup.mounts_under([directory]):
            subprocess.run(
                [
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={TMPFS_SIZE},mode=0711",
                    "tmpfs",
                    str(directory),
                ],
                check=True,
                capture_output=True,
            )
        for directory in (self.settings.containerd_root, self.settings.containerd_state):
            directory.mkdir(parents=True, exist_ok=True, mode=0o711)

    def ctr(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this containerd (not checked: the caller reads the result)."""
        command = [CTR, "--address", str(self.settings.containerd_socket)]
        return subprocess.run(
            [*command, *arguments], capture_output=True, text=True, check=False, timeout=10
        )

    def ready(self) -> bool:
        """containerd answers, and its CRI plugin loaded."""
        self.check_alive()
        if not self.settings.containerd_socket.exists():
            return False
        plugins = self.ctr("plugins", "list")
        if plugins.returncode != 0:
            return False
        for line in plugins.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] == "io.containerd.grpc.v1" and fields[1] == "cri":
                if fields[-1] != "ok":
                    raise ComponentError(
                        self.name, f"its CRI plugin did not load: {line}", self.daemon.log_tail()
                    )
                return True
        return False

    def stop(self) -> None:
        """Kill the pods' processes, stop containerd, then remove what it and runc left.

        The processes go by their cgroups (the kubelet's ``cgroupRoot``), not task by
        task through containerd: with the kubelet gone, each ``ctr tasks delete``
        waits out the shim's cleanup timeouts (80 s for four tasks).
        """
        hostcleanup.kill_pids(
            hostcleanup.pids_in_cgroups(hostcleanup.cgroup_directories(cgroup_root(self.settings)))
        )
        self.daemon.stop(self.stop_timeout)
        self.cleanup()

    def cleanup(self) -> None:
        """Leftover shims killed, the pods' cgroups removed (see ``kubelet.cgroup_root``),
        mounts unmounted, containerd's directories removed."""
        socket = str(self.settings.containerd_socket)
        hostcleanup.kill_pids(hostcleanup.pids_with_argument(SHIM, socket))
        self._remove_shim_sockets()
        directory = containerd_dir(self.settings)
        problems = hostcleanup.remove_cgroups(
            hostcleanup.cgroup_directories(cgroup_root(self.settings))
        )
        problems += hostcleanup.unmount_under([directory])
        if problems:
            raise ComponentError(self.name, "; ".join(problems))
        with contextlib.suppress(FileNotFoundError):
            hostcleanup.remove_tree(directory)
        config_path(self.settings).unlink(missing_ok=True)
        hostcleanup.remove_empty_directories(SHARED_RUN_DIR)

    def _remove_shim_sockets(self) -> None:
        """The sockets of this containerd's shims in ``SHARED_RUN_DIR``: a killed shim leaves
        its socket there. Each task's bundle names its shim's socket in ``address``."""
        tasks = self.settings.containerd_state / "io.containerd.runtime.v2.task"
        for address in tasks.glob("*/*/address"):
            with contextlib.suppress(OSError):
                path = Path(address.read_text().strip().removeprefix("unix://"))
                if path.is_relative_to(SHARED_RUN_DIR) and path.is_socket():
                    path.unlink()
