"""A call that fails keeps nothing of its caller: the error, raised through the caller's
frames, carries them in its traceback, and the node kept each failed call's future (with
that error) until its record of callers was next compacted, up to about a thousand calls
later. A node answering ``ForwardToLeader`` to reads, or refusing snapshot chunks, held on
to every request object of those callers' frames: 300 failed calls, each from a frame
holding 1 MiB, kept 300 MiB alive."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from openraft_py import BasicNode, ForwardToLeader
from openraft_py.errors import ApiError
from openraft_py.raft import Raft
from openraft_py.testing.cluster import Cluster
from openraft_py.types import InstallSnapshotRequest, SnapshotMeta

pytestmark = pytest.mark.timeout(10)


class _Held:
    """Stands for what a caller's frame holds (a request, its body)."""


async def _fails(call: Callable[[], Awaitable[Any]], error: type[Exception]) -> weakref.ref[_Held]:
    """Run ``call`` from a frame holding a ``_Held``; it must raise ``error``. A weak
    reference to that object."""
    held = _Held()
    ref = weakref.ref(held)
    try:
        await call()
    except error:
        return ref
    raise AssertionError(f"{call} did not raise {error.__name__}")


def _chunk_out_of_order(follower: Raft) -> InstallSnapshotRequest:
    """A chunk at offset 10 of a snapshot the follower never received the start of."""
    m = follower.metrics
    meta = SnapshotMeta(m.last_applied, m.membership_config, "never-started")
    return InstallSnapshotRequest(m.vote, meta, 10, b"x", False)


async def test_a_failed_call_keeps_nothing_of_its_callers_frames(steady_cluster: Cluster) -> None:
    # (steady_cluster: the follower must stay one; under load a stall of the shared loop
    # elected it with 50-100 ms timeouts, and its ensure_linearizable did not fail.)
    cluster = steady_cluster
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=2.0)
    await cluster.wait_applied(1)
    follower = cluster.nodes[min(set(cluster.nodes) - {leader})]
    refs = [
        await _fails(follower.ensure_linearizable, ForwardToLeader),
        await _fails(lambda: follower.add_learner(9, BasicNode("")), ForwardToLeader),
        await _fails(lambda: follower.change_membership({1, 2}), ForwardToLeader),
        await _fails(lambda: follower.trigger.transfer_leader(leader), ForwardToLeader),
        await _fails(lambda: follower.install_snapshot(_chunk_out_of_order(follower)), ApiError),
    ]
    await asyncio.sleep(0)  # (the loop's callbacks of the last call run)
    gc.collect()
    assert [r() is None for r in refs] == [True] * len(refs)
    # Many of them: nothing piles up.
    refs = [await _fails(follower.ensure_linearizable, ForwardToLeader) for _ in range(50)]
    await asyncio.sleep(0)
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    # The node works on.
    await cluster.nodes[leader].client_write(b"after")
    await cluster.nodes[leader].ensure_linearizable()
