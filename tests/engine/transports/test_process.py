"""EXEC and SYSTEM children over a real socket pair or pipes."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from kubectl_relay.engine.addresses import Address
from kubectl_relay.engine.errors import OpenError
from kubectl_relay.engine.transports import process
from kubectl_relay.engine.transports.base import OpenContext
from tests.conftest import scaled
from tests.engine.transports.streams import address, read_all, send_all

LOGGER = "kubectl_relay.engine"
CTX = OpenContext()


async def run(address: Address, data: bytes = b"", ctx: OpenContext = CTX) -> tuple[bytes, int]:
    """Feed ``data`` to the child, half-close, collect its output, close; return output, status."""
    async with asyncio.timeout(scaled(5)):
        stream = await process.spawn(address, ctx)
        try:
            _, output = await asyncio.gather(send_all(stream, data), read_all(stream))
        finally:
            await stream.aclose()
    code = stream.returncode  # type: ignore[attr-defined]
    assert isinstance(code, int)
    return output, code


@pytest.fixture
def quick_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter graces for children that must be terminated."""
    monkeypatch.setattr(process, "CHILD_EXIT_GRACE", 0.05)
    monkeypatch.setattr(process, "CHILD_TERM_GRACE", 0.2)


@pytest.mark.parametrize(
    ("command_line", "argv"),
    [
        ("ls -l /tmp", ["ls", "-l", "/tmp"]),
        ("sh -c 'echo a b'", ["sh", "-c", "echo a b"]),
        ('echo "a b" c', ["echo", "a b", "c"]),
        ("echo \"a 'b c' d\"", ["echo", "a 'b c' d"]),
        ("find (a b) [c d] {e f}", ["find", "(a b)", "[c d]", "{e f}"]),
        ("echo a\\ b", ["echo", "a b"]),
        ("printf a\\nb\\tc", ["printf", "a\nb\tc"]),
        ("echo 'a''b'", ["echo", "ab"]),
        ("a  b", ["a", "b"]),
        ("cat ", ["cat", ""]),  # socat makes an empty last argument too
        ("echo x\\0y", ["echo", "x"]),
    ],
)
def test_command_lines_split_as_socat_does(command_line: str, argv: list[str]) -> None:
    assert process.split_command_line(command_line) == argv


@pytest.mark.parametrize("pipes", [False, True])
async def test_exec_relays_both_ways_and_sees_half_close(pipes: bool) -> None:
    data = os.urandom(400_000)
    output, code = await run(address("EXEC", "cat", pipes=pipes), data)
    assert output == data
    assert code == 0


async def test_child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_TEST_INHERITED", "yes")
    ctx = OpenContext(env={"SOCAT_PEERADDR": "127.0.0.1", "SOCAT_PEERPORT": "5555"})
    output, _ = await run(address("EXEC", "env"), ctx=ctx)
    env = dict(line.split("=", 1) for line in output.decode().splitlines() if "=" in line)
    assert env["SOCAT_PEERADDR"] == "127.0.0.1"
    assert env["SOCAT_PEERPORT"] == "5555"
    assert env["SOCAT_PID"] == str(os.getpid())
    assert env["SOCAT_PPID"] == str(os.getpid())
    assert env["SOCAT_VERSION"] == "1.8.1.0"
    assert env["RELAY_TEST_INHERITED"] == "yes"


async def test_system_runs_a_shell_command() -> None:
    ctx = OpenContext(env={"SOCAT_PEERADDR": "10.1.2.3"})
    output, code = await run(address("SYSTEM", "echo $SOCAT_PEERADDR; tr a-z A-Z"), b"hi\n", ctx)
    assert output == b"10.1.2.3\nHI\n"
    assert code == 0


async def test_stderr_option_joins_the_channel() -> None:
    line = "echo out; echo err >&2"
    for pipes in (False, True):
        output, _ = await run(address("SYSTEM", line, stderr=True, pipes=pipes))
        assert sorted(output.splitlines()) == [b"err", b"out"]


