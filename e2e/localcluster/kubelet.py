"""The kubelet: registers the node and runs its pods on the cluster's containerd.

Its ``KubeletConfiguration`` is generated from the settings
(``kubelet_config``). Choices, and why:

- ``cgroupDriver: cgroupfs`` under ``cgroupRoot: /kubectl-relay-<hash>``: the host
  has cgroup v1 without systemd; every cgroup of the pods is under one
  directory per hierarchy, which ``stop`` removes.
- Authentication by client certificate of the cluster CA, else by webhook
  (TokenReview); authorization by webhook (SubjectAccessReview); anonymous
  requests refused: the API server's calls (logs, exec, port-forward) carry
  ``apiserver-kubelet-client``'s certificate.
- No image garbage collection (``imageGCHighThresholdPercent: 100``): the
  images are imported, not pulled, so one collected could never come back;
  eviction thresholds low enough that a busy disk does not evict the tests.
- ``resolvConf: ""``: the pods' resolv.conf names the cluster DNS and the
  cluster's search domains only, nothing of the host's.
- Everything it writes is under the state directory (root, certificates, pod
  logs, volume plugins), except the sysctls it sets on the host when it starts
  (``vm.overcommit_memory``, ``kernel.panic``...): their earlier values are
  saved and restored on ``stop``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import yaml

from e2e.localcluster import hostcleanup
from e2e.localcluster.component import ComponentError, DaemonComponent, https_get
from e2e.localcluster.pki import PkiPaths
from e2e.localcluster.settings import ClusterSettings


def cgroup_root(settings: ClusterSettings) -> str:
    """The cgroup (in every hierarchy) that holds every pod's cgroups: one per state
    directory, so that stopping one cluster never touches another's pods."""
    digest = hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:8]
    return f"kubectl-relay-{digest}"


#: The kubelet's health endpoint (on loopback).
HEALTHZ_PORT = 10248

#: Paths the kubelet writes whatever its flags say: symlinks to the containers' logs,
#: and the device plugins' registration socket and checkpoint.
CONTAINER_LOG_LINKS = Path("/var/log/containers")
DEVICE_PLUGINS_DIR = Path("/var/lib/kubelet/device-plugins")
DEVICE_PLUGINS_FILES = ("kubelet.sock", "kubelet_internal_checkpoint")

#: Sysctls the kubelet sets on the host at start (``setupKernelTunables``).
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


def config_path(settings: ClusterSettings) -> Path:
    """The generated ``KubeletConfiguration``."""
    return settings.config_dir / "kubelet.yaml"


def pod_logs_dir(settings: ClusterSettings) -> Path:
    """Containers' logs (``podLogsDir``), instead of /var/log/pods."""
    return settings.state_dir / "pod-logs"


def _saved_tunables_path(settings: ClusterSettings) -> Path:
    return settings.run_dir / "kubelet-host-sysctls.json"


def kubelet_config(settings: ClusterSettings) -> dict[str, object]:
    """The ``KubeletConfiguration`` document for ``settings``."""
    pki = PkiPaths(settings.pki_dir)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": settings.bridge_address,
        "port": settings.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": HEALTHZ_PORT,
        "tlsCertFile": str(pki.cert("kubelet-serving")),
        "tlsPrivateKeyFile": str(pki.key("kubelet-serving")),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "30s"},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{settings.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root(settings)}",
        "failSwapOn": False,
        "clusterDNS": [settings.cluster_dns_ip],
        "clusterDomain": settings.cluster_domain,
        "resolvConf": "",
        "podLogsDir": str(pod_logs_dir(settings)),
        "volumePluginDir": str(settings.kubelet_dir / "volume-plugins"),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%",
        },
        "protectKernelDefaults": False,
        "serializeImagePulls": False,
        "staticPodPath": "",
    }


def kubelet_flags(settings: ClusterSettings) -> list[str]:
    """What the kubelet takes only as flags (its identity and directories)."""
    return [
        f"--config={config_path(settings)}",
        f"--kubeconfig={settings.kubeconfig('kubelet')}",
        f"--node-ip={settings.bridge_address}",
        f"--hostname-override={settings.node_name}",
        f"--root-dir={settings.kubelet_dir}",
        f"--cert-dir={settings.kubelet_dir / 'pki'}",
    ]


