"""Engine unit tests: membership changes (joint consensus, thesis 4.3), ``add_learner`` and a
removed leader handing over.

Each test sets state, calls one handler and asserts the exact command list; ``validate()``
holds after every step.
"""

from __future__ import annotations

import pytest

from openraft_py.config import Config
from openraft_py.engine import (
    AbandonWrites,
    AppendEntries,
    Replicate,
    Respond,
    RespondOnApply,
    SaveCommittedAndApply,
    SaveVote,
    SendTransferLeader,
    StartReplication,
    StopReplication,
)
from openraft_py.engine.state import MembershipState
from openraft_py.errors import (
    EmptyMembership,
    ForwardToLeader,
    InProgress,
    LearnerIsLagging,
    LearnerNotFound,
    MembershipTooLarge,
    NotALearner,
)
from openraft_py.types import (
    MAX_MEMBERSHIP_NODES,
    BasicNode,
    Entry,
    Membership,
    Normal,
    ServerState,
    TransferLeaderRequest,
    VoteResponse,
)

from .helpers import TX, flush, lid, make_engine, make_leader, vote

N = BasicNode()


def nodes(*ids: int) -> dict[int, BasicNode]:
    return {i: BasicNode() for i in ids}


def mship(configs: list[set[int]], *extra: int) -> Membership:
    """A membership whose nodes are the voters of ``configs`` plus the learners ``extra``."""
    ids = set(extra)
    for c in configs:
        ids |= c
    return Membership.new(configs, nodes(*sorted(ids)))


def ack(eng, targets, index: int, at: float = 0.0) -> None:
    """Flush the leader's own log, then let each of ``targets`` report it holds the log up to
    ``index`` (of the leader's term)."""
    flush(eng)
    for t in targets:
        eng.handle_replication_progress(t, eng.state.vote, lid(eng.state.vote.term, index), at)
    eng.state.validate()


def committed_leader(voters=frozenset({1, 2, 3}), learners=(), acks=(2, 3)):
    """Leader 1 of term 1 whose blank entry 1-1 is committed; commands discarded."""
    eng = make_leader(id=1, voters=voters, learners=learners)
    ack(eng, acks, 1)
    assert eng.state.committed == lid(1, 1)
    eng.take_commands()
    return eng


def responses_to(cmds, tx):
    return [c for c in cmds if isinstance(c, Respond) and c.tx == tx]


# -- change_membership: the joint entry ----------------------------------------------------------


def test_change_membership_appends_the_joint_config():
    eng = committed_leader(learners=[4])
    eng.change_membership({1, 2, 4}, False, TX)
    joint = mship([{1, 2, 3}, {1, 2, 4}])
    assert eng.take_commands() == [
        AppendEntries([Entry(lid(1, 2), joint)], 4),
        StartReplication(vote(1, 1, True), nodes(2, 3, 4)),
    ]
    assert eng.state.membership.effective.membership == joint, "a membership takes effect when appended"
    assert eng.state.membership.committed.log_id == lid(0, 0)
    assert eng.leader.change_tx == TX and eng.leader.change_retain is False
    assert eng.leader.configs == [[1, 2, 3], [1, 2, 4]], "the leader counts quorums of both configs at once"
    eng.state.validate()


def test_joint_entry_commits_only_with_a_majority_of_both_configs():
    eng = committed_leader(learners=[4])
    eng.change_membership({1, 2, 4}, False, TX)
    eng.take_commands()
    ack(eng, [3], 2)
    assert eng.take_commands() == [], "{1,3} is a majority of C_old only"
    ack(eng, [4], 2)
    cmds = eng.take_commands()
    assert cmds[0] == SaveCommittedAndApply(lid(1, 2))


