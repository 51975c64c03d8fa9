"""Services: cluster IPs, node ports, Endpoints from ready pods, DNS records and proxy listeners.

For each Service, the controller

- allocates ``spec.clusterIP`` from the Service block (``ipam``) unless it is
  headless (``None``) or an ExternalName, and node ports for NodePort and
  LoadBalancer Services (a LoadBalancer's ``status.loadBalancer.ingress`` is
  its cluster IP, which the host can reach);
- writes the ``Endpoints`` object of a Service with a selector: ready pods in
  ``addresses``, running but unready ones in ``notReadyAddresses``, one subset
  per distinct port set (``targetPort`` by number or by container port name);
- publishes ``<svc>.<ns>.svc.cluster.local`` in the DNS table (the cluster IP,
  or the ready pods' IPs for a headless Service);
- asks the proxy to listen on the cluster IP for each port.

Endpoints of a Service without selector are left to their owner, as in a
real cluster; the proxy and the DNS use them all the same.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .controller import ClusterContext, Controller
from .dns import DnsTableFile
from .informer import Key
from .ipam import AddressPool, PortPool
from .objects import (
    Body,
    is_terminating,
    labels_of,
    map_selector_matches,
    meta,
    namespace_of,
    pod_is_ready,
)
from .proxy import PortKey, ServiceProxy


def _target_port(pod: Body, target: Any) -> int | None:
    """The pod's port for a Service port's ``targetPort`` (a number or a container port name)."""
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def endpoint_subsets(service: Body, pods: list[Body]) -> list[dict[str, Any]]:
    """The ``subsets`` of a Service's Endpoints for these pods (pure)."""
    spec = service.get("spec") or {}
    groups: dict[tuple[tuple[str, int, str], ...], dict[str, list[dict[str, Any]]]] = {}
    for pod in sorted(pods, key=lambda p: str((p.get("status") or {}).get("podIP"))):
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or is_terminating(pod) or status.get("phase") in ("Succeeded", "Failed"):
            continue
        ports: list[tuple[str, int, str]] = []
        for port in spec.get("ports") or []:
            number = _target_port(pod, port.get("targetPort", port.get("port")))
            if number is not None:
                ports.append((str(port.get("name", "")), number, str(port.get("protocol", "TCP"))))
        if not ports:
            continue
        address = {
            "ip": ip,
            "nodeName": (pod.get("spec") or {}).get("nodeName") or "sandbox-node",
            "targetRef": {
                "kind": "Pod",
                "name": meta(pod)["name"],
                "namespace": meta(pod).get("namespace"),
                "uid": meta(pod).get("uid"),
            },
        }
        port_set = tuple(ports)
        bucket = groups.setdefault(port_set, {"addresses": [], "notReadyAddresses": []})
        bucket["addresses" if pod_is_ready(pod) else "notReadyAddresses"].append(address)
    subsets = []
    for port_set, bucket in groups.items():
        subset: dict[str, Any] = {k: v for k, v in bucket.items() if v}
        subset["ports"] = [
            {**({"name": name} if name else {}), "port": number, "protocol": protocol}
            for name, number, protocol in port_set
        ]
        subsets.append(subset)
    return subsets


def ready_backends(endpoints: Body | None, port_name: str) -> list[tuple[str, int]]:
    """(ip, port) of the ready addresses of an Endpoints object for one Service port name."""
    backends: list[tuple[str, int]] = []
    for subset in (endpoints or {}).get("subsets") or []:
        ports = subset.get("ports") or []
        match = [p for p in ports if p.get("name", "") == port_name]
        if not match and len(ports) == 1 and not port_name:
            match = ports
        for port in match:
            for address in subset.get("addresses") or []:
                backends.append((str(address["ip"]), int(port["port"])))
    return backends


