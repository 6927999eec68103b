"""Fixtures of the integration tests. Tests wait on conditions (``raft.wait(t).state(...)``,
``cluster.wait_for_leader()``), never on fixed sleeps; every test carries a
``pytest.mark.timeout``. Helpers and invariant checks live in ``checks.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openraft_py.testing.cluster import Cluster

from .checks import fast_config


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """An empty ``Cluster`` with ``fast_config()``; shut down after the test."""
    c = Cluster(fast_config(), seed=1)
    try:
        yield c
    finally:
        await c.shutdown()
