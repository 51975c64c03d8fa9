"""Fixtures the engine's test modules share."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme


@pytest.fixture(scope="module")
def server_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certificate and its key in one file, as socat users keep them, from a CA made for the
    test module."""
    path = tmp_path_factory.mktemp("pki") / "server.pem"
    issued = trustme.CA().issue_cert("localhost", "127.0.0.1")
    issued.private_key_and_cert_chain_pem.write_to_path(str(path))
    return path
