"""``build``: the pinned release's components as one binary in the user's cache.

The Go module ``k8sbuild/`` (committed: go.mod, go.sum, main.go) requires
``k8s.io/kubernetes`` at the pinned release and links every component into one
multicall binary, ``<cache>/bin/k8s``; ``kubectl``, ``kube-apiserver``... are
symlinks to it. One binary instead of seven: the shared packages (client-go,
apimachinery, the API types) are linked once, and the build is one ``go
build`` whose packages all land in Go's build cache.

The binary is rebuilt only when its key changes: the release, the Go version
and a hash of ``k8sbuild/``'s files. ``go build`` itself runs with
``-ldflags '-s -w'`` (no symbol table or DWARF: a smaller binary, a faster
link) and the version stamps Kubernetes' own build sets, so ``kubectl
version`` reports the release for client and server.

It runs without ``-trimpath``: that flag changes the build-cache key of every
package, so a ``-trimpath`` build shares nothing with any other build of the
same sources on the machine, and the binary is only ever run here.

kube-router (NetworkPolicy, see ``netpolicy.py``) is a second binary,
``<cache>/bin/kube-router``, built the same way from its own module
``kuberouterbuild/`` and cached under its own key (its pin, Go's version, the
module's files): it shares no package versions with Kubernetes' build.

``BUILD_STEPS`` is the ordered list of what ``build`` does; the images are
built by steps appended there.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from e2e.localcluster import images, netpolicy
from e2e.localcluster.component import ClusterError
from e2e.localcluster.settings import COMMANDS, ClusterSettings

#: The Go module that builds the binary.
MODULE_DIR = Path(__file__).resolve().parent / "k8sbuild"

#: The module path of ``k8sbuild/go.mod`` (its main package).
MODULE_PATH = "kubectl-relay.local/k8sbuild"

#: The multicall binary's name in ``bin/``.
BINARY = "k8s"

#: Where Go's tarball installs it when it is not on PATH.
FALLBACK_GO = "/usr/local/go/bin/go"

#: Where progress lines go.
Report = Callable[[str], None]

#: Seconds between two progress lines of the Go build.
PROGRESS_INTERVAL = 20.0


def go_executable() -> str:
    """The ``go`` command (PATH, or the usual /usr/local/go)."""
    found = shutil.which("go")
    if found is None and Path(FALLBACK_GO).exists():
        found = FALLBACK_GO
    if found is None:
        raise ClusterError(
            "build: no `go` command on PATH or in /usr/local/go/bin; "
            "the cluster's components are built from source with Go 1.24 or later"
        )
    return found


def go_version(go: str) -> str:
    """``go env GOVERSION``."""
    return subprocess.run(
        [go, "env", "GOVERSION"], check=True, capture_output=True, text=True
    ).stdout.strip()


def module_files_hash(directory: Path) -> str:
    """SHA-256 of a Go module's files (go.mod, go.sum, main.go...), in name order."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def source_hash(module_dir: Path = MODULE_DIR) -> str:
    """``module_files_hash`` of a Go module of ours, ``k8sbuild/`` unless told."""
    return module_files_hash(module_dir)


def build_key(settings: ClusterSettings, go_version_text: str) -> str:
    """What the cached binary was built from: release, Go version, sources' hash."""
    return f"{settings.release} {go_version_text} {source_hash()}"


def version_ldflags(release: str, build_date: str = "1970-01-01T00:00:00Z") -> str:
    """``-X`` stamps for the version packages, as Kubernetes' hack/lib/version.sh sets them."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", release)
    if not match:
        raise ClusterError(f"build: release {release!r} is not of the form vMAJOR.MINOR.PATCH")
    values = {
        "gitVersion": release,
        "gitMajor": match.group(1),
        "gitMinor": match.group(2),
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    stamps = [
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in values.items()
    ]
    return " ".join(["-s", "-w", *stamps])


def required_release(go_mod: str) -> str:
    """The ``k8s.io/kubernetes`` version a go.mod's text requires."""
    match = re.search(r"^\s*k8s\.io/kubernetes\s+(v\S+)", go_mod, re.MULTILINE)
    if not match:
        raise ClusterError("build: k8sbuild/go.mod does not require k8s.io/kubernetes")
    return match.group(1)