class ServiceController(Controller):
    """Cluster IPs, Endpoints, DNS and proxy listeners of every Service."""

    name = "service-controller"

    def __init__(self, ctx: ClusterContext, *, dns: DnsTableFile) -> None:
        super().__init__(ctx)
        self.dns = dns
        self.cluster_ips = AddressPool(ctx.networks.services)
        self.node_ports = PortPool()
        self.services = ctx.informers.get("v1", "services")
        self.pods = ctx.informers.get("v1", "pods")
        self.endpoints = ctx.informers.get("v1", "endpoints")
        self.proxy = ServiceProxy(self._backends)
        self._known: dict[Key, Body] = {}
        self.services.add_handler(self.enqueue)
        self.pods.add_handler(self._on_pod)
        self.endpoints.add_handler(self._on_endpoints)

    async def stop(self) -> None:
        await super().stop()
        await self.proxy.stop()

    def _backends(self, namespace: str, service: str, port_name: str) -> list[tuple[str, int]]:
        return ready_backends(self.endpoints.get(namespace, service), port_name)

    def _on_pod(self, kind: str, pod: Body) -> None:
        # A pod can enter or leave any Service of its namespace (labels change): look at
        # every Service there; namespaces in the sandbox are small.
        namespace = namespace_of(pod)
        for service in self.services.items(namespace):
            selector = (service.get("spec") or {}).get("selector")
            if selector:
                self.queue.add((namespace, meta(service)["name"]))

    def _on_endpoints(self, kind: str, endpoints: Body) -> None:
        key = (namespace_of(endpoints), meta(endpoints)["name"])
        if self.services.get(*key) is not None:
            self.queue.add(key)

    async def reconcile(self, key: Key) -> float | None:
        namespace, name = key
        service = self.services.get(namespace, name)
        if service is None:
            await self._forget(key)
            return None
        service = await self._allocate(service)
        self._known[key] = service
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName":
            self.dns.set_service(namespace, name, [], cname=spec.get("externalName"))
            await self.proxy.sync(namespace, name, [])
            return None
        if spec.get("selector"):
            await self._write_endpoints(service)
        cluster_ip = spec.get("clusterIP")
        if cluster_ip == "None":
            ips = sorted(self._ready_ips(namespace, name))
            self.dns.set_service(namespace, name, ips)
            await self.proxy.sync(namespace, name, [])
            return None
        self.dns.set_service(namespace, name, [cluster_ip] if cluster_ip else [])
        keys = []
        for port in spec.get("ports") or []:
            port_name = str(port.get("name", ""))
            protocol = str(port.get("protocol", "TCP"))
            if cluster_ip:
                keys.append(
                    PortKey(namespace, name, port_name, protocol, cluster_ip, int(port["port"]))
                )
            if port.get("nodePort"):
                keys.append(
                    PortKey(
                        namespace,
                        name,
                        port_name,
                        protocol,
                        self.ctx.networks.node_ip,
                        int(port["nodePort"]),
                    )
                )
        await self.proxy.sync(namespace, name, keys)
        return None

    def _ready_ips(self, namespace: str, name: str) -> set[str]:
        endpoints = self.endpoints.get(namespace, name) or {}
        return {
            str(a["ip"])
            for subset in endpoints.get("subsets") or []
            for a in subset.get("addresses") or []
        }

    async def _allocate(self, service: Body) -> Body:
        """Give the Service its cluster IP, node ports and load-balancer status."""
        spec = service.get("spec") or {}
        namespace, name = namespace_of(service), meta(service)["name"]
        patch: dict[str, Any] = {}
        kind = spec.get("type", "ClusterIP")
        cluster_ip = spec.get("clusterIP")
        if kind != "ExternalName" and cluster_ip != "None":
            if not cluster_ip:
                cluster_ip = self.cluster_ips.allocate()
                patch["clusterIP"] = cluster_ip
                patch["clusterIPs"] = [cluster_ip]
            elif cluster_ip not in self.cluster_ips:
                # Outside the sandbox's block: keep it as given (nothing listens there).
                with contextlib.suppress(ValueError):
                    self.cluster_ips.allocate(cluster_ip)
            if not spec.get("ipFamilies"):
                patch["ipFamilies"] = ["IPv4"]
                patch["ipFamilyPolicy"] = "SingleStack"
        if kind in ("NodePort", "LoadBalancer"):
            ports = [dict(p) for p in spec.get("ports") or []]
            changed = False
            for port in ports:
                if not port.get("nodePort"):
                    port["nodePort"] = self.node_ports.allocate()
                    changed = True
                else:
                    with contextlib.suppress(ValueError):
                        self.node_ports.allocate(int(port["nodePort"]))
            if changed:
                patch["ports"] = ports
        if patch:
            service = await self.store.patch(
                "v1", "services", namespace, name, {"spec": patch}, patch_type="merge"
            )
        if kind == "LoadBalancer" and cluster_ip:
            ingress = [{"ip": cluster_ip, "ipMode": "VIP"}]
            if ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") != ingress:
                service = await self.store.patch(
                    "v1",
                    "services",
                    namespace,
                    name,
                    {"status": {"loadBalancer": {"ingress": ingress}}},
                    patch_type="merge",
                    subresource="status",
                )
        return service

    async def _write_endpoints(self, service: Body) -> None:
        namespace, name = namespace_of(service), meta(service)["name"]
        selector = (service.get("spec") or {}).get("selector") or {}
        pods = [
            p for p in self.pods.items(namespace) if map_selector_matches(selector, labels_of(p))
        ]
        subsets = endpoint_subsets(service, pods)
        current = self.endpoints.get(namespace, name)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace, "labels": labels_of(service)},
            "subsets": subsets,
        }
        if current is None:
            created = await self.store.create("v1", "endpoints", namespace, body)
            self.endpoints.cache[(namespace, name)] = created  # seen before the watch says so
        elif (current.get("subsets") or []) != subsets:
            body["metadata"]["resourceVersion"] = meta(current).get("resourceVersion")
            updated = await self.store.replace("v1", "endpoints", namespace, name, body)
            self.endpoints.cache[(namespace, name)] = updated

    async def _forget(self, key: Key) -> None:
        namespace, name = key
        old = self._known.pop(key, None)
        self.dns.remove_service(namespace, name)
        await self.proxy.sync(namespace, name, [])
        if old is not None:
            spec = old.get("spec") or {}
            self.cluster_ips.release(spec.get("clusterIP"))
            for port in spec.get("ports") or []:
                self.node_ports.release(port.get("nodePort"))
            if spec.get("selector") and self.endpoints.get(namespace, name) is not None:
                await self.store.delete("v1", "endpoints", namespace, name)