def test_joint_commit_appends_the_final_config_and_answers_the_waiting_change():
    eng = committed_leader(learners=[4])
    eng.change_membership({1, 2, 4}, False, TX)
    eng.take_commands()
    ack(eng, [2, 4], 2)
    final = mship([{1, 2, 4}])
    assert eng.take_commands() == [
        SaveCommittedAndApply(lid(1, 2)),
        StartReplication(vote(1, 1, True), nodes(2, 3, 4)),
        AppendEntries([Entry(lid(1, 3), final)], 5),
        StartReplication(vote(1, 1, True), nodes(2, 3, 4)),
        RespondOnApply(TX, lid(1, 3), lid(1, 2)),
    ], "retain=False: node 3 leaves the nodes; it is still replicated to until [C_new] commits"
    assert eng.leader.change_tx is None
    assert eng.state.membership.effective.membership == final
    # Once [C_new] commits, node 3 gets no more entries.
    ack(eng, [2, 4], 3)
    assert eng.take_commands() == [
        SaveCommittedAndApply(lid(1, 3)),
        StartReplication(vote(1, 1, True), nodes(2, 4)),
    ]
    assert eng.leader is not None and eng.state.server_state is ServerState.LEADER


@pytest.mark.parametrize(
    "retain,final_nodes",
    [(True, (1, 2, 3, 4, 5)), (False, (1, 2, 4, 5))],
    ids=["retain-keeps-removed-voter-as-learner", "no-retain-drops-removed-voter"],
)
def test_final_config_node_set_follows_retain(retain, final_nodes):
    eng = committed_leader(learners=[4, 5])
    eng.change_membership({1, 2, 4}, retain, TX)
    eng.take_commands()
    ack(eng, [2, 4], 2)
    appended = [c for c in eng.take_commands() if isinstance(c, AppendEntries)]
    final = Membership.new([{1, 2, 4}], nodes(*final_nodes))
    assert appended == [AppendEntries([Entry(lid(1, 3), final)], 5)], (
        "learner 5, never a voter, stays either way; only the removed voter 3 follows ``retain``"
    )
    assert eng.state.effective_membership().learner_ids() == set(final_nodes) - {1, 2, 4}


def test_leader_inheriting_a_committed_joint_config_finishes_it_keeping_everyone():
    eng = make_leader(id=1, voters=[{1, 2, 3}, {1, 2, 4}])
    assert eng.state.membership.committed.membership.is_joint()
    ack(eng, [2, 4], 1)
    final = Membership.new([{1, 2, 4}], nodes(1, 2, 3, 4))
    cmds = eng.take_commands()
    assert cmds == [
        SaveCommittedAndApply(lid(1, 1)),
        AppendEntries([Entry(lid(1, 2), final)], 4),
        StartReplication(vote(1, 1, True), nodes(2, 3, 4)),
    ], "no RespondOnApply: nobody waits on an inherited change; node 3 is kept as a learner"


# -- change_membership: refusals ----------------------------------------------------------------


def test_change_refused_while_an_appended_membership_is_uncommitted():
    eng = committed_leader(learners=[4])
    eng.change_membership({1, 2, 4}, True, TX)
    eng.take_commands()
    with pytest.raises(InProgress) as ei:
        eng.change_membership({1, 2}, True, "tx2")
    assert ei.value.membership_log_id == lid(1, 2)
    assert eng.take_commands() == []
    assert eng.leader.change_tx == TX, "the refused call does not replace the waiting caller"


def test_change_refused_while_a_committed_joint_config_is_unfinished():
    eng = make_leader(id=1, voters=[{1, 2, 3}, {1, 2, 4}])
    with pytest.raises(InProgress) as ei:
        eng.change_membership({1, 2}, True, TX)
    assert ei.value.membership_log_id == lid(0, 0)
    assert eng.take_commands() == []


def test_in_progress_says_when_to_retry_in_the_present():
    """``InProgress``'s message tells the caller to retry once the change has committed,
    and that the call which made it returns then. It said "(the call that made it
    returned)", which read as if that call had already returned, the change done."""
    eng = committed_leader(learners=[4])
    eng.change_membership({1, 2, 4}, True, TX)
    eng.take_commands()
    with pytest.raises(InProgress) as ei:
        eng.change_membership({1, 2}, True, "tx2")
    assert str(ei.value) == (
        "another membership change (entry 1-2) has not committed yet; retry once it has (the add_learner, "
        "change_membership or remove_learners call that made it returns then; one this leader was elected with "
        "commits with its first entries)")


def test_add_learner_refused_while_a_change_is_uncommitted():
    eng = committed_leader(learners=[4])
    eng.change_membership({1, 2, 4}, True, TX)
    eng.take_commands()
    with pytest.raises(InProgress):
        eng.add_learner(5, N, "tx2")
    assert eng.take_commands() == []


