"""socat addresses: ``KEYWORD[:param...][,option[=value]...]`` as frozen values.

SKELETON: ``Address``/``DualAddress`` are the contract used by the transports
and the session; ``parse_address`` is filled in by the parser work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .options import Options


@dataclass(frozen=True)
class Address:
    """One parsed address.

    ``keyword`` is the canonical upper-case keyword after alias resolution
    (``TCP-L`` -> ``TCP-LISTEN``, ``-`` -> ``STDIO``, a bare number -> ``FD``,
    a bare path -> ``GOPEN``); ``params`` are the colon-separated parameters
    with quoting removed.
    """

    keyword: str
    params: tuple[str, ...] = ()
    options: Options = field(default_factory=Options)


@dataclass(frozen=True)
class DualAddress:
    """``A!!B``: read from ``reader``, write to ``writer``."""

    reader: Address
    writer: Address


AddressSpec = Address | DualAddress


def parse_address(text: str) -> AddressSpec:
    raise NotImplementedError
