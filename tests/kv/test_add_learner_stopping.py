"""An add-learner whose membership entry committed, answered while its node stops, never says
``"stopping": true`` (nothing was done).

``POST /cluster/learners`` waits until the learner caught up (``Raft.add_learner(blocking=True)``).
If the leader steps down during that wait, ``Raft.add_learner`` raises ``ForwardToLeader``
(``outcome_unknown`` false) although the entry adding the learner has committed. Answered by a
node whose stop had begun, with no leader known, that was the redirect rule's 503 "no leader is
known" with ``"stopping": true``, which tells a client that nothing of the request was done
(``http_api._no_leader``, ``_stopping_extra``): the learner was in the membership all the same.
"""

from __future__ import annotations

import asyncio

import pytest

from openraft_py.testing.proc_cluster import free_port
from openraft_py.types import LogId, Vote, VoteRequest, VoteResponse

from .kv_helpers import KvCluster, until_true, url

pytestmark = pytest.mark.timeout(60)


async def test_an_add_learner_committed_then_leader_lost_while_stopping_does_not_say_stopping(
    cluster: KvCluster,
) -> None:
    leader = await cluster.wait_leader()
    raft = leader.raft
    assert raft is not None and cluster.session is not None
    # A learner that never catches up: nothing listens at its raft address.
    learner = {"id": 4, "raft_addr": f"127.0.0.1:{free_port()}", "http_addr": f"127.0.0.1:{free_port()}"}

    async def add() -> tuple[int, dict[str, object]]:
        assert cluster.session is not None
        async with cluster.session.post(url(leader, "/cluster/learners"), json=learner) as resp:
            return resp.status, await resp.json()

    adding = asyncio.ensure_future(add())
    stopping: asyncio.Future[None] | None = None
    try:
        def committed() -> bool:
            m = raft.metrics
            entry = m.membership_config.log_id
            return (4 in m.membership_config.membership.nodes and entry is not None
                    and m.committed is not None and m.committed.index >= entry.index)

        await until_true("the entry adding learner 4 committed", committed, timeout=20)
        assert not adding.done()  # waiting for the learner to catch up
        stopping = asyncio.ensure_future(leader.stop())
        await until_true("the leader's stop began", lambda: not leader.accepting, timeout=10)
        # The leader steps down, no leader known: a higher vote (its own handed over, so that
        # leader stickiness does not refuse it), an uncommitted one.
        m = raft.metrics
        req = VoteRequest(Vote.new(m.current_term + 1, 2), LogId(m.current_term + 1, 10**6), transfer_from=m.vote)
        # (Its answer waits for the vote's write; the stop may end the Raft first, once the
        # add-learner is answered: ``Stopped`` then.)
        voting = asyncio.ensure_future(raft.vote(req))
        status, body = await asyncio.wait_for(adding, 20)
        vote = (await asyncio.gather(voting, return_exceptions=True))[0]
        assert not isinstance(vote, VoteResponse) or vote.vote_granted, vote
    finally:
        if not adding.done():
            adding.cancel()
        if stopping is not None:
            await asyncio.wait_for(stopping, 30)
    # The redirect rule's 503 (the leader stepped down, no leader known: not the Raft's stop) ...
    assert status == 503 and "leader_id" in body and body["leader_id"] is None, (status, body)
    # ... which must not say that nothing was done: the learner's entry committed.
    assert body.get("stopping") is not True and body.get("outcome_unknown") is not False, body
