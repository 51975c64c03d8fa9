"""The relay command line of a ``run`` tunnel, checked with the engine's own parser.

Shared by ``kubectl relay run`` and the ``run`` tunnels of a tunnel file, so
that a bad command line gets the engine's message before any pod exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from ..engine.addresses import parse_address
from ..engine.errors import RelayError
from .session import TunnelSpec
from .targets import ListenAddress

#: First addresses a local port can be forwarded to (``--listen`` / ``listen``).
LISTENING_KEYWORDS = ("TCP-LISTEN", "TCP4-LISTEN", "TCP6-LISTEN", "OPENSSL-LISTEN")


class RunCommandError(ValueError):
    """A ``run`` command line the engine refuses, or a ``listen`` it cannot serve.

    ``about``: what is wrong: the ``command``, the ``listen`` that needs a
    listening first address, or the ``engine`` that does not load here.
    """

    def __init__(self, message: str, about: Literal["command", "listen", "engine"]) -> None:
        super().__init__(message)
        self.about = about


def _relay_parser() -> Callable[[Sequence[str]], Any]:
    """The engine's command-line parser.

    Imported here, not with the module: the engine's runtime beside it
    (``termios``, ``resource``) is POSIX-only, and every other command runs
    on Windows too.
    """
    try:
        from ..engine.cli import parse_command_line  # noqa: PLC0415 - see above
    except ImportError as exc:
        raise RunCommandError(
            f"`kubectl relay run` checks the relay's command line with the engine, which "
            f"does not load here ({exc}); use tcp, udp or tls, or run it from Linux or macOS",
            "engine",
        ) from None
    return parse_command_line


def run_spec(args: Sequence[str], listen: ListenAddress | None) -> TunnelSpec:
    """The tunnel that runs ``relay ARGS`` (``RunCommandError`` when it cannot)."""
    if not args:
        raise RunCommandError("give the relay's command line: ADDRESS1 ADDRESS2", "command")
    try:
        line = _relay_parser()(list(args))
        addresses = [parse_address(text) for text in line.addresses]
    except RelayError as exc:
        raise RunCommandError(str(exc), "command") from None
    port = None
    if listen is not None:
        first = addresses[0]
        if getattr(first, "keyword", "") not in LISTENING_KEYWORDS:
            raise RunCommandError(
                "needs a relay whose first address listens on TCP "
                "(TCP-LISTEN:PORT or OPENSSL-LISTEN:PORT)",
                "listen",
            )
        port = int(first.params[0])  # type: ignore[union-attr]
    return TunnelSpec("run", listen=listen, run_args=tuple(args), run_port=port)
