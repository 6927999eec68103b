"""Every test of the key-value service starts with the HTTP API's bound on per-request log
lines reset (``http_api._CLIENT_MISTAKES``: kept per process, so lines an earlier test's bad
requests used up would not be logged in the next). ``cluster``: a started 3-node cluster of
in-process nodes (modules that need another define their own); ``leader``: the leader of a
one-node cluster (the default ``max_body``, 1 MiB). ``root``: a new directory,
removed after the test with everything in it (data directories of nodes and processes)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _client_mistake_lines_reset() -> Iterator[None]:
    try:
        from openraft_py.kv import http_api
    except ImportError:  # (the tests that run without the kv extra)
        yield
        return
    http_api._CLIENT_MISTAKES.reset()
    yield
    http_api._CLIENT_MISTAKES.reset()


@pytest.fixture
def root() -> Iterator[Path]:
    """A new directory under the system's temporary one, removed after the test."""
    d = Path(tempfile.mkdtemp(prefix="kv-test-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def cluster() -> AsyncIterator[Any]:
    """A started 3-node ``KvCluster``, closed after the test."""
    from .kv_helpers import KvCluster

    c = KvCluster()
    try:
        await c.start(3)
        yield c
    finally:
        await c.close()


@pytest.fixture
async def leader() -> AsyncIterator[Any]:
    """The ``KvNode`` leading a one-node ``KvCluster`` (the default ``max_body``, 1 MiB),
    the cluster closed after the test."""
    from .kv_helpers import KvCluster

    c = KvCluster()
    try:
        await c.start(1)
        yield await c.wait_leader()
    finally:
        await c.close()
