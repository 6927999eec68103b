"""Engine unit tests: ``elect``, ``handle_vote_req``, ``handle_vote_resp``.

Each test sets state, calls one handler and asserts the exact command list.
"""

from __future__ import annotations

import pytest

from openraft_py.config import Config
from openraft_py.engine import (
    AppendEntries,
    Replicate,
    Respond,
    SaveCommittedAndApply,
    SaveVote,
    SendVote,
    StartReplication,
    StopReplication,
)
from openraft_py.errors import ForwardToLeader
from openraft_py.types import (
    BLANK,
    AppendEntriesRequest,
    BasicNode,
    Entry,
    Normal,
    ServerState,
    VoteRequest,
    VoteResponse,
)

from .helpers import TX, flush, lid, make_engine, make_leader, vote

PEERS = {2: BasicNode(), 3: BasicNode()}
LOG = [(0, 0), (1, 1), (1, 2)]


def grant(v, last):
    return VoteResponse(v, True, last)


def reject(v, last):
    return VoteResponse(v, False, last)


# -- elect ----------------------------------------------------------------------------------


def test_elect_saves_vote_then_sends_vote_after_it_is_durable():
    # Started at 0 with a committed vote: node 2 counts as seen then (the restart rule), so
    # campaign once election_timeout_min (150) is over.
    eng = make_engine(id=1, log=LOG, vote=(1, 2, True))
    eng.elect(now=200.0)
    assert eng.take_commands() == [
        SaveVote(vote(2, 1), 1),
        SendVote(VoteRequest(vote(2, 1), lid(1, 2)), PEERS, when=1),
    ]
    assert eng.state.server_state is ServerState.CANDIDATE
    assert eng.candidate is not None and eng.candidate.granted == set(), "own vote counts only once flushed"
    flush(eng)
    assert eng.candidate.granted == {1}
    assert eng.take_commands() == [], "one grant of three is no quorum"


def test_elect_within_leader_stickiness_does_not_count_its_own_vote():
    """A follower told to campaign (``trigger.elect()``) less than election_timeout_min
    after it accepted a leader's AppendEntries may be in that leader's lease: its own vote
    obeys stickiness like any other. Counted, it won with one other voter that no longer
    heard from the leader, committed a write, and the old leader served stale lease reads.
    It still campaigns, and wins only with the others' grants (or in a later campaign)."""
    leader = vote(1, 2, True)
    eng = make_engine(id=1, log=LOG, vote=leader)
    eng.handle_append_entries(AppendEntriesRequest(leader, lid(1, 2), [], None), "hb", now=100.0)
    eng.take_commands()
    eng.elect(now=240.0)  # 140 ms after the leader was seen: sticky until 250
    assert eng.take_commands()[1] == SendVote(VoteRequest(vote(2, 1), lid(1, 2)), PEERS, when=eng.state.io.vote_io)
    flush(eng)
    assert eng.candidate is not None and eng.candidate.granted == set(), "its own vote must not count yet"
    eng.handle_vote_resp(3, grant(vote(2, 1), lid(1, 2)), now=241.0)
    assert eng.leader is None, "one grant of three, and not its own: no quorum"
    eng.handle_vote_resp(2, grant(vote(2, 1), lid(1, 2)), now=242.0)
    assert eng.leader is not None, "the other voters' grants are a quorum"


@pytest.mark.parametrize("pre_vote", [False, True])
def test_candidate_within_leader_stickiness_refuses_other_candidates(pre_vote):
    """The same node, a candidate now with an uncommitted vote of its own, is still in its
    old leader's lease: it refuses other candidates until election_timeout_min is over.
    (Stickiness required a committed vote: it granted the next candidate of a node that no
    longer heard from the leader at once, that one won, and the old leader served stale
    lease reads.)"""
    leader = vote(1, 2, True)
    eng = make_engine(id=1, log=LOG, vote=leader)
    eng.handle_append_entries(AppendEntriesRequest(leader, lid(1, 2), [], None), "hb", now=100.0)
    eng.elect(now=240.0)
    flush(eng)
    eng.take_commands()
    mine = vote(2, 1)
    req = VoteRequest(vote(3, 3), lid(1, 2), pre_vote=pre_vote)
    eng.handle_vote_req(req, TX, now=249.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(mine, False, lid(1, 2), pre_vote=pre_vote))]
    eng.handle_vote_req(req, TX, now=250.0)
    cmds = eng.take_commands()
    assert cmds[-1].value.vote_granted, cmds


