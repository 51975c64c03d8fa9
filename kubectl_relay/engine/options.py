"""Address options: the table of every option socat knows that the engine supports.

SKELETON: the ``Options`` accessor below is the contract used by the transports;
the option table and ``parse_options`` are filled in by the parser work.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

#: A network accepted by ``range=`` (socat: ``range=<address>/<bits>`` or ``<address>:<mask>``).
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: The typed value of one option after conversion.
OptionValue = bool | int | float | str | tuple[Network, ...]


@dataclass(frozen=True)
class Options(Mapping[str, OptionValue]):
    """The converted options of one address, keyed by canonical option name.

    Canonical names are socat's main spellings in lower case (``reuseaddr``,
    ``connect-timeout``, ``max-children``, ``cert``); aliases are resolved by
    the parser. Typed getters keep transports free of casts.
    """

    by_name: Mapping[str, OptionValue] = field(default_factory=dict)

    def __getitem__(self, name: str) -> OptionValue:
        return self.by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.by_name.get(name, default)
        assert isinstance(value, bool), name
        return value

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.by_name.get(name, default)
        assert value is None or (isinstance(value, int) and not isinstance(value, bool)), name
        return value

    def seconds(self, name: str, default: float | None = None) -> float | None:
        value = self.by_name.get(name, default)
        assert value is None or isinstance(value, int | float), name
        return None if value is None else float(value)

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.by_name.get(name, default)
        assert value is None or isinstance(value, str), name
        return value

    def networks(self, name: str) -> tuple[Network, ...]:
        value = self.by_name.get(name, ())
        assert isinstance(value, tuple), name
        return value
