"""What the tests of a steady write's work share: counting a method's calls, and a 3-node
in-process cluster whose leader has taken one write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from openraft_py import Config, Raft, SnapshotPolicy
from openraft_py.testing.cluster import Cluster


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[int]:
    """Count the calls of ``owner.name`` (a method) from now on, for this test: ``[calls]``."""
    calls = [0]
    method: Callable[..., Any] = getattr(owner, name)

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return method(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@asynccontextmanager
async def steady_leader() -> AsyncIterator[Raft[Any]]:
    """The leader of a 3-node in-process cluster (no tick, no snapshot) once one write
    committed: the next writes take the steady path."""
    config = Config(
        snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000, enable_tick=False
    )
    async with Cluster(config) as c:
        await c.start({1, 2, 3})
        await c.nodes[1].trigger.elect()
        leader = c.nodes[await c.wait_for_leader(timeout=10)]
        await leader.client_write(b"warm")
        yield leader
