"""The cluster's images, all built on this machine (no registry is reachable).

==========  ===========================================  =====================================
image       made from                                    reference in containerd
==========  ===========================================  =====================================
base        Debian bookworm packages (mmdebstrap)        (only the relay image's base)
pause       ``build/pause/linux/pause.c`` of the release ``registry.k8s.io/pause:<tag>``
relay       the project's own ``Dockerfile`` (buildah)   ``ghcr.io/kubectl-relay/relay:<v>``
coredns     ``corednsbuild/`` (CoreDNS, few plugins)     ``localhost/kubectl-relay/coredns:<v>``
test/<n>    ``e2e/images/<n>/Containerfile``, FROM the   ``kubectl-relay-test/<n>:<v>``
            relay image (``--build-arg RELAY_IMAGE``)
==========  ===========================================  =====================================

``build_images`` (a step of ``build.BUILD_STEPS``) writes one docker archive
per image under ``settings.images_dir``, next to a ``.key`` file naming its
inputs: an image is rebuilt only when its key changes. The relay image's key
is the base's key, the Dockerfile and every file its ``COPY`` lines copy, so a
change of the engine rebuilds the relay image and nothing else.

buildah runs on a storage of its own under the cache (``overlay``: a third
faster than ``vfs`` here), unmounted and removed when the build ends, and
before the next one if a build was interrupted. ``ImageImport`` is
the step of ``up`` that loads the archives into the cluster's containerd.

The pause image keeps the upstream name: it is built from the same source
with the same flags, and it is the kubelet's default sandbox image, so its
image garbage collection never counts it as unused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e.localcluster import hostcleanup
from e2e.localcluster.component import ClusterError, ComponentError
from e2e.localcluster.settings import ClusterSettings
from kubectl_relay import __version__

#: Where progress lines go.
Report = Callable[[str], None]

#: The project's root (the Dockerfile's build context).
PROJECT_DIR = Path(__file__).resolve().parents[2]

#: CoreDNS built with only the plugins a cluster's DNS needs (see its main.go).
COREDNS_MODULE_DIR = Path(__file__).resolve().parent / "corednsbuild"

#: The Debian release and packages of the relay image's base: what the Dockerfile's
#: RUN lines use (python -m pip, python -m venv) and the TLS roots pip needs.
BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")

#: The pause image's tag, as ``build/pause/Makefile`` of the release sets it.
PAUSE_TAG = "3.10.1"
PAUSE_REFERENCE = f"registry.k8s.io/pause:{PAUSE_TAG}"
#: ``build/pause/Makefile``'s CFLAGS (its VERSION names this build).
PAUSE_CFLAGS = ("-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_TAG}-kubectl-relay")

RELAY_REFERENCE = f"ghcr.io/kubectl-relay/relay:{__version__}"

#: CoreDNS's version: the one corednsbuild/go.mod requires.
COREDNS_VERSION = "v1.15.0"
COREDNS_REFERENCE = f"localhost/kubectl-relay/coredns:{COREDNS_VERSION}"

#: A numeric non-root user for the images made from scratch (as distroless' "nonroot").
NONROOT = "65532:65532"

#: The host's TLS roots, mounted (never copied) into the relay image's RUN steps:
#: where a TLS-intercepting proxy stands between this machine and PyPI, pip
#: inside the build must trust what the host trusts.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class Image:
    """One image of the cluster: its short name and its reference in containerd."""

    name: str
    """``pause``, ``relay``, ``coredns`` (the archive is ``<images_dir>/<name>.tar``)."""

    reference: str
    """``repository:tag``, what pods and containerd's ``sandbox_image`` name."""

    @property
    def containerd_name(self) -> str:
        """The name containerd lists: a reference without a registry is Docker Hub's, as
        the kubelet normalizes a pod's ``image`` (``kubectl-relay-test/x:1`` is
        ``docker.io/kubectl-relay-test/x:1``)."""
        first = self.reference.split("/", 1)[0]
        has_registry = "/" in self.reference and (
            "." in first or ":" in first or first == "localhost"
        )
        return self.reference if has_registry else f"docker.io/{self.reference}"

    def archive(self, settings: ClusterSettings) -> Path:
        """The docker archive in the cache."""
        return settings.images_dir / f"{self.name}.tar"


