"""Decoding the protobuf request bodies of ``kubectl create <generator>``.

kubectl's imperative generators (``create namespace|configmap|secret|deployment|job|service``)
send ``application/vnd.kubernetes.protobuf`` bodies, and client-go does not fall back to JSON
when the server refuses them. The sandbox decodes those few kinds into JSON-shaped dicts: the
envelope is ``k8s\\x00`` + ``runtime.Unknown`` (``typeMeta``, ``raw``), ``raw`` is the object in
the field numbering of ``k8s.io/api``'s ``generated.proto``, written down here as tables (only
the fields the generators fill, and their neighbours). Fields not in a table are skipped, as an
old server skips fields of a newer client. Responses are always JSON (kubectl accepts both).
"""

from __future__ import annotations

import base64
from typing import Any

from .errors import UnsupportedMediaType

MAGIC = b"k8s\x00"

# A field: (name, kind); kinds: "string", "bytes", "int", "bool", "int*" (an optional int
# whose zero is kept), a message name (nested), "map:<value kind>" (a map<string, value>), and
# "[]<kind>" for repeated fields. Go's protobuf writes empty strings and zeros of plain fields;
# JSON omits them (``omitempty``), so the decoder drops them too.
Table = dict[int, tuple[str, str]]

MESSAGES: dict[str, Table] = {
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "raw"),
                3: ("contentEncoding", "string"), 4: ("contentType", "string")},
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "ObjectMeta": {
        1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
        11: ("labels", "map:string"), 12: ("annotations", "map:string"),
        13: ("ownerReferences", "[]OwnerReference"), 14: ("finalizers", "[]string"),
    },
    "OwnerReference": {1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
                       5: ("apiVersion", "string"), 6: ("controller", "bool"),
                       7: ("blockOwnerDeletion", "bool")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "[]string")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map:string"),
                  3: ("binaryData", "map:bytes"), 4: ("immutable", "bool")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "map:bytes"), 3: ("type", "string"),
               4: ("stringData", "map:string"), 5: ("immutable", "bool")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta")},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec")},
    "ServiceSpec": {1: ("ports", "[]ServicePort"), 2: ("selector", "map:string"),
                    3: ("clusterIP", "string"), 4: ("type", "string"),
                    7: ("sessionAffinity", "string"), 11: ("externalName", "string")},
    "ServicePort": {1: ("name", "string"), 2: ("protocol", "string"), 3: ("port", "int"),
                    4: ("targetPort", "IntOrString"), 5: ("nodePort", "int")},
    "IntOrString": {1: ("type", "int"), 2: ("intVal", "int"), 3: ("strVal", "string")},
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec")},
    "DeploymentSpec": {1: ("replicas", "int*"), 2: ("selector", "LabelSelector"),
                       3: ("template", "PodTemplateSpec"), 4: ("strategy", "Strategy")},
    "Strategy": {1: ("type", "string")},
    "Job": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec")},
    "JobSpec": {1: ("parallelism", "int*"), 2: ("completions", "int*"),
                4: ("selector", "LabelSelector"), 6: ("template", "PodTemplateSpec"),
                7: ("backoffLimit", "int*")},
    "LabelSelector": {1: ("matchLabels", "map:string")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {2: ("containers", "[]Container"), 3: ("restartPolicy", "string")},
    "Container": {1: ("name", "string"), 2: ("image", "string"), 3: ("command", "[]string"),
                  4: ("args", "[]string"), 6: ("ports", "[]ContainerPort"),
                  7: ("env", "[]EnvVar"), 8: ("resources", "Resources")},
    "ContainerPort": {1: ("name", "string"), 3: ("containerPort", "int"),
                      4: ("protocol", "string")},
    "EnvVar": {1: ("name", "string"), 2: ("value", "string")},
    "Resources": {},
}

#: The kinds this module can decode (the top-level message of ``raw``).
KINDS = ("Namespace", "ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "Job")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> list[tuple[int, int, Any]]:
    """The raw fields of a message: ``(number, wire type, int or bytes)``."""
    found: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        found.append((number, wire, value))
    return found


def _scalar(kind: str, value: Any) -> Any:
    if kind == "string":
        return bytes(value).decode()
    if kind == "raw":
        return bytes(value)
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode()  # as JSON carries []byte
    if kind == "bool":
        return bool(value)
    if kind in ("int", "int*"):
        return value - (1 << 64) if value >= 1 << 63 else value
    return decode_message(kind, value)


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    """Decode one message of the tables above into a dict."""
    table = MESSAGES[name]
    result: dict[str, Any] = {}
    for number, _, value in fields(data):
        if number not in table:
            continue
        key, kind = table[number]
        if kind.startswith("map:"):
            entry = {n: v for n, _, v in fields(value)}
            result.setdefault(key, {})[_scalar("string", entry.get(1, b""))] = _scalar(
                kind[4:], entry.get(2, b"" if kind[4:] != "int" else 0))
        elif kind.startswith("[]"):
            result.setdefault(key, []).append(_scalar(kind[2:], value))
        else:
            decoded = _scalar(kind, value)
            if kind == "int*" or decoded not in ("", 0, False):
                result[key] = decoded
    if name == "IntOrString":  # as JSON writes it: a bare number or string
        value = result.get("strVal") if result.get("type") == 1 else result.get("intVal", 0)
        return value  # type: ignore[return-value]
    return result


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object it stands for; 415 for unknown kinds."""
    if not body.startswith(MAGIC):
        raise UnsupportedMediaType("the protobuf body lacks the k8s envelope")
    envelope = decode_message("Unknown", body[len(MAGIC):])
    type_meta = envelope.get("typeMeta", {})
    kind = type_meta.get("kind", "")
    if kind not in KINDS:
        raise UnsupportedMediaType(
            f"the sandbox cannot decode protobuf bodies of kind {kind!r} (it decodes "
            f"{', '.join(KINDS)}); send JSON")
    obj = decode_message(kind, envelope.get("raw", b""))
    obj["apiVersion"] = type_meta.get("apiVersion", "")
    obj["kind"] = kind
    return obj
