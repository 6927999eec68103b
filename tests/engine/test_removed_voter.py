"""Engine unit tests: a voter removed by ``change_membership`` does not disrupt the cluster.

The rules (``docs/design/joint-consensus.md``, "Removed voters"):

1. A node that is not a voter of its effective membership never campaigns; a voter being
   removed (joint config, not in ``C_new``) campaigns only through a pre-vote round.
2. Pre-vote is on by default, so a voter that was cut off before it learned of its removal
   never raises its term.
3. A vote request that is refused (stale log, or a live leader: stickiness) changes nothing
   on the receiver, not even on the leader.
4. A leader that sees a greater *uncommitted* vote from a node that is not a voter re-elects
   itself above it instead of stepping down; a voter's greater vote, or a committed one,
   still ends its leadership.

Each unit test sets state, calls one handler and asserts the exact command list; the last
ones run the whole scenario on the engine ``Network`` harness.
"""

from __future__ import annotations

from typing import Any

from openraft_py.config import Config
from openraft_py.engine import (
    AbandonWrites,
    Respond,
    SaveVote,
    SendTransferLeader,
    SendVote,
    StopReplication,
)
from openraft_py.engine.command import RespondOnApply
from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    ServerState,
    SnapshotMeta,
    StoredMembership,
    VoteRequest,
    VoteResponse,
)

from .harness import Network
from .helpers import TX, ent, flush, lid, make_engine, make_leader, membership, vote

LOG = [(0, 0), (1, 1)]
NO_PRE_VOTE = Config(enable_pre_vote=False)


def nodes(*ids: int) -> dict[int, BasicNode]:
    return {n: BasicNode() for n in ids}


# -- rule 1: not campaigning once out, asking first while being removed ------------------------


def test_voter_that_appended_its_removal_never_campaigns():
    eng = make_engine(id=3, voters=[{1, 2, 3}, {1, 2}], log=LOG, vote=(1, 1, True), config=NO_PRE_VOTE)
    assert eng.state.server_state is ServerState.FOLLOWER
    final = ent(1, 2, membership({1, 2}))
    eng.handle_append_entries(AppendEntriesRequest(vote(1, 1, True), lid(1, 1), [final], lid(1, 1)), TX, now=10.0)
    eng.take_commands()
    assert eng.state.server_state is ServerState.LEARNER, "out of the voters as soon as [C_new] is appended"
    for k in range(1, 11):
        eng.handle_tick(10.0 + k * 1_000.0)
        assert eng.take_commands() == [], "no vote request, no vote saved, even with pre-vote off"
    assert eng.state.vote == vote(1, 1, True)
    eng.elect(20_000.0)
    assert eng.take_commands() == [], "not even when told to"


def test_voter_that_installs_a_snapshot_of_its_removal_never_campaigns():
    # A lagging node being removed may learn of it from a snapshot instead of the entry.
    eng = make_engine(id=3, voters=[{1, 2, 3}, {1, 2}], log=LOG, vote=(1, 1, True), config=NO_PRE_VOTE)
    final = StoredMembership(lid(1, 3), membership({1, 2}))
    eng.handle_snapshot_received(SnapshotMeta(lid(1, 5), final, "snap"), "file", TX)
    eng.take_commands()
    eng.handle_snapshot_installed(SnapshotMeta(lid(1, 5), final, "snap"), TX)
    eng.take_commands()
    assert eng.state.server_state is ServerState.LEARNER
    eng.handle_tick(10_000.0)
    assert eng.take_commands() == []
    assert eng.state.vote == vote(1, 1, True)


def test_voter_being_removed_asks_first_even_with_pre_vote_off():
    eng = make_engine(id=3, voters=[{1, 2, 3}, {1, 2}], log=LOG, vote=(1, 1, True), config=NO_PRE_VOTE)
    eng.handle_tick(10_000.0)
    assert eng.take_commands() == [SendVote(VoteRequest(vote(2, 3), lid(1, 1), pre_vote=True), nodes(1, 2))]
    assert eng.state.vote == vote(1, 1, True), "a pre-vote round persists nothing"