PAUSE = Image("pause", PAUSE_REFERENCE)
RELAY = Image("relay", RELAY_REFERENCE)
COREDNS = Image("coredns", COREDNS_REFERENCE)

#: The e2e suite's test images: one folder each, holding a ``Containerfile``.
TEST_IMAGES_DIR = PROJECT_DIR / "e2e" / "images"
TEST_IMAGE_REPOSITORY = "kubectl-relay-test"


def test_images() -> list[Image]:
    """One image per ``e2e/images/<name>/Containerfile`` (none when the folder is missing)."""
    return [
        Image(f"test-{folder.name}", f"{TEST_IMAGE_REPOSITORY}/{folder.name}:{__version__}")
        for folder in sorted(TEST_IMAGES_DIR.glob("*"))
        if (folder / "Containerfile").is_file()
    ]


def cluster_images() -> list[Image]:
    """What ``ImageImport`` loads into containerd."""
    return [PAUSE, RELAY, COREDNS, *test_images()]


# -- keys: what an image is made from -----------------------------------------------------------


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def copied_sources(dockerfile: str) -> list[str]:
    """The build-context paths the Dockerfile's ``COPY``/``ADD`` lines copy.

    ``COPY --from=<stage>`` copies from another stage, not from the context, and
    is left out. Both the shell form and the JSON form are understood.
    """
    sources: list[str] = []
    for line in _instructions(dockerfile):
        words = line.split(None, 1)
        if len(words) < 2 or words[0].upper() not in ("COPY", "ADD"):
            continue
        rest = words[1].strip()
        flags = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        if any(flag.startswith("--from=") for flag in flags):
            continue
        arguments = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        sources.extend(arguments[:-1])
    return sources


def _instructions(dockerfile: str) -> Iterator[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    pending = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def _context_files(root: Path, sources: Sequence[str]) -> list[Path]:
    """Every file under ``sources`` (relative to ``root``), bytecode caches left out."""
    files: list[Path] = []
    for source in sources:
        path = root / source
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                found
                for found in path.rglob("*")
                if found.is_file() and "__pycache__" not in found.parts and found.suffix != ".pyc"
            )
        else:
            raise ClusterError(f"build: the Dockerfile copies {source!r}, which is not in {root}")
    return sorted(files)


def base_key() -> str:
    """The base image's inputs: suite, mirror and packages."""
    return _digest(
        [BASE_SUITE.encode(), BASE_MIRROR.encode(), *(p.encode() for p in BASE_PACKAGES)]
    )


def relay_key(project: Path = PROJECT_DIR) -> str:
    """The relay image's inputs: the base, the Dockerfile and every file it copies."""
    dockerfile = (project / "Dockerfile").read_text()
    parts = [base_key().encode(), dockerfile.encode()]
    for path in _context_files(project, copied_sources(dockerfile)):
        parts += [str(path.relative_to(project)).encode(), path.read_bytes()]
    return _digest(parts)


def folder_key(folder: Path, *parents: str) -> str:
    """An image made of ``folder``'s files on top of images with keys ``parents``."""
    parts = [parent.encode() for parent in parents]
    for path in sorted(found for found in folder.rglob("*") if found.is_file()):
        parts += [str(path.relative_to(folder)).encode(), path.read_bytes()]
    return _digest(parts)


