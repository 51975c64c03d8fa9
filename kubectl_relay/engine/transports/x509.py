"""The parts of a peer's X.509 certificate that socat logs, checks and exports.

``ssl`` decodes only certificates it has verified, but socat names the
subject of a certificate that failed verification too, and exports subject
fields to EXEC children with ``verify=0``: so the few DER structures needed
(names, subjectAltName) are read here directly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterator

# X.509 name attributes: OID -> (OpenSSL short name, long name).
ATTRIBUTES = {
    "2.5.4.3": ("CN", "commonName"),
    "2.5.4.4": ("SN", "surname"),
    "2.5.4.5": ("serialNumber", "serialNumber"),
    "2.5.4.6": ("C", "countryName"),
    "2.5.4.7": ("L", "localityName"),
    "2.5.4.8": ("ST", "stateOrProvinceName"),
    "2.5.4.9": ("street", "streetAddress"),
    "2.5.4.10": ("O", "organizationName"),
    "2.5.4.11": ("OU", "organizationalUnitName"),
    "2.5.4.12": ("title", "title"),
    "2.5.4.42": ("GN", "givenName"),
    "2.5.4.97": ("organizationIdentifier", "organizationIdentifier"),
    "1.2.840.113549.1.9.1": ("emailAddress", "emailAddress"),
    "0.9.2342.19200300.100.1.1": ("UID", "userId"),
    "0.9.2342.19200300.100.1.25": ("DC", "domainComponent"),
}
_STRING_CODECS = {0x0C: "utf-8", 0x12: "ascii", 0x13: "ascii", 0x14: "latin-1", 0x16: "ascii"}
_STRING_CODECS |= {0x1A: "ascii", 0x1C: "utf-32-be", 0x1E: "utf-16-be"}
_SUBJECT_ALT_NAME = "2.5.29.17"

Name = tuple[tuple[tuple[str, str], ...], ...]


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """One DER element at ``pos``: (tag, start of content, end of content)."""
    tag, length, pos = der[pos], der[pos + 1], pos + 2
    if length & 0x80:
        size = length & 0x7F
        length, pos = int.from_bytes(der[pos : pos + size], "big"), pos + size
    return tag, pos, pos + length


def _children(der: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    while start < end:
        element = _tlv(der, start)
        yield element
        start = element[2]


def _oid(raw: bytes) -> str:
    parts, value = [], 0
    for byte in raw:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(map(str, [first, parts[0] - 40 * first, *parts[1:]]))


def _name(der: bytes, start: int, end: int) -> Name:
    rdns = []
    for _, set_start, set_end in _children(der, start, end):
        rdn = []
        for _, seq_start, seq_end in _children(der, set_start, set_end):
            (_, o_start, o_end), (tag, v_start, v_end) = _children(der, seq_start, seq_end)
            codec, raw = _STRING_CODECS.get(tag), der[v_start:v_end]
            rdn.append(
                (_oid(der[o_start:o_end]), raw.decode(codec, "replace") if codec else raw.hex())
            )
        rdns.append(tuple(rdn))
    return tuple(rdns)


class PeerCertificate:
    """The parts of a peer's X.509 certificate that socat logs, checks and exports.

    Parsed from DER here because ``ssl`` only decodes certificates it verified.
    """

    def __init__(self, der: bytes) -> None:
        self.subject: Name = ()
        self.issuer: Name = ()
        self.alt_names: list[tuple[str, str]] = []  # ("DNS", name) and ("IP", address)
        with contextlib.suppress(IndexError, ValueError):
            start = _tlv(der, 0)[1]
            fields = list(_children(der, *_tlv(der, start)[1:]))
            first = 1 if fields[0][0] == 0xA0 else 0  # optional version [0]
            self.issuer = _name(der, *fields[first + 2][1:])
            self.subject = _name(der, *fields[first + 4][1:])
            for tag, ext_start, _ in fields[first + 6 :]:
                if tag == 0xA3:
                    self._extensions(der, *_tlv(der, ext_start)[1:])

    def _extensions(self, der: bytes, start: int, end: int) -> None:
        for _, ext_start, ext_end in _children(der, start, end):
            parts = list(_children(der, ext_start, ext_end))
            if _oid(der[parts[0][1] : parts[0][2]]) != _SUBJECT_ALT_NAME:
                continue
            for tag, n_start, n_end in _children(der, *_tlv(der, parts[-1][1])[1:]):
                if tag == 0x82:  # dNSName
                    self.alt_names.append(("DNS", der[n_start:n_end].decode("ascii", "replace")))
                elif tag == 0x87:  # iPAddress
                    self.alt_names.append(("IP", str(ipaddress.ip_address(der[n_start:n_end]))))

    @staticmethod
    def oneline(name: Name) -> str:
        """A name as OpenSSL's ``XN_FLAG_ONELINE`` prints it: ``O = Example, CN = host``."""
        return ", ".join(
            " + ".join(
                f"{ATTRIBUTES.get(oid, (oid,))[0]} = {_escape(value)}" for oid, value in rdn
            )
            for rdn in name
        )

    @property
    def common_name(self) -> str | None:
        """The first commonName of the subject (the one socat compares)."""
        return next((v for rdn in self.subject for oid, v in rdn if oid == "2.5.4.3"), None)

    def describe(self) -> str:
        return f'subject "{self.oneline(self.subject)}", issuer "{self.oneline(self.issuer)}"'


def _escape(value: str) -> str:
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    value = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\{ord(m.group()):02X}", value)
    # ASN1_STRFLGS_ESC_QUOTE: quote values holding separators instead of escaping them.
    if re.search(r"[,+<>;]", value) or value[:1] in ("#", " ") or value.endswith(" "):
        value = f'"{value}"'
    return value


def name_matches(pattern: str, peername: str) -> bool:
    """socat's openssl_check_name: exact, or ``*.domain`` for domain and one level below."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(pattern) == ipaddress.ip_address(peername)
    pattern, peername = pattern.lower(), peername.lower()
    if not pattern.startswith("*."):
        return pattern == peername
    return peername == pattern[2:] or peername.partition(".")[2] == pattern[2:]
