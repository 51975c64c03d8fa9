"""Reading raw JSON values with the field's path in every message, and Kubernetes syntax.

The readers take ``Mapping[str, object]`` (what a decoded body really is)
and check types at run time: a body is not always checked by an API server
first (emulators, old CRDs, hand-made bodies), and a wrong type must become
a ``SpecError`` that names the field, never a ``TypeError`` in a handler.

The syntax rules (names, label keys and values, quantities) are written from
the Kubernetes API reference, so that the operator refuses what the API
server would refuse, before creating anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

from .errors import SpecError

_T = TypeVar("_T", bound=str)

#: RFC 1035 label (<= 63): Service names.
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: RFC 1123 label (<= 63): namespace names.
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: RFC 1123 subdomain (<= 253): most object names, label key prefixes.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: The name part of a label key, and a non-empty label value (<= 63).
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
#: A key of a Secret's data (<= 253).
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_TTL = re.compile(r"^(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?$")
#: The longest ``spec.ttl``. A time to live is for temporary tunnels (a
#: debugging session, a migration window); a tunnel meant to outlive a month
#: should be a tunnel without one, reviewed like any other object. The bound
#: also keeps the expiry a date (3000000d overflows Python's datetime).
MAX_TTL = timedelta(days=30)
#: The longest ttl text; the CRD's schema says the same (maxLength).
MAX_TTL_LENGTH = 32
# A quantity: a decimal number, then a binary (Ki..Ei) or decimal (n..E)
# suffix or a decimal exponent. The API server also accepts a sign; a
# negative request or limit is refused anyway, so "-" is left out here.
_QUANTITY = re.compile(
    r"^(?P<number>\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

#: The resources a relay pod's requests and limits may name.
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


@dataclass(frozen=True)
class Resources:
    """Requests and limits by resource name, as the quantity strings given."""

    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)


# --- Raw values ----------------------------------------------------------------


def describe(value: object) -> str:
    """A JSON value as a message shows it: ``the string "x"``, ``a list``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def as_object(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise SpecError(path, f"expected an object, got {describe(value)}")
    return value


def known_fields(obj: Mapping[str, object], path: str, known: Sequence[str]) -> None:
    """Refuse a field the schema does not have (a typo must not pass silently)."""
    for name in obj:
        if name not in known:
            raise SpecError(
                f"{path}.{name}", "unknown field", f"{path} accepts {', '.join(sorted(known))}"
            )


def string(obj: Mapping[str, object], name: str, path: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(f"{path}.{name}", f"expected a string, got {describe(value)}")
    return value


def required_string(obj: Mapping[str, object], name: str, path: str) -> str:
    value = string(obj, name, path)
    if not value:
        raise SpecError(f"{path}.{name}", "required")
    return value


def integer(
    obj: Mapping[str, object], name: str, path: str, low: int, high: int | None = None
) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    # JSON has no separate boolean type in Python's eyes (bool is an int): refuse it.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}.{name}", f"expected an integer, got {describe(value)}")
    if value < low or (high is not None and value > high):
        allowed = f"at least {low}" if high is None else f"from {low} to {high}"
        raise SpecError(f"{path}.{name}", f"{value} is out of range ({allowed})")
    return value


def choice(
    obj: Mapping[str, object], name: str, path: str, choices: tuple[_T, ...], default: _T
) -> _T:
    value = string(obj, name, path)
    if value is None:
        return default
    for candidate in choices:
        if value == candidate:
            return candidate
    raise SpecError(f"{path}.{name}", f'"{value}" is not one of {", ".join(choices)}')


def string_map(obj: Mapping[str, object], name: str, path: str) -> dict[str, str]:
    value = obj.get(name)
    if value is None:
        return {}
    mapping = as_object(value, f"{path}.{name}")
    result: dict[str, str] = {}
    for key, item in mapping.items():
        if not isinstance(item, str):
            raise SpecError(f'{path}.{name}["{key}"]', f"expected a string, got {describe(item)}")
        result[key] = item
    return result


def as_list(obj: Mapping[str, object], name: str, path: str) -> Sequence[object]:
    value = obj.get(name)
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise SpecError(f"{path}.{name}", f"expected a list, got {describe(value)}")
    return value


# --- Kubernetes syntax -----------------------------------------------------------


def check_qualified_name(key: str, path: str) -> None:
    """A label or annotation key: ``[prefix/]name``, the prefix a DNS subdomain."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        raise SpecError(
            path,
            f'"{key}" is not a valid key: the prefix must be a DNS subdomain',
            "use lower-case letters, digits, '-' and '.', such as example.com/name",
        )
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise SpecError(
            path,
            f'"{key}" is not a valid key',
            "the name part needs 1 to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit",
        )


def check_label_value(value: str, path: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise SpecError(
            path,
            f'"{value}" is not a valid label value',
            "use at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit",
        )


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``100m``, ``64Mi``, ``1.5``, ``1e3``) as a number."""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(text)
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * (1 << (10 * _BINARY[suffix]))
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))


def parse_resources(value: object, path: str) -> Resources:
    """``{requests: {...}, limits: {...}}`` with names and quantities checked.

    Integers are accepted as the API accepts them (``cpu: 1``) and kept as
    strings. A request above its own limit is refused here; the builders
    reconcile the tunnel's values with the operator's defaults.
    """
    obj = as_object(value, path)
    known_fields(obj, path, ("requests", "limits"))
    parts: dict[str, dict[str, str]] = {}
    for part in ("requests", "limits"):
        entries = as_object(obj.get(part) or {}, f"{path}.{part}")
        parts[part] = {}
        for name, raw in entries.items():
            item = f"{path}.{part}.{name}"
            if name not in RESOURCE_NAMES:
                raise SpecError(item, "unknown resource", f"use {', '.join(RESOURCE_NAMES)}")
            text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
            if not isinstance(text, str):
                raise SpecError(item, f"expected a quantity, got {describe(raw)}")
            try:
                parse_quantity(text)
            except ValueError:
                raise SpecError(
                    item, f'"{text}" is not a quantity', 'write it like "100m", "0.5" or "64Mi"'
                ) from None
            parts[part][name] = text
    for name, request in parts["requests"].items():
        limit = parts["limits"].get(name)
        if limit is not None and parse_quantity(request) > parse_quantity(limit):
            raise SpecError(
                f"{path}.requests.{name}",
                f"the request ({request}) is above the limit ({limit})",
                "a request must not exceed its limit",
            )
    return Resources(requests=parts["requests"], limits=parts["limits"])


def parse_ttl(text: str, path: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1h30m``, ``7d``: a positive duration.

    Go's duration syntax (what Kubernetes users know from other fields), plus
    ``d`` for days, without fractions: a time to live needs no more.
    """
    match = _TTL.match(text) if len(text) <= MAX_TTL_LENGTH else None
    if not text or not match:
        raise SpecError(path, f'"{text}" is not a duration', 'write it like "90s", "30m" or "2h"')
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    # Whole seconds as a Python int first: timedelta(days=99999999999) overflows.
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if not total:
        raise SpecError(path, "must be longer than zero", "remove ttl to keep the tunnel")
    if total > MAX_TTL.total_seconds():
        raise SpecError(
            path,
            f'"{text}" is longer than the 30 days a temporary tunnel may live',
            "remove ttl for a tunnel that stays",
        )
    return timedelta(seconds=total)
