"""The SocatTunnel as the API server (or kopf) hands it over: its raw bodies' types.

What ``parse_spec`` (``spec.py``) checks and resolves. The field names are the CRD's
(``manifests/crd/socattunnels.yaml``).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

# Not "Off": YAML 1.1 (kubectl's and PyYAML's) reads an unquoted Off as false.
Tracing = Literal["Disabled", "Text", "Hex", "TextAndHex"]
SessionLogs = Literal["Notices", "Errors"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
Effect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
TolerationOperator = Literal["Exists", "Equal"]


class SecretRefBody(TypedDict):
    secretName: str
    key: NotRequired[str]


class TLSSideBody(TypedDict, total=False):
    certificate: SecretRefBody
    ca: SecretRefBody


class TLSBody(TypedDict, total=False):
    listen: TLSSideBody
    connect: TLSSideBody


class ServiceBody(TypedDict, total=False):
    type: ServiceType
    port: int
    nodePort: int
    annotations: dict[str, str]


class ResourcesBody(TypedDict, total=False):
    requests: dict[str, str | int]
    limits: dict[str, str | int]


class TolerationBody(TypedDict, total=False):
    key: str
    operator: TolerationOperator
    value: str
    effect: Effect
    tolerationSeconds: int


class PodBody(TypedDict, total=False):
    resources: ResourcesBody
    nodeSelector: dict[str, str]
    tolerations: list[TolerationBody]
    labels: dict[str, str]
    annotations: dict[str, str]


class TunnelSpecBody(TypedDict):
    listen: str
    connect: str
    tracing: NotRequired[Tracing]
    sessionLogs: NotRequired[SessionLogs]
    closeTimeoutSeconds: NotRequired[int]
    replicas: NotRequired[int]
    service: NotRequired[ServiceBody]
    tls: NotRequired[TLSBody]
    allowedSources: NotRequired[list[str]]
    ttl: NotRequired[str]
    pod: NotRequired[PodBody]


class MetadataBody(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    generation: int
    resourceVersion: str
    creationTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]


class TunnelBody(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: MetadataBody
    spec: TunnelSpecBody
