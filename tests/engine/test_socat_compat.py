"""Behaviours socat 1.8's own test suite found relay doing differently, each as socat does it.

Every test runs the relay as a user does (a real process, real descriptors,
files, sockets and child programs) and checks what socat 1.8.0.3 does.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from kubectl_relay.engine.session import DEFAULT_RETRY_INTERVAL
from tests.conftest import RELAY, scaled
from tests.engine.test_relay_behaviour import log_lines
from tests.support import (
    RelayProcess,
    ThreadedServer,
    free_port,
    relay_listening,
    run_relay,
    wait_for_path,
)

# -u/-U with EXEC and SYSTEM: only the direction in use goes through the channel.


def test_unidirectional_exec_child_writes_to_relays_stdout() -> None:
    """``relay -u /dev/null EXEC:...``: the child's output is the relay's own stdout."""
    result = run_relay(["-u", "/dev/null", "EXEC:echo written by the child"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"written by the child\n"


def test_reverse_unidirectional_system_child_reads_relays_stdin(tmp_path: Path) -> None:
    """``relay -U OPEN:file SYSTEM:cat``: the child reads the relay's stdin, its output goes on."""
    target = tmp_path / "out"
    result = run_relay(["-U", f"OPEN:{target},creat", "SYSTEM:cat"], input=b"from stdin\n")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"from stdin\n"


# A failed child fails the run.


@pytest.mark.parametrize("address", ["EXEC:false", "SYSTEM:exit 1"])
def test_failed_child_makes_the_relay_exit_1(address: str) -> None:
    result = run_relay(["-", address])
    assert result.returncode == 1
    assert "exited with status 1" in result.stderr.decode()


def test_successful_child_leaves_exit_0() -> None:
    assert run_relay(["-", "EXEC:true"]).returncode == 0


# Addresses refused as socat refuses them.


@pytest.mark.parametrize("address", ["TCP4-LISTEN:", "TCP:127.0.0.1:"])
def test_empty_port_is_an_error(address: str) -> None:
    result = run_relay([address, "/dev/null"], timeout=10)
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == ["empty port/service"]


