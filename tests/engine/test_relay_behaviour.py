"""socat's documented behaviour, observed from outside through a real relay process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import SOCAT, requires_socat, scaled
from tests.support import (
    PATIENT_CLOSE_TIMEOUT,
    PeakCounter,
    RelayProcess,
    ThreadedServer,
    echo,
    exchange,
    exchange_at_once,
    free_port,
    log_lines,
    recv_all,
    relay_listening,
    run_relay,
    wait_for_output,
    wait_for_port,
)


def slow_replier(conn: socket.socket) -> None:
    """After the peer's EOF, answer in five chunks 0.3 s apart (longer than -t 0.5 in total)."""
    request = recv_all(conn)
    for index in range(5):
        time.sleep(0.3)
        conn.sendall(b"%d:" % index + request)
    conn.shutdown(socket.SHUT_WR)


def test_half_close_keeps_a_reply_flowing_after_the_clients_eof() -> None:
    with ThreadedServer(slow_replier) as server:
        listen = free_port()
        # socat's default -t, given as such: the pauses add up to more than it.
        args = ["-t", "0.5", f"TCP-LISTEN:{listen},fork", f"TCP:127.0.0.1:{server.port}"]
        with relay_listening(args, listen):
            reply = exchange(listen, b"ask")
    assert reply == b"0:ask1:ask2:ask3:ask4:ask"


def test_close_timeout_ends_a_session_whose_peer_never_answers() -> None:
    silent_done = threading.Event()

    def silent(conn: socket.socket) -> None:
        recv_all(conn)  # reads until the relay half-closes, never answers
        silent_done.wait(scaled(10))

    with ThreadedServer(silent) as server:
        listen = free_port()
        args = ["-t", "0.2", f"TCP-LISTEN:{listen}", f"TCP:127.0.0.1:{server.port}"]
        with relay_listening(args, listen) as relay:
            assert exchange(listen, b"hello") == b""
            assert relay.wait() == 0
        silent_done.set()


def test_idle_timeout_ends_an_idle_session() -> None:
    with ThreadedServer(echo) as server:
        listen = free_port()
        args = ["-T", "0.3", f"TCP-LISTEN:{listen}", f"TCP:127.0.0.1:{server.port}"]
        with relay_listening(args, listen) as relay:
            with socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as idle:
                assert idle.recv(10) == b""  # closed by the relay, not by us
            assert relay.wait() == 0


def test_max_children_holds_its_bound() -> None:
    upstream = PeakCounter(pause=0.2)
    with ThreadedServer(upstream) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork,max-children=3", f"TCP:127.0.0.1:{server.port}"]
        with relay_listening(args, listen):
            replies = exchange_at_once(listen, 15)
    assert sorted(replies) == sorted(b"%d" % i for i in range(15))
    assert 1 <= upstream.peak <= 3


def test_a_failing_session_does_not_disturb_the_listener() -> None:
    closed = free_port()
    listen = free_port()
    with relay_listening([f"TCP-LISTEN:{listen},fork", f"TCP:127.0.0.1:{closed}"], listen) as relay:
        for _ in range(3):
            assert exchange(listen, b"") == b""  # unread data would turn the close into RST
        with ThreadedServer(echo, address=("127.0.0.1", closed)):
            assert exchange(listen, b"now it works") == b"now it works"
    assert relay.proc.returncode == 128 + signal.SIGTERM
    errors = log_lines(relay.stderr_text, "E")
    assert len(errors) == 3 and all("Connection refused" in e for e in errors), errors
    assert "Traceback" not in relay.stderr_text


def test_connect_failure_exits_1_with_one_error_line() -> None:
    closed = free_port()
    result = run_relay(["-", f"TCP:127.0.0.1:{closed}"])
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert len(log_lines(stderr, "E")) == 1, stderr
    assert "Connection refused" in log_lines(stderr, "E")[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("sig", "status", "level"),
    [
        (signal.SIGTERM, 143, "W"),
        (signal.SIGINT, 130, "N"),
        (signal.SIGHUP, 129, "N"),
        (signal.SIGQUIT, 131, "E"),
    ],
)
def test_signals_give_128_plus_the_signal_logged_at_socats_level(
    sig: int, status: int, level: str
) -> None:
    listen = free_port()
    with relay_listening(["-dd", f"TCP-LISTEN:{listen},fork", "PIPE"], listen) as relay:
        assert relay.stop(sig) == status
    assert f"exiting on signal {int(sig)}" in log_lines(relay.stderr_text, level)
    others = {"W", "N", "E"} - {level}
    assert not [
        line
        for other in others
        for line in log_lines(relay.stderr_text, other)
        if line.startswith("exiting on signal")
    ]