def _stamp_path(settings: ClusterSettings) -> Path:
    return settings.bin_dir / ".build-key"


def binaries_current(settings: ClusterSettings, key: str) -> bool:
    """Whether the cache holds the binary of ``key`` and every symlink."""
    stamp = _stamp_path(settings)
    return (
        stamp.is_file()
        and stamp.read_text().strip() == key
        and all(os.access(settings.binary(c), os.X_OK) for c in COMMANDS)
    )


def go_environment() -> dict[str, str]:
    """The environment of a ``go build``: the caller's, with the project's ``GOFLAGS``."""
    env = dict(os.environ)
    # -modcacherw: the module cache stays deletable by `rm -rf`; -buildvcs=false:
    # the module is inside this repository, whose state must not change the build.
    env["GOFLAGS"] = " ".join(
        filter(None, [env.get("GOFLAGS", ""), "-modcacherw", "-buildvcs=false"])
    )
    env.setdefault("CGO_ENABLED", "1")
    return env


def _count_packages(
    go: str, env: dict[str, str], module_dir: Path = MODULE_DIR, package: str = "."
) -> int:
    """How many packages the binary is made of (for the progress lines)."""
    result = subprocess.run(
        [go, "list", "-deps", package],
        cwd=module_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return len(result.stdout.split()) if result.returncode == 0 else 0


def build_binaries(settings: ClusterSettings, report: Report = print) -> None:
    """Build ``bin/k8s`` and its symlinks unless the cache already has them."""
    go = go_executable()
    release = required_release((MODULE_DIR / "go.mod").read_text())
    if release != settings.release:
        raise ClusterError(
            f"build: k8sbuild/go.mod requires k8s.io/kubernetes {release}, "
            f"the settings pin {settings.release}; they must be the same release"
        )
    key = build_key(settings, go_version(go))
    if binaries_current(settings, key):
        report(f"  binaries of {settings.release} are cached in {settings.bin_dir}")
        return
    env = go_environment()
    settings.bin_dir.mkdir(parents=True, exist_ok=True)
    report(f"  go build of Kubernetes {settings.release} into {settings.bin_dir} ...")
    report("    listing the packages (the first build downloads the modules here) ...")
    listed = time.monotonic()
    total = _count_packages(go, env)
    report(f"    {total} packages ({time.monotonic() - listed:.0f}s)")
    target = settings.bin_dir / BINARY
    partial = target.with_suffix(".partial")
    ldflags = version_ldflags(settings.release)
    command = [go, "build", "-v", "-o", str(partial), "-ldflags", ldflags, "."]
    _run_go_build(command, env, total, report)
    partial.replace(target)
    for name in COMMANDS:
        link = settings.binary(name)
        link.unlink(missing_ok=True)
        link.symlink_to(BINARY)
    _stamp_path(settings).write_text(key + "\n")


def _run_go_build(
    command: list[str],
    env: dict[str, str],
    total: int,
    report: Report,
    module_dir: Path = MODULE_DIR,
    main_package: str = MODULE_PATH,
) -> None:
    """Run ``go build -v`` in ``module_dir``; every ``PROGRESS_INTERVAL`` s report how many
    packages compiled (``main_package`` is compiled last, then go links)."""
    began = time.monotonic()
    compiled: list[str] = []
    errors: list[str] = []
    with subprocess.Popen(
        command,
        cwd=module_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        done = threading.Event()

        def progress() -> None:
            while not done.wait(PROGRESS_INTERVAL):
                of = f" of {total}" if total else ""
                # The main package is compiled last: after it, go links.
                doing = "linking" if compiled and compiled[-1] == main_package else "compiling"
                report(
                    f"    {doing}: {len(compiled)}{of} packages compiled, the rest cached "
                    f"({time.monotonic() - began:.0f}s)"
                )

        ticker = threading.Thread(target=progress, daemon=True)
        ticker.start()
        try:
            for raw in process.stderr:
                line = raw.rstrip()
                # -v prints each package it compiles; anything else is a message.
                if re.fullmatch(r"[\w.\-/~]+", line):
                    compiled.append(line)
                else:
                    errors.append(line)
        finally:
            done.set()
            ticker.join()
    if process.returncode != 0:
        tail = "\n".join(errors[-30:])
        raise ClusterError(f"build: go build failed (exit {process.returncode}):\n{tail}")
    report(
        f"    {len(compiled)} packages compiled, the rest cached; linked "
        f"({time.monotonic() - began:.0f}s)"
    )


def kube_router_key(go_version_text: str) -> str:
    """What the cached kube-router was built from: its pin, Go's version, the module's hash."""
    module_hash = module_files_hash(netpolicy.MODULE_DIR)
    return f"{netpolicy.KUBE_ROUTER_VERSION} {go_version_text} {module_hash}"


def build_kube_router(settings: ClusterSettings, report: Report = print) -> None:
    """Build ``bin/kube-router`` from ``kuberouterbuild/`` unless the cache has it.

    ``kuberouterbuild/go.mod`` pins ``github.com/cloudnativelabs/kube-router/v2``
    (see ``netpolicy.py`` for which release and why) and names its command as a
    ``tool``, so ``go build <command package>`` there builds exactly the pinned
    release with the module graph that go.sum holds.
    """
    go = go_executable()
    pinned = re.search(
        rf"^\s*{re.escape(netpolicy.MODULE)}\s+(v\S+)",
        (netpolicy.MODULE_DIR / "go.mod").read_text(),
        re.MULTILINE,
    )
    if pinned is None or pinned.group(1) != netpolicy.KUBE_ROUTER_VERSION:
        raise ClusterError(
            f"build: kuberouterbuild/go.mod must require {netpolicy.MODULE} "
            f"{netpolicy.KUBE_ROUTER_VERSION} (netpolicy.KUBE_ROUTER_VERSION)"
        )
    key = kube_router_key(go_version(go))
    target = netpolicy.kube_router_binary(settings)
    stamp = settings.bin_dir / ".kube-router-key"
    if stamp.is_file() and stamp.read_text().strip() == key and os.access(target, os.X_OK):
        report(f"  kube-router {netpolicy.KUBE_ROUTER_VERSION} is cached in {settings.bin_dir}")
        return
    env = go_environment()
    settings.bin_dir.mkdir(parents=True, exist_ok=True)
    report(f"  go build of kube-router {netpolicy.KUBE_ROUTER_VERSION} into {settings.bin_dir} ...")
    total = _count_packages(go, env, netpolicy.MODULE_DIR, netpolicy.COMMAND_PACKAGE)
    report(f"    {total} packages")
    partial = target.with_suffix(".partial")
    stamps = " ".join(
        f"-X {netpolicy.VERSION_PACKAGE}.{name}={value}"
        for name, value in (("Version", netpolicy.KUBE_ROUTER_VERSION), ("BuildDate", "-"))
    )
    command = [
        go,
        "build",
        "-v",
        "-o",
        str(partial),
        "-ldflags",
        f"-s -w {stamps}",
        netpolicy.COMMAND_PACKAGE,
    ]
    _run_go_build(command, env, total, report, netpolicy.MODULE_DIR, netpolicy.COMMAND_PACKAGE)
    partial.replace(target)
    stamp.write_text(key + "\n")


#: What ``build`` does, in order; each takes the settings and the progress report.
BUILD_STEPS: list[tuple[str, Callable[[ClusterSettings, Report], None]]] = [
    ("binaries", build_binaries),
    ("kube-router", build_kube_router),
    ("images", images.build_images),
]


def build(settings: ClusterSettings, report: Report = print) -> float:
    """Every build step (each cached on its own); returns the total duration."""
    began = time.monotonic()
    for name, step in BUILD_STEPS:
        started = time.monotonic()
        report(f"build {name} ...")
        step(settings, report)
        report(f"build {name} done ({time.monotonic() - started:.1f}s)")
    return time.monotonic() - began