async def test_argv0_is_the_program_basename() -> None:
    output, _ = await run(address("EXEC", "/bin/sh -c 'echo $0'"))
    assert output == b"sh\n"
    output, _ = await run(address("EXEC", "/bin/sh -c 'echo $0'", dash=True))
    assert output == b"-sh\n"


async def test_path_option_finds_the_program(tmp_path: Path) -> None:
    script = tmp_path / "only-here"
    script.write_text("#!/bin/sh\necho found\n")
    script.chmod(0o755)
    output, _ = await run(address("EXEC", "only-here", path=str(tmp_path)))
    assert output == b"found\n"


async def test_exec_failure_is_open_error_in_socat_words() -> None:
    with pytest.raises(OpenError) as caught:
        await process.spawn(address("EXEC", "/nonexistent/prog -x"), CTX)
    assert caught.value.reason == (
        'execvp("/nonexistent/prog", "prog", "-x"): No such file or directory'
    )


async def test_nofork_outside_the_second_address_is_refused() -> None:
    """The session runs a nofork second address itself; spawn() never runs one."""
    with pytest.raises(OpenError) as caught:
        await process.spawn(address("EXEC", "cat", nofork=True), CTX)
    assert "nofork" in caught.value.reason
    assert "second address" in caught.value.reason


async def test_exit_status_is_logged_as_socat_does(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    output, code = await run(address("SYSTEM", "echo bye; exit 3"))
    assert (output, code) == (b"bye\n", 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"waitpid(): child {_pid_from(caplog)} exited with status 3"
    ]
    assert any(m.startswith("forking off child, using socket for") for m in caplog.messages)


def _pid_from(caplog: pytest.LogCaptureFixture) -> int:
    for message in caplog.messages:
        if message.startswith("forked off child process "):
            return int(message.rsplit(" ", 1)[1])
    raise AssertionError("no forked-off line")


async def test_child_exit_ends_its_output_even_if_a_grandchild_holds_it() -> None:
    # The background cat keeps the socket open (it reads stdin until EOF);
    # the shell exits after "done", and that is the end of the output.
    output, code = await run(address("SYSTEM", "cat <&0 >/dev/null & echo done"))
    assert (output, code) == (b"done\n", 0)


@pytest.mark.usefixtures("quick_close")
async def test_close_terminates_a_lingering_child(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with asyncio.timeout(scaled(5)):
        stream = await process.spawn(address("SYSTEM", "exec sleep 30"), CTX)
        await stream.aclose()
    assert stream.returncode == -15  # type: ignore[attr-defined]
    pid = _pid_from(caplog)
    # Our own SIGTERM is no warning.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"waitpid(): child {pid} exited on signal 15" in caplog.messages


@pytest.mark.usefixtures("quick_close")
async def test_close_kills_a_child_that_ignores_sigterm() -> None:
    async with asyncio.timeout(scaled(5)):
        stream = await process.spawn(address("SYSTEM", "trap '' TERM; exec sleep 30"), CTX)
        await stream.aclose()
    assert stream.returncode == -9  # type: ignore[attr-defined]


async def test_cancelled_close_still_reaps_the_child() -> None:
    async with asyncio.timeout(scaled(5)):
        stream = await process.spawn(address("SYSTEM", "exec sleep 30"), CTX)
        closing = asyncio.ensure_future(stream.aclose())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
    assert stream.returncode == -9  # type: ignore[attr-defined]


async def test_setsid_makes_the_child_a_session_leader() -> None:
    line = "echo $$; cut -d' ' -f6 /proc/$$/stat"
    output, _ = await run(address("SYSTEM", line, setsid=True))
    pid, session = output.split()
    assert pid == session
    output, _ = await run(address("SYSTEM", line))
    pid, session = output.split()
    assert pid != session


async def test_terminal_options_without_a_terminal_are_refused() -> None:
    with pytest.raises(OpenError, match='option "echo" sets up a terminal: it needs option "pty"'):
        await process.spawn(address("EXEC", "cat", echo=False), CTX)