@pytest.mark.parametrize("pre_vote", [False, True])
def test_a_vote_adopted_from_a_refusal_does_not_end_leader_stickiness(pre_vote):
    """The same candidate adopts the greater vote of a voter that refused it (another
    candidate's uncommitted vote) and holds it without having granted it: it still refuses
    that candidate until election_timeout_min is over. (A request for the vote it held was
    granted at once: the simulator's lease scenario, seed 8063, had the second candidate win
    with that grant and commit a write while the old leader served lease reads.)"""
    leader = vote(1, 2, True)
    eng = make_engine(id=1, log=LOG, vote=leader)
    eng.handle_append_entries(AppendEntriesRequest(leader, lid(1, 2), [], None), "hb", now=100.0)
    eng.elect(now=240.0)
    flush(eng)
    eng.take_commands()
    other = vote(3, 3)
    eng.handle_vote_resp(3, reject(other, lid(1, 2)), now=241.0)
    assert eng.state.vote == other and eng.candidate is None
    flush(eng)
    eng.take_commands()
    req = VoteRequest(other, lid(1, 2), pre_vote=pre_vote)
    eng.handle_vote_req(req, TX, now=249.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(other, False, lid(1, 2), pre_vote=pre_vote))]
    eng.handle_vote_req(req, TX, now=250.0)
    cmds = eng.take_commands()
    assert cmds[-1].value.vote_granted, cmds


def test_elect_after_leader_stickiness_counts_its_own_vote():
    leader = vote(1, 2, True)
    eng = make_engine(id=1, log=LOG, vote=leader)
    eng.handle_append_entries(AppendEntriesRequest(leader, lid(1, 2), [], None), "hb", now=100.0)
    eng.elect(now=250.0)
    flush(eng)
    assert eng.candidate is not None and eng.candidate.granted == {1}
    eng.handle_vote_resp(3, grant(vote(2, 1), lid(1, 2)), now=251.0)
    assert eng.leader is not None


def test_elect_targets_voters_only_not_learners():
    eng = make_engine(id=1, voters={1, 2, 3}, learners=[4])
    eng.elect(now=0.0)
    cmds = eng.take_commands()
    assert cmds[1] == SendVote(VoteRequest(vote(1, 1), lid(0, 0)), PEERS, when=1)


def test_elect_single_voter_wins_once_its_vote_is_flushed():
    eng = make_engine(id=1, voters={1})
    eng.elect(now=0.0)
    assert eng.take_commands() == [SaveVote(vote(1, 1), 1)], "no SendVote: there is nobody to ask"
    assert eng.leader is None, "not leader before the vote is durable"
    flush(eng)
    assert eng.take_commands() == [
        SaveVote(vote(1, 1, True), 2),
        StartReplication(vote(1, 1, True), {}),
        AppendEntries([Entry(lid(1, 1), BLANK)], 3),
    ]
    assert eng.state.server_state is ServerState.LEADER
    flush(eng)
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 1))], "no target: nothing to replicate"


def test_elect_from_leader_steps_down_first():
    eng = make_leader(id=1)
    eng.elect(now=500.0)
    assert eng.take_commands() == [
        StopReplication(),
        SaveVote(vote(2, 1), 4),
        SendVote(VoteRequest(vote(2, 1), lid(1, 1)), PEERS, when=4),
    ]


# -- handle_vote_req --------------------------------------------------------------------------