def test_voter_staying_in_the_joint_config_elects_directly_with_pre_vote_off():
    # The contrast: the leaving rule is about node 3 only.
    eng = make_engine(id=2, voters=[{1, 2, 3}, {1, 2}], log=LOG, vote=(1, 1, True), config=NO_PRE_VOTE)
    eng.handle_tick(10_000.0)
    assert eng.take_commands() == [
        SaveVote(vote(2, 2), 1),
        SendVote(VoteRequest(vote(2, 2), lid(1, 1)), nodes(1, 3), when=1),
    ]


# -- rule 2: pre-vote by default --------------------------------------------------------------


def test_pre_vote_is_on_by_default():
    assert Config().enable_pre_vote is True


def test_voter_cut_off_before_its_removal_keeps_its_term_by_default():
    # Node 3 never received the joint config: it still thinks it is a voter of {1, 2, 3}.
    eng = make_engine(id=3, log=LOG, vote=(1, 1, True))
    for k in range(1, 11):
        eng.handle_tick(k * 1_000.0)
        assert eng.take_commands() == [SendVote(VoteRequest(vote(2, 3), lid(1, 1), pre_vote=True), nodes(1, 2))]
        assert eng.state.vote == vote(1, 1, True), "ten election timeouts, the term never moved"


def test_voter_cut_off_before_its_removal_adopts_at_most_the_leaders_vote():
    # When it is heard again, the refusals carry the cluster leader's vote: adopting it
    # keeps node 3 at the leader's term (it will accept that leader's entries), never above.
    eng = make_engine(id=3, log=LOG, vote=(1, 1, True))
    eng.handle_tick(1_000.0)
    eng.take_commands()
    leader_vote = vote(2, 1, True)
    eng.handle_vote_resp(1, VoteResponse(leader_vote, False, lid(2, 4), pre_vote=True), 1_001.0)
    assert eng.take_commands() == [SaveVote(leader_vote, 1)]
    for k in range(2, 11):
        eng.handle_tick(k * 1_000.0)
        assert eng.take_commands() == [SendVote(VoteRequest(vote(3, 3), lid(1, 1), pre_vote=True), nodes(1, 2))]
        eng.handle_vote_resp(1, VoteResponse(leader_vote, False, lid(2, 4), pre_vote=True), k * 1_000.0 + 1)
        assert eng.take_commands() == []
    assert eng.state.vote == leader_vote


# -- rule 3: refused vote requests change nothing ------------------------------------------------


def test_leader_refuses_a_removed_nodes_vote_request_without_changing_its_vote():
    # Leader 1 of {1, 2} at term 2; node 3 was removed before it heard of it. Long after
    # any stickiness window, its vote request is refused for its log and changes nothing.
    eng = make_leader(id=1, voters={1, 2}, log=LOG, vote=(1, 1))
    assert eng.state.vote == vote(2, 1, True)
    eng.handle_vote_req(VoteRequest(vote(9, 3), lid(1, 1)), TX, now=10_000.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(vote(2, 1, True), False, lid(2, 2)))]
    eng.handle_vote_req(VoteRequest(vote(9, 3), lid(1, 1), pre_vote=True), TX, now=10_000.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(vote(2, 1, True), False, lid(2, 2), pre_vote=True))]
    assert eng.leader is not None and eng.state.vote == vote(2, 1, True)


def test_follower_refuses_a_removed_nodes_vote_request_without_changing_its_vote():
    eng = make_engine(id=2, voters={1, 2}, log=[(0, 0), (1, 1), (2, 2)], vote=(2, 1, True))
    eng.handle_vote_req(VoteRequest(vote(9, 3), lid(1, 1)), TX, now=10_000.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(vote(2, 1, True), False, lid(2, 2)))]
    assert eng.state.vote == vote(2, 1, True)


# -- rule 4: a non-voter's greater vote does not depose -----------------------------------------


def leader_with_learner_3():
    """Leader 1 of voters {1, 2} with learner 3, term 2, log (0,0) (1,1) (2,2)."""
    eng = make_leader(id=1, voters={1, 2}, learners=[3], log=LOG, vote=(1, 1))
    assert eng.state.vote == vote(2, 1, True) and eng.state.last_log_id() == lid(2, 2)
    return eng


