"""The krew release of ``kubectl relay``: the archive, its manifest, and our own index.

    python -m scripts.krew_release --base-url https://example.org/releases --out dist

writes into ``dist/``

- ``kubectl-relay-krew-VERSION.tar.gz``: the launcher ``krew/kubectl-relay``
  and the package's wheel (built from this checkout), the archive krew
  downloads; publish it at ``BASE_URL/<its name>``;
- ``krew-index/``: a git repository in krew's index layout
  (``plugins/relay.yaml``, the manifest ``krew/relay.yaml`` filled with the
  version, the archive's URL and its sha256); push it where users can clone
  it, and they run ``kubectl krew index add kubectl-relay URL`` then
  ``kubectl krew install kubectl-relay/relay``.

krew's default index has another plugin named ``relay`` (knight42/krelay),
hence an index of our own. The wheel is built with pip; ``PIP_*`` variables
apply (the tests build it offline from ``./dev setup``'s wheelhouse).
"""

from __future__ import annotations

import argparse
import hashlib
import string
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from scripts.cachedir import user_cache_dir

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "krew" / "kubectl-relay"
MANIFEST_TEMPLATE = ROOT / "krew" / "relay.yaml"
#: The plugin's name in our index (``kubectl krew install INDEX/relay``).
PLUGIN = "relay"


class ReleaseError(RuntimeError):
    """A release step failed; the message says which and why."""


def wheelhouse_dir() -> Path:
    """Where ``./dev setup`` keeps the dependencies' wheels (for offline installs in tests)."""
    return user_cache_dir() / "wheelhouse"


def package_version() -> str:
    """The version in pyproject.toml."""
    import tomllib  # noqa: PLC0415 - only the release needs it

    with (ROOT / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def build_wheel(into: Path) -> Path:
    """The package's wheel, built by pip from this checkout."""
    command = [
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
        "--disable-pip-version-check", "--wheel-dir", str(into), str(ROOT),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("kubectl_relay-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ReleaseError(f"pip wheel failed (exit {result.returncode}):\n{result.stderr}")
    return wheels[-1]


def build_archive(out: Path, version: str) -> Path:
    """``out/kubectl-relay-krew-VERSION.tar.gz``: the launcher and the wheel, at its top."""
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"kubectl-relay-krew-{version}.tar.gz"
    with tempfile.TemporaryDirectory() as scratch:
        wheel = build_wheel(Path(scratch))
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(LAUNCHER, arcname=LAUNCHER.name, filter=_executable)
            tar.add(wheel, arcname=wheel.name, filter=_plain)
    return archive


def _executable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "", ""
    return info


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info = _executable(info)
    info.mode = 0o644
    return info


def sha256(path: Path) -> str:
    """The file's sha256, as krew checks it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(version: str, uri: str, digest: str) -> str:
    """``krew/relay.yaml`` filled in."""
    values = {
        "VERSION": f"v{version}",
        "URI": uri,
        "SHA256": digest,
    }
    # safe_substitute: the caveats hold shell's own ${KREW_ROOT:-...}.
    text = string.Template(MANIFEST_TEMPLATE.read_text()).safe_substitute(values)
    missing = [name for name in values if f"${{{name}}}" in text]
    if missing:
        raise ReleaseError(f"krew/relay.yaml: unfilled {', '.join(missing)}")
    return text


def write_index(index: Path, plugin_manifest: str) -> Path:
    """A git repository in krew's index layout holding the manifest; committed."""
    plugins = index / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / f"{PLUGIN}.yaml").write_text(plugin_manifest)
    identity = ["-c", "user.name=kubectl-relay release", "-c", "user.email=release@invalid"]
    for command in (
        ["init", "--quiet"],
        ["add", "plugins"],
        [*identity, "commit", "--quiet", "--allow-empty", "-m", f"{PLUGIN}: the plugin manifest"],
    ):
        result = subprocess.run(
            ["git", *command], cwd=index, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ReleaseError(f"git {command[-1]} in {index} failed: {result.stderr.strip()}")
    return index


def release(base_url: str, out: Path) -> tuple[Path, Path]:
    """The archive and the index for archives published under ``base_url``."""
    version = package_version()
    archive = build_archive(out, version)
    uri = f"{base_url.rstrip('/')}/{archive.name}"
    index = write_index(out / "krew-index", manifest(version, uri, sha256(archive)))
    return archive, index


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.krew_release", description=__doc__)
    parser.add_argument("--base-url", required=True, help="where the archive will be published")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder")
    options = parser.parse_args(argv)
    try:
        archive, index = release(options.base_url, options.out)
    except ReleaseError as exc:
        sys.stderr.write(f"krew_release: {exc}\n")
        return 1
    sys.stdout.write(f"archive: {archive}\nindex:   {index}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
