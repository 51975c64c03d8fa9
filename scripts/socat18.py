"""Build socat 1.8.0.3 from Debian's source package, once, into a cache.

socat 1.8.0.3 is the interoperability peer of the tests, the baseline of the
benchmarks, and the source of socat's own test suite (``test.sh``), which the
tests run against ``relay``. Debian 12 ships only 1.7.4.4, but Debian's
registry serves trixie's *source* package: with a ``deb-src`` line of our own
(``apt-get`` told to keep its lists in a scratch directory, so the machine's
apt configuration is not touched), ``apt-get source --download-only socat``
fetches ``socat_1.8.0.3.orig.tar.bz2`` (the ``.dsc`` answers 404; the tarball
arrives, and its sha256 is checked here). It is unpacked and built with
``./configure --disable-readline && make -j2`` (Debian's compilers and
libssl-dev; ``./dev setup`` installs them) into

    ${XDG_CACHE_HOME:-~/.cache}/kubectl-relay/socat-1.8.0.3/

which then holds the whole source tree: ``socat``, ``procan``, ``filan`` and
``test.sh``. Nothing of socat is committed to this repository. Later runs
find the build there and neither download nor compile.

    python scripts/socat18.py          # prints the path of socat 1.8.0.3, building it once

``RELAY_SOCAT_CACHE`` moves the cache; ``RELAY_SOCAT_MIRROR`` names another
Debian mirror (default ``http://deb.debian.org/debian``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "1.8.0.3"
TARBALL = f"socat_{VERSION}.orig.tar.bz2"
#: sha256 of the upstream tarball as Debian serves it (any Debian revision of 1.8.0.3).
TARBALL_SHA256 = "01eb017361d95bb3a6941e840b59e4463a3fabf92df4154ed02b16a2ed6a0095"
SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: The programs a finished build holds; their presence is what "cached" means.
PROGRAMS = ("socat", "procan", "filan")


class SocatUnavailable(RuntimeError):
    """socat 1.8.0.3 could not be fetched or built; the message says why and what to do."""


def cache_dir() -> Path:
    """The directory holding the build: ``$RELAY_SOCAT_CACHE`` or the user's cache."""
    if explicit := os.environ.get("RELAY_SOCAT_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubectl-relay"


def source_dir() -> Path:
    """The unpacked, built source tree (``socat``, ``procan``, ``filan``, ``test.sh``)."""
    return cache_dir() / f"socat-{VERSION}"


def built_socat() -> Path | None:
    """The cached socat 1.8.0.3 binary, or None when it has not been built yet."""
    tree = source_dir()
    if all(os.access(tree / program, os.X_OK) for program in PROGRAMS):
        return tree / "socat"
    return None


def _run(command: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise SocatUnavailable(f"{what} failed (exit {result.returncode}):\n{tail}")


def _download(into: Path) -> Path:
    """Fetch the tarball with apt-get, using a sources list and state of our own."""
    mirror = os.environ.get("RELAY_SOCAT_MIRROR", DEFAULT_MIRROR)
    sources = into / "sources.list"
    sources.write_text(f"deb-src {mirror} {SUITE} main\n")
    lists = into / "lists"
    (lists / "partial").mkdir(parents=True)
    cache = into / "apt-cache"
    (cache / "archives" / "partial").mkdir(parents=True)
    apt = [
        "apt-get", "-q",
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={cache}",
        # The download lands in a directory only we can write; apt's _apt user
        # could not, and would only warn.
        "-o", "APT::Sandbox::User=root" if os.geteuid() == 0 else "Debug::NoDropPrivs=1",
    ]
    _run([*apt, "update"], into, f"apt-get update for {SUITE}'s sources ({mirror})")
    # The .dsc of the current Debian revision answers 404, so apt-get reports
    # failure although the tarball arrived: judge by the tarball.
    subprocess.run([*apt, "source", "--download-only", "socat"], cwd=into,
                   capture_output=True, check=False)
    tarball = into / TARBALL
    if not tarball.is_file():
        raise SocatUnavailable(
            f"apt-get source --download-only socat did not fetch {TARBALL} from {mirror} "
            f"({SUITE}); is the mirror reachable? RELAY_SOCAT_MIRROR names another one"
        )
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise SocatUnavailable(f"{TARBALL} has sha256 {digest}, expected {TARBALL_SHA256}")
    return tarball


def build() -> Path:
    """The path of socat 1.8.0.3, fetched and built first if it is not cached."""
    if found := built_socat():
        return found
    for tool in ("apt-get", "make", "cc"):
        if shutil.which(tool) is None:
            raise SocatUnavailable(
                f"{tool} is missing: ./dev setup installs what building socat "
                f"{VERSION} needs (build-essential, libssl-dev, bzip2)"
            )
    target = source_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".socat-build-") as scratch:
        work = Path(scratch)
        with tarfile.open(_download(work)) as archive:
            archive.extractall(work, filter="data")
        tree = work / f"socat-{VERSION}"
        _run(["./configure", "--disable-readline"], tree, f"configure of socat {VERSION}")
        _run(["make", "-j2"], tree, f"make of socat {VERSION}")
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier build
        # Same file system, so the rename is atomic: a concurrent run sees
        # either no build or a whole one.
        tree.replace(target)
    found = built_socat()
    if found is None:
        raise SocatUnavailable(f"make of socat {VERSION} did not produce {', '.join(PROGRAMS)}")
    return found


def main() -> int:
    try:
        sys.stdout.write(f"{build()}\n")
    except SocatUnavailable as exc:
        sys.stderr.write(f"socat18: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