def _another_change_is_refused_at_once(eng) -> None:
    """On a leader still new, a second caller's change, learner added and learners removed
    are each refused with ``InProgress`` of ``wait_ms`` 0 (not waited out), emitting nothing."""
    assert eng.now - eng.leader.elected_at < Config().election_timeout_max, "the leader is new"
    for call in (lambda: eng.change_membership({1, 2}, True, "tx2"), lambda: eng.add_learner(6, N, "tx2"),
                 lambda: eng.remove_learners([5], "tx2")):
        with pytest.raises(InProgress) as ei:
            call()
        assert ei.value.wait_ms == 0.0
    assert eng.take_commands() == []


def test_a_change_this_leader_appended_is_in_progress_for_good_even_on_a_new_leader():
    """Another caller's change: refused, and nobody waits for it (``wait_ms`` 0)."""
    eng = committed_leader(learners=[4, 5])
    eng.change_membership({1, 2, 4}, True, TX)
    eng.take_commands()
    _another_change_is_refused_at_once(eng)


def test_a_change_this_leader_made_is_in_progress_for_good_once_its_joint_config_committed():
    """The same once that change's joint config committed and its final config is being
    replicated: still another caller's change, refused with ``wait_ms`` 0. Counted as one
    this leader inherited (a committed joint config), it had ``wait_ms`` > 0 on a leader
    still new, and ``Raft`` made the second caller wait for the first's change instead of
    refusing it, as it does once the leader is no longer new."""
    eng = committed_leader(learners=[4, 5])
    eng.change_membership({1, 2, 4}, True, TX)
    ack(eng, [2, 3, 4], 2)
    ms = eng.state.membership
    assert ms.committed.membership.is_joint() and ms.uncommitted, "the joint config committed, the final not"
    eng.take_commands()
    _another_change_is_refused_at_once(eng)


@pytest.mark.parametrize("since_election,wait_ms", [(0.0, 1000.0), (999.0, 1.0), (1000.0, 0.0)],
                         ids=["just-elected", "just-before-the-bound", "at-the-bound"])
def test_a_new_leader_names_the_inherited_change_that_commits_with_its_blank_entry(since_election, wait_ms):
    """The previous leader's membership entry (here the first one, 0-0, as right after
    ``initialize``) is uncommitted on a leader just elected: it commits with the blank entry,
    a round trip away. The refusal carries ``wait_ms``, how long this leader is still new
    (``Raft`` waits for the commit and asks again); past ``election_timeout_max`` from the
    election it is final (0). Nothing is appended either way."""
    cfg = Config(election_timeout_min=500, election_timeout_max=1000)
    eng = make_engine(id=1, voters={1, 2, 3}, learners=[4], config=cfg)
    ms = MembershipState()  # the entry at 0-0 is appended, not committed
    ms.append(eng.state.membership.committed)
    eng.state.membership = ms
    eng.elect(0.0)
    flush(eng)
    eng.handle_vote_resp(2, VoteResponse(eng.state.vote, True, None), 0.0)
    assert eng.leader is not None and eng.state.membership.uncommitted
    eng.handle_tick(eng.leader.elected_at + since_election)
    eng.take_commands()
    last = eng.state.last_log_id()
    for call in (lambda: eng.change_membership({1, 2}, True, TX), lambda: eng.add_learner(5, N, TX),
                 lambda: eng.remove_learners([4], TX)):
        with pytest.raises(InProgress) as ei:
            call()
        assert ei.value.membership_log_id == lid(0, 0)
        assert ei.value.wait_ms == wait_ms
    assert eng.take_commands() == []
    assert eng.state.last_log_id() == last


def test_empty_membership_refused():
    eng = committed_leader()
    with pytest.raises(EmptyMembership):
        eng.change_membership(set(), True, TX)
    assert eng.take_commands() == []
    assert eng.state.last_log_id() == lid(1, 1)


def test_unknown_voter_refused_with_learner_not_found():
    eng = committed_leader(learners=[4])
    with pytest.raises(LearnerNotFound) as ei:
        eng.change_membership({1, 2, 4, 7}, True, TX)
    assert ei.value.node_id == 7
    assert eng.take_commands() == []
    assert eng.state.last_log_id() == lid(1, 1)


