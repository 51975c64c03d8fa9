"""``relay -h``, ``-hh`` and ``-hhh``: socat's help shape, generated from the tables."""

from __future__ import annotations

import pytest

from kubectl_relay.engine.addresses import ADDRESS_KINDS
from kubectl_relay.engine.options import OPTIONS
from kubectl_relay.engine.usage import DIFFERENCES, EXTENSIONS, GLOBAL_OPTIONS, usage_text


def test_usage_line() -> None:
    lines = usage_text(1).splitlines()
    assert lines[1:3] == ["Usage:", "relay [options] <bi-address> <bi-address>"]
    assert "socat [options]" not in usage_text(3)


#: The global options the engine supports, and only those.
SUPPORTED = (
    "-V -h -hh -hhh -d[ddd] -ly -lf -ls -lp -lu -lh -v -x -r -R -b -s -S -t -T -u -U -4 -6 -0 "
    "--statistics --metrics --grace-period --workers --trace-session-ids --quiet-sessions "
    "--quiet-accepts "
    "--deny-connect --allow-connect"
)


def test_global_options() -> None:
    listed = [option.syntax.split("<")[0].split("[facility]")[0].split()[0]
              for option in GLOBAL_OPTIONS]  # fmt: skip
    assert listed == SUPPORTED.split()
    text = usage_text(1)
    for option in GLOBAL_OPTIONS:
        assert f"      {option.syntax}" in text
        assert option.help in text


LEVEL_LINES = [
    # (level, line, present?)
    (1, "      TCP-LISTEN:<port>\t\t\t\tgroups=FD,SOCKET,LISTEN,CHILD,RETRY,RANGE,IP4,IP6,TCP",
     True),
    (1, "      TCP:<host>:<port>\t\t\t\tgroups=FD,SOCKET,CHILD,RETRY,IP4,IP6,TCP", True),
    (1, "      PIPE[:<filename>]\t\t\t\tgroups=FD,FIFO,NAMED,OPEN", True),
    # TERMIOS where a terminal may be: made (PTY) or given (STDIO), see addresses.py.
    (1, "      STDIO\t\t\t\t\tgroups=FD,FIFO,CHR,BLK,REG,SOCKET,TERMIOS,UNIX,IP4,IP6,UDP,TCP",
     True),
    (1, "      PTY\t\t\t\t\tgroups=FD,NAMED,TERMIOS,PTY", True),
    (1, "   address-head:", True),
    (1, "   opts:", False),
    (1, "      fork\t\tgroups=CHILD\t\ttype=BOOL", False),
    (1, "      TCP-L\t\t\t\t\tis an alias name for TCP-LISTEN", False),
    (2, "   opts:", True),
    (2, "      fork\t\tgroups=CHILD\t\ttype=BOOL", True),
    (2, "      connect-timeout\tgroups=SOCKET\t\ttype=STRUCT-TIMEVAL", True),
    (2, "      mode\t\tgroups=FD,NAMED\t\ttype=MODE_T", True),
    (2, "      range\t\tgroups=RANGE\t\ttype=RANGE", True),
    (2, "      reuseaddr\t\tgroups=SOCKET\t\ttype=INT/NULL", True),
    (2, "      perm\t\tis an alias for mode", False),
    (2, "      TCP-L\t\t\t\t\tis an alias name for TCP-LISTEN", False),
    (3, "      TCP-L\t\t\t\t\tis an alias name for TCP-LISTEN", True),
    (3, "      -\t\t\t\t\t\tis an alias name for STDIO", True),
    (3, "      SSL-L\t\t\t\t\tis an alias name for OPENSSL-LISTEN", True),
    (3, "      perm\t\tis an alias for mode", True),
    (3, "      so-reuseaddr\tis an alias for reuseaddr", True),
    (3, "      <num> is a short form for FD:<num>", True),
    (3, "      fork\t\tgroups=CHILD\t\ttype=BOOL", True),
]  # fmt: skip


@pytest.mark.parametrize(("level", "line", "present"), LEVEL_LINES)
def test_lines(level: int, line: str, present: bool) -> None:
    assert (line in usage_text(level).splitlines()) is present


@pytest.mark.parametrize("level", [1, 2, 3])
def test_every_address_kind_is_listed(level: int) -> None:
    lines = usage_text(level).splitlines()
    for kind in ADDRESS_KINDS:
        head = f"      {kind.keyword}{kind.syntax}\t"
        assert sum(line.startswith(head) for line in lines) == 1, kind.keyword


@pytest.mark.parametrize("level", [2, 3])
def test_every_option_is_listed(level: int) -> None:
    lines = usage_text(level).splitlines()
    for spec in OPTIONS:
        assert sum(line.startswith(f"      {spec.name}\t") for line in lines) == 1, spec.name
        for alias in spec.aliases:
            listed = f"      {alias}\t" in "\n".join(lines)
            assert listed is (level == 3), alias


def test_addresses_are_sorted() -> None:
    lines = usage_text(3).splitlines()
    start = lines.index("   address-head:") + 1
    end = lines.index("      <num> is a short form for FD:<num>")
    names = [line.split()[0].split(":")[0].split("[")[0] for line in lines[start:end]]
    assert names == sorted(names)


def test_ends_with_one_newline() -> None:
    for level in (1, 2, 3):
        text = usage_text(level)
        assert text.endswith("\n")
        assert not text.endswith("\n\n")


@pytest.mark.parametrize("level", [0, 4, -1])
def test_bad_level(level: int) -> None:
    with pytest.raises(ValueError, match=f"help level must be 1, 2 or 3, not {level}"):
        usage_text(level)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_extensions_and_differences_are_listed(level: int) -> None:
    lines = usage_text(level).splitlines()
    start = lines.index("   extensions (relay only, not in socat):")
    middle = lines.index("   differences from socat 1.8 (deliberate):")
    extensions = [line.split()[0] for line in lines[start + 1 : middle]]
    assert extensions == [name.split()[0] for name, _ in EXTENSIONS] == [
        "--metrics", "frame=len16", "PROXY-SERVER", "--deny-connect", "MUX-LISTEN:<port>",
        "MUX-ACCEPT:<port>", "--workers", "--quiet-sessions", "--quiet-accepts",
    ]
    assert lines[middle + 1 :] == [f"      {text}" for text in DIFFERENCES]
    assert all(len(line) <= 100 for line in lines[start:])