def pause_source(release: str) -> Path:
    """``build/pause/linux/pause.c`` of ``k8s.io/kubernetes@release`` in Go's module cache."""
    # Not at the top: build.py imports this module for its list of steps.
    from e2e.localcluster.build import go_executable  # noqa: PLC0415

    result = subprocess.run(
        [go_executable(), "mod", "download", "-json", f"k8s.io/kubernetes@{release}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    if result.returncode != 0:
        raise ClusterError(
            f"build: `go mod download k8s.io/kubernetes@{release}` failed: "
            f"{(result.stdout + result.stderr).strip()}"
        )
    return Path(json.loads(result.stdout)["Dir"]) / "build" / "pause" / "linux" / "pause.c"


def pause_key(source: Path) -> str:
    """The pause image's inputs: its source, the compiler flags and the compiler's version."""
    compiler = _run(["gcc", "--version"]).splitlines()[0]
    return _digest([source.read_bytes(), " ".join(PAUSE_CFLAGS).encode(), compiler.encode()])


def coredns_key(go_version_text: str) -> str:
    """The CoreDNS image's inputs: its Go module's files and the Go version."""
    parts = [go_version_text.encode()]
    for path in sorted(COREDNS_MODULE_DIR.iterdir()):
        if path.is_file():
            parts += [path.name.encode(), path.read_bytes()]
    return _digest(parts)


# -- building ----------------------------------------------------------------------------------


def _run(
    command: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run ``command``; its stdout, or ``ClusterError`` with the end of its output."""
    try:
        result = subprocess.run(
            list(command), cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise ClusterError(
            f"build: `{command[0]}` is not installed; `./dev cluster` installs the Debian "
            "packages the images are built with (buildah, mmdebstrap, gcc, libc6-dev)"
        ) from None
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise ClusterError(
            f"build: `{shlex.join(command)}` failed (exit {result.returncode}):\n{tail}"
        )
    return result.stdout


class Buildah:
    """buildah on a throw-away storage of its own (overlay; ``_buildah`` unmounts it all)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, *arguments: str) -> str:
        # Its network files (locks that `buildah from` makes, even for --network host)
        # go to its own directory, never to /etc/cni: a containers.conf of its own says so.
        config = self.directory / "containers.conf"
        if not config.exists():
            config.write_text(f'[network]\nnetwork_config_dir = "{self.directory / "cni"}"\n')
        return _run(
            [
                "buildah",
                "--root",
                str(self.directory / "root"),
                "--runroot",
                str(self.directory / "run"),
                "--storage-driver",
                "overlay",
                *arguments,
            ],
            env=dict(os.environ, CONTAINERS_CONF=str(config)),
        )

    def from_scratch(
        self, reference: str, files: dict[str, Path], user: str, entrypoint: str
    ) -> None:
        """Commit an image holding only ``files`` (path in image -> file here)."""
        container = self("from", "scratch").strip()
        try:
            for target, source in files.items():
                self("copy", "--chmod", "0755", container, str(source), target)
            self("config", "--user", user, "--entrypoint", json.dumps([entrypoint]), container)
            self("commit", "--quiet", container, reference)
        finally:
            self("rm", container)

    def bud(
        self,
        context: Path,
        reference: str,
        build_arg: str,
        *options: str,
        dockerfile: str = "Dockerfile",
    ) -> None:
        """``buildah bud`` of ``context/dockerfile`` with ``build_arg``, tagged ``reference``."""
        self(
            "bud",
            "--quiet",
            *options,
            "--build-arg",
            build_arg,
            "--tag",
            reference,
            "--file",
            str(context / dockerfile),
            str(context),
        )

    def save(self, reference: str, archive: Path) -> None:
        """Write ``reference`` as a docker archive that keeps its name (ctr imports it so)."""
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        self("push", "--quiet", reference, f"docker-archive:{partial}:{reference}")
        partial.replace(archive)


@contextlib.contextmanager
def _buildah(settings: ClusterSettings) -> Iterator[Buildah]:
    directory = settings.cache_dir / "buildah"
    _remove_storage(directory)
    directory.mkdir(parents=True)
    try:
        yield Buildah(directory)
    finally:
        _remove_storage(directory)


def _remove_storage(directory: Path) -> None:
    """Remove buildah's storage, unmounting first what an interrupted build left mounted."""
    if problems := hostcleanup.unmount_under([directory]):
        raise ClusterError("build: " + "; ".join(problems))
    shutil.rmtree(directory, ignore_errors=True)


def _cached(archive: Path, key: str) -> bool:
    stamp = archive.with_suffix(".key")
    return archive.is_file() and stamp.is_file() and stamp.read_text().strip() == key


def _stamp(archive: Path, key: str) -> None:
    archive.with_suffix(".key").write_text(key + "\n")


def build_base(settings: ClusterSettings, buildah: Buildah, scratch: Path) -> Path:
    """The Debian base as an OCI archive (cached); returns its path."""
    archive = settings.images_dir / "base.oci.tar"
    key = base_key()
    if _cached(archive, key):
        return archive
    rootfs = scratch / "rootfs.tar"
    _run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--quiet",
            '--aptopt=APT::Install-Recommends "false"',
            f"--include={','.join(BASE_PACKAGES)}",
            # Documentation and translations: nothing in a container reads them.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            BASE_SUITE,
            str(rootfs),
            BASE_MIRROR,
        ]
    )
    container = buildah("from", "scratch").strip()
    try:
        buildah("add", container, str(rootfs), "/")
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--cmd",
            "python3",
            container,
        )
        buildah("commit", "--quiet", container, "localhost/kubectl-relay/base")
    finally:
        buildah("rm", container)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    buildah("push", "--quiet", "localhost/kubectl-relay/base", f"oci-archive:{partial}")
    partial.replace(archive)
    _stamp(archive, key)
    return archive


