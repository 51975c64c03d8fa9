"""A kubernetes client for the cluster a kubeconfig names."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def api_client_for(kubeconfig: str | os.PathLike[str]) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` for the cluster a kubeconfig names, closed afterwards."""
    from kubernetes import config  # noqa: PLC0415 - only callers that want it pay the import

    client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        client.close()
