"""Numbers in address parameters, read the way socat's C code reads them.

socat reads descriptor numbers, ports, socket parameters and VSOCK ids with
``strtoul(text, &end, 0)`` or ``strtol``: ``0x50`` is hexadecimal, ``0120``
octal, anything else decimal, and it then complains about what follows the
number. ``strtol`` returns the number and that rest, so that each address can
word its own complaint as socat does.
"""

from __future__ import annotations

import re

_C_NUMBER = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def strtol(text: str, *, signed: bool = False) -> tuple[int | None, str]:
    """The number at the start of ``text`` (None if there is none) and what follows it.

    Without ``signed`` a sign is not accepted (no number then), unlike C's
    ``strtoul``, which would wrap ``-1`` around.
    """
    match = _C_NUMBER.match(text)
    if match is None or (match.group(1) and not signed):
        return None, text
    digits = match.group(2)
    octal = len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX"
    number = int(digits, 8) if octal else int(digits, 0)
    return (-number if match.group(1) == "-" else number), text[match.end() :]