def test_change_on_follower_forwards_to_leader():
    eng = make_engine(id=2, vote=(1, 1, True))
    with pytest.raises(ForwardToLeader) as ei:
        eng.change_membership({1, 2}, True, TX)
    assert ei.value.leader_id == 1
    with pytest.raises(ForwardToLeader):
        eng.add_learner(4, N, TX)
    assert eng.take_commands() == []


def test_no_op_change_answers_with_the_current_membership_entry():
    eng = committed_leader()
    eng.change_membership({3, 2, 1}, False, TX)
    assert eng.take_commands() == [RespondOnApply(TX, lid(0, 0))], "nothing appended: the same voters"
    assert eng.state.last_log_id() == lid(1, 1)
    assert eng.leader.change_tx is None



def test_change_refused_when_most_new_voters_have_not_caught_up():
    """Learners 4 and 5 never answered: with them, {1, 4, 5} has one caught-up node (this
    leader), no majority. Nothing is appended (appended, [C_old, C_new] could not commit, and
    the leader, reaching no quorum of C_new, would step down)."""
    eng = committed_leader(learners=[4, 5])
    with pytest.raises(LearnerIsLagging) as ei:
        eng.change_membership({1, 4, 5}, False, TX)
    assert ei.value.node_ids == [4, 5]
    assert ei.value.threshold == Config().replication_lag_threshold
    assert eng.take_commands() == []
    assert eng.state.last_log_id() == lid(1, 1)
    assert eng.leader.change_tx is None


def test_leader_leaving_the_voters_is_not_counted_as_caught_up():
    eng = committed_leader(learners=[4, 5])
    with pytest.raises(LearnerIsLagging) as ei:
        eng.change_membership({2, 4, 5}, False, TX)
    assert ei.value.node_ids == [4, 5], "voter 2 is caught up; the leader is not a new voter"
    assert eng.take_commands() == []


def test_a_silent_current_voter_counts_as_lagging():
    eng = committed_leader(learners=[4, 5], acks=(2,))
    ack(eng, [4], 1)
    eng.take_commands()
    with pytest.raises(LearnerIsLagging) as ei:
        eng.change_membership({3, 4, 5}, False, TX)
    assert ei.value.node_ids == [3, 5], "voter 3 never answered this leader, like learner 5"
    assert eng.take_commands() == []


@pytest.mark.parametrize("silent_for,refused", [(0.0, False), (1.0, True)], ids=["at-the-bound", "past-it"])
def test_a_caught_up_learner_that_went_silent_counts_as_lagging(silent_for, refused):
    """Learner 4 caught up, then its node went down: it keeps its matched index, but answered
    no request sent within the last ``election_timeout_max``. {1, 4} would have one live node
    (this leader): the joint config could not commit, and the leader, hearing from no quorum
    of {1, 4}, would step down with the cluster taking no writes until 4 came back. It was
    appended (4's matched index alone counted)."""
    eng = committed_leader(learners=[4])
    ack(eng, [4], 1, at=0.0)
    now = Config().election_timeout_max + silent_for
    ack(eng, [2, 3], 1, at=now)  # the voters answer the heartbeats
    eng.handle_tick(now)
    eng.take_commands()
    last = eng.state.last_log_id()
    if refused:
        with pytest.raises(LearnerIsLagging) as ei:
            eng.change_membership({1, 4}, False, TX)
        assert ei.value.node_ids == [4]
        assert "no answer lately" in str(ei.value)
        assert eng.take_commands() == [] and eng.state.last_log_id() == last
        assert eng.leader.change_tx is None
    else:
        eng.change_membership({1, 4}, False, TX)
        assert eng.leader.change_tx == TX


def test_change_allowed_when_only_a_minority_of_new_voters_lags():
    eng = committed_leader(learners=[4, 5])
    eng.change_membership({1, 2, 3, 4, 5}, False, TX)
    joint = mship([{1, 2, 3}, {1, 2, 3, 4, 5}])
    assert eng.take_commands() == [
        AppendEntries([Entry(lid(1, 2), joint)], 4),
        StartReplication(vote(1, 1, True), nodes(2, 3, 4, 5)),
    ], "1, 2 and 3 are caught up: a majority of five"


