"""Exceptions raised by the relay engine.

Every exception carries the facts as fields and builds its message in
``__str__``; the message reads like socat's ``E`` log line (without the
timestamp and level, which the logger adds)::

    RelayError
    ├── UsageError        bad global option or argument count on the command line
    ├── AddressError      an address that does not parse (text, position, reason)
    ├── OptionError       an unknown, misplaced or malformed address option
    └── OpenError         an address parsed but could not be opened or used
        ├── AcceptTimeout ``accept-timeout`` passed with no peer (an ordinary end)
        ├── DestinationRefused  ``--deny-connect``/``--allow-connect`` forbid the destination
        └── TLSError      a TLS handshake, certificate or verification failure
"""

from __future__ import annotations


class RelayError(Exception):
    """Root of the engine's exceptions; the CLI turns any of them into exit 1."""


class UsageError(RelayError):
    """The command line itself is wrong (unknown global option, wrong argument count)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class AddressError(RelayError):
    """An address text that cannot be parsed.

    ``position`` is the 0-based offset in ``text`` where the problem was found,
    or ``None`` when it concerns the address as a whole.
    """

    def __init__(self, text: str, reason: str, position: int | None = None) -> None:
        super().__init__(text, reason, position)
        self.text = text
        self.reason = reason
        self.position = position

    def __str__(self) -> str:
        return self.reason


class OptionError(RelayError):
    """An address option that is unknown, not accepted by the address, or has a bad value."""

    def __init__(self, option: str, reason: str, address: str | None = None) -> None:
        super().__init__(option, reason, address)
        self.option = option
        self.reason = reason
        self.address = address

    def __str__(self) -> str:
        return self.reason


class OpenError(RelayError):
    """An address could not be opened or failed while in use (connect refused, bind in use...)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(address, reason)
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def first_open_error(group: BaseExceptionGroup[OpenError]) -> OpenError:
    """The first failure in a task group's (possibly nested) group: the one socat reports.

    Python 3.11's task groups wrap what fails, even their own body's exception.
    """
    first = group.exceptions[0]
    return first_open_error(first) if isinstance(first, BaseExceptionGroup) else first


class TLSError(OpenError):
    """A TLS handshake, certificate, key or verification failure."""


class DestinationRefused(OpenError):
    """``--deny-connect``/``--allow-connect`` forbid the destination (``destinations.py``).

    Its own class so that ``PROXY-SERVER`` answers it with its protocol's
    refusal (SOCKS5 reply 2, SOCKS4 91, HTTP 403) rather than a failure.
    """


class AcceptTimeout(OpenError):
    """``accept-timeout`` passed without a peer.

    socat logs ``W accept: Connection timed out``, waits for its children and
    exits with status 0: an ordinary end, not an error.
    """


def shorten(text: str, limit: int = 40) -> str:
    """``text`` as quoted in a message: hostile input may be thousands of characters long."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
