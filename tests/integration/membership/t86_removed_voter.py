"""A voter removed by ``change_membership`` does not disrupt the cluster
(``docs/design/joint-consensus.md``, "Removed voters"):

- while writers write, a removed voter that never got the final ``[C_new]`` entry (held back
  on the way, or the node cut off before the change) times out again and again, yet its
  term never rises above the leader's, the leader keeps its term and no other node leads;
- a removed voter kept as a learner (``retain=True``), or dropped (``retain=False``), never
  runs a real election;
- added back as a learner, it does not depose the leader and catches up. With pre-vote off
  (so the cut-off node did raise its term), the same node still leads: it re-elects itself
  above the learner's term, and the learner catches up.

Time is measured by the removed node's own vote requests (each round is one of its election
timeouts, counted on the router even while it is cut off) or by heartbeat rounds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import BasicNode, Membership, Unreachable, Vote
from openraft_py.testing.cluster import Cluster

from ..checks import check_applied_prefix, check_log_matching, write_on_leader
from ._util import RpcCounter, Writer, assert_acked_applied, run_unless_stalled, settled_leader, steady_config

pytestmark = pytest.mark.timeout(30)

ROUNDS = 5
"""Election timeouts of the removed node a window covers."""


class VoteWatch:
    """Router hook: the vote requests each node sent (delivered or not), so a test can wait
    until a node went through ``n`` more election timeouts."""

    def __init__(self, c: Cluster) -> None:
        self.sent: dict[int, list[Any]] = {}
        self._changed = asyncio.Event()
        c.router.add_hook(self._hook)

    def _hook(self, rpc: str, source: int, target: int, req: Any) -> None:
        if rpc == "vote":
            self.sent.setdefault(source, []).append((target, req))
            self._changed.set()

    def rounds(self, nid: int) -> int:
        """How many rounds ``nid`` sent: requests to its lowest-numbered target."""
        reqs = self.sent.get(nid, [])
        if not reqs:
            return 0
        first = min(t for t, _ in reqs)
        return sum(1 for t, _ in reqs if t == first)

    async def more_rounds(self, nid: int, n: int, timeout: float = 10.0) -> None:
        """Wait until ``nid`` sent ``n`` more rounds of (pre-)vote requests."""
        want = self.rounds(nid) + n

        async def until() -> None:
            while self.rounds(nid) < want:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    def real_votes(self, nid: int) -> list[Any]:
        """The vote requests of ``nid`` that were not pre-votes."""
        return [r for _, r in self.sent.get(nid, []) if not r.pre_vote]


def hold_back_final_config(c: Cluster, removed: set[int], new: frozenset[int]) -> dict[str, bool]:
    """Fail every AppendEntries that carries the uniform ``[new]`` entry to a node of
    ``removed`` while the returned flag ``on`` is set: those nodes end with the joint config."""
    flag = {"on": True}

    def hook(rpc: str, source: int, target: int, req: Any) -> None:
        if flag["on"] and rpc == "append_entries" and target in removed:
            for e in req.entries:
                if type(e.payload) is Membership and e.payload.configs == (new,):
                    raise Unreachable("test: the final config entry is held back")

    c.router.add_hook(hook)
    return flag


def terms(c: Cluster) -> dict[int, int]:
    return {nid: r.metrics.current_term for nid, r in sorted(c.nodes.items())}


async def re_add_and_catch_up(
    c: Cluster, leader: int, removed: set[int], writer: Writer, blocking: bool = True
) -> None:
    """Add ``removed`` back as learners while writes go on; then every acked write reaches
    them and the logs agree. ``blocking=False`` where the re-added node's higher term makes
    the leader step down meanwhile (a blocking add waits on the leader's replication
    metrics, and answers ``ForwardToLeader`` while it is a candidate for that one round
    trip); either remaining voter may win that election, so the writes after it go to
    whichever node leads."""
    raft = c.nodes[leader]
    for nid in sorted(removed):
        await asyncio.wait_for(raft.add_learner(nid, BasicNode(), blocking=blocking), timeout=10.0)
    last = await write_on_leader(c, b"after re-adding")
    await c.wait_applied(last.log_id.index, timeout=10.0)
    await writer.stop()
    final = await write_on_leader(c, b"last")
    await c.wait_applied(final.log_id.index, timeout=10.0)
    assert_acked_applied(c, writer.acked, removed)
    check_log_matching(c.disks)
    check_applied_prefix(c.disks)


@pytest.mark.parametrize(
    ("old", "removed"),
    [pytest.param({1, 2, 3}, 1, id="3->2"), pytest.param({1, 2, 3, 4, 5}, 2, id="5->3")],
)
async def test_removed_voter_missing_the_final_config_does_not_disturb(old: set[int], removed: int) -> None:
    # The scenario asserts that the leader's term never moves: see run_unless_stalled. Seen
    # in CI with 150-300 ms election timeouts (5->3: a remaining voter led in term 2).
    await run_unless_stalled(lambda: _missing_final_config(old, removed))


async def _missing_final_config(old: set[int], removed: int) -> None:
    cfg = steady_config(election_timeout_min=300, election_timeout_max=600)
    async with Cluster(cfg, seed=86 + len(old)) as c:
        await c.start(old)
        leader = await settled_leader(c)
        gone = set(sorted(old - {leader})[-removed:])
        new = frozenset(old - gone)
        votes = VoteWatch(c)
        holding = hold_back_final_config(c, gone, new)
        writer = Writer(c, tasks=2)
        try:
            resp = await c.nodes[leader].change_membership(set(new), retain=False)
            assert resp.membership is not None and resp.membership.configs == (new,)
            for nid in sorted(gone):
                m = c.nodes[nid].metrics.membership_config.membership
                assert m.is_joint() and nid not in m.configs[-1], f"n{nid} holds the joint config only: {m}"
            term = c.nodes[leader].metrics.current_term
            acked = len(writer.acked)

            # Every removed node goes through ROUNDS election timeouts, while writes go on.
            for nid in sorted(gone):
                await votes.more_rounds(nid, ROUNDS)
            assert len(writer.acked) > acked, "the cluster kept committing writes"
            assert c.leader() == leader and c.nodes[leader].metrics.current_term == term, terms(c)
            for nid in sorted(gone):
                assert votes.real_votes(nid) == [], f"n{nid} (being removed) only ever asks with a pre-vote"
                assert c.nodes[nid].metrics.current_term <= term, terms(c)

            # Added back as learners: the leader keeps its term, they catch up.
            holding["on"] = False
            await re_add_and_catch_up(c, leader, gone, writer)
            assert c.leader() == leader and c.nodes[leader].metrics.current_term == term, terms(c)
        finally:
            await writer.stop()


@pytest.mark.parametrize("pre_vote", [pytest.param(True, id="pre-vote"), pytest.param(False, id="no-pre-vote")])
async def test_voter_cut_off_before_its_removal(pre_vote: bool) -> None:
    # The scenario asserts that the leader's term never moves: see run_unless_stalled. Seen
    # twice in full runs on a loaded 2-core machine (terms {1: 3, 2: 3}; with 150-300 ms
    # timeouts, then with 300-600 ms).
    await run_unless_stalled(lambda: _cut_off_before_removal(pre_vote))


async def _cut_off_before_removal(pre_vote: bool) -> None:
    cfg = steady_config(enable_pre_vote=pre_vote, election_timeout_min=300, election_timeout_max=600)
    async with Cluster(cfg, seed=861) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        lonely = max({1, 2, 3} - {leader})
        new = {1, 2, 3} - {lonely}
        votes = VoteWatch(c)
        writer = Writer(c, tasks=2)
        try:
            c.router.isolate(lonely)
            await c.nodes[leader].change_membership(new, retain=False)
            term = c.nodes[leader].metrics.current_term
            assert c.nodes[lonely].metrics.membership_config.membership.voter_ids() == {1, 2, 3}

            # Cut off, it times out ROUNDS times; then healed, ROUNDS more (now refused).
            await votes.more_rounds(lonely, ROUNDS)
            c.router.heal()
            acked = len(writer.acked)
            await votes.more_rounds(lonely, ROUNDS)
            assert len(writer.acked) > acked, "the cluster kept committing writes"
            assert c.leader() == leader and c.nodes[leader].metrics.current_term == term, terms(c)
            for nid in new:
                assert c.nodes[nid].metrics.current_term == term, "its requests never raised a voter's term"
            lonely_term = c.nodes[lonely].metrics.current_term
            if pre_vote:
                assert votes.real_votes(lonely) == [], "with pre-vote it never ran a real election"
                assert lonely_term <= term
            else:
                assert lonely_term >= term + ROUNDS, "without pre-vote it raised its term on each timeout"

            # Added back as a learner, it does not depose the leader, and it catches up.
            await re_add_and_catch_up(c, leader, {lonely}, writer, blocking=pre_vote)
            assert c.leader() == leader, "the same node leads"
            if pre_vote:
                assert c.nodes[leader].metrics.current_term == term, "not even a new term"
            else:
                # It re-elected itself above the learner's term at once (telling its followers
                # it hands over to itself), so the learner follows it; nobody else campaigned.
                assert c.nodes[leader].metrics.current_term > lonely_term
                mine = Vote.new(term, leader, True)
                again = [r for r in votes.real_votes(leader) if r.transfer_from == mine]
                assert [r.vote.term for r in again] == [lonely_term + 1], votes.real_votes(leader)
                for nid in new - {leader}:
                    assert votes.real_votes(nid) == [], f"n{nid} never campaigned"
            assert c.nodes[lonely].metrics.current_leader == leader
        finally:
            await writer.stop()


@pytest.mark.parametrize("retain", [pytest.param(True, id="retain"), pytest.param(False, id="drop")])
async def test_removed_voter_never_runs_an_election(retain: bool) -> None:
    cfg = steady_config()
    async with Cluster(cfg, seed=862 + retain) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        gone = max({1, 2, 3} - {leader})
        stay = min({1, 2, 3} - {leader, gone})
        votes = VoteWatch(c)
        rpcs = RpcCounter(c)
        writer = Writer(c, tasks=2)
        await c.nodes[leader].change_membership({1, 2, 3} - {gone}, retain=retain)
        term = c.nodes[leader].metrics.current_term
        await writer.stop()
        # Heartbeats only from here: ROUNDS election timeouts of heartbeat rounds.
        await rpcs.rounds(leader, stay, ROUNDS * cfg.election_timeout_max // cfg.heartbeat_interval, timeout=10.0)
        assert votes.real_votes(gone) == [], "a removed voter never runs a real election"
        if retain:
            assert votes.sent.get(gone, []) == [], "a learner of the new config does not even ask"
        assert c.leader() == leader and c.nodes[leader].metrics.current_term == term, terms(c)
        assert c.nodes[gone].metrics.current_term <= term
        resp = await c.nodes[leader].client_write(b"after")
        await c.wait_applied(resp.log_id.index, timeout=5.0, ids={1, 2, 3} - {gone})
        check_log_matching(c.disks)