def test_allow_lagging_appends_the_joint_config_anyway():
    eng = committed_leader(learners=[4, 5])
    eng.change_membership({1, 4, 5}, False, TX, allow_lagging=True)
    assert eng.take_commands() == [
        AppendEntries([Entry(lid(1, 2), mship([{1, 2, 3}, {1, 4, 5}]))], 4),
        StartReplication(vote(1, 1, True), nodes(2, 3, 4, 5)),
    ]
    assert eng.leader.change_tx == TX


@pytest.mark.parametrize("writes,refused", [(10, False), (11, True)], ids=["at-the-threshold", "one-past-it"])
def test_caught_up_means_within_replication_lag_threshold_entries(writes, refused):
    """Learner 4 holds the log up to index 1; the leader then appends ``writes`` entries.
    Within ``replication_lag_threshold`` (10) entries of the leader's last index it counts."""
    eng = make_leader(id=1, voters={1, 2, 3}, learners=[4], config=Config(replication_lag_threshold=10))
    ack(eng, [2, 3, 4], 1)
    eng.client_write([Normal(b"x")] * writes)
    flush(eng)
    eng.take_commands()
    assert eng.state.last_index() == 1 + writes
    if refused:
        with pytest.raises(LearnerIsLagging) as ei:
            eng.change_membership({2, 4}, False, TX)
        assert ei.value.node_ids == [2, 4] and ei.value.threshold == 10
    else:
        eng.change_membership({2, 4}, False, TX)
        assert eng.leader.change_tx == TX

@pytest.mark.parametrize("since_election,unheard", [(0.0, [4, 5]), (999.0, [4, 5]), (1000.0, [])],
                         ids=["just-elected", "just-before-the-bound", "at-the-bound"])
def test_a_new_leader_names_the_nodes_it_has_not_heard_from_yet(since_election, unheard):
    """A leader elected less than ``election_timeout_max`` ago that has no answer from 4 and
    5 yet cannot tell lagging from a round trip away: the refusal names them (``unheard``)
    and how long the leader is still new (``wait_ms``), for ``Raft`` to wait and ask again.
    Past the bound an unknown node is a silent one, and the refusal is final."""
    cfg = Config(election_timeout_min=500, election_timeout_max=1000)
    eng = make_leader(id=1, voters={1, 2, 3}, learners=[4, 5], config=cfg)
    now = eng.leader.elected_at + since_election
    ack(eng, [2, 3], 1, at=now)
    eng.handle_tick(now)
    eng.take_commands()
    last = eng.state.last_log_id()
    with pytest.raises(LearnerIsLagging) as ei:
        eng.change_membership({1, 4, 5}, False, TX)
    assert ei.value.node_ids == [4, 5]
    assert ei.value.unheard == unheard
    assert ei.value.wait_ms == (1000.0 - since_election if unheard else 0.0)
    assert eng.take_commands() == [] and eng.state.last_log_id() == last
    assert eng.leader.change_tx is None


def test_a_new_leader_does_not_wait_for_nodes_it_knows_are_behind():
    """4 answered, more than ``replication_lag_threshold`` entries behind; 5 has not answered
    yet. With {1, 4, 5}, 5 alone could make the majority: it is named, not 4. Once 5 too
    answered, behind, nothing is named: the refusal is final at once, the leader still new."""
    cfg = Config(election_timeout_min=500, election_timeout_max=1000, replication_lag_threshold=2)
    eng = make_leader(id=1, voters={1, 2, 3}, learners=[4, 5], config=cfg)
    ack(eng, [2, 3, 4], 1)
    eng.client_write([Normal(b"x")] * 3)
    flush(eng)
    eng.take_commands()
    with pytest.raises(LearnerIsLagging) as ei:
        eng.change_membership({1, 4, 5}, False, TX)
    assert (ei.value.node_ids, ei.value.unheard) == ([4, 5], [5])
    ack(eng, [5], 1)
    eng.take_commands()
    with pytest.raises(LearnerIsLagging) as ei:
        eng.change_membership({1, 4, 5}, False, TX)
    assert (ei.value.node_ids, ei.value.unheard, ei.value.wait_ms) == ([4, 5], [], 0.0)
    assert eng.take_commands() == []