VOTE_REQ_CASES = [
    # id, my log, my vote, request vote, request last log id, expected (given my last)
    ("grant-higher-term", LOG, (1, 2, True), vote(2, 3), lid(1, 2), "grant"),
    ("grant-longer-log", LOG, (1, 2, True), vote(2, 3), lid(1, 9), "grant"),
    ("grant-higher-last-term-shorter-log", LOG, (1, 2, True), vote(2, 3), lid(2, 1), "grant"),
    ("grant-pristine-voter", [(0, 0)], (0, 0), vote(1, 3), lid(0, 0), "grant"),
    ("reject-lower-vote", LOG, (3, 2), vote(2, 3), lid(1, 9), "reject"),
    ("reject-lower-last-term", [(0, 0), (1, 1), (2, 2)], (2, 2), vote(3, 3), lid(1, 9), "reject"),
    ("reject-same-term-shorter-log", LOG, (1, 2, True), vote(2, 3), lid(1, 1), "reject"),
    ("reject-no-log", LOG, (1, 2, True), vote(2, 3), None, "reject"),
    ("reject-second-candidate-same-term", LOG, (2, 2), vote(2, 3), lid(1, 2), "reject"),
    ("reject-candidate-of-an-established-leaders-term", LOG, (2, 2, True), vote(2, 3), lid(1, 2), "reject"),
]


@pytest.mark.parametrize(
    "log,mine,req_vote,req_last,outcome", [c[1:] for c in VOTE_REQ_CASES], ids=[c[0] for c in VOTE_REQ_CASES]
)
def test_handle_vote_req(log, mine, req_vote, req_last, outcome):
    eng = make_engine(id=1, log=log, vote=mine)
    before = eng.state.vote
    last = eng.state.last_log_id()
    eng.handle_vote_req(VoteRequest(req_vote, req_last), TX, now=1000.0)
    cmds = eng.take_commands()
    if outcome == "grant":
        assert cmds == [SaveVote(req_vote, 1), Respond(TX, grant(req_vote, last), when=1)]
        assert eng.state.vote == req_vote
    else:
        assert cmds == [Respond(TX, reject(before, last))], "a rejection persists nothing and waits on nothing"
        assert eng.state.vote == before


def test_vote_req_regrant_same_candidate_waits_for_the_same_vote_io():
    eng = make_engine(id=1, log=LOG, vote=(1, 2, True))
    req = VoteRequest(vote(2, 3), lid(1, 2))
    eng.handle_vote_req(req, TX, now=1000.0)
    eng.take_commands()
    eng.handle_vote_req(req, "tx2", now=1001.0)
    assert eng.take_commands() == [Respond("tx2", grant(vote(2, 3), lid(1, 2)), when=1)], (
        "a repeated request must not save the vote again, and must wait for the first save"
    )
    flush(eng)
    eng.handle_vote_req(req, "tx3", now=1002.0)
    assert eng.take_commands() == [Respond("tx3", grant(vote(2, 3), lid(1, 2)), when=1)]


@pytest.mark.parametrize("elapsed,granted", [(0.0, False), (149.0, False), (150.0, True), (400.0, True)])
def test_vote_req_leader_stickiness(elapsed, granted):
    """Thesis 4.2.3: a follower that heard from a live leader less than
    election_timeout_min ago ignores candidates."""
    leader = vote(1, 2, True)
    eng = make_engine(id=1, log=LOG, vote=leader)
    eng.handle_append_entries(AppendEntriesRequest(leader, lid(1, 2), [], None), "hb", now=100.0)
    eng.take_commands()
    eng.handle_vote_req(VoteRequest(vote(2, 3), lid(1, 2)), TX, now=100.0 + elapsed)
    if granted:
        assert eng.take_commands() == [SaveVote(vote(2, 3), 1), Respond(TX, grant(vote(2, 3), lid(1, 2)), when=1)]
    else:
        assert eng.take_commands() == [Respond(TX, reject(leader, lid(1, 2)))]


@pytest.mark.parametrize("elapsed,granted", [(0.0, False), (149.0, False), (150.0, True)])
def test_vote_req_restarted_node_is_sticky_to_its_committed_vote(elapsed, granted):
    """A node that restarts with a committed vote may have acked that leader just before
    the restart: it treats the leader as just seen, so granting another candidate at once
    cannot cut the leader's lease short (a stale lease read)."""
    leader = vote(1, 2, True)
    eng = make_engine(id=1, log=LOG, vote=leader, now=500.0)
    eng.handle_vote_req(VoteRequest(vote(2, 3), lid(1, 2)), TX, now=500.0 + elapsed)
    if granted:
        assert eng.take_commands() == [SaveVote(vote(2, 3), 1), Respond(TX, grant(vote(2, 3), lid(1, 2)), when=1)]
    else:
        assert eng.take_commands() == [Respond(TX, reject(leader, lid(1, 2)))]


