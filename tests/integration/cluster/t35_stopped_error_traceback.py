"""A stopped node's error, raised again to each later caller and waiter (the same instance:
``Fatal``), carries the traceback it had when it stopped the node plus that raise's own
frames, not those of every earlier raise.

Raised as is, the one instance collected the frames of every raise and kept them alive: a
node shut down under 1500 pending ``wait().metrics`` calls (t96 failing under load) left
them an error with a traceback of thousands of entries, which the event loop's "exception
was never retrieved" report then formatted whole for each of them: a test worker spent over
ten minutes in its teardown. Each call on a stopped node grew it likewise, for good."""

from __future__ import annotations

import asyncio
from types import TracebackType

import pytest

from integration.checks import leader_after_a_write
from openraft_py import Fatal
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

WAITERS = 300
CALLS = 100
SHORT = 30  # entries: the raising call's frames and the error's own (tens at most)


def _entries(tb: TracebackType | None) -> int:
    n = 0
    while tb is not None:
        n += 1
        tb = tb.tb_next
    return n


async def test_the_waiters_of_a_node_that_stops_each_get_its_error_with_a_short_traceback(cluster: Cluster) -> None:
    raft, _ = await leader_after_a_write(cluster)
    waits = [asyncio.ensure_future(raft.wait(None).metrics(lambda m: False, "never")) for _ in range(WAITERS)]
    await asyncio.sleep(0)
    await raft.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 10)
    assert isinstance(results[0], Fatal) and all(r is results[0] for r in results)  # the node's own error
    assert _entries(results[0].__traceback__) < SHORT


async def test_calls_on_a_stopped_node_do_not_grow_its_error(cluster: Cluster) -> None:
    raft, _ = await leader_after_a_write(cluster)
    await raft.shutdown()
    calls = {
        "wait().metrics": lambda: raft.wait(None).metrics(lambda m: False),
        "client_write_many([])": lambda: raft.client_write_many([]),
        "get_current_snapshot": raft.get_current_snapshot,
        "trigger.elect": raft.trigger.elect,
    }
    for name, call in calls.items():
        for _ in range(CALLS):
            with pytest.raises(Fatal) as info:
                await asyncio.wait_for(call(), 5)
        assert _entries(info.value.__traceback__) < SHORT, name
    for _ in range(CALLS):
        with pytest.raises(Fatal) as info:
            async with raft:
                pass
    assert _entries(info.value.__traceback__) < SHORT, "async with"
