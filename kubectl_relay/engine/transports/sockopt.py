"""socat's generic socket options: ``setsockopt=<level>:<optname>:<optval>`` and its forms.

socat's man page: "setsockopt=<level>:<optname>:<optval> Invokes setsockopt()
for the socket with the given parameters. level [int] is used as second
argument to setsockopt() and specifies the layer, e.g. SOL_TCP for TCP (6 on
Linux), or SOL_SOCKET for the socket layer (1 on Linux). optname [int] is
the third argument to setsockopt() and tells which socket option is to be
set. optval [dalan] is the fourth argument and is passed to the function."
The forms ``setsockopt-int`` (a C int), ``setsockopt-bin`` (dalan) and
``setsockopt-string`` (text with a terminating null byte) fix the value's
type; ``setsockopt-listen`` sets its option on the listening socket only.

Of socat's data description language (dalan) the common forms are read: a
number is a native C int, ``x`` followed by hex digits is those bytes, and
anything else (quoted with ``"`` or not) is its text.
"""

from __future__ import annotations

import re
import socket
import struct

from ..errors import OpenError
from ..options import Options

#: The forms for a socket that connects or is accepted, and for a listening socket.
CONNECTION_FORMS = ("setsockopt", "setsockopt-int", "setsockopt-bin", "setsockopt-string")
LISTEN_FORMS = ("setsockopt-listen",)

_C_INT = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def _c_int(text: str) -> int | None:
    if not _C_INT.fullmatch(text.strip()):
        return None
    digits = text.strip()
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX":
        return sign * int(digits, 8)
    return sign * int(digits, 0)


def _dalan(text: str) -> bytes:
    number = _c_int(text)
    if number is not None:
        return struct.pack("=i", number)
    if text[:1] in ("x", "X") and re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text[1:]):
        return bytes.fromhex(text[1:])
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text.encode()


def _value(form: str, text: str, option_text: str) -> bytes:
    if form == "setsockopt-int":
        number = _c_int(text)
        if number is None:
            raise ValueError(f'option "{option_text}": "{text}" is not an integer')
        return struct.pack("=i", number)
    if form == "setsockopt-string":
        return text.encode() + b"\0"
    return _dalan(text)


#: Time options set as a ``struct timeval``. The relay's own I/O never blocks,
#: so they matter only to what the socket is handed on to.
TIMEVAL_OPTIONS = {"so-rcvtimeo": socket.SO_RCVTIMEO, "so-sndtimeo": socket.SO_SNDTIMEO}


def apply_setsockopt(
    sock: socket.socket, options: Options, forms: tuple[str, ...], text: str
) -> None:
    """Call ``setsockopt`` for each of ``forms`` that ``options`` holds.

    The connection forms also set ``so-rcvtimeo``/``so-sndtimeo``.
    """
    if forms == CONNECTION_FORMS:
        for name, timeval_name in TIMEVAL_OPTIONS.items():
            seconds = options.seconds(name)
            if seconds is not None:
                whole = int(seconds)
                value = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
                _set(sock, socket.SOL_SOCKET, timeval_name, value, text)
    for form in forms:
        written = options.text(form)
        if written is None:
            continue
        option_text = f"{form}={written}"
        level_text, _, rest = written.partition(":")
        name_text, colon, value_text = rest.partition(":")
        level, optname = _c_int(level_text), _c_int(name_text)
        if level is None or optname is None or not colon:
            raise OpenError(
                text,
                f'option "{option_text}": expected <level>:<optname>:<optval>, '
                "level and optname as numbers",
            )
        try:
            value = _value(form, value_text, option_text)
        except ValueError as exc:
            raise OpenError(text, str(exc)) from None
        _set(sock, level, optname, value, text)


def _set(sock: socket.socket, level: int, optname: int, value: bytes, text: str) -> None:
    try:
        sock.setsockopt(level, optname, value)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OpenError(
            text,
            f"setsockopt({sock.fileno()}, {level}, {optname}, {value!r}, {len(value)}): {reason}",
        ) from exc
