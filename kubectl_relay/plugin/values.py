"""Option values written as text, parsed the same on the command line and in a tunnel file.

``parse_duration`` and ``parse_toleration`` raise ``ValueError`` with the
message a user sees (what was wrong and what is accepted); the CLI's option
types and the tunnel file's loader both report it, each in its own way.
"""

from __future__ import annotations

import math
import re

from .relaypod import Toleration

DURATION_FORMS = "30, 30s, 10m, 1h30m"
TOLERATION_FORMS = "KEY[=VALUE][:EFFECT]"
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """``30``, ``30s``, ``10m``, ``1h30m``: seconds as a float."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:  # float() also takes "nan" and "inf"
        if math.isfinite(seconds):
            return seconds
        raise ValueError(f'"{text}" is not a duration (accepted: {DURATION_FORMS})')
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f'"{text}" is not a duration (accepted: {DURATION_FORMS})')
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_toleration(text: str) -> Toleration:
    """``KEY[=VALUE][:EFFECT]``: without a value the toleration matches any (Exists)."""
    head, colon, effect = text.rpartition(":")
    if not colon:
        head, effect = text, ""
    if effect and effect not in EFFECTS:
        raise ValueError(f'"{effect}" is not an effect ({", ".join(EFFECTS)})')
    key, equals, value = head.partition("=")
    if not key:
        raise ValueError(f'"{text}" has no key')
    if equals:
        return Toleration(key, "Equal", value, effect or None)
    return Toleration(key, "Exists", None, effect or None)
