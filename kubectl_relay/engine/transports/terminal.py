"""Terminal settings (socat's TERMIOS group), on a terminal we made or were given.

``PTY`` and ``EXEC``/``SYSTEM`` with ``pty`` set them on the terminal they make;
``STDIO``, ``FD``, ``OPEN`` and ``GOPEN`` on a terminal they were given or opened
(``relay -,raw,echo=0 TCP:host:22``, ``OPEN:/dev/ttyUSB0,raw``), and put the
terminal back as it was when they close, as socat does (its ``savetty``).
Anything else than a terminal is an error there, worded as socat's:
``tcgetattr(0, ...): Inappropriate ioctl for device``.

The options, applied in the order written: ``raw`` ("Sets raw mode, thus
passing input and output almost unprocessed"), ``rawer`` ("Makes terminal
rawer than raw option. This option implicitly turns off echo"), ``cfmakeraw``,
socat's boolean flags (``echo``, ``icanon``, ``isig``, ``opost``, ``icrnl``...:
``options.TERMIOS_FLAGS``), and the line speeds ``ispeed=`` and ``ospeed=`` (a
baud rate such as 19200, which socat hands to ``cfsetispeed()`` unconverted;
we take the rate and set its ``B19200`` code, so the number means what it
says). Linux keeps one line speed (glibc's ``cfsetispeed`` and ``cfsetospeed``
both set ``CBAUD``), so either option sets it, and the last one written wins,
as in socat. On Linux master and slave share one set of settings, so setting
them on the master of a ``PTY`` is what its slave sees.
"""

from __future__ import annotations

import contextlib
import functools
import termios
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import OpenError
from ..options import TERMIOS_FLAGS, Options

_IFLAG, _OFLAG, _CFLAG, _LFLAG, _ISPEED, _OSPEED, _CC = 0, 1, 2, 3, 4, 5, 6
# termios' own type for tcgetattr()'s list: flag words, speeds and a list of bytes.
Attributes = list[Any]


def _raw(attributes: Attributes) -> None:
    # socat 1.8 xiotermios_spec(OPT_RAW).
    attributes[_IFLAG] = attributes[_IFLAG] & ~(
        termios.IGNBRK | termios.BRKINT | termios.IGNPAR | termios.PARMRK | termios.INPCK
        | termios.ISTRIP | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON
        | termios.IXOFF | termios.IUCLC | termios.IXANY | termios.IMAXBEL
    )  # fmt: skip
    attributes[_OFLAG] = attributes[_OFLAG] & ~termios.OPOST
    attributes[_LFLAG] = attributes[_LFLAG] & ~(termios.ISIG | termios.ICANON | termios.XCASE)
    _min_one_no_time(attributes)


def _rawer(attributes: Attributes) -> None:
    # socat 1.8 xiotermios_spec(OPT_TERMIOS_RAWER): everything off, 8 bits.
    attributes[_IFLAG] = attributes[_OFLAG] = attributes[_LFLAG] = 0
    attributes[_CFLAG] = termios.CREAD | termios.CS8
    _min_one_no_time(attributes)


def _cfmakeraw(attributes: Attributes) -> None:
    # The settings of Linux's cfmakeraw(3).
    attributes[_IFLAG] = attributes[_IFLAG] & ~(
        termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
        | termios.IGNCR | termios.ICRNL | termios.IXON
    )  # fmt: skip
    attributes[_OFLAG] = attributes[_OFLAG] & ~termios.OPOST
    attributes[_LFLAG] = attributes[_LFLAG] & ~(
        termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN
    )
    cflag = attributes[_CFLAG] & ~(termios.CSIZE | termios.PARENB)
    attributes[_CFLAG] = cflag | termios.CS8
    _min_one_no_time(attributes)


def _min_one_no_time(attributes: Attributes) -> None:
    cc = attributes[_CC]
    assert isinstance(cc, list)
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0


#: Terminal modes set by one option, by canonical option name.
MODES: Mapping[str, Callable[[Attributes], None]] = {
    "raw": _raw,
    "termios-rawer": _rawer,
    "termios-cfmakeraw": _cfmakeraw,
}

#: Boolean terminal flags: option -> (index of the flag word, bit).
_WORDS = {"iflag": _IFLAG, "oflag": _OFLAG, "cflag": _CFLAG, "lflag": _LFLAG}
FLAGS: Mapping[str, tuple[int, int]] = {
    name: (_WORDS[word], getattr(termios, name.upper()))
    for word, names in TERMIOS_FLAGS.items()
    for name in names
}


#: Line speed options (one speed on Linux: see the module docstring).
SPEEDS = frozenset(("ispeed", "ospeed"))

#: The baud rates the terminal driver knows: rate -> its ``B<rate>`` code.
BAUD_RATES: Mapping[int, int] = {
    int(name[1:]): getattr(termios, name)
    for name in dir(termios)
    if name[0] == "B" and name[1:].isdigit()
}


def _speed_code(name: str, rate: int, text: str) -> int:
    if rate not in BAUD_RATES:
        accepted = ", ".join(str(known) for known in sorted(BAUD_RATES))
        raise OpenError(text, f"{name}={rate}: not a baud rate; accepted: {accepted}")
    return BAUD_RATES[rate]


def apply_terminal_options(fd: int, options: Options, text: str) -> None:
    """Set the terminal options among ``options`` on ``fd``, in the order written."""
    names = [name for name in options if name in MODES or name in FLAGS or name in SPEEDS]
    if not names:
        return
    try:
        attributes: Attributes = termios.tcgetattr(fd)
    except termios.error as exc:
        raise OpenError(text, f"tcgetattr({fd}, ...): {exc.args[-1]}") from None
    for name in names:
        if name in MODES:
            MODES[name](attributes)
            continue
        if name in SPEEDS:
            code = _speed_code(name, options.integer(name) or 0, text)
            attributes[_ISPEED] = attributes[_OSPEED] = code
            continue
        index, bit = FLAGS[name]
        word = attributes[index]
        attributes[index] = word | bit if options.flag(name) else word & ~bit
    try:
        termios.tcsetattr(fd, termios.TCSANOW, attributes)
    except termios.error as exc:
        raise OpenError(text, f"tcsetattr({fd}, TCSANOW, ...): {exc.args[-1]}") from None


def has_terminal_options(options: Options) -> bool:
    """Whether ``options`` set anything on a terminal."""
    return any(name in MODES or name in FLAGS or name in SPEEDS for name in options)


def take_terminal(fd: int, options: Options, text: str) -> Attributes | None:
    """Apply ``options`` to the terminal ``fd``; its settings before, to restore on close.

    None when ``options`` have no terminal option (``fd`` need not be a terminal then).
    """
    if not has_terminal_options(options):
        return None
    try:
        saved: Attributes = termios.tcgetattr(fd)
    except termios.error as exc:
        raise OpenError(text, f"tcgetattr({fd}, ...): {exc.args[-1]}") from None
    apply_terminal_options(fd, options, text)
    return saved


def terminal_restorer(fd: int, options: Options, text: str) -> Callable[[], None] | None:
    """``take_terminal``, and what puts the terminal back on close (None: nothing to)."""
    saved = take_terminal(fd, options, text)
    return None if saved is None else functools.partial(restore_terminal, fd, saved)


def restore_terminal(fd: int, saved: Attributes) -> None:
    """Put back what ``take_terminal`` found (the terminal may be gone: nothing to do then)."""
    with contextlib.suppress(termios.error, OSError):
        termios.tcsetattr(fd, termios.TCSANOW, saved)
