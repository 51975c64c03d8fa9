"""Fixtures for the end-to-end tests: a sandbox cluster per test module, a namespace per test.

The sandbox runs on its own event loop in a background thread
(``SandboxThread``), and tests are plain synchronous functions:

- the kubernetes client and ``kubectl`` block their caller, so they would stall
  a sandbox sharing the test's loop;
- an operator run in-process with kopf cancels, when it stops, every task of
  its loop created after it started: a sandbox on that loop would lose its
  connection handlers and pod workers.

Async code that must run next to the sandbox goes through ``sandbox.run(coro)``
(on the sandbox's loop) or ``sandbox.call(function)``.

Each test gets a fresh namespace (``namespace``); deleting it at the end
deletes everything in it, and the fixture waits until every process of its
pods has ended, so the leak checks (``no_leaked_children``, imported from
``tests/conftest.py``) hold after each test although the sandbox lives on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.sandbox import SandboxThread
from e2e.sandbox.cluster.objects import random_suffix
from tests.conftest import no_leaked_children, no_leaked_threads, scaled

__all__ = ["kube", "namespace", "no_leaked_children", "no_leaked_threads", "sandbox"]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxThread]:
    """A running sandbox (API server + cluster) shared by the tests of one module."""
    with SandboxThread() as running:
        yield running


@pytest.fixture
def namespace(sandbox: SandboxThread, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, deleted with everything in it after the test."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")
    name = f"{base[:50].rstrip('-')}-{random_suffix()}"
    store = sandbox.sandbox.store
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    sandbox.run(store.create("v1", "namespaces", None, body))
    yield name
    sandbox.run(store.delete("v1", "namespaces", None, name))
    sandbox.pods_gone(name, timeout=scaled(15))


class Kube:
    """The kubernetes client's APIs for the sandbox, on one ApiClient."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client  # noqa: PLC0415 - imported with the fixture only

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)


@pytest.fixture
def kube(sandbox: SandboxThread) -> Iterator[Kube]:
    """The kubernetes client (CoreV1Api, AppsV1Api, BatchV1Api) configured for the sandbox."""
    with sandbox.api_client() as api_client:
        yield Kube(api_client)
