"""The membership tests' ``cluster`` fixture: like the integration one but with
``steady_config()`` (see ``_util.steady_config``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openraft_py.testing.cluster import Cluster

from ._util import steady_config


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """An empty ``Cluster`` with ``steady_config()``; shut down after the test."""
    c = Cluster(steady_config(), seed=8)
    try:
        yield c
    finally:
        await c.shutdown()
