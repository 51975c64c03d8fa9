"""The sandbox's image registry: which local program an image name stands for.

There is no container runtime here, so an image is only a way to start a
process. Three kinds:

- the project's relay image (any name matching ``RELAY_IMAGE_PATTERNS``, or
  patterns given to the registry): the container's ``command`` + ``args`` run
  as in the pod spec, where ``relay`` and ``socat`` are the relay engine (the
  image installs it under both names) and ``kubectl-relay`` and
  ``relay-operator`` the project's other console scripts. Without a
  ``command`` the image's entrypoint is ``relay``;
- an argv image: a local command line acting as the image's ENTRYPOINT; the
  container's ``args`` follow it, a ``command`` replaces it (Docker's rules);
- a callable image: ``module:function`` called with the container's
  ``command`` + ``args`` as a list, inside the pod shim (so it binds to the
  pod's IP and resolves cluster names). Register a module-level function.

An image that is in none of these makes the pod wait with ``ErrImagePull``,
like a registry that does not know the name.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: Images that run the relay engine, matched with ``fnmatch``.
RELAY_IMAGE_PATTERNS = ("*kubectl-relay*", "ghcr.io/kubectl-relay/*")

#: Command names the relay image provides, run through the pod shim.
SHIM_COMMANDS = ("relay", "socat", "kubectl-relay", "relay-operator")

#: What ``register_image`` accepts: a command line, or a function called with the argument list.
ImageRun = Sequence[str] | Callable[[list[str]], Any]


@dataclass(frozen=True)
class Image:
    """How to start a container of one image."""

    name: str
    kind: Literal["relay", "argv", "callable"]
    #: argv images: the ENTRYPOINT; relay image: ``("relay",)``.
    entrypoint: tuple[str, ...] = ()
    #: callable images: ``module:qualname``.
    reference: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)


def callable_reference(function: Callable[..., Any]) -> str:
    """``module:qualname`` for a function another process can import.

    Functions of a script run as ``python -m package.module`` live in
    ``__main__``; the pod's process imports them by the module's real name.
    """
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(
            f"{function!r} cannot be an image: register a module-level function "
            "(the pod runs it in another process, which imports it by name)"
        )
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None or not spec.name:
            raise ValueError(f"{function!r} is in a script run by path; run it with python -m")
        module = spec.name.removesuffix(".__main__")
    return f"{module}:{qualname}"


def _strip_tag(image: str) -> str:
    """``registry:5000/name:tag@sha256:...`` -> ``registry:5000/name``."""
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


class ImageRegistry:
    """Image names -> how to run them."""

    def __init__(self, relay_patterns: Sequence[str] = RELAY_IMAGE_PATTERNS) -> None:
        self.relay_patterns = tuple(relay_patterns)
        self._images: dict[str, Image] = {}
        #: Called after each registration (the kubelet retries pods waiting for an image).
        self.on_change: Callable[[], None] | None = None

    def register(self, name: str, run: ImageRun, *, env: dict[str, str] | None = None) -> Image:
        """Make ``name`` runnable: an exact name (``echo:1``) or any tag (``echo``)."""
        if callable(run):
            image = Image(name, "callable", reference=callable_reference(run), extra_env=env or {})
        else:
            argv = tuple(run)
            if not argv:
                raise ValueError(f"image {name!r}: empty command line")
            image = Image(name, "argv", entrypoint=argv, extra_env=env or {})
        self._images[name] = image
        if self.on_change:
            self.on_change()
        return image

    def resolve(self, name: str) -> Image | None:
        """The image for a pod spec's ``image`` field, or None when unknown."""
        found = self._images.get(name) or self._images.get(_strip_tag(name))
        if found:
            return found
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.relay_patterns):
            return Image(name, "relay", entrypoint=("relay",))
        return None


def container_argv(
    image: Image, command: Sequence[str], args: Sequence[str], *, python: str = sys.executable
) -> list[str]:
    """The host command line for a container of ``image``.

    ``command`` and ``args`` are the container's, already expanded. Commands
    named like the relay image's programs go through the pod shim directly
    (no shell in between); any other command runs as given, with the shim's
    wrappers first on ``PATH`` so ``sh -c "socat ..."`` works too.
    """
    shim = [python, "-m", "e2e.sandbox.cluster.podshim"]
    if image.kind == "callable":
        return [*shim, "--call", image.reference, "--", *command, *args]
    if command:
        full = [*command, *args]
    elif image.kind == "relay":
        full = [*image.entrypoint, *args]
    else:
        full = [*image.entrypoint, *args] if args else list(image.entrypoint)
    program = os.path.basename(full[0])
    if program in SHIM_COMMANDS:
        return [*shim, "--script", program, "--", *full[1:]]
    return full


def write_wrappers(bindir: str, *, python: str = sys.executable) -> None:
    """Write ``relay``, ``socat``... scripts running the pod shim, for shells in pods."""
    os.makedirs(bindir, exist_ok=True)
    for name in SHIM_COMMANDS:
        path = os.path.join(bindir, name)
        with open(path, "w") as f:
            f.write(
                "#!/bin/sh\n"
                f'exec "{python}" -m e2e.sandbox.cluster.podshim --script {name} -- "$@"\n'
            )
        os.chmod(path, 0o755)
