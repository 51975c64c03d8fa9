"""The whole sandbox cluster on one Store: informers, kubelet, controllers, DNS and proxy."""

from __future__ import annotations

import contextlib
import logging
import platform
import uuid
from pathlib import Path

from ..api.errors import Conflict
from .controller import ClusterContext
from .deployments import DeploymentController
from .dns import DnsTableFile
from .events import EventRecorder
from .images import ImageRegistry, write_wrappers
from .informer import Informers, StoreLike
from .ipam import Networks, claim_networks
from .jobs import JobController
from .kubelet import Kubelet
from .objects import now
from .replicasets import ReplicaSetController
from .services import ServiceController
from .settings import ClusterSettings
from .workloads import ECHO_IMAGE, HTTP_IMAGE, TOOLBOX_IMAGE, echo, http, toolbox

log = logging.getLogger("sandbox.cluster")


class Cluster:
    """Runs pods and the built-in controllers against a Store, in the Store's event loop."""

    def __init__(
        self,
        store: StoreLike,
        *,
        workdir: Path,
        settings: ClusterSettings | None = None,
        kubeconfig: str | None = None,
    ) -> None:
        self.store = store
        self.workdir = workdir
        self.settings = settings or ClusterSettings()
        self.images = ImageRegistry(self.settings.relay_image_patterns)
        self.images.register(ECHO_IMAGE, echo)
        self.images.register(HTTP_IMAGE, http)
        self.images.register(TOOLBOX_IMAGE, toolbox)
        self._kubeconfig = kubeconfig
        self._started = False
        self.networks: Networks | None = None

    async def start(self) -> None:
        """Create the node, start informers, kubelet and controllers; wait until they synced."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_wrappers(str(self.workdir / "bin"))
        self.networks = claim_networks(self.settings.address_block)
        self.ctx = ClusterContext(
            self.store,
            Informers(self.store),
            self.settings,
            EventRecorder(self.store, host=self.settings.node_name),
            self.networks,
        )
        self.dns = DnsTableFile(self.workdir / "dns.json")
        self.kubelet = Kubelet(
            self.ctx,
            images=self.images,
            dns=self.dns,
            workdir=self.workdir,
            kubeconfig=self._kubeconfig,
        )
        self.services = ServiceController(self.ctx, dns=self.dns)
        self.controllers = [
            ReplicaSetController(self.ctx),
            DeploymentController(self.ctx),
            JobController(self.ctx),
            self.services,
        ]
        self._started = True
        self.ctx.events.start()
        await self._register_node()
        await self.ctx.informers.start()
        for controller in self.controllers:
            controller.start()

    async def stop(self) -> None:
        """Stop the controllers, every pod's processes, the proxy and the informers.

        Safe after a failed or partial ``start``.
        """
        if self._started:
            self._started = False
            for controller in self.controllers:
                await controller.stop()
            await self.kubelet.stop()
            await self.ctx.informers.stop()
            await self.ctx.events.stop()
        if self.networks is not None:
            self.networks.release()
            self.networks = None

    async def _register_node(self) -> None:
        stamp = now()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.settings.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.settings.node_name,
                    "kubernetes.io/os": "linux",
                    "node-role.kubernetes.io/control-plane": "",
                },
            },
            "spec": {},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": self.ctx.networks.node_ip},
                    {"type": "Hostname", "address": self.settings.node_name},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": stamp,
                        "lastTransitionTime": stamp,
                    }
                ],
                "nodeInfo": {
                    "architecture": platform.machine().replace("x86_64", "amd64"),
                    "bootID": str(uuid.uuid4()),
                    "containerRuntimeVersion": "sandbox://local-processes",
                    "kernelVersion": platform.release(),
                    "kubeProxyVersion": "v1.32.0-sandbox",
                    "kubeletVersion": "v1.32.0-sandbox",
                    "machineID": uuid.uuid4().hex,
                    "operatingSystem": "linux",
                    "osImage": "kubectl-relay sandbox",
                    "systemUUID": str(uuid.uuid4()),
                },
                "capacity": {"cpu": "8", "memory": "16Gi", "pods": "250"},
                "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "250"},
            },
        }
        status = node.pop("status")
        with contextlib.suppress(Conflict):
            await self.store.create("v1", "nodes", None, node)
        # Status is a subresource: a create ignores it, as the real server does.
        await self.store.patch(
            "v1",
            "nodes",
            None,
            self.settings.node_name,
            {"status": status},
            patch_type="merge",
            subresource="status",
        )
