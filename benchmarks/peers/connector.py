"""Connection-rate client: short connections for a fixed time window.

``python -m benchmarks.peers.connector PORT --concurrency C --duration D``

One *transaction* is: open a TCP connection, send 1 byte, receive the 1-byte
echo (which proves the relay connected upstream and relayed both ways),
close. ``C`` clients run transactions back to back for ``D`` seconds; only
transactions finished inside the window count, so a slow or stuck one cannot
stretch the measurement. Prints ``{"completed", "errors", "slow", "rate"}``,
``slow`` counting transactions over 0.5 s (a dropped SYN costs the kernel's
1 s retransmission).

One client runs blocking calls; concurrent clients are non-blocking sockets
on one epoll loop, which keeps 50 of them in one process cheap.
"""

from __future__ import annotations

import argparse
import errno
import select
import socket

from .common import HOST, emit, now

#: A transaction slower than this most likely waited for a SYN retransmission.
SLOW = 0.5

#: Errors that count as a failed transaction rather than a broken harness.
FAILURES = (OSError, EOFError)


class Tally:
    """Counts of one window."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.completed = 0
        self.errors = 0
        self.slow = 0

    def record(self, started: float, ok: bool) -> None:
        """Count a transaction that ended now (only if inside the window)."""
        ended = now()
        if ended > self.deadline:
            return
        if not ok:
            self.errors += 1
            return
        self.completed += 1
        if ended - started > SLOW:
            self.slow += 1


def transact_blocking(port: int, timeout: float) -> None:
    """One transaction with blocking calls."""
    with socket.create_connection((HOST, port), timeout=timeout) as conn:
        conn.sendall(b"x")
        if conn.recv(1) != b"x":
            raise EOFError("no echo")


def run_serial(port: int, duration: float) -> Tally:
    """One client, transactions back to back."""
    tally = Tally(now() + duration)
    while now() < tally.deadline:
        started = now()
        try:
            transact_blocking(port, timeout=max(0.01, tally.deadline - started))
        except FAILURES:
            tally.record(started, ok=False)
        else:
            tally.record(started, ok=True)
    return tally


class Client:
    """One concurrent client's transaction in flight: its socket, step and start time."""

    def __init__(self, port: int) -> None:
        self.started = now()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sent = False
        # A non-blocking connect goes on in the kernel; EPOLLOUT says when it is done.
        if self.sock.connect_ex((HOST, port)) not in (0, errno.EINPROGRESS):
            raise OSError("connect failed at once")

    def step(self) -> bool | None:
        """Advance on readiness: None while going on, True when echoed, False on failure."""
        if not self.sent:
            if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return False
            self.sock.send(b"x")
            self.sent = True
            return None
        return self.sock.recv(1) == b"x"


def run_concurrent(port: int, concurrency: int, duration: float) -> Tally:
    """``concurrency`` clients, each running transactions back to back.

    A plain epoll loop over non-blocking sockets: measured here a little
    faster than uvloop's ``sock_*`` coroutines or protocols, so the client
    takes as little of the two cores as it can.
    """
    tally = Tally(now() + duration)
    poller = select.epoll()
    clients: dict[int, Client] = {}

    def launch() -> None:
        try:
            client = Client(port)
        except OSError:
            tally.record(now(), ok=False)
            return
        clients[client.sock.fileno()] = client
        poller.register(client.sock.fileno(), select.EPOLLOUT)

    try:
        for _ in range(concurrency):
            launch()
        while (left := tally.deadline - now()) > 0:
            for fd, _events in poller.poll(left):
                client = clients[fd]
                try:
                    outcome = client.step()
                except FAILURES:
                    outcome = False
                if outcome is None:
                    poller.modify(fd, select.EPOLLIN)
                    continue
                tally.record(client.started, ok=outcome)
                poller.unregister(fd)
                del clients[fd]
                client.sock.close()
                launch()
    finally:
        # Transactions still in flight at the end of the window do not count.
        for client in clients.values():
            client.sock.close()
        poller.close()
    return tally


def main() -> int:
    """Run one window and report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.connector")
    parser.add_argument("port", type=int)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=2.0)
    args = parser.parse_args()
    if args.concurrency == 1:
        tally = run_serial(args.port, args.duration)
    else:
        tally = run_concurrent(args.port, args.concurrency, args.duration)
    emit({
        "completed": tally.completed,
        "errors": tally.errors,
        "slow": tally.slow,
        "rate": tally.completed / args.duration,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
