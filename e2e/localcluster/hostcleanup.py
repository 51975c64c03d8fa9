"""Removing what containers leave on the host: mounts, processes, cgroups.

``down`` must leave nothing behind even after a crash, when the daemons that
made these things are gone. Each helper here works from what the kernel shows
(``/proc/self/mountinfo``, ``/proc/<pid>/cmdline``, the cgroup tree) and only
touches what lies under a path of the cluster's own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

#: The cgroup v1 hierarchies (and the v2 one of a hybrid host) live under here.
CGROUP_MOUNT = Path("/sys/fs/cgroup")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts_under(roots: Iterable[Path]) -> list[Path]:
    """Mount points at or under any of ``roots``, deepest first (the order to unmount)."""
    prefixes = [str(root).rstrip("/") for root in roots]
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if any(point == prefix or point.startswith(prefix + "/") for prefix in prefixes):
            found.append(Path(point))
    # Deepest first; a path mounted twice is unmounted twice.
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def unmount_under(roots: Iterable[Path]) -> list[str]:
    """Unmount everything under ``roots``; return a line per mount that stayed."""
    roots = list(roots)
    for point in mounts_under(roots):
        result = subprocess.run(["umount", str(point)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            # Busy (a process still holds it): detach it; it goes when the last user does.
            subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)
    return [f"still mounted: {point}" for point in mounts_under(roots)]


def remove_tree(path: Path) -> None:
    """``rm -rf path``, refused while anything is mounted under it.

    A bind mount of a host directory (a hostPath volume) under ``path`` would
    otherwise have its host files deleted.
    """
    if left := mounts_under([path]):
        raise OSError(f"not removing {path}: still mounted under it: {', '.join(map(str, left))}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def pids_with_argument(executable_name: str, argument: str) -> list[int]:
    """Pids of processes running ``executable_name`` with ``argument`` on their command line."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and os.path.basename(argv[0]).decode(errors="replace") == executable_name
            and (argument.encode() in argv)
        ):
            pids.append(int(entry.name))
    return pids


def cgroup_directories(name: str) -> list[Path]:
    """``<hierarchy>/<name>`` in every mounted cgroup hierarchy where it exists."""
    if not CGROUP_MOUNT.is_dir():
        return []
    found = []
    for hierarchy in sorted(CGROUP_MOUNT.iterdir()):
        candidate = hierarchy / name
        if candidate.is_dir() and not hierarchy.is_symlink():
            found.append(candidate)
    return found


def pids_in_cgroups(directories: Iterable[Path]) -> set[int]:
    """Every pid in the cgroup trees rooted at ``directories``."""
    pids: set[int] = set()
    for directory in directories:
        for procs in directory.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(pid) for pid in procs.read_text().split())
    return pids


def kill_pids(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """SIGKILL ``pids`` and wait (bounded) for them to go; return those that stayed."""
    pids = set(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)}
        if not pids:
            break
        time.sleep(0.1)
    return sorted(pids)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def remove_cgroups(directories: Iterable[Path], timeout: float = 15.0) -> list[str]:
    """Kill every process in the trees, then ``rmdir`` them leaves first; a line per leftover.

    A killed process keeps its cgroup busy until its parent reaps it (a shim, or
    init once the shim is gone), so a busy ``rmdir`` is retried until ``timeout``.
    """
    directories = list(directories)
    kill_pids(pids_in_cgroups(directories))
    deadline = time.monotonic() + timeout
    problems = []
    for directory in directories:
        tree = sorted(
            (path for path in directory.rglob("*") if path.is_dir()),
            key=lambda path: len(path.parts),
            reverse=True,
        )
        for path in [*tree, directory]:
            if error := _rmdir_when_free(path, deadline):
                problems.append(f"cgroup {path} stays: {error}")
    return problems


def _rmdir_when_free(path: Path, deadline: float) -> str | None:
    """``rmdir`` a cgroup, retrying while it is busy; the error that stayed, or None."""
    while True:
        try:
            path.rmdir()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                return exc.strerror or str(exc)
            time.sleep(0.1)
        else:
            return None


def remove_empty_directories(root: Path) -> None:
    """``rmdir`` every empty directory under ``root`` (and ``root``), leaves first.

    Only empty directories go: whatever another program keeps there stays.
    """
    if not root.is_dir():
        return
    for directory, _subdirectories, _files in os.walk(root, topdown=False):
        with contextlib.suppress(OSError):
            Path(directory).rmdir()
