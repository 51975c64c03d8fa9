"""Child processes for containers: started in their own process group, awaited without threads.

Each container is one process group (``start_new_session``), so stopping a
container also stops whatever it forked, like the end of a container's PID
namespace. Exits are noticed through a pidfd registered with the event loop:
no watcher thread, no SIGCHLD handler, and it works on any loop (uvloop
included) and in any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


class SpawnError(OSError):
    """The container's program could not be started (not found, not executable)."""


def exit_status(returncode: int) -> int:
    """A container runtime's exit code: 128 + signal for a process killed by a signal."""
    return 128 - returncode if returncode < 0 else returncode


class Process:
    """One running child process and its process group."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd: int | None = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._check_exit)
        # The child may have ended before the reader was registered.
        self._check_exit()

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | Path,
        output: str | Path | None = None,
        stdin: bool = False,
    ) -> Process:
        """Start ``argv`` with stdout and stderr appended to the file ``output``.

        ``stdin=True`` gives it a pipe (closed by ``close_stdin``), else /dev/null.
        """
        out = open(output, "ab") if output else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=str(cwd),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise SpawnError(exc.errno, f"{argv[0]}: {exc.strerror}") from exc
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own copy
        return cls(popen)

    @property
    def returncode(self) -> int | None:
        """The exit status once the process ended (128 + signal when killed), else None."""
        if not self._exited.done():
            return None
        return exit_status(self._exited.result())

    @property
    def signal(self) -> int | None:
        """The signal that ended the process, if one did."""
        if self._exited.done() and self._exited.result() < 0:
            return -self._exited.result()
        return None

    def _check_exit(self) -> None:
        if self._exited.done():
            return
        code = self._popen.poll()
        if code is None:
            return
        self._close_pidfd()
        if self._popen.stdin:
            self._popen.stdin.close()
        # Whatever the container's main process left in its group goes with it.
        self.kill_group(signal.SIGKILL)
        self._exited.set_result(code)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    async def wait(self) -> int:
        """Wait for the end; return the exit status (128 + signal when killed)."""
        return exit_status(await asyncio.shield(self._exited))

    def kill_group(self, sig: int) -> None:
        """Send ``sig`` to the process group (ignored once it is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the main process, as ``docker kill --signal`` does."""
        if not self._exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def terminate(self, grace: float) -> int:
        """SIGTERM, then SIGKILL to the whole group after ``grace`` seconds; the exit status."""
        if not self._exited.done():
            self.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), timeout=max(grace, 0.0))
            except TimeoutError:
                self.kill_group(signal.SIGKILL)
                self.send_signal(signal.SIGKILL)
        return await self.wait()

    def write_stdin(self, data: bytes) -> None:
        """Write to the process's stdin pipe (``stdin=True`` only)."""
        if self._popen.stdin and not self._exited.done():
            with contextlib.suppress(BrokenPipeError):
                self._popen.stdin.write(data)
                self._popen.stdin.flush()

    def close_stdin(self) -> None:
        """Close the stdin pipe: the program reads EOF."""
        if self._popen.stdin:
            with contextlib.suppress(BrokenPipeError):
                self._popen.stdin.close()

    def kill_now(self) -> None:
        """SIGKILL the group and reap synchronously (the loop may be gone: last-resort cleanup)."""
        self.kill_group(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=5)
        if not self._exited.done() and self._popen.returncode is not None:
            self._close_pidfd()
            self._exited.set_result(self._popen.returncode)
