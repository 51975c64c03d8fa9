"""Value classes for the address parser, without ``dataclasses``.

The parser runs before a TCP listener binds (``cli.main``), and importing
``dataclasses`` (which imports ``inspect``, ``ast`` and ``dis``) took about
7 ms of that: a third of the time relay itself spends between the
interpreter's start and a listening socket. Each ``Record`` names its fields
in ``__slots__``, sets them in its own typed ``__init__`` and annotates them
``Final``; this base gives what the parser used of ``@dataclass(frozen=True)``
beyond that: no assignment after ``__init__`` (the parser's values are
shared and hashed), equality and a hash by value, and a readable repr.
"""

from __future__ import annotations


class Record:
    """A value whose fields are its ``__slots__``."""

    __slots__: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        # Once each: __init__ sets every field, and nothing may change one later.
        if hasattr(self, name):
            raise AttributeError(f"cannot assign to field {name!r} of {type(self).__name__}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of {type(self).__name__}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
