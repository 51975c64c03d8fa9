"""UDP-RECV, UNIX-RECV, UNIX-SENDTO, UNIX-RECVFROM and SOCKETPAIR on real sockets, socat as the peer."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from kubectl_relay.engine.addresses import Address, parse_address
from kubectl_relay.engine.errors import OptionError
from kubectl_relay.engine.transports import datagrams
from kubectl_relay.engine.transports.base import OpenContext
from tests.conftest import SOCAT, requires_socat, scaled
from tests.support import (
    RelayProcess,
    free_port,
    log_lines,
    run_relay,
    wait_for_output,
    wait_for_path,
    wait_for_port,
)


def socat(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    assert SOCAT is not None
    return subprocess.run(
        [SOCAT, *args], input=data, capture_output=True, timeout=scaled(10), check=True
    )


def received(relay: RelayProcess, expected: bytes) -> bytes:
    """What the relay wrote to stdout once it holds ``expected``; the relay is stopped."""
    try:
        wait_for_output(relay, lambda stdout, _: stdout == expected)
    finally:
        relay.stop()
    return relay.stdout_bytes


@requires_socat
@pytest.mark.parametrize("keyword", ["UDP-RECV", "UDP4-RECV"])
def test_udp_recv_merges_the_datagrams_of_every_sender(keyword: str) -> None:
    port = free_port(kind=socket.SOCK_DGRAM)
    with RelayProcess(["-u", f"{keyword}:{port},bind=127.0.0.1", "-"]) as relay:
        wait_for_port(port, "udp")
        for word in (b"one\n", b"two\n", b"three\n"):
            socat("-u", "-", f"UDP4-SENDTO:127.0.0.1:{port}", data=word)
        assert received(relay, b"one\ntwo\nthree\n") == b"one\ntwo\nthree\n"


@requires_socat
def test_udp_recv_drops_senders_outside_range() -> None:
    port = free_port(kind=socket.SOCK_DGRAM)
    args = ["-u", f"UDP4-RECV:{port},range=127.0.0.2/32", "-"]
    with RelayProcess(args) as relay:
        wait_for_port(port, "udp")
        socat("-u", "-", f"UDP4-SENDTO:127.0.0.1:{port}", data=b"from 127.0.0.1\n")
        socat("-u", "-", f"UDP4-SENDTO:127.0.0.1:{port},bind=127.0.0.2", data=b"from .2\n")
        assert received(relay, b"from .2\n") == b"from .2\n"
    assert any(
        line.startswith("refusing connection from AF=2 127.0.0.1:") and "range" in line
        for line in log_lines(relay.stderr_text, "W")
    )


@requires_socat
def test_unix_recv_reads_from_every_sender_and_removes_its_socket(tmp_path: Path) -> None:
    path = tmp_path / "syslog.sock"
    with RelayProcess(["-u", f"UNIX-RECV:{path}", "-"]) as relay:
        wait_for_path(str(path))
        socat("-u", "-", f"UNIX-SENDTO:{path}", data=b"first\n")
        socat("-u", "-", f"UNIX-SENDTO:{path}", data=b"second\n")
        assert received(relay, b"first\nsecond\n") == b"first\nsecond\n"
    assert not path.exists()


@requires_socat
def test_unix_sendto_talks_to_socats_recvfrom(tmp_path: Path) -> None:
    server = tmp_path / "server.sock"
    client = tmp_path / "client.sock"
    assert SOCAT is not None
    with subprocess.Popen(
        [SOCAT, f"UNIX-RECVFROM:{server}", "SYSTEM:tr a-z A-Z"], stderr=subprocess.PIPE
    ) as peer:
        try:
            wait_for_path(str(server))
            result = run_relay(
                ["-t", "2", "-", f"UNIX-SENDTO:{server},bind={client}"], input=b"hello\n"
            )
        finally:
            peer.terminate()
            peer.wait(timeout=scaled(5))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"HELLO\n"
    assert not client.exists()


@requires_socat
def test_unix_recvfrom_answers_each_sender(tmp_path: Path) -> None:
    server = tmp_path / "server.sock"
    with RelayProcess([f"UNIX-RECVFROM:{server},fork", "SYSTEM:tr a-z A-Z"]) as relay:
        wait_for_path(str(server))
        for index in range(3):
            client = tmp_path / f"client{index}.sock"
            answer = socat(
                "-t",
                "2",
                "-",
                f"UNIX-SENDTO:{server},bind={client}",
                data=f"peer {index}\n".encode(),
            )
            assert answer.stdout == f"PEER {index}\n".encode()
        relay.stop()
    assert not server.exists()


def test_unix_recvfrom_without_fork_serves_one_datagram(tmp_path: Path) -> None:
    server, client = tmp_path / "server.sock", tmp_path / "client.sock"
    with RelayProcess([f"UNIX-RECVFROM:{server}", "SYSTEM:cat"]) as relay:
        wait_for_path(str(server))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(client))
            sock.settimeout(scaled(10))
            sock.sendto(b"ping", str(server))
            assert sock.recv(100) == b"ping"
        assert relay.wait() == 0, relay.stderr_text


@pytest.mark.parametrize("option", ["", ",socktype=2", ",type=1"])
def test_socketpair_echoes(option: str) -> None:
    payload = b"echo through a socket pair\n" * 100
    # -t 0.5, socat's default: a socket pair never ends, so the relay ends by it.
    result = run_relay(["-t", "0.5", "-", f"SOCKETPAIR{option}"], input=payload)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == payload
    assert "writing to and reading from unnamed socketpair" in log_lines(
        run_relay(["-t", "0.5", "-d", "-d", "-", "SOCKETPAIR"]).stderr.decode(), "N"
    )


async def test_socketpair_keeps_datagram_boundaries() -> None:
    stream = await datagrams.socketpair(Address("SOCKETPAIR"), OpenContext())
    try:
        for data in (b"first", b"second datagram"):
            await stream.write(memoryview(data))
        buffer = bytearray(100)
        reads = [bytes(buffer[: await stream.read_into(memoryview(buffer))]) for _ in range(2)]
    finally:
        await stream.aclose()
    assert reads == [b"first", b"second datagram"]
    assert stream.datagram


def test_unix_recv_refuses_an_existing_socket_without_unlink_early(tmp_path: Path) -> None:
    path = tmp_path / "taken"
    path.write_text("")
    result = run_relay(["-u", f"UNIX-RECV:{path}", "-"])
    assert result.returncode == 1
    [error] = log_lines(result.stderr.decode(), "E")
    assert "Address already in use" in error
    assert path.exists()
    with RelayProcess(["-u", f"UNIX-RECV:{path},unlink-early", "-"]) as relay:
        deadline = time.monotonic() + scaled(10)
        while os.path.isfile(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        relay.stop()
    assert not path.exists()


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("udp4-recv:514,range=10.0.0.0/8", "UDP4-RECV:514,range=10.0.0.0/8"),
        ("UNIX-SEND:/run/a.sock,bind=/run/b.sock", "UNIX-SENDTO:/run/a.sock,bind=/run/b.sock"),
        ("unix-recvfrom:/s,fork,mode=0600", "UNIX-RECVFROM:/s,fork,mode=0600"),
        ("SOCKETPAIR,socktype=1", "SOCKETPAIR,so-type=1"),
    ],
)
def test_canonical_text_parses_back(text: str, canonical: str) -> None:
    parsed = parse_address(text)
    assert str(parsed) == canonical
    assert parse_address(canonical) == parsed


@pytest.mark.parametrize("text", ["UDP-RECV:1,fork", "UNIX-RECV:/s,fork", "SOCKETPAIR,fork"])
def test_receivers_take_no_fork(text: str) -> None:
    # socat: "if you need the fork option, use UDP-RECVFROM in unidirectional mode".
    with pytest.raises(OptionError, match='option "fork" not supported'):
        parse_address(text)


@requires_socat
def test_udp_datagram_talks_with_socats_udp_datagram() -> None:
    assert SOCAT is not None
    ours, theirs = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_DGRAM)
    # socat echoes each datagram back through an unnamed pipe.
    peer = [SOCAT, f"UDP4-DATAGRAM:127.0.0.1:{ours},bind=127.0.0.1:{theirs}", "PIPE"]
    with subprocess.Popen(peer) as process:
        try:
            wait_for_port(theirs, "udp")
            result = run_relay(
                ["-t", "2", "-", f"UDP-DGRAM:[127.0.0.1]:{theirs},bind=127.0.0.1:{ours}"],
                input=b"datagram\n",
            )
        finally:
            process.terminate()
            process.wait(timeout=scaled(5))
    assert result.stdout == b"datagram\n", result.stderr.decode()


def test_udp_datagram_drops_peers_outside_range() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(scaled(10))
        port = server.getsockname()[1]
        args = ["-t", "2", "-", f"UDP4-DATAGRAM:127.0.0.1:{port},range=127.0.0.2/32"]
        with RelayProcess(args) as relay:
            assert relay.proc.stdin is not None
            relay.proc.stdin.write(b"out\n")
            relay.proc.stdin.flush()
            data, sender = server.recvfrom(100)
            server.sendto(b"refused\n", sender)  # from 127.0.0.1: outside the range
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                other.bind(("127.0.0.2", 0))
                other.sendto(b"permitted\n", sender)
            relay.proc.stdin.close()
            relay.wait()
    assert data == b"out\n"
    assert relay.stdout_bytes == b"permitted\n"
