"""Run socat 1.8.0.3's own test suite (``test.sh``) against a socat-compatible program.

``test.sh`` comes from the source tree ``scripts/socat18.py`` builds; it runs
``$SOCAT`` with real sockets, files and processes, and records one line per
test, ``N NAME OK|FAILED|CANT``, in ``$TMPDIR/$USER/<pid>/results.txt``.

Three things make one run of it fit in a few minutes on two cores:

- **Shards.** The selected names are split over several ``test.sh``
  processes at once, each in its own scratch directory (test.sh writes
  certificates, pipes and sockets into the current directory and
  ``$TMPDIR``). test.sh picks ports from ``_PORT=12001`` upwards and uses the
  fixed source port 2002; each shard gets its own copy of test.sh with its own
  port range, so shards (and the two programs, run side by side) never
  collide.
- **Certificates made once.** The OpenSSL tests make their keys and
  certificates on first use, including 2048-bit DH parameters (half a minute
  of CPU). One warm-up run of a few OpenSSL tests makes them all; every shard
  gets a copy, and they are kept next to the socat build for later runs.
- **A second look at surprises.** test.sh's tests sleep fixed multiples of
  ``-t`` and race on loaded machines. A test whose outcome disagrees with what
  is expected is run once more, alone; only an outcome seen twice counts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Outcome = Literal["OK", "FAILED", "CANT", "MISSING"]

HERE = Path(__file__).parent
SELECTION_FILE = HERE / "selected-tests.txt"
EXPECTED_FAILURES_FILE = HERE / "expected-failures.txt"

#: Tests whose first use makes every certificate and key the OpenSSL tests use
#: (server, client, IPv6 server, subjectAltName server with DH parameters, DSA).
CERTIFICATE_WARMUP = ("OPENSSL_CLIENTAUTH", "OPENSSLLISTEN_TCP6", "OPENSSL_SERVERALTAUTH",
                      "OPENSSLLISTENDSA")
CERTIFICATE_GLOBS = ("testsrv*", "testcli*", "testalt*", "testcert*")

#: test.sh's port base and fixed source port, as written in 1.8.0.3's test.sh.
PORT_BASE_LINE = "_PORT=12001\n"
SOURCE_PORT_LINE = "SOURCEPORT=2002\n"
#: Ports each shard may use: newport() counts up from the shard's base.
PORTS_PER_SHARD = 700


def read_names(path: Path) -> list[str]:
    """The test names in a list file: one per line, ``#`` comments, blank lines ignored."""
    names = []
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            names.append(text.split()[0])
    return names


def read_expected_failures(path: Path) -> dict[str, str]:
    """``NAME  reason`` lines: the tests relay is known to fail, each with why."""
    expected: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, _, reason = text.partition(" ")
        if not reason.strip():
            raise ValueError(f"{path.name}:{number}: {name} has no reason; write why it fails")
        if name in expected:
            raise ValueError(f"{path.name}:{number}: {name} is listed twice")
        expected[name] = reason.strip()
    return expected


@dataclass
class Program:
    """A socat-compatible program under test: a label and the command test.sh runs."""

    label: str
    executable: Path

    @property
    def slug(self) -> str:
        """The label as a directory name: test.sh breaks on paths with spaces."""
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.label)


@dataclass
class SuiteRun:
    """The outcome of every selected test for one program, and where its logs are."""

    program: Program
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    #: test.sh's per-test stdout/stderr files live under these directories.
    log_dirs: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for value in self.outcomes.values() if value == outcome)

    def summary(self) -> str:
        return (f"{self.count('OK')} passed / {self.count('FAILED')} failed / "
                f"{self.count('CANT')} cant")

    def stderr_of(self, name: str, lines: int = 8) -> str:
        """The last lines of the program's stderr in test ``name``, for failure messages."""
        for log_dir in self.log_dirs:
            for results in log_dir.glob("*/results.txt"):
                for row in results.read_text().splitlines():
                    number, _, rest = row.partition(" ")
                    if rest.split(" ")[0] != name:
                        continue
                    found = sorted(results.parent.glob(f"test{number}.stderr*"))
                    text = "\n".join(
                        line for stderr in found for line in stderr.read_text(
                            errors="replace").splitlines()[-lines:]
                    )
                    return text or "(no stderr)"
        return "(no log)"