def test_unix_listen_refuses_bind(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    result = run_relay([f"UNIX-LISTEN:{path},bind={tmp_path / 'other'}", "PIPE"])
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [
        f"UNIX-LISTEN:{path}: binds implicitly, bind option not allowed"
    ]
    assert not path.exists()


def test_retry_interval_defaults_to_one_second() -> None:
    """socat's xioopen.c: ``intervall.tv_sec = 1``."""
    assert DEFAULT_RETRY_INTERVAL == 1.0
    port = free_port()
    result = run_relay(["-d", "-d", "/dev/null", f"TCP:127.0.0.1:{port},retry=1"])
    assert result.returncode == 1
    assert "retrying in 1 seconds" in result.stderr.decode()


# STDIO spelled "-" with options or in a dual address.


def test_dash_dual_address_is_stdio() -> None:
    result = run_relay(["-!!-", "PIPE"], input=b"through -!!-\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"through -!!-\n"


def test_escape_character_ends_input() -> None:
    """``-,escape=27``: ESC on stdin acts as EOF; what precedes it is relayed."""
    result = run_relay(["-,escape=27", "PIPE"], input=b"before\x1bafter\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"before"


def test_nonblock_is_accepted(tmp_path: Path) -> None:
    target = tmp_path / "out"
    result = run_relay(["-u", "-", f"OPEN:{target},creat,o-nonblock"], input=b"data")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"data"


def _close_at_once(conn: socket.socket) -> None:
    """Take the first bytes, then reset: the relay's next writes fail (ECONNRESET or EPIPE)."""
    conn.recv(1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@pytest.mark.parametrize("cool", [False, True])
def test_cool_write_takes_a_vanished_peer_easy(cool: bool) -> None:
    """``cool-write``: a write failing with EPIPE/ECONNRESET is a notice and exit 0."""
    with ThreadedServer(_close_at_once) as server:
        address = f"TCP:127.0.0.1:{server.port}" + (",cool-write" if cool else "")
        result = run_relay(["-u", "-", address], input=b"x" * 8_000_000, timeout=30)
    errors = log_lines(result.stderr.decode(), "E")
    if cool:
        assert (result.returncode, errors) == (0, []), result.stderr
    else:
        assert result.returncode == 1
        assert len(errors) == 1 and errors[0].startswith("write("), result.stderr


def test_setsockopt_sets_an_integer_option() -> None:
    """``setsockopt=6:<TCP_MAXSEG>:1``: the kernel refuses an MSS of 1, so the open fails."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        option = f"setsockopt={socket.IPPROTO_TCP}:{socket.TCP_MAXSEG}:1"
        result = run_relay(["/dev/null", f"TCP4:127.0.0.1:{port},{option}"])
    assert result.returncode == 1
    [error] = log_lines(result.stderr.decode(), "E")
    assert error.startswith("setsockopt(") and error.endswith("Invalid argument")


@pytest.mark.parametrize(
    "option",
    [
        f"setsockopt={socket.SOL_SOCKET}:{socket.SO_RCVBUF}:65536",
        f"setsockopt-int={socket.SOL_SOCKET}:{socket.SO_RCVBUF}:65536",
        f"setsockopt-bin={socket.SOL_SOCKET}:{socket.SO_RCVBUF}:x"
        + struct.pack("=i", 65536).hex(),
        f"setsockopt-string={socket.SOL_SOCKET}:{socket.SO_BINDTODEVICE}:lo",
    ],
)
def test_setsockopt_forms_reach_the_socket(option: str) -> None:
    """Each form sets its value; a value the kernel refuses would fail the open."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = run_relay(["-u", "/dev/null", f"TCP4:127.0.0.1:{port},{option}"])
        server.accept()[0].close()
    assert result.returncode == 0, result.stderr


def test_setsockopt_without_numbers_is_one_clear_error() -> None:
    result = run_relay(["/dev/null", "TCP4:127.0.0.1:9,setsockopt=tcp:maxseg:1"])
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [
        'option "setsockopt=tcp:maxseg:1": expected <level>:<optname>:<optval>, '
        "level and optname as numbers"
    ]


# nofork, fdin/fdout, end-close.


def test_nofork_program_uses_the_first_address_itself() -> None:
    result = run_relay(["-", "EXEC:cat,nofork"], input=b"no fork\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"no fork\n"


def test_nofork_unidirectional_keeps_stdout() -> None:
    """socat's EXEC_NOFORK_UNIDIR: with ``-u`` the program reads address 1, writes stdout."""
    result = run_relay(["-u", "/dev/null", "EXEC:echo unidirectional,nofork"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"unidirectional\n"


def test_nofork_exit_status_is_the_programs() -> None:
    assert run_relay(["-", "SYSTEM:exit 3,nofork"]).returncode == 3


def test_fdin_fdout_give_the_channel_other_descriptors() -> None:
    result = run_relay(["-", "SYSTEM:cat >&3 <&4,fdin=4,fdout=3"], input=b"via 4 and 3\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"via 4 and 3\n"


def test_end_close_leaves_the_child_running(tmp_path: Path) -> None:
    """Closing ends a child with SIGTERM; with ``end-close`` the child finishes its work."""
    done = tmp_path / "done"
    # The child lets go of the relay's stderr, which run_relay waits on.
    child = f"SYSTEM:exec 2>/dev/null; sleep 1; touch {done},end-close"
    # -t 0.5, socat's default: the relay ends by it, a second before the child.
    result = run_relay(["-t", "0.5", "/dev/null", child], timeout=10)
    assert result.returncode == 0, result.stderr
    assert not done.exists()  # the relay ended without waiting for the child
    for _ in range(int(scaled(50))):
        if done.exists():
            break
        time.sleep(0.1)
    assert done.is_file()


# fork on a listening second address, and on a connecting first address.


def test_fork_on_listening_second_address_serves_peer_after_peer(tmp_path: Path) -> None:
    """``EXEC:cat,end-close UNIX-LISTEN:sock,fork``: one cat, every client in turn."""
    path = tmp_path / "sock"
    # The one cat never ends its output, so each session ends by -t: the server's (0.5 s,
    # socat's default) hands cat to the next client before this client's (1 s) ends.
    with RelayProcess(["-t", "0.5", "EXEC:cat,end-close", f"UNIX-LISTEN:{path},fork"]) as relay:
        wait_for_path(str(path))
        replies = [
            run_relay(["-t", "1", "-", f"UNIX-CONNECT:{path}"], input=f"peer {n}\n".encode()).stdout
            for n in (1, 2)
        ]
        assert relay.proc.poll() is None, relay.stderr_text  # still serving
    assert replies == [b"peer 1\n", b"peer 2\n"]


def test_fork_on_connecting_address_connects_again() -> None:
    """socat 1.8: ``TCP:...,fork`` connects, relays, and connects again ``interval`` later."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(scaled(10))
        port = server.getsockname()[1]
        # -t 0.5: each session ends by it after echo's EOF, as the peers stay open, and
        # frees a child for the third connection.
        args = ["-t", "0.5", f"TCP:127.0.0.1:{port},fork,max-children=2,interval=0.1",
                "SYSTEM:echo hello"]
        with RelayProcess(args) as relay:
            peers = [server.accept()[0] for _ in range(3)]
            greetings = []
            for peer in peers:
                with peer:
                    peer.settimeout(scaled(10))
                    greetings.append(peer.recv(100))
            assert relay.proc.poll() is None, relay.stderr_text
    assert greetings == [b"hello\n"] * 3


def test_fdout_in_write_only_mode_is_refused() -> None:
    result = run_relay(["-u", "/dev/null", "EXEC:cat,fdout=1"])
    assert result.returncode == 1
    assert log_lines(result.stderr.decode(), "E") == [
        "_xioopen_foxec(): option fdout is useless in write-only mode"
    ]


def test_umask_applies_to_the_created_file_only(tmp_path: Path) -> None:
    """``CREATE:file,umask=177``: the file gets 0600; a SYSTEM child still sees the old umask."""
    target = tmp_path / "created"
    old = os.umask(0o022)
    try:
        result = run_relay(["-U", f"CREATE:{target},umask=177", "SYSTEM:umask"])
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text().strip() == "0022"


def test_socket_timeouts_are_accepted() -> None:
    """``so-rcvtimeo``/``so-sndtimeo``: set on the socket (the relay itself never blocks)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        address = f"TCP4:127.0.0.1:{port},so-rcvtimeo=1.5,sndtimeo=2"
        result = run_relay(["-u", "/dev/null", address])
        server.accept()[0].close()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("how", ["open", "stdin"])
def test_o_noatime_keeps_the_access_time(tmp_path: Path, how: str) -> None:
    """``o-noatime``: reading does not touch atime (which relatime would update here)."""
    times = {}
    for noatime in (False, True):
        source = tmp_path / f"source-{noatime}"
        source.write_bytes(b"content\n")
        os.utime(source, (1000, 2000))  # atime older than mtime: a plain read updates it
        option = ",o-noatime" if noatime else ""
        if how == "open":
            result = run_relay(["-u", f"OPEN:{source}{option}", "/dev/null"])
        else:
            with source.open("rb") as stdin:
                result = subprocess.run(
                    [*RELAY, "-u", f"-{option}", "/dev/null"], stdin=stdin,
                    capture_output=True, timeout=scaled(10), check=False,
                )
        assert result.returncode == 0, result.stderr
        times[noatime] = source.stat().st_atime
    assert times[True] == 1000
    assert times[False] != 1000


def test_child_variables_are_named_after_the_program_name() -> None:
    """socat: ``-lp server0`` gives the child SERVER0_PEERADDR; under its own name, SOCAT_."""
    for progname, expected in ((["-lp", "server0"], "SERVER0_PID="), ([], "SOCAT_PID=")):
        result = run_relay([*progname, "-u", "/dev/null", "SYSTEM:env"])
        assert result.returncode == 0, result.stderr
        names = [line.split("=")[0] + "=" for line in result.stdout.decode().splitlines()]
        assert expected in names


def test_dump_file_names_with_variables_are_opened_per_session(tmp_path: Path) -> None:
    """``-r "...$SOCAT_PEERPORT..."`` with fork: one dump file per session, as socat's children."""
    listen = free_port()
    template = str(tmp_path / "in-$SOCAT_PEERPORT.log")
    args = ["-r", template, f"TCP4-LISTEN:{listen},reuseaddr,fork", "PIPE"]
    with relay_listening(args, listen):
        for n in (1, 2):
            reply = run_relay(["-", f"TCP4:127.0.0.1:{listen}"], input=f"session {n}\n".encode())
            assert reply.stdout == f"session {n}\n".encode(), reply.stderr
    dumps = sorted(path.read_text() for path in tmp_path.glob("in-*.log"))
    assert dumps == ["session 1\n", "session 2\n"]


def test_chdir_holds_while_the_address_opens(tmp_path: Path) -> None:
    """``chdir``: the address opens in that directory; the relay changes back after."""
    result = run_relay(["-U", f"CREATE:created,chdir={tmp_path}", "SYSTEM:pwd"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "created").read_text().strip() == os.getcwd()
    child = run_relay(["-u", "/dev/null", f"SYSTEM:pwd,chdir={tmp_path}"])
    assert child.stdout.decode().strip() == str(tmp_path)
