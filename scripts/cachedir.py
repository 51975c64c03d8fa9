"""The project's directory in the user's cache, where builds and downloads are kept.

For the modules run with ``python -m`` or imported; ``fetch_helm.py`` and
``socat18.py`` are also run as plain scripts (``python scripts/socat18.py``),
where ``scripts`` is not importable, so they say it themselves.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/kubectl-relay``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubectl-relay"