def test_learners_uncommitted_greater_vote_makes_the_leader_re_elect_itself_above_it():
    eng = leader_with_learner_3()
    io = eng.state.io.submitted + 1
    eng.handle_higher_vote(3, vote(2, 1, True), vote(7, 3))
    assert eng.take_commands() == [
        StopReplication(),
        SaveVote(vote(8, 1), io),
        SendVote(VoteRequest(vote(8, 1), lid(2, 2), transfer_from=vote(2, 1, True)), nodes(2), when=io),
    ]
    assert eng.state.server_state is ServerState.CANDIDATE
    flush(eng)
    eng.handle_vote_resp(2, VoteResponse(vote(8, 1), True, lid(2, 2)), now=1.0)
    assert eng.leader is not None and eng.state.vote == vote(8, 1, True), "the same node leads, above the learner"


def test_follower_grants_its_leaders_re_election_at_once():
    # Node 2 just heard from leader 1 (sticky): a plain higher-term request is refused, the
    # leader's re-election of itself (transfer_from = that leader) is granted.
    eng = make_engine(id=2, voters={1, 2}, learners=[3], log=[(0, 0), (1, 1), (2, 2)], vote=(2, 1, True))
    eng.handle_append_entries(AppendEntriesRequest(vote(2, 1, True), lid(2, 2), [], lid(2, 2)), "hb", now=100.0)
    eng.take_commands()
    eng.handle_vote_req(VoteRequest(vote(8, 1), lid(2, 2)), TX, now=110.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(vote(2, 1, True), False, lid(2, 2)))]
    eng.handle_vote_req(VoteRequest(vote(8, 1), lid(2, 2), transfer_from=vote(2, 1, True)), TX, now=110.0)
    assert eng.take_commands() == [
        SaveVote(vote(8, 1), 1),
        Respond(TX, VoteResponse(vote(8, 1), True, lid(2, 2)), when=1),
    ]


def test_learner_with_a_greater_vote_accepts_the_re_elected_leader():
    eng = make_engine(id=3, voters={1, 2, 3}, log=LOG, vote=(7, 3))
    eng.handle_append_entries(AppendEntriesRequest(vote(2, 1, True), lid(1, 1), [], None), TX, now=1.0)
    assert eng.take_commands() == [Respond(TX, AppendEntriesResponse(vote(7, 3), False))]
    eng.handle_append_entries(AppendEntriesRequest(vote(8, 1, True), lid(1, 1), [], None), TX, now=2.0)
    assert eng.take_commands() == [
        SaveVote(vote(8, 1, True), 1),
        Respond(TX, AppendEntriesResponse(vote(8, 1, True), True, matching=lid(1, 1)), when=1),
    ]


def test_learners_committed_greater_vote_still_deposes():
    # A committed vote means a newer leader exists: this one is stale.
    eng = leader_with_learner_3()
    io = eng.state.io.submitted + 1
    eng.handle_higher_vote(3, vote(2, 1, True), vote(7, 2, True))
    assert eng.take_commands() == [SaveVote(vote(7, 2, True), io), StopReplication()]
    assert eng.leader is None and eng.state.server_state is ServerState.FOLLOWER


def test_voters_greater_vote_still_deposes():
    eng = leader_with_learner_3()
    io = eng.state.io.submitted + 1
    eng.handle_higher_vote(2, vote(2, 1, True), vote(7, 2))
    assert eng.take_commands() == [SaveVote(vote(7, 2), io), StopReplication()]
    assert eng.leader is None


def test_voter_being_removed_still_counts_while_joint():
    # Node 3 is a voter of C_old until [C_new] commits: its greater vote ends this leadership.
    eng = make_leader(id=1, voters=[{1, 2, 3}, {1, 2}], log=LOG, vote=(1, 1))
    io = eng.state.io.submitted + 1
    eng.handle_higher_vote(3, eng.state.vote, vote(7, 3))
    assert eng.take_commands() == [SaveVote(vote(7, 3), io), StopReplication()]