def test_vote_req_higher_term_steps_leader_down():
    eng = make_leader(id=1, now=0.0)
    eng.handle_vote_req(VoteRequest(vote(2, 2), lid(1, 1)), TX, now=200.0)
    assert eng.take_commands() == [
        SaveVote(vote(2, 2), 4),
        StopReplication(),
        Respond(TX, grant(vote(2, 2), lid(1, 1)), when=4),
    ]
    assert eng.leader is None and eng.state.server_state is ServerState.FOLLOWER


def test_vote_req_leader_with_fresh_quorum_rejects():
    eng = make_leader(id=1, now=0.0)
    eng.handle_vote_req(VoteRequest(vote(2, 2), lid(1, 1)), TX, now=100.0)
    assert eng.take_commands() == [Respond(TX, reject(vote(1, 1, True), lid(1, 1)))], (
        "no StopReplication: the leader's lease holds"
    )
    assert eng.leader is not None


def test_vote_req_candidate_grants_higher_term_and_gives_up():
    eng = make_engine(id=1, log=LOG)
    eng.elect(now=0.0)
    eng.take_commands()
    eng.handle_vote_req(VoteRequest(vote(2, 3), lid(1, 2)), TX, now=10.0)
    assert eng.take_commands() == [SaveVote(vote(2, 3), 2), Respond(TX, grant(vote(2, 3), lid(1, 2)), when=2)]
    assert eng.candidate is None and eng.state.server_state is ServerState.FOLLOWER


# -- handle_vote_resp ------------------------------------------------------------------------


def candidate(**kw):
    """Node 1, candidate of term 1 (vote io 1 flushed, so it granted itself)."""
    eng = make_engine(id=1, **kw)
    eng.elect(now=0.0)
    flush(eng)
    eng.take_commands()
    return eng


def test_vote_resp_win():
    eng = candidate()
    eng.handle_vote_resp(2, grant(vote(1, 1), lid(0, 0)), now=5.0)
    assert eng.take_commands() == [
        SaveVote(vote(1, 1, True), 2),
        StartReplication(vote(1, 1, True), PEERS),
        AppendEntries([Entry(lid(1, 1), BLANK)], 3),
        # Each target is probed at once with the blank entry (generations 1 and 2).
        Replicate(2, 1, lid(0, 0), 1, 2, None),
        Replicate(3, 2, lid(0, 0), 1, 2, None),
    ]
    assert eng.state.server_state is ServerState.LEADER
    assert eng.leader is not None and eng.leader.noop_log_id == lid(1, 1)


VOTE_RESP_CASES = [
    # id, response, expected commands, still candidate
    ("rejected-same-vote", reject(vote(1, 1), lid(0, 0)), [], True),
    ("rejected-lower-vote", reject(vote(0, 0), lid(5, 5)), [], True),
    ("stale-grant-of-other-vote", grant(vote(0, 1), lid(0, 0)), [], True),
    ("higher-term", reject(vote(3, 3), lid(2, 2)), [SaveVote(vote(3, 3), 2)], False),
    ("established-leader-same-term", reject(vote(1, 3, True), lid(1, 1)), [SaveVote(vote(1, 3, True), 2)], False),
    ("incomparable-same-term", reject(vote(1, 3), lid(0, 0)), [], True),
]


@pytest.mark.parametrize("resp,expected,still", [c[1:] for c in VOTE_RESP_CASES], ids=[c[0] for c in VOTE_RESP_CASES])
def test_handle_vote_resp_no_win(resp, expected, still):
    eng = candidate()
    eng.handle_vote_resp(2, resp, now=5.0)
    assert eng.take_commands() == expected
    assert (eng.candidate is not None) is still
    assert eng.leader is None
    assert eng.state.server_state is (ServerState.CANDIDATE if still else ServerState.FOLLOWER)


def test_vote_resp_of_a_previous_election_is_ignored():
    eng = candidate()
    eng.elect(now=300.0)  # the term-1 election timed out: term 2
    flush(eng)
    eng.take_commands()
    eng.handle_vote_resp(2, grant(vote(1, 1), lid(0, 0)), now=301.0)
    assert eng.take_commands() == [], "a grant for term 1 must not count toward term 2"
    assert eng.candidate is not None and eng.candidate.granted == {1}