def test_a_new_leader_appends_once_the_nodes_it_waited_for_answered():
    """The same change, asked again once 4 and 5 answered holding the whole log: appended."""
    eng = make_leader(id=1, voters={1, 2, 3}, learners=[4, 5])
    with pytest.raises(LearnerIsLagging) as ei:
        eng.change_membership({1, 4, 5}, False, TX)
    assert ei.value.unheard == [4, 5]
    ack(eng, [2, 3, 4, 5], 1)
    eng.take_commands()
    eng.change_membership({1, 4, 5}, False, TX)
    assert eng.take_commands() == [
        AppendEntries([Entry(lid(1, 2), mship([{1, 2, 3}, {1, 4, 5}]))], 4),
        StartReplication(vote(1, 1, True), nodes(2, 3, 4, 5)),
    ]
    assert eng.leader.change_tx == TX


# -- the leader steps down -----------------------------------------------------------------------


def test_waiting_change_gets_forward_to_leader_when_the_leader_steps_down():
    """With ``outcome_unknown``: the joint entry was appended and may commit under the next
    leader, which then completes the change (it was ``False``, "did not and will not take
    effect", and a caller that believed it was told wrong)."""
    eng = committed_leader(learners=[4])
    eng.change_membership({1, 2, 4}, True, TX)
    eng.take_commands()
    eng.handle_higher_vote(2, eng.state.vote, vote(2, 3))
    cmds = eng.take_commands()
    assert cmds[0] == SaveVote(vote(2, 3), 5)
    assert cmds[1] == StopReplication()
    (resp,) = responses_to(cmds, TX)
    assert isinstance(resp.value, ForwardToLeader) and resp.value.leader_id is None
    assert resp.value.outcome_unknown, "the joint entry may still commit"
    assert len(cmds) == 3
    assert eng.leader is None
    eng.state.validate()


def test_removed_leader_hands_over_to_the_most_up_to_date_voter():
    eng = committed_leader(learners=[4])
    eng.change_membership({2, 3, 4}, False, TX)
    eng.take_commands()
    ack(eng, [2, 3, 4], 2)  # joint commits; the final [C_new] is 1-3
    eng.take_commands()
    assert eng.state.last_log_id() == lid(1, 3)
    ack(eng, [2], 2)
    ack(eng, [3, 4], 3)  # [C_new] committed by {3, 4}; node 2 is one entry behind
    cmds = eng.take_commands()
    assert cmds == [
        SaveCommittedAndApply(lid(1, 3)),
        StartReplication(vote(1, 1, True), nodes(2, 3, 4)),
        StopReplication(),
        SendTransferLeader(TransferLeaderRequest(vote(1, 1, True), 3, lid(1, 3)), nodes(2, 3, 4)),
        AbandonWrites(after=3),
    ], "node 3 is the lowest id among the voters holding the whole log"
    assert eng.leader is None
    assert eng.state.server_state is ServerState.LEARNER, "node 1 is in no config any more"
    eng.state.validate()


def test_removed_leader_does_not_step_down_before_the_final_config_commits():
    eng = committed_leader(learners=[4])
    eng.change_membership({2, 3, 4}, False, TX)
    eng.take_commands()
    ack(eng, [2, 3, 4], 2)
    eng.take_commands()
    assert eng.leader is not None, "the joint config still has node 1 as a voter of C_old"
    assert eng.state.server_state is ServerState.LEADER


# -- add_learner ---------------------------------------------------------------------------------


def test_add_learner_appends_the_configs_with_one_more_node():
    eng = committed_leader()
    node = BasicNode("127.0.0.1:22004")
    assert eng.add_learner(4, node, TX) == lid(1, 2)
    m = Membership.new([{1, 2, 3}], {**nodes(1, 2, 3), 4: node})
    assert eng.take_commands() == [
        AppendEntries([Entry(lid(1, 2), m)], 4),
        StartReplication(vote(1, 1, True), {**nodes(2, 3), 4: node}),
        RespondOnApply(TX, lid(1, 2)),
        # The new target is probed from the leader's blank entry: 2 and 3 have a probe in
        # flight already (acks outside a request free no slot).
        Replicate(4, 3, lid(0, 0), 1, 3, lid(1, 1)),
    ]
    assert eng.leader.configs == [[1, 2, 3]], "a learner does not count toward a quorum"
    ack(eng, [2], 2)
    assert eng.take_commands()[0] == SaveCommittedAndApply(lid(1, 2)), "committed without node 4"
    eng.state.validate()