#: ``relay ARGS`` whose exit holds the event loop's teardown (``asyncio.Runner.close``) for
#: 2 s once the run has ended, and says "teardown" on stderr as it begins.
SLOW_TEARDOWN = (
    "import asyncio, sys, time\n"
    "from kubectl_relay.engine.cli import main\n"
    "close = asyncio.Runner.close\n"
    "def held(runner):\n"
    "    sys.stderr.write('teardown\\n')\n"
    "    sys.stderr.flush()\n"
    "    time.sleep(2)\n"
    "    close(runner)\n"
    "asyncio.Runner.close = held\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_while_the_relay_exits_ends_it_without_a_traceback(sig: int) -> None:
    """A second Ctrl-C once the run has ended: Python's KeyboardInterrupt was back by then."""
    listen = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_TEARDOWN, "-dd", f"TCP-LISTEN:{listen},fork", "PIPE"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(listen)
        proc.send_signal(sig)
        deadline = time.monotonic() + scaled(20)
        stderr = b""
        while b"teardown\n" not in stderr:
            assert time.monotonic() < deadline and proc.poll() is None, stderr
            stderr += os.read(proc.stderr.fileno(), 4096) if proc.stderr else b""
        proc.send_signal(sig)  # within the 2 s the teardown is held
        _, rest = proc.communicate(timeout=scaled(20))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = (stderr + rest).decode(errors="replace")
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert f"exiting on signal {int(sig)}" in text
    # The second one ends the exit at once, as an uncaught signal does.
    assert proc.returncode == -sig, text


def test_a_signal_left_out_of_the_s_mask_ends_the_relay_silently() -> None:
    listen = free_port()
    with relay_listening(["-S", "0", f"TCP-LISTEN:{listen},fork", "PIPE"], listen) as relay:
        assert relay.stop(signal.SIGTERM) == -signal.SIGTERM
    assert "exiting on signal" not in relay.stderr_text


@pytest.mark.parametrize("interrupt", [signal.SIGINT, signal.SIGTERM])
def test_the_s_mask_replaces_the_default_set(interrupt: int) -> None:
    """``-S 0x80000000`` catches signal 31 only; SIGINT and SIGTERM then end it uncaught."""
    listen = free_port()
    args = ["-S0x80000000", f"TCP-LISTEN:{listen},fork", "PIPE"]
    with relay_listening(args, listen) as relay:
        assert relay.stop(31) == 128 + 31
    assert log_lines(relay.stderr_text, "E") == ["exiting on signal 31"]
    with relay_listening(args, listen) as relay:
        assert relay.stop(interrupt) == -interrupt
    assert "Traceback" not in relay.stderr_text
    assert "exiting on signal" not in relay.stderr_text


@pytest.mark.parametrize("mask", ["0x", "-1", "12a", "18446744073709551616", ""])
def test_a_bad_signal_mask_is_a_usage_error(mask: str) -> None:
    result = run_relay(["-S", mask, "-", "-"])
    assert result.returncode == 1
    assert 'option "-S": invalid signal mask' in result.stderr.decode()
    assert "bit N stands for signal N" in result.stderr.decode()


@pytest.mark.parametrize(
    ("option", "listening"),
    [("", "0.0.0.0"), (",ai-passive=0", "127.0.0.1"), (",passive", "0.0.0.0")],
)
def test_ai_passive_decides_where_a_listener_without_a_host_listens(
    option: str, listening: str
) -> None:
    """socat 1.8's getaddrinfo flag options: without AI_PASSIVE "no host" means loopback."""
    listen = free_port()
    with RelayProcess(["-dd", f"TCP4-LISTEN:{listen}{option}", "PIPE"]) as relay:
        wait_for_output(relay, lambda _, err: "listening on" in err)
        relay.stop()
    assert f"listening on AF=2 {listening}:{listen}" in log_lines(relay.stderr_text, "N")


def test_a_large_datagram_after_a_small_one_arrives_whole() -> None:
    """Stream reads shrink after a small read; datagram reads must keep their full size."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.settimeout(scaled(5))
        listen = free_port(socket.AF_INET, socket.SOCK_DGRAM)
        args = [f"UDP-LISTEN:{listen},fork", f"UDP:127.0.0.1:{upstream.getsockname()[1]}"]
        with (
            relay_listening(args, listen, "udp"),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
        ):
            sizes = [10, 60_000, 30_000, 10, 65_000]
            for size in sizes:
                client.sendto(bytes([size % 251]) * size, ("127.0.0.1", listen))
                assert upstream.recv(65_536) == bytes([size % 251]) * size


def test_unidirectional_left_to_right(tmp_path: os.PathLike[str]) -> None:
    out = os.path.join(tmp_path, "out")
    listen = free_port()
    with relay_listening(["-u", f"TCP-LISTEN:{listen}", f"CREATE:{out}"], listen) as relay:
        assert exchange(listen, b"only this way\n") == b""
        assert relay.wait() == 0
    with open(out, "rb") as f:
        assert f.read() == b"only this way\n"


def test_readbytes_and_crnl_conversion() -> None:
    with ThreadedServer(echo) as server:
        result = run_relay(
            ["-", f"TCP:127.0.0.1:{server.port},crnl"], input=b"line one\nline two\nrest"
        )
    # Written to the socket as CRLF, converted back to LF when read from it.
    assert result.stdout == b"line one\nline two\nrest", result.stderr
    with ThreadedServer(echo) as server:
        args = ["STDIO,readbytes=5", f"TCP:127.0.0.1:{server.port}"]
        result = run_relay(args, input=b"0123456789")
    assert result.stdout == b"01234", result.stderr


def test_exec_child_sees_socat_environment() -> None:
    listen = free_port()
    args = [f"TCP-LISTEN:{listen}", "SYSTEM:echo $SOCAT_PEERADDR $SOCAT_SOCKPORT"]
    with relay_listening(args, listen) as relay:
        with socket.create_connection(("127.0.0.1", listen), timeout=scaled(10)) as conn:
            local_port = conn.getsockname()[1]
            reply = recv_all(conn)
        assert relay.wait() == 0
    assert reply == f"127.0.0.1 {listen}\n".encode()
    assert local_port != listen


def test_exec_relays_through_a_program() -> None:
    listen = free_port()
    with relay_listening([f"TCP-LISTEN:{listen},fork", "EXEC:tr a-z A-Z"], listen):
        assert exchange(listen, b"shout this\n") == b"SHOUT THIS\n"
        assert exchange(listen, b"again\n") == b"AGAIN\n"


@requires_socat
def test_real_socat_client_to_relay_listener() -> None:
    assert SOCAT is not None
    listen = free_port()
    payload = os.urandom(1 << 20)
    with relay_listening([f"TCP-LISTEN:{listen},fork", "PIPE"], listen):
        result = subprocess.run(
            [SOCAT, "-t", "5", "-", f"TCP:127.0.0.1:{listen}"],
            input=payload,
            capture_output=True,
            timeout=scaled(30),
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


@requires_socat
def test_relay_client_to_real_socat_listener() -> None:
    assert SOCAT is not None
    listen = free_port()
    payload = os.urandom(1 << 20)
    socat = subprocess.Popen(
        [SOCAT, "-t", PATIENT_CLOSE_TIMEOUT, f"TCP-LISTEN:{listen},reuseaddr", "PIPE"],
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(listen)
        result = run_relay(["-t", "5", "-", f"TCP:127.0.0.1:{listen}"], input=payload, timeout=30)
    finally:
        socat.terminate()
        socat.communicate(timeout=scaled(10))
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


@requires_socat
def test_relay_between_two_real_socats_with_half_close() -> None:
    """socat client -> relay -> socat server, the reply sent after the client's EOF."""
    assert SOCAT is not None
    target = free_port()
    listen = free_port()
    server = subprocess.Popen(
        [SOCAT, f"TCP-LISTEN:{target},reuseaddr", "SYSTEM:cat; echo done"],
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(target)
        with relay_listening([f"TCP-LISTEN:{listen}", f"TCP:127.0.0.1:{target}"], listen) as relay:
            result = subprocess.run(
                [SOCAT, "-t", "5", "-", f"TCP:127.0.0.1:{listen}"],
                input=b"request\n",
                capture_output=True,
                timeout=scaled(30),
                check=False,
            )
            assert relay.wait() == 0
    finally:
        server.terminate()
        server.communicate(timeout=scaled(10))
    assert result.stdout == b"request\ndone\n"


def test_bad_input_leaves_no_socket_file(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "sock")
    result = run_relay([f"UNIX-LISTEN:{path},fork", "TCP:127.0.0.1"])  # wrong parameter count
    assert result.returncode == 1
    assert not os.path.exists(path)
    busy = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        holder.listen()
        result = run_relay([f"TCP-LISTEN:{busy},bind=127.0.0.1", "-"])
    assert result.returncode == 1
    errors = log_lines(result.stderr.decode(), "E")
    assert len(errors) == 1 and "Address already in use" in errors[0], result.stderr


def test_relay_keeps_reading_stdin_while_writing(tmp_path: os.PathLike[str]) -> None:
    """A 4 MiB round trip through stdio: no deadlock between the directions."""
    payload = os.urandom(4 << 20)
    with ThreadedServer(echo) as server:
        result = run_relay(["-", f"TCP:127.0.0.1:{server.port}"], input=payload, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


def test_relay_process_in_background_is_stopped(tmp_path: os.PathLike[str]) -> None:
    listen = free_port()
    relay = RelayProcess([f"TCP-LISTEN:{listen},fork,reuseaddr", "PIPE"])
    with relay:
        wait_for_port(listen)
    assert relay.proc.returncode == 143


def test_accept_timeout_with_fork_lets_running_sessions_finish() -> None:
    """The listener gives up after accept-timeout; a session still running completes."""
    with ThreadedServer(slow_replier) as server:
        listen = free_port()
        args = [f"TCP-LISTEN:{listen},fork,accept-timeout=0.5", f"TCP:127.0.0.1:{server.port}"]
        with relay_listening(args, listen) as relay:
            reply = exchange(listen, b"late")  # outlives the accept timeout
            assert relay.wait() == 0
    assert reply == b"0:late1:late2:late3:late4:late"
    assert log_lines(relay.stderr_text, "W") == ["accept: Connection timed out"]
