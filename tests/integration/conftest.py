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


@pytest.fixture
async def steady_cluster() -> AsyncIterator[Cluster]:
    """``cluster`` with election timeouts of 300-600 ms, for a test that needs one leader
    throughout (and a leader transfer, which gives up after two election timeouts, to
    complete): on a loaded machine a stall of the shared event loop outlasted
    ``fast_config``'s 50-100 ms and elected another node, or expired a transfer."""
    c = Cluster(fast_config(election_timeout_min=300, election_timeout_max=600), seed=1)
    try:
        yield c
    finally:
        await c.shutdown()