def test_leader_handing_over_steps_down_on_a_learners_greater_vote():
    # A transfer is under way: re-electing itself would undo it; it steps down as before.
    eng = leader_with_learner_3()
    eng.transfer_leader(2, now=1.0)
    eng.take_commands()
    io = eng.state.io.submitted + 1
    eng.handle_higher_vote(3, vote(2, 1, True), vote(7, 3))
    assert eng.take_commands() == [SaveVote(vote(7, 3), io), StopReplication()]
    assert eng.leader is None


def test_stale_session_or_lower_vote_is_ignored():
    eng = leader_with_learner_3()
    eng.handle_higher_vote(3, vote(1, 1, True), vote(7, 3))
    eng.handle_higher_vote(3, vote(2, 1, True), vote(1, 3))
    assert eng.take_commands() == []
    assert eng.leader is not None


# -- the whole scenario on the engine harness --------------------------------------------------


class MembershipNetwork(Network):
    """The engine ``Network`` plus the membership commands (answers are recorded, hand-over
    notices dropped: no leader is removed here)."""

    def run_command(self, n: int, eng: Any, c: Any) -> None:
        if type(c) is RespondOnApply:
            self.responses[n].append((c.tx, c.log_id))
        elif type(c) in (AbandonWrites, SendTransferLeader):
            pass
        else:
            super().run_command(n, eng, c)


def remove_3_while_it_is_cut_off(config: Config) -> MembershipNetwork:
    """Leader 1 of {1, 2, 3} removes node 3 while 3 is isolated: 3 never hears of it."""
    net = MembershipNetwork(config=config)
    net.campaign(1)
    net.stabilize()
    net.client_write(1, b"before")
    net.stabilize()
    net.isolate(3)
    net.engines[1].change_membership({1, 2}, False, "change")
    net.process()
    net.stabilize()
    m = net.engines[1].state.membership
    assert not m.uncommitted and m.committed.membership.configs == (frozenset({1, 2}),)
    assert net.engines[3].state.effective_membership().is_voter(3), "3 never got the change"
    return net


def let_3_time_out(net: MembershipNetwork, times: int) -> None:
    """Node 3 reaches its election deadline ``times`` times (its requests are lost)."""
    for _ in range(times):
        net.advance(net.config.election_timeout_max + 1)
        net.tick(3)
        net.stabilize()


def re_add_3_and_catch_up(net: MembershipNetwork) -> None:
    net.recover()
    net.engines[1].add_learner(3, BasicNode(), "add")
    net.process()
    net.stabilize()
    net.client_write(net.leader(), b"after")  # type: ignore[arg-type]
    net.stabilize()


def test_scenario_with_pre_vote_the_term_never_moves():
    net = remove_3_while_it_is_cut_off(Config())
    term = net.engines[1].state.vote.term
    let_3_time_out(net, 10)
    assert net.engines[3].state.vote.term <= term, "ten timeouts, no term raised"
    re_add_3_and_catch_up(net)
    assert net.leader() == 1 and net.engines[1].state.vote.term == term, "the leader was not even re-elected"
    assert net.entries[3] == net.entries[1], "the learner caught up"
    assert net.engines[3].state.server_state is ServerState.LEARNER
    assert set(net.leaders.values()) == {1}


def test_scenario_without_pre_vote_the_leader_re_elects_itself_and_the_learner_catches_up():
    net = remove_3_while_it_is_cut_off(NO_PRE_VOTE)
    term = net.engines[1].state.vote.term
    let_3_time_out(net, 10)
    assert net.engines[3].state.vote.term == term + 10, "without pre-vote the cut-off node raises its term"
    re_add_3_and_catch_up(net)
    assert net.leader() == 1, "node 1 still leads"
    assert net.engines[1].state.vote.term == term + 11, "re-elected just above the learner's vote"
    assert set(net.leaders.values()) == {1}, "no other node led any term"
    assert net.entries[3] == net.entries[1], "the learner caught up"
    assert net.engines[3].state.vote == net.engines[1].state.vote
    m = net.engines[3].state.effective_membership()
    assert m.configs == (frozenset({1, 2}),) and 3 in m.nodes, "node 3 knows it is a learner now"