def test_vote_resp_after_winning_is_ignored():
    eng = candidate()
    eng.handle_vote_resp(2, grant(vote(1, 1), lid(0, 0)), now=5.0)
    eng.take_commands()
    eng.handle_vote_resp(3, grant(vote(1, 1), lid(0, 0)), now=6.0)
    assert eng.take_commands() == [], "no second blank entry, no second StartReplication"


def test_vote_resp_grants_from_others_win_before_own_vote_is_flushed():
    eng = make_engine(id=1)
    eng.elect(now=0.0)
    eng.take_commands()
    eng.handle_vote_resp(2, grant(vote(1, 1), lid(0, 0)), now=1.0)
    assert eng.take_commands() == [] and eng.leader is None
    eng.handle_vote_resp(3, grant(vote(1, 1), lid(0, 0)), now=2.0)
    assert eng.leader is not None, "2 and 3 are a quorum of {1,2,3}"


# -- current_leader: whom a node names as its leader ---------------------------------------------


def follower_of_2(config=None, learner=False):
    """Node 1 (a voter, or a learner of voters {2, 3}) following leader 2 of term 1, heard
    from at t=10."""
    voters = {2, 3} if learner else {1, 2, 3}
    eng = make_engine(id=1, voters=voters, learners={1} if learner else (), log=LOG, vote=(1, 2, True), config=config)
    eng.handle_append_entries(AppendEntriesRequest(vote(1, 2, True), lid(1, 2), [], lid(1, 2)), TX, 10.0)
    eng.take_commands()
    assert eng.current_leader() == 2
    return eng


@pytest.mark.parametrize("pre_vote", [True, False], ids=["pre-vote", "election"])
def test_a_follower_names_no_leader_once_its_election_timer_fired(pre_vote):
    eng = follower_of_2(Config(enable_pre_vote=pre_vote))
    eng.handle_tick(eng.election_deadline - 1)
    assert eng.current_leader() == 2, "heard from within its election timeout"
    eng.handle_tick(eng.election_deadline)
    [send] = eng.take_commands()[-1:]
    assert isinstance(send, SendVote) and send.req.pre_vote is pre_vote
    assert eng.current_leader() is None, "campaigning: the leader it heard from last is not named"
    with pytest.raises(ForwardToLeader) as ei:
        eng.client_write([Normal(b"x")])
    assert ei.value.leader_id is None
    # A leader heard from: after a pre-vote round (the vote unchanged) the old one may come
    # back; after an election (term 2) only a newer one.
    new = vote(1, 2, True) if pre_vote else vote(3, 3, True)
    eng.handle_append_entries(AppendEntriesRequest(new, lid(1, 2), [], lid(1, 2)), TX, 2_000.0)
    assert eng.current_leader() == new.leader_id.node_id


def test_a_learner_names_no_leader_once_its_election_timer_fired():
    eng = follower_of_2(learner=True)
    eng.handle_tick(eng.election_deadline)
    assert eng.take_commands() == [], "a learner never campaigns"
    assert eng.current_leader() is None
    eng.handle_append_entries(AppendEntriesRequest(vote(1, 2, True), lid(1, 2), [], lid(1, 2)), TX, 2_000.0)
    assert eng.current_leader() == 2


def test_without_elections_a_follower_keeps_naming_its_leader():
    # enable_elect off drives the cluster by hand: no timer of its own decides anything.
    eng = follower_of_2(Config(enable_elect=False))
    eng.handle_tick(eng.election_deadline + 10_000)
    assert eng.current_leader() == 2


def test_a_leader_learned_from_a_vote_response_is_named():
    eng = follower_of_2()
    eng.handle_tick(eng.election_deadline)
    eng.take_commands()
    assert eng.current_leader() is None
    # A pre-vote answer carrying the committed vote of a newer leader: adopted and named.
    eng.handle_vote_resp(3, VoteResponse(vote(2, 3, True), False, lid(1, 2), pre_vote=True), eng.now + 1)
    assert eng.state.vote == vote(2, 3, True) and eng.current_leader() == 3