@dataclass
class SuiteRunner:
    """One built socat source tree whose test.sh runs programs in a scratch directory."""

    source: Path
    workdir: Path
    timeout_base: str = "0.2"
    shards: int = 4
    #: One shard's wall-clock bound; test.sh is killed (and its tests count as MISSING) after it.
    shard_timeout: float = 900.0
    #: A test that prints nothing for this long gets its programs killed.
    stall_timeout: float = 60.0
    first_port: int = 20000

    _port_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _allocate_ports(self) -> int:
        with self._port_lock:  # the two programs' runs prepare shards at once
            base = self.first_port
            self.first_port += PORTS_PER_SHARD
        return base

    def _prepare(self, directory: Path, port_base: int, certificates: Path | None) -> Path:
        """A scratch directory holding test.sh (with its own ports), its helpers and certs."""
        directory.mkdir(parents=True)
        for helper in self.source.glob("*.sh"):
            shutil.copy2(helper, directory / helper.name)
        script = (self.source / "test.sh").read_text()
        if PORT_BASE_LINE not in script or SOURCE_PORT_LINE not in script:
            raise RuntimeError("test.sh no longer sets _PORT=12001 and SOURCEPORT=2002; "
                               "update testsh.py for this socat version")
        script = script.replace(PORT_BASE_LINE, f"_PORT={port_base}\n", 1)
        script = script.replace(SOURCE_PORT_LINE, f"SOURCEPORT={port_base - 1}\n", 1)
        (directory / "test.sh").write_text(script)
        if certificates is not None:
            for item in certificates.iterdir():
                shutil.copy2(item, directory / item.name)
        (directory / "tmp").mkdir()
        return directory

    def _environment(self, directory: Path, program: Program) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("SOCAT", "PYTEST", "COV_"))}
        env.pop("TERM", None)  # plain OK/FAILED words, no colours
        env.update(
            SOCAT=str(program.executable),
            PROCAN=str(self.source / "procan"),
            FILAN=str(self.source / "filan"),
            TMPDIR=str(directory / "tmp"),
            USER="suite",
            OPTS="",
        )
        env["PATH"] = f"{env.get('PATH', '')}:/usr/sbin:/sbin"
        # test.sh's *_MAXCHILDREN tests start their servers through SHELL:, which reads
        # $SHELL; a login session sets it, a CI runner may not.
        env.setdefault("SHELL", "/bin/sh")
        return env

    def _run_shard(self, directory: Path, program: Program, names: list[str]) -> None:
        command = ["bash", str(directory / "test.sh"), "-t", self.timeout_base, *names]
        stdout = directory / "stdout.txt"
        with stdout.open("wb") as out, (directory / "stderr.txt").open("wb") as err:
            process = subprocess.Popen(command, cwd=directory, stdout=out, stderr=err,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       env=self._environment(directory, program))
            deadline = time.monotonic() + self.shard_timeout
            progress, last_change = -1, time.monotonic()
            try:
                while process.poll() is None and time.monotonic() < deadline:
                    time.sleep(1)
                    size = stdout.stat().st_size
                    if size != progress:
                        progress, last_change = size, time.monotonic()
                    elif time.monotonic() - last_change > self.stall_timeout:
                        # Some of test.sh's tests race (a FIFO writer opening
                        # before its reader) and then wait forever: end the
                        # programs of the stuck test; test.sh records it and
                        # goes on with the next one.
                        _kill_programs_of_session(process.pid)
                        last_change = time.monotonic()
            finally:
                # test.sh leaves background servers of failed tests running: end
                # the whole session it started, never anything else.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def certificates(self, program: Program, cache: Path) -> Path:
        """The certificates the OpenSSL tests use, made once by test.sh and kept in ``cache``."""
        if cache.is_dir() and any(cache.glob("testalt.pem")):
            return cache
        directory = self._prepare(self.workdir / "certificates", self._allocate_ports(), None)
        self._run_shard(directory, program, list(CERTIFICATE_WARMUP))
        partial = cache.with_name(cache.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for pattern in CERTIFICATE_GLOBS:
            for item in directory.glob(pattern):
                if item.is_file():
                    shutil.copy2(item, partial / item.name)
        shutil.rmtree(cache, ignore_errors=True)
        partial.replace(cache)
        return cache

    def run(self, program: Program, names: Iterable[str], certificates: Path,
            tag: str = "") -> SuiteRun:
        """Run ``names`` with ``program`` over the shards; every name gets an outcome."""
        wanted = list(names)
        result = SuiteRun(program)
        started = time.monotonic()
        shards = [wanted[index::self.shards] for index in range(self.shards)]
        directories = [
            self._prepare(self.workdir / f"{program.slug}{tag}-{index}",
                          self._allocate_ports(), certificates)
            for index, shard in enumerate(shards) if shard
        ]
        with ThreadPoolExecutor(max_workers=len(directories)) as pool:
            list(pool.map(lambda job: self._run_shard(job[0], program, job[1]),
                          zip(directories, [shard for shard in shards if shard], strict=True)))
        for directory in directories:
            result.log_dirs.append(directory / "tmp" / "suite")
            for results in (directory / "tmp" / "suite").glob("*/results.txt"):
                for row in results.read_text().splitlines():
                    parts = row.split()
                    if len(parts) == 3 and parts[2] in ("OK", "FAILED", "CANT"):
                        result.outcomes[parts[1]] = parts[2]  # type: ignore[assignment]
        for name in wanted:
            result.outcomes.setdefault(name, "MISSING")
        result.seconds = time.monotonic() - started
        return result


def _kill_programs_of_session(session: int) -> None:
    """SIGKILL every process of ``session`` but the shells (test.sh and its subshells)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session and name != "bash":
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def side_by_side(runs: Mapping[str, SuiteRun]) -> str:
    """``relay: 200 passed / 30 failed / 10 cant`` and the same for socat, one per line."""
    width = max(len(label) for label in runs)
    return "\n".join(
        f"{label:<{width}}  {run.summary()}  ({run.seconds:.0f} s)"
        for label, run in runs.items()
    )