def build_pause(settings: ClusterSettings, buildah: Buildah, scratch: Path) -> bool:
    """The pause image, compiled statically from the release's source; whether it was built."""
    source = pause_source(settings.release)
    key = pause_key(source)
    if _cached(PAUSE.archive(settings), key):
        return False
    binary = scratch / "pause"
    _run(["gcc", *PAUSE_CFLAGS, "-o", str(binary), str(source)])
    # As build/pause/Dockerfile: the binary alone, user 65535.
    buildah.from_scratch(PAUSE.reference, {"/pause": binary}, "65535:65535", "/pause")
    buildah.save(PAUSE.reference, PAUSE.archive(settings))
    _stamp(PAUSE.archive(settings), key)
    return True


def build_relay(settings: ClusterSettings, buildah: Buildah, scratch: Path) -> bool:
    """The relay image from the project's Dockerfile on the Debian base; whether it was built."""
    key = relay_key()
    if _cached(RELAY.archive(settings), key):
        return False
    base = build_base(settings, buildah, scratch)
    # A clean context: exactly the files the key was computed from (no bytecode caches).
    context = scratch / "context"
    dockerfile = (PROJECT_DIR / "Dockerfile").read_text()
    for path in _context_files(PROJECT_DIR, copied_sources(dockerfile)):
        target = context / path.relative_to(PROJECT_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (context / "Dockerfile").write_text(dockerfile)
    mounts = (
        ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if HOST_CA_BUNDLE.is_file() else []
    )
    buildah.bud(
        context,
        RELAY.reference,
        f"PYTHON_IMAGE=oci-archive:{base}",
        # pip fetches the dependencies from PyPI.
        "--network",
        "host",
        *mounts,
    )
    buildah.save(RELAY.reference, RELAY.archive(settings))
    _stamp(RELAY.archive(settings), key)
    return True


def build_coredns(settings: ClusterSettings, buildah: Buildah, scratch: Path) -> bool:
    """CoreDNS compiled from ``corednsbuild/`` as a static binary alone; whether it was built."""
    from e2e.localcluster.build import go_executable, go_version  # noqa: PLC0415

    go = go_executable()
    key = coredns_key(go_version(go))
    if _cached(COREDNS.archive(settings), key):
        return False
    binary = scratch / "coredns"
    env = dict(os.environ, CGO_ENABLED="0")
    env["GOFLAGS"] = " ".join(
        filter(None, [env.get("GOFLAGS", ""), "-modcacherw", "-buildvcs=false"])
    )
    _run(
        [go, "build", "-o", str(binary), "-ldflags", "-s -w", "."], cwd=COREDNS_MODULE_DIR, env=env
    )
    buildah.from_scratch(COREDNS.reference, {"/coredns": binary}, NONROOT, "/coredns")
    buildah.save(COREDNS.reference, COREDNS.archive(settings))
    _stamp(COREDNS.archive(settings), key)
    return True


def build_test_image(
    image: Image, settings: ClusterSettings, buildah: Buildah, scratch: Path
) -> bool:
    """A test image from its folder, FROM the relay image's archive; whether it was built."""
    del scratch
    folder = TEST_IMAGES_DIR / image.name.removeprefix("test-")
    key = folder_key(folder, relay_key())
    if _cached(image.archive(settings), key):
        return False
    buildah.bud(
        folder,
        image.reference,
        f"RELAY_IMAGE=docker-archive:{RELAY.archive(settings)}",
        "--network",
        "none",
        dockerfile="Containerfile",
    )
    buildah.save(image.reference, image.archive(settings))
    _stamp(image.archive(settings), key)
    return True


def image_builds() -> list[tuple[Image, Callable[[ClusterSettings, Buildah, Path], bool]]]:
    """The images ``build_images`` makes, in order (each cached on its own key)."""
    builds: list[tuple[Image, Callable[[ClusterSettings, Buildah, Path], bool]]] = [
        (PAUSE, build_pause),
        (RELAY, build_relay),
        (COREDNS, build_coredns),
    ]
    builds += [(image, functools.partial(build_test_image, image)) for image in test_images()]
    return builds


def build_images(settings: ClusterSettings, report: Report = print) -> None:
    """Build every image whose inputs changed since it was cached (a step of ``build``)."""
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    with _buildah(settings) as buildah:
        for image, build in image_builds():
            began = time.monotonic()
            with tempfile.TemporaryDirectory(prefix=f"relay-image-{image.name}-") as scratch:
                built = build(settings, buildah, Path(scratch))
            archive = image.archive(settings)
            size = archive.stat().st_size / 2**20
            state = "built" if built else "cached"
            report(
                f"  image {image.reference}: {state} ({time.monotonic() - began:.1f}s, "
                f"{size:.0f} MiB archive)"
            )


# -- up: into containerd ------------------------------------------------------------------------


class ImageImport:
    """Step of ``up``: load every image archive into the cluster's containerd (``k8s.io``)."""

    name = "images"
    ready_timeout = 30.0

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings

    def _ctr(self, *arguments: str) -> str:
        command = [
            "ctr",
            "--address",
            str(self.settings.containerd_socket),
            "--namespace",
            "k8s.io",
        ]
        try:
            return _run([*command, *arguments])
        except ClusterError as exc:
            raise ComponentError(self.name, str(exc).removeprefix("build: ")) from None

    def start(self) -> None:
        """``ctr images import`` each archive (the build must have run)."""
        for image in cluster_images():
            archive = image.archive(self.settings)
            if not archive.is_file():
                raise ComponentError(
                    self.name, f"{archive} is missing: run `./dev cluster build` first"
                )
            self._ctr("images", "import", str(archive))

    def imported(self) -> set[str]:
        """The references containerd holds in the ``k8s.io`` namespace."""
        return set(self._ctr("images", "list", "--quiet").split())

    def ready(self) -> bool:
        """Every image is in containerd."""
        return {image.containerd_name for image in cluster_images()} <= self.imported()

    def stop(self) -> None:
        """Nothing: the images go with containerd's root, which ``containerd`` removes."""
