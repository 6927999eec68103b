"""Three contract gaps.

1. A blocking ``add_learner`` whose entry committed, cut short by the leader stepping down
   while it waited for the learner to catch up, raised ``ForwardToLeader`` with
   ``outcome_unknown=False``, which says the call "did not and will not take effect": the
   learner was in the membership all the same. Now the error says the change committed
   (``ForwardToLeader.committed_log_id``, the entry that made it).
"""

from __future__ import annotations

import asyncio

import pytest
from integration.checks import fast_config

from openraft_py import BasicNode, ForwardToLeader
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)


async def _until(what: str, cond: "object", timeout: float = 10.0) -> None:
    """Poll ``cond()`` until it holds (bounded by ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_blocking_add_learner_cut_short_after_commit_says_the_change_committed() -> None:
    async with Cluster(fast_config(), seed=83) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await raft.client_write(b"settle")
        # Node 4 never runs: the entry adding it commits on the voters, and the call then
        # waits for a learner that cannot catch up.
        adding = asyncio.ensure_future(raft.add_learner(4, BasicNode("n4"), blocking=True))

        def committed() -> bool:
            m = raft.metrics
            entry = m.membership_config.log_id
            return (4 in m.membership_config.membership.nodes and entry is not None
                    and m.committed is not None and m.committed.index >= entry.index)

        await _until("the entry adding node 4 committed", committed)
        entry = raft.metrics.membership_config.log_id
        assert not adding.done(), "a learner that never runs caught up"
        other = min({1, 2, 3} - {leader})
        await raft.trigger.transfer_leader(other)
        with pytest.raises(ForwardToLeader) as ei:
            await asyncio.wait_for(adding, 10)
        e = ei.value
        assert e.committed_log_id == entry, (e, e.committed_log_id, entry)
        assert not e.outcome_unknown, "the outcome is known: the change committed"
        assert "committed" in str(e), str(e)


# -- 2. TcpServer.start refuses a Raft that has stopped ------------------------------------------


async def test_tcp_server_refuses_a_raft_that_was_shut_down() -> None:
    """``TcpServer.start`` took a ``Raft`` already shut down: it listened, and every peer's
    request got an error (``Unreachable`` on their side), with nothing said here."""
    from openraft_py import Raft
    from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
    from openraft_py.storage import MemLogStore, MemStateMachine

    factory = TcpNetworkFactory(1, "c83")
    raft = await Raft.new(1, fast_config(), factory, MemLogStore(), MemStateMachine())
    await raft.shutdown()
    try:
        with pytest.raises(ValueError, match=r"raft .*has stopped"):
            await TcpServer.start(raft, "127.0.0.1", 0, "c83")
    finally:
        await factory.close()