def test_add_learner_past_max_membership_nodes_is_refused():
    """A membership holds at most ``MAX_MEMBERSHIP_NODES`` nodes (the bound every decoder of
    a membership, wire and storage, refuses more by): one learner more is refused with
    ``MembershipTooLarge`` naming the bound, nothing appended. Learners added one at a time
    went past it (``MAX_MEMBERS`` bounds one call), into an entry no peer would decode. A
    member already there may still move (no new node)."""
    eng = committed_leader(learners=range(4, MAX_MEMBERSHIP_NODES + 1))
    assert len(eng.state.membership.effective.membership.nodes) == MAX_MEMBERSHIP_NODES
    with pytest.raises(MembershipTooLarge, match=f"{MAX_MEMBERSHIP_NODES} nodes.*MAX_MEMBERSHIP_NODES") as ei:
        eng.add_learner(MAX_MEMBERSHIP_NODES + 1, N, TX)
    assert ei.value.node_id == MAX_MEMBERSHIP_NODES + 1
    assert ei.value.limit == MAX_MEMBERSHIP_NODES
    assert eng.take_commands() == []
    assert eng.add_learner(4, BasicNode("127.0.0.1:22004"), TX) == lid(1, 2)


def test_add_learner_that_is_already_a_member_is_not_re_added():
    eng = committed_leader(learners=[4])
    assert eng.add_learner(4, N, TX) == lid(0, 0)
    assert eng.take_commands() == [RespondOnApply(TX, lid(0, 0))]
    assert eng.state.last_log_id() == lid(1, 1)


def test_learner_does_not_vote_in_the_new_config_until_promoted():
    eng = committed_leader()
    eng.add_learner(4, N, TX)
    eng.take_commands()
    ack(eng, [2, 3, 4], 2)
    eng.take_commands()
    assert not eng.state.effective_membership().is_voter(4)
    eng.change_membership({1, 2, 3, 4}, True, "tx2")
    assert [type(c) for c in eng.take_commands()] == [AppendEntries, StartReplication], "probes in flight"
    assert eng.state.effective_membership().configs == (frozenset({1, 2, 3}), frozenset({1, 2, 3, 4}))


# -- remove_learners ------------------------------------------------------------------------------


def test_remove_learners_appends_the_configs_without_them():
    eng = committed_leader(learners=[4, 5])
    assert eng.remove_learners({4}, TX) == lid(1, 2)
    m = mship([{1, 2, 3}], 5)
    assert eng.take_commands() == [
        AppendEntries([Entry(lid(1, 2), m)], 4),
        StartReplication(vote(1, 1, True), nodes(2, 3, 4, 5)),
        RespondOnApply(TX, lid(1, 2)),
    ], "one uniform entry (no joint phase); node 4 is still replicated to until the entry commits"
    assert eng.state.membership.effective.membership == m
    assert eng.leader.configs == [[1, 2, 3]]
    # Once it commits, node 4 gets no more entries (its replication is dropped).
    ack(eng, [2], 2)
    assert eng.take_commands() == [
        SaveCommittedAndApply(lid(1, 2)),
        StartReplication(vote(1, 1, True), nodes(2, 3, 5)),
    ]
    assert 4 not in eng.leader.replication
    assert eng.state.server_state is ServerState.LEADER
    eng.state.validate()


def test_remove_learners_of_a_dead_learner_commits_without_it():
    eng = committed_leader(learners=[4])
    eng.remove_learners([4], TX)
    eng.take_commands()
    ack(eng, [2, 3], 2)  # node 4 never answers
    assert eng.state.committed == lid(1, 2)
    assert eng.take_commands()[-1] == StartReplication(vote(1, 1, True), nodes(2, 3))


def test_remove_learners_removes_several_in_one_entry():
    eng = committed_leader(learners=[4, 5, 6])
    eng.remove_learners({4, 6}, TX)
    appended = [c for c in eng.take_commands() if isinstance(c, AppendEntries)]
    assert appended == [AppendEntries([Entry(lid(1, 2), mship([{1, 2, 3}], 5))], 4)]


