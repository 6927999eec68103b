"""Engine unit tests: pre-vote (thesis 9.6, ``Config.enable_pre_vote``).

Each test sets state, calls one handler and asserts the exact command list.
"""

from __future__ import annotations

from openraft_py.config import Config
from openraft_py.engine import AppendEntries, Respond, SaveVote, SendVote
from openraft_py.types import AppendEntriesRequest, BasicNode, ServerState, VoteRequest, VoteResponse

from .helpers import TX, flush, lid, make_engine, vote

PEERS = {2: BasicNode(), 3: BasicNode()}
LOG = [(0, 0), (1, 1), (1, 2)]
PRE = Config(enable_pre_vote=True)
LAST = lid(1, 2)


def pre_req(term: int, node: int, last=LAST) -> VoteRequest:
    return VoteRequest(vote(term, node), last, pre_vote=True)


def test_election_timeout_with_pre_vote_asks_without_raising_the_term():
    eng = make_engine(id=1, log=LOG, vote=(1, 2, True), config=PRE)
    eng.handle_tick(10_000.0)
    assert eng.take_commands() == [SendVote(pre_req(2, 1), PEERS, when=None)], (
        "a pre-vote persists nothing: no SaveVote, and the request leaves at once"
    )
    assert eng.state.vote == vote(1, 2, True)
    assert eng.state.server_state is ServerState.FOLLOWER


def test_pre_vote_quorum_starts_the_real_election():
    eng = make_engine(id=1, log=LOG, vote=(1, 2, True), config=PRE)
    eng.handle_tick(10_000.0)
    eng.take_commands()
    eng.handle_vote_resp(2, VoteResponse(vote(1, 2, True), True, lid(1, 2), pre_vote=True), 10_001.0)
    assert eng.take_commands() == [
        SaveVote(vote(2, 1), 1),
        SendVote(VoteRequest(vote(2, 1), lid(1, 2)), PEERS, when=1),
    ]
    flush(eng)
    assert eng.state.server_state is ServerState.CANDIDATE


def test_pre_vote_rejections_change_nothing():
    eng = make_engine(id=1, log=LOG, vote=(1, 2, True), config=PRE)
    eng.handle_tick(10_000.0)
    eng.take_commands()
    for target in (2, 3):
        eng.handle_vote_resp(target, VoteResponse(vote(1, 2, True), False, lid(1, 2), pre_vote=True), 10_001.0)
    assert eng.take_commands() == []
    assert eng.state.vote == vote(1, 2, True)


def test_pre_vote_request_granted_without_changing_the_vote():
    eng = make_engine(id=2, log=LOG, vote=(1, 3, True), now=0.0)
    eng.handle_vote_req(pre_req(2, 1), TX, now=1_000.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(vote(1, 3, True), True, lid(1, 2), pre_vote=True))], (
        "nothing is saved and nothing waits: a pre-vote grant promises nothing"
    )
    assert eng.state.vote == vote(1, 3, True)


def test_pre_vote_request_refused_while_the_leader_is_alive():
    eng = make_engine(id=2, log=LOG, vote=(1, 3, True), now=0.0)
    eng.handle_append_entries(AppendEntriesRequest(vote(1, 3, True), lid(1, 2), [], None), "hb", now=1_000.0)
    eng.take_commands()
    eng.handle_vote_req(pre_req(2, 1), TX, now=1_050.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(vote(1, 3, True), False, lid(1, 2), pre_vote=True))]


def test_pre_vote_request_refused_for_a_stale_log():
    eng = make_engine(id=2, log=LOG, vote=(1, 3, True), now=0.0)
    eng.handle_vote_req(pre_req(2, 1, last=lid(1, 1)), TX, now=1_000.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(vote(1, 3, True), False, lid(1, 2), pre_vote=True))]


def test_late_pre_vote_grant_after_hearing_from_the_leader_starts_nothing():
    eng = make_engine(id=1, log=LOG, vote=(1, 2, True), config=PRE)
    eng.handle_tick(10_000.0)
    eng.take_commands()
    eng.handle_append_entries(AppendEntriesRequest(vote(1, 2, True), lid(1, 2), [], None), "hb", now=10_002.0)
    eng.take_commands()
    eng.handle_vote_resp(3, VoteResponse(vote(1, 2, True), True, lid(1, 2), pre_vote=True), 10_003.0)
    assert eng.take_commands() == [], "the leader is alive: a late pre-vote grant must not start an election"
    assert eng.state.vote == vote(1, 2, True)


def test_pre_vote_response_with_a_higher_term_is_adopted():
    eng = make_engine(id=1, log=LOG, vote=(1, 2, True), config=PRE)
    eng.handle_tick(10_000.0)
    eng.take_commands()
    eng.handle_vote_resp(2, VoteResponse(vote(5, 3, True), False, lid(1, 2), pre_vote=True), 10_001.0)
    assert eng.take_commands() == [SaveVote(vote(5, 3, True), 1)]
    assert eng.pre_candidate is None


def test_single_voter_with_pre_vote_elects_itself():
    eng = make_engine(id=1, voters={1}, log=LOG, vote=(1, 1, True), config=PRE)
    eng.handle_tick(10_000.0)
    cmds = eng.take_commands()
    assert cmds == [SaveVote(vote(2, 1), 1)], "its own pre-vote is a quorum; no request is sent"
    flush(eng)
    assert eng.leader is not None and type(eng.take_commands()[-1]) is AppendEntries
