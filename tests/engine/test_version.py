"""``-V``: socat's shape, a version that socat-version parsers find, the feature table."""

from __future__ import annotations

import os
import platform
import re

import pytest

from kubectl_relay import __version__
from kubectl_relay.engine.version import FEATURES, SOCAT_COMPATIBLE_VERSION, version_text

UNAME = os.uname_result(("Linux", "node-a", "6.8.0-45-generic", "#45-Ubuntu SMP", "x86_64"))

#: The WITH_ names socat 1.8.1's socat_version() prints, in its order.
SOCAT_181_FEATURES = [
    "HELP",
    "STATS",
    "STDIO",
    "FDNUM",
    "FILE",
    "CREAT",
    "GOPEN",
    "TERMIOS",
    "PIPE",
    "STALL",
    "TEXT",
    "SOCKETPAIR",
    "UNIX",
    "ABSTRACT_UNIXSOCKET",
    "IP4",
    "IP6",
    "RAWIP",
    "GENERICSOCKET",
    "INTERFACE",
    "TCP",
    "UDP",
    "SCTP",
    "DCCP",
    "UDPLITE",
    "LISTEN",
    "POSIXMQ",
    "SOCKS4",
    "SOCKS4A",
    "SOCKS5",
    "VSOCK",
    "NAMESPACES",
    "PROXY",
    "SYSTEM",
    "SHELL",
    "EXEC",
    "READLINE",
    "TUN",
    "PTY",
    "OPENSSL",
    "FIPS",
    "LIBWRAP",
    "SYCLS",
    "FILAN",
    "RETRY",
    "DEVTESTS",
    "MSGLEVEL",
    "DEFAULT_IPV",
]

#: What the engine implements.
DEFINED = [
    "HELP",
    "STATS",
    "STDIO",
    "FDNUM",
    "FILE",
    "CREAT",
    "GOPEN",
    "PIPE",
    "SOCKETPAIR",
    "UNIX",
    "ABSTRACT_UNIXSOCKET",
    "IP4",
    "IP6",
    "GENERICSOCKET",
    "TCP",
    "UDP",
    "LISTEN",
    "SOCKS4",
    "SOCKS4A",
    "SOCKS5",
    "VSOCK",
    "PROXY",
    "SYSTEM",
    "SHELL",
    "EXEC",
    "PTY",
    "OPENSSL",
    "RETRY",
    "MSGLEVEL",
]


def test_golden_text() -> None:
    python = platform.python_version()
    assert version_text("relay", uname=UNAME) == (
        f"relay from kubectl-relay version {__version__} - a socat-compatible relay written in "
        f"Python {python}\n"
        "socat version 1.8.1.0 compatible\n"
        "   running on Linux version #45-Ubuntu SMP, release 6.8.0-45-generic, machine x86_64\n"
        "features:\n"
        "  #define WITH_HELP 1\n"
        "  #define WITH_STATS 1\n"
        "  #define WITH_STDIO 1\n"
        "  #define WITH_FDNUM 1\n"
        "  #define WITH_FILE 1\n"
        "  #define WITH_CREAT 1\n"
        "  #define WITH_GOPEN 1\n"
        "  #undef WITH_TERMIOS\n"
        "  #define WITH_PIPE 1\n"
        "  #undef WITH_STALL\n"
        "  #undef WITH_TEXT\n"
        "  #define WITH_SOCKETPAIR 1\n"
        "  #define WITH_UNIX 1\n"
        "  #define WITH_ABSTRACT_UNIXSOCKET 1\n"
        "  #define WITH_IP4 1\n"
        "  #define WITH_IP6 1\n"
        "  #undef WITH_RAWIP\n"
        "  #define WITH_GENERICSOCKET 1\n"
        "  #undef WITH_INTERFACE\n"
        "  #define WITH_TCP 1\n"
        "  #define WITH_UDP 1\n"
        "  #undef WITH_SCTP\n"
        "  #undef WITH_DCCP\n"
        "  #undef WITH_UDPLITE\n"
        "  #define WITH_LISTEN 1\n"
        "  #undef WITH_POSIXMQ\n"
        "  #define WITH_SOCKS4 1\n"
        "  #define WITH_SOCKS4A 1\n"
        "  #define WITH_SOCKS5 1\n"
        "  #define WITH_VSOCK 1\n"
        "  #undef WITH_NAMESPACES\n"
        "  #define WITH_PROXY 1\n"
        "  #define WITH_SYSTEM 1\n"
        "  #define WITH_SHELL 1\n"
        "  #define WITH_EXEC 1\n"
        "  #undef WITH_READLINE\n"
        "  #undef WITH_TUN\n"
        "  #define WITH_PTY 1\n"
        "  #define WITH_OPENSSL 1\n"
        "  #undef WITH_FIPS\n"
        "  #undef WITH_LIBWRAP\n"
        "  #undef WITH_SYCLS\n"
        "  #undef WITH_FILAN\n"
        "  #define WITH_RETRY 1\n"
        "  #undef WITH_DEVTESTS\n"
        "  #define WITH_MSGLEVEL 0 /*debug*/\n"
        "  #undef WITH_DEFAULT_IPV\n"
    )


def test_program_name_leads_the_first_line() -> None:
    assert version_text("socat", uname=UNAME).startswith("socat from kubectl-relay version ")


@pytest.mark.parametrize(
    "parse",
    [
        # Ways scripts read socat's version.
        lambda text: re.search(r"socat version ([0-9.]+)", text).group(1),  # type: ignore[union-attr]
        lambda text: re.search(r"socat version (\S+)", text).group(1),  # type: ignore[union-attr]
        lambda text: next(
            line.split()[2] for line in text.splitlines() if line.startswith("socat version")
        ),
        # socat 1.8.0.3's test.sh: the last number on the second line (its sed is greedy).
        lambda text: re.sub(
            r".* ([0-9][1-9]*\.[0-9][0-9]*\.[0-9]\S*).*", r"\1", text.splitlines()[1]
        ),
    ],
)
def test_socat_version_parsers_find_the_compatible_version(parse: object) -> None:
    assert callable(parse)
    assert parse(version_text("relay", uname=UNAME)) == SOCAT_COMPATIBLE_VERSION == "1.8.1.0"


def test_our_version_is_on_the_first_line() -> None:
    line = version_text("relay", uname=UNAME).splitlines()[0]
    assert line.startswith(f"relay from kubectl-relay version {__version__} - ")


def test_feature_table_is_socat_181_in_order() -> None:
    assert [name for name, _ in FEATURES] == SOCAT_181_FEATURES
    assert [name for name, value in FEATURES if value is not None] == DEFINED


def test_running_on_defaults_to_this_machine() -> None:
    system = os.uname()
    assert version_text("relay").splitlines()[2] == (
        f"   running on {system.sysname} version {system.version}, "
        f"release {system.release}, machine {system.machine}"
    )


def test_every_feature_line_has_socat_shape() -> None:
    lines = version_text("relay", uname=UNAME).splitlines()
    features = lines[lines.index("features:") + 1 :]
    assert len(features) == len(SOCAT_181_FEATURES)
    for line in features:
        assert re.fullmatch(r"  (#define WITH_[A-Z0-9_]+ \S.*|#undef WITH_[A-Z0-9_]+)", line)
