"""Numbers read like C strtol/strtoul: what the socket addresses' parameters use."""

from __future__ import annotations

import pytest

from kubectl_relay.engine.numbers import strtol


@pytest.mark.parametrize(
    ("text", "signed", "expected"),
    [
        ("80", False, (80, "")),
        ("0x50", False, (80, "")),
        ("0120", False, (80, "")),
        ("0", False, (0, "")),
        ("12ab", False, (12, "ab")),
        ("0x", False, (0, "x")),
        ("x", False, (None, "x")),
        ("", False, (None, "")),
        ("-1", False, (None, "-1")),
        ("-1", True, (-1, "")),
        ("+0x10", True, (16, "")),
    ],
)
def test_strtol(text: str, signed: bool, expected: tuple[int | None, str]) -> None:
    assert strtol(text, signed=signed) == expected