class Kubelet(DaemonComponent):
    """The kubelet daemon; ready when it answers healthz and the node is Ready."""

    name = "kubelet"
    ready_timeout = 120.0
    stop_timeout = 20.0

    def argv(self) -> list[str]:
        return [str(self.settings.binary("kubelet")), *kubelet_flags(self.settings)]

    def prepare(self) -> None:
        """Write the configuration, save the host's kernel tunables, make the cgroups."""
        self.settings.config_dir.mkdir(parents=True, exist_ok=True)
        config_path(self.settings).write_text(
            yaml.safe_dump(kubelet_config(self.settings), sort_keys=False)
        )
        saved = _saved_tunables_path(self.settings)
        if not saved.exists():
            saved.parent.mkdir(parents=True, exist_ok=True)
            values = {
                name: (Path("/proc/sys") / name).read_text().strip() for name in KERNEL_TUNABLES
            }
            saved.write_text(json.dumps(values, indent=2) + "\n")
        for hierarchy in sorted(hostcleanup.CGROUP_MOUNT.iterdir()):
            (hierarchy / cgroup_root(self.settings)).mkdir(exist_ok=True)
        self.settings.kubelet_dir.mkdir(parents=True, exist_ok=True)

    def ready(self) -> bool:
        """The API server shows the node Ready (the runtime and the CNI network are ready)."""
        self.check_alive()
        return self.node_ready()

    def node_ready(self) -> bool:
        """Whether the node's Ready condition is True (asked as the admin)."""
        pki = PkiPaths(self.settings.pki_dir)
        status, body = https_get(
            f"{self.settings.apiserver_url}/api/v1/nodes/{self.settings.node_name}",
            ca_file=pki.ca_cert,
            client_cert=(pki.cert("admin"), pki.key("admin")),
        )
        if status != 200:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def cleanup(self) -> None:
        """Kill the pods (their cgroups), unmount their volumes, restore the host's sysctls.

        The pods go with the kubelet that ran them: every process in the cgroups
        under ``cgroup_root`` is killed, so no volume stays busy. The cgroups
        themselves go with containerd (``containerd.Containerd.cleanup``): its
        shims reap the killed processes, and a cgroup stays busy until then.
        """
        hostcleanup.kill_pids(
            hostcleanup.pids_in_cgroups(hostcleanup.cgroup_directories(cgroup_root(self.settings)))
        )
        problems = hostcleanup.unmount_under([self.settings.kubelet_dir])
        if problems:
            raise ComponentError(self.name, "; ".join(problems))
        saved = _saved_tunables_path(self.settings)
        with contextlib.suppress(OSError, ValueError):
            for name, value in json.loads(saved.read_text()).items():
                (Path("/proc/sys") / name).write_text(value)
            saved.unlink()
        self._remove_fixed_paths()
        for directory in (self.settings.kubelet_dir, pod_logs_dir(self.settings)):
            with contextlib.suppress(FileNotFoundError):
                hostcleanup.remove_tree(directory)
        config_path(self.settings).unlink(missing_ok=True)

    def _remove_fixed_paths(self) -> None:
        """The kubelet's files outside the state directory (see ``CONTAINER_LOG_LINKS``)."""
        logs = pod_logs_dir(self.settings)
        if CONTAINER_LOG_LINKS.is_dir():
            for link in CONTAINER_LOG_LINKS.iterdir():
                if link.is_symlink() and Path(os.readlink(link)).is_relative_to(logs):
                    link.unlink()
            hostcleanup.remove_empty_directories(CONTAINER_LOG_LINKS)
        for name in DEVICE_PLUGINS_FILES:
            (DEVICE_PLUGINS_DIR / name).unlink(missing_ok=True)
        hostcleanup.remove_empty_directories(DEVICE_PLUGINS_DIR.parent)
