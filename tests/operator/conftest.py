"""Fixtures of the operator tests: helm, and e2e's ``cluster`` (the real cluster of
``RELAY_E2E_KUBECONFIG``) and ``deleted_namespaces``, which e2e's ``namespace``
needs; see ``realcluster.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.conftest import cluster, deleted_namespaces  # noqa: F401 - e2e's `namespace` needs them
from scripts.fetch_helm import HelmUnavailable, helm_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def helm() -> Path:
    """A pinned helm binary (fetched once into a cache; see scripts/fetch_helm.py).

    Skipped when it cannot be fetched outside CI (no network, no cache), so that
    a laptop offline still runs the rest; in CI the test fails instead.
    """
    try:
        return helm_path()
    except HelmUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