def test_remove_learners_with_no_id_answers_with_the_current_membership_entry():
    eng = committed_leader(learners=[4])
    assert eng.remove_learners(set(), TX) == lid(0, 0)
    assert eng.take_commands() == [RespondOnApply(TX, lid(0, 0))], "nothing appended"
    assert eng.state.last_log_id() == lid(1, 1)


def test_remove_learners_refuses_a_voter_with_not_a_learner():
    eng = committed_leader(learners=[4])
    with pytest.raises(NotALearner) as ei:
        eng.remove_learners({4, 3}, TX)
    assert ei.value.node_id == 3
    assert "change_membership" in str(ei.value)
    assert eng.take_commands() == []
    assert eng.state.last_log_id() == lid(1, 1)


def test_remove_learners_refuses_a_voter_of_either_joint_config():
    eng = committed_leader(learners=[4])
    eng.change_membership({1, 2, 4}, True, TX)
    eng.take_commands()
    for nid in (3, 4):  # 3: only in C_old; 4: only in C_new
        with pytest.raises(NotALearner):
            eng.remove_learners({nid}, "tx2")
    assert eng.take_commands() == []


def test_remove_learners_refuses_a_node_that_is_not_a_member_with_learner_not_found():
    eng = committed_leader(learners=[4])
    with pytest.raises(LearnerNotFound) as ei:
        eng.remove_learners({4, 7}, TX)
    assert ei.value.node_id == 7
    assert "not a member" in str(ei.value)
    assert eng.take_commands() == []
    assert eng.state.last_log_id() == lid(1, 1)


def test_remove_learners_refused_while_a_change_is_uncommitted():
    eng = committed_leader(learners=[4, 5])
    eng.add_learner(6, N, TX)
    eng.take_commands()
    with pytest.raises(InProgress) as ei:
        eng.remove_learners({5}, "tx2")
    assert ei.value.membership_log_id == lid(1, 2)
    assert eng.take_commands() == []


def test_remove_learners_on_follower_forwards_to_leader():
    eng = make_engine(id=2, vote=(1, 1, True))
    with pytest.raises(ForwardToLeader) as ei:
        eng.remove_learners({4}, TX)
    assert ei.value.leader_id == 1
    assert eng.take_commands() == []


def test_removed_learner_can_be_added_again():
    eng = committed_leader(learners=[4])
    eng.remove_learners({4}, TX)
    eng.take_commands()
    ack(eng, [2], 2)
    eng.take_commands()
    node = BasicNode("127.0.0.1:22004")
    assert eng.add_learner(4, node, "tx2") == lid(1, 3)
    cmds = eng.take_commands()
    assert cmds[:3] == [
        AppendEntries([Entry(lid(1, 3), Membership.new([{1, 2, 3}], {**nodes(1, 2, 3), 4: node}))], 5),
        StartReplication(vote(1, 1, True), {**nodes(2, 3), 4: node}),
        RespondOnApply("tx2", lid(1, 3)),
    ]
    assert eng.leader.replication[4].matched < 0, "a new progress entry: it starts over (probes)"


def test_a_leader_whose_new_voters_have_not_acked_yet_keeps_leading_for_an_election_timeout():
    """Learners 4 and 5 caught up; well after the election (the voters kept acking) the
    voters change to {1, 4, 5}. A tick before 4 and 5 answer the joint entry must not depose
    the leader: they acknowledged nothing as voters yet, but the leader's contact with them
    is no older than the change. It stepped down at once ("no quorum acknowledged it"),
    as if it had heard from no quorum for an election timeout, and the change finished only
    under the next leader (a 503 to the caller). Without acks the leader still steps down
    one election timeout after the change."""
    eng = committed_leader(learners=[4, 5])
    t = Config().election_timeout_max * 3
    ack(eng, [2, 3, 4, 5], 1, at=t)
    eng.handle_tick(t)
    eng.take_commands()
    eng.change_membership({1, 4, 5}, False, TX)
    eng.take_commands()
    eng.handle_tick(t + 1.0)
    assert eng.leader is not None, "the new voters had no time to acknowledge the joint entry"
    ack(eng, [2, 3], 2, at=t + 1.0)  # the old voters keep answering; 4 and 5 fall silent
    eng.handle_tick(t + Config().election_timeout_max + 2.0)
    assert eng.leader is None, "no quorum of {1, 4, 5} for an election timeout after the change"
