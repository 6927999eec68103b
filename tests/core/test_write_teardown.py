"""Client writes are not in the core's record of callers (their futures live in the queue,
then in a ``Responder``), yet no writer hangs when the node stops: a write the engine
raised on, the writes drained in the same batch, writes waiting to commit and writes
queued behind them all get the node's error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import Panicked, Stopped
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

BOUND = 5.0


@pytest.mark.parametrize("with_many", [True, False], ids=["with-a-many-payload-write", "one-payload-writes-only"])
async def test_writes_of_a_batch_the_engine_raised_on_get_panicked(with_many: bool) -> None:
    # With a many-payload write queued the pass takes its per-message path; with one-payload
    # writes only, the queue as one batch (its own path, and its own teardown).
    c = Cluster(fast_config(), seed=11)
    try:
        await c.start({1, 2, 3})
        raft = c.nodes[await c.wait_for_leader()]
        await raft.client_write(b"ok")

        def broken(*args: Any, **kw: Any) -> None:
            raise RuntimeError("a bug inside client_write")

        raft._core.engine.client_write = broken  # type: ignore[method-assign]
        # Sent in one loop turn: drained as one batch, on which the engine raises.
        writes = [asyncio.ensure_future(raft.client_write(b"%d" % i)) for i in range(3)]
        if with_many:
            writes.append(asyncio.ensure_future(raft.client_write_many([b"a", b"b"])))
        for f in writes:
            with pytest.raises(Panicked):
                await asyncio.wait_for(f, BOUND)
        with pytest.raises(Panicked):
            await asyncio.wait_for(raft.client_write(b"later"), BOUND)
    finally:
        await c.shutdown()


async def test_writes_waiting_to_commit_fail_at_shutdown() -> None:
    c = Cluster(fast_config(), seed=12)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await raft.client_write(b"ok")
        c.router.isolate(leader)
        waiting = [asyncio.ensure_future(raft.client_write(b"%d" % i)) for i in range(5)]
        last = raft.metrics.last_log_index
        await asyncio.wait_for(raft.wait(BOUND).log_index_at_least(last + 5), BOUND)
        queued = asyncio.ensure_future(raft.client_write(b"queued"))
        await asyncio.wait_for(raft.shutdown(), BOUND)
        for f in [*waiting, queued]:
            with pytest.raises(Stopped):
                await asyncio.wait_for(f, BOUND)
    finally:
        await c.shutdown()
