"""Tests mapped to the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm"), sections 5.1-5.4.2, in the style of etcd's ``raft_paper_test.go``.

Each docstring cites its section and the test follows init / act / check. Openraft's
``Vote(LeaderId(term, node), committed)`` plays the paper's ``(currentTerm, votedFor)``;
every leader starts its term with a blank entry, so indexes are one higher than the
paper's figures.
"""

from __future__ import annotations

import random

import pytest

from openraft_py.config import Config
from openraft_py.engine import AppendEntries, Respond, SaveVote, SendVote, StopReplication, TruncateLog
from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    Normal,
    ServerState,
    VoteRequest,
    VoteResponse,
)

from .harness import Network
from .helpers import TX, ents, flush, lid, make_engine, make_leader, vote

ROLES = ["follower", "candidate", "leader"]
LOG = [(0, 0), (1, 1)]


def node_in_role(role: str, term: int = 2):
    """Node 1 of {1,2,3} in ``role`` with vote term ``term``, commands drained."""
    if role == "leader":
        return make_leader(id=1, log=LOG, vote=(term - 1, 1))
    eng = make_engine(id=1, log=LOG, vote=(term, 2, True) if role == "follower" else (term - 1, 1))
    if role == "candidate":
        eng.elect(now=0.0)
        flush(eng)
    eng.take_commands()
    return eng


# -- §5.1 Raft basics: terms ------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_update_term_from_append_entries(role):
    """§5.1: a server that sees a higher term in any message adopts it; a candidate or
    leader that learns its term is out of date reverts to follower."""
    eng = node_in_role(role, term=2)
    newer = vote(5, 3, True)
    eng.handle_append_entries(AppendEntriesRequest(newer, lid(1, 1), [], None), TX, now=1000.0)
    cmds = eng.take_commands()
    assert cmds[0] == SaveVote(newer, cmds[0].io)
    assert (StopReplication() in cmds) is (role == "leader")
    assert eng.state.vote == newer and eng.state.server_state is ServerState.FOLLOWER


@pytest.mark.parametrize("role", ROLES)
def test_update_term_from_vote_request(role):
    """§5.1: a higher-term RequestVote (from an up-to-date candidate) makes any role adopt
    the term and become follower."""
    eng = node_in_role(role, term=2)
    eng.handle_vote_req(VoteRequest(vote(5, 3), lid(9, 9)), TX, now=1000.0)
    assert eng.state.vote == vote(5, 3)
    assert eng.state.server_state is ServerState.FOLLOWER


@pytest.mark.parametrize("role", ["candidate", "leader"])
def test_update_term_from_responses(role):
    """§5.1: a higher term in a response (vote reply; append reply for a leader) also
    demotes to follower."""
    eng = node_in_role(role, term=2)
    newer = vote(5, 3)
    if role == "candidate":
        eng.handle_vote_resp(2, VoteResponse(newer, False, lid(1, 1)), now=10.0)
    else:
        eng.handle_higher_vote(2, eng.state.vote, newer)
    assert eng.state.vote == newer and eng.state.server_state is ServerState.FOLLOWER


@pytest.mark.parametrize("role", ROLES)
def test_reject_stale_term_append_entries(role):
    """§5.1: a request with a stale term is rejected; the reply carries the current term."""
    eng = node_in_role(role, term=3)
    mine = eng.state.vote
    eng.handle_append_entries(AppendEntriesRequest(vote(1, 3, True), lid(1, 1), ents((1, 2)), None), TX, now=10.0)
    assert eng.take_commands() == [Respond(TX, AppendEntriesResponse(mine, False))]
    assert eng.state.vote == mine and eng.state.last_log_id() >= lid(1, 1)


@pytest.mark.parametrize("role", ROLES)
def test_reject_stale_term_vote_request(role):
    """§5.1: a RequestVote with a stale term is rejected and changes nothing."""
    eng = node_in_role(role, term=3)
    mine = eng.state.vote
    eng.handle_vote_req(VoteRequest(vote(1, 3), lid(9, 9)), TX, now=10_000.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(mine, False, eng.state.last_log_id()))]


# -- §5.2 Leader election ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_start_election_on_timeout(role):
    """§5.2: a follower (or a candidate whose election timed out) that hears nothing for an
    election timeout increments its term and starts an election."""
    eng = node_in_role(role, term=2)
    eng.config = Config(enable_pre_vote=False)  # the paper's election: no pre-vote round
    term = eng.state.vote.term
    eng.handle_tick(eng.election_deadline)
    cmds = eng.take_commands()
    assert eng.state.vote == vote(term + 1, 1)
    assert [type(c) for c in cmds] == [SaveVote, SendVote]
    assert eng.state.server_state is ServerState.CANDIDATE


def test_candidate_votes_for_itself_and_requests_votes():
    """§5.2: a candidate votes for itself and issues RequestVote to every other server."""
    eng = make_engine(id=1, voters={1, 2, 3, 4, 5}, log=LOG)
    eng.elect(now=0.0)
    assert eng.take_commands() == [
        SaveVote(vote(1, 1), 1),
        SendVote(VoteRequest(vote(1, 1), lid(1, 1)), {n: BasicNode() for n in (2, 3, 4, 5)}, when=1),
    ]
    flush(eng)
    assert eng.candidate.granted == {1}


@pytest.mark.parametrize(
    "size,grants,wins",
    [(1, [], True), (3, [2], True), (3, [], False), (5, [2], False), (5, [2, 3], True), (5, [2, 3, 4, 5], True)],
)
def test_candidate_wins_with_a_majority(size, grants, wins):
    """§5.2: a candidate wins once it has votes from a majority of the servers (its own
    included)."""
    eng = make_engine(id=1, voters=set(range(1, size + 1)), log=LOG)
    eng.elect(now=0.0)
    flush(eng)
    for n in grants:
        eng.handle_vote_resp(n, VoteResponse(vote(1, 1), True, lid(1, 1)), now=1.0)
    assert (eng.state.server_state is ServerState.LEADER) is wins


def test_at_most_one_vote_per_term():
    """§5.2: each server votes for at most one candidate in a given term, first come first
    served; it may repeat the same grant."""
    eng = make_engine(id=1, log=LOG)
    answers = []
    for cand in (2, 3, 2):
        eng.handle_vote_req(VoteRequest(vote(2, cand), lid(1, 1)), cand, now=0.0)
        answers += [(c.tx, c.value.vote_granted) for c in eng.take_commands() if isinstance(c, Respond)]
    assert answers == [(2, True), (3, False), (2, True)]


def test_randomized_election_timeouts():
    """§5.2: election timeouts are chosen at random from [min, max) so split votes are rare:
    different nodes (seeds) pick different timeouts, and each node re-randomizes."""
    deadlines = {make_engine(id=1, seed=s).election_deadline for s in range(20)}
    assert len(deadlines) == 20 and all(150 <= d < 300 for d in deadlines)
    eng = make_engine(id=1, seed=1)
    seen = set()
    for i in range(10):
        eng.reset_election_timer(1000.0 * i)
        seen.add(eng.election_deadline - 1000.0 * i)
    assert len(seen) == 10


def test_candidate_steps_down_on_append_from_same_term_leader():
    """§5.2: a candidate that receives AppendEntries from a leader whose term is at least as
    large as its own recognizes the leader and returns to follower."""
    eng = make_engine(id=1, log=LOG, vote=(1, 2, True))
    eng.elect(now=0.0)  # candidate of term 2
    flush(eng)
    eng.take_commands()
    leader = vote(2, 3, True)
    eng.handle_append_entries(AppendEntriesRequest(leader, lid(1, 1), ents((2, 2)), None), TX, now=5.0)
    assert eng.state.server_state is ServerState.FOLLOWER and eng.state.vote == leader
    assert eng.state.last_log_id() == lid(2, 2)


def test_election_in_a_network_yields_one_leader():
    """§5.2: an election among five servers elects exactly one leader, and the others learn
    of it from its AppendEntries."""
    net = Network(ids=(1, 2, 3, 4, 5))
    net.campaign(3)
    net.stabilize()
    assert net.leader() == 3
    for n, e in net.engines.items():
        assert e.state.vote == vote(1, 3, True)
        assert e.state.server_state is (ServerState.LEADER if n == 3 else ServerState.FOLLOWER)


def test_split_vote_then_a_later_election_wins():
    """§5.2: when votes split, no one wins the term; a candidate whose timeout fires first
    starts a new term and wins."""
    net = Network(ids=(1, 2, 3, 4))
    net.drop(1, 2), net.drop(4, 3)  # 2 only hears 4's request, 3 only hears 1's
    net.campaign(1)
    net.campaign(4)
    net.stabilize()
    assert net.engines[1].candidate.granted == {1, 3} and net.engines[4].candidate.granted == {2, 4}
    assert net.leader() is None, "2 votes each of 4: no majority"
    net.recover()
    net.campaign(2)
    net.stabilize()
    assert net.leader() == 2


# -- §5.3 Log replication ---------------------------------------------------------------------


def test_leader_appends_client_entries_and_replicates():
    """§5.3: the leader appends the command to its log, issues AppendEntries in parallel
    and, once the entry is on a majority, applies it and tells the followers."""
    net = Network()
    net.campaign(1)
    net.stabilize()
    first = net.client_write(1, b"cmd")
    assert first == lid(1, 2)
    net.stabilize()
    for n in net.ids:
        assert net.entries[n][2].payload == Normal(b"cmd")
    assert net.engines[1].state.committed == lid(1, 2)
    net.advance(50)
    net.tick(1)  # the heartbeat carries the commit to the followers
    net.stabilize()
    assert all([e.payload for e in net.applied[n]][-1] == Normal(b"cmd") for n in net.ids)


def test_follower_rejects_on_prev_mismatch():
    """§5.3: if the follower has no entry at prevLogIndex with prevLogTerm it refuses the new
    entries."""
    eng = make_engine(id=2, log=[(0, 0), (1, 1), (1, 2)], vote=(2, 1, True))
    eng.handle_append_entries(AppendEntriesRequest(vote(2, 1, True), lid(2, 2), ents((2, 3)), None), TX, now=0.0)
    cmds = eng.take_commands()
    assert cmds == [Respond(TX, AppendEntriesResponse(vote(2, 1, True), False, conflict_hint=1), when=0)]
    assert not any(isinstance(c, AppendEntries) for c in cmds), "no entry accepted after a mismatch"


def test_follower_appends_after_matching_prev():
    """§5.3: when prevLogIndex/prevLogTerm match, the follower appends the new entries and
    reports how far its log matches."""
    eng = make_engine(id=2, log=[(0, 0), (1, 1)], vote=(2, 1, True))
    eng.handle_append_entries(AppendEntriesRequest(vote(2, 1, True), lid(1, 1), ents((2, 2)), None), TX, now=0.0)
    assert eng.take_commands() == [
        AppendEntries(ents((2, 2)), 1),
        Respond(TX, AppendEntriesResponse(vote(2, 1, True), True, matching=lid(2, 2)), when=1),
    ]


def test_conflicting_entries_are_overwritten():
    """§5.3: if an existing entry conflicts with a new one (same index, different term) the
    follower deletes it and all that follow, then appends the leader's."""
    eng = make_engine(id=2, log=[(0, 0), (1, 1), (1, 2), (1, 3), (1, 4)], vote=(2, 1, True))
    req = AppendEntriesRequest(vote(2, 1, True), lid(1, 1), ents((1, 2), (2, 3)), None)
    eng.handle_append_entries(req, TX, now=0.0)
    assert eng.take_commands()[:2] == [TruncateLog(lid(1, 2), 1), AppendEntries(ents((2, 3)), 2)]
    assert eng.state.last_log_id() == lid(2, 3)


@pytest.mark.parametrize(
    "follower_log",
    [
        [(0, 0), (1, 1)],  # missing entries
        [(0, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)],  # extra uncommitted entries
        [(0, 0), (1, 1), (2, 2), (2, 3), (2, 4)],  # a term the leader never saw
        [(0, 0), (1, 1), (2, 2), (3, 3), (3, 4), (3, 5), (3, 6)],  # longer, conflicting
    ],
    ids=["missing", "extra", "other-term", "longer-conflicting"],
)
def test_leader_backs_up_and_converges(follower_log):
    """§5.3 (Figure 7): whatever the follower's log, the leader finds the last matching
    entry by backing up nextIndex and brings the follower's log in line with its own."""
    leader_log = [(0, 0), (1, 1), (1, 2), (4, 3), (4, 4)]
    net = Network(ids=(1, 2, 3), logs={1: leader_log, 2: follower_log, 3: leader_log}, votes={1: (4, 1), 2: (3, 3), 3: (4, 1)})
    net.campaign(1)
    net.stabilize()
    assert net.leader() == 1
    assert net.entries[2] == net.entries[1]


def test_log_matching_property():
    """§5.3: if two logs hold an entry with the same index and term, the logs are identical
    up to it. ``Network.validate`` checks it after every step of this churn."""
    net = Network(ids=(1, 2, 3, 4, 5), config=Config(max_payload_entries=2))
    rng = random.Random(7)
    for i in range(12):
        leader = rng.choice(net.ids)
        net.campaign(leader)
        for m in rng.sample(net.ids, 2):
            if m != leader:
                net.drop(leader, m)
        if net.engines[leader].leader is None:
            net.deliver(limit=8)
        if net.engines[leader].leader is not None:
            net.client_write(leader, f"w{i}".encode())
        net.deliver(limit=rng.randrange(1, 20))
        net.recover()
    # A node with the most up-to-date log wins and brings every log to its own.
    best = max(net.ids, key=lambda n: net.engines[n].state.last_log_id())  # type: ignore[arg-type,return-value]
    assert elect(net, best), "the most up-to-date node is elected (a round may teach it a higher term)"
    net.stabilize()
    assert all(net.entries[n] == net.entries[best] for n in net.ids)


# -- §5.4 Safety ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "voter_last,cand_last,granted",
    [
        (lid(2, 2), lid(3, 1), True),  # higher last term wins even if shorter
        (lid(2, 2), lid(2, 3), True),  # same term, longer
        (lid(2, 2), lid(2, 2), True),  # identical
        (lid(2, 2), lid(2, 1), False),  # same term, shorter
        (lid(2, 2), lid(1, 9), False),  # lower last term, however long
    ],
)
def test_election_restriction(voter_last, cand_last, granted):
    """§5.4.1: a voter denies its vote if its own log is more up to date than the
    candidate's: compare last terms, then lengths."""
    log = [(0, 0)] + [(voter_last.term if i >= voter_last.index else 1, i) for i in range(1, voter_last.index + 1)]
    eng = make_engine(id=1, log=log)
    eng.handle_vote_req(VoteRequest(vote(5, 2), cand_last), TX, now=0.0)
    (resp,) = [c for c in eng.take_commands() if isinstance(c, Respond)]
    assert resp.value.vote_granted is granted


def test_node_missing_committed_entries_cannot_become_leader():
    """§5.4.1: a candidate whose log lacks a committed entry cannot collect a majority, so
    every leader holds every committed entry (Leader Completeness)."""
    net = Network(ids=(1, 2, 3))
    net.campaign(1)
    net.stabilize()
    net.drop(1, 3)
    net.client_write(1, b"committed")
    net.stabilize()
    assert net.engines[1].state.committed == lid(1, 2)
    net.recover()
    net.isolate(1)
    net.campaign(3)
    net.stabilize()
    assert net.engines[3].leader is None, "2 refuses 3: 3 lacks committed 1-2"
    assert elect(net, 2)
    assert net.entries[3][2].payload == Normal(b"committed")


def test_leader_never_commits_previous_term_entries_by_counting_replicas():
    """§5.4.2: a leader does not commit an entry of a previous term because it is stored on
    a majority; it commits entries of its own term by counting, and earlier ones with them."""
    eng = make_leader(id=1, voters={1, 2, 3, 4, 5}, log=[(0, 0), (1, 1), (2, 2)], vote=(2, 2))
    v = eng.state.vote
    for n in (2, 3, 4):
        eng.handle_replication_progress(n, v, lid(2, 2), 0.0)
    assert eng.state.committed is None and eng.take_commands() == []
    for n in (2, 3):
        eng.handle_replication_progress(n, v, lid(3, 3), 1.0)
    assert eng.state.committed == lid(3, 3)


def figure_8_after_b() -> Network:
    """Figure 8 (a)-(b), shifted by the blank entries: S1 led term 1 and got 1-2 to S2 only;
    S5 won term 2 with the votes of S3, S4 and itself, and wrote 2-2 (blank), 2-3 locally.
    Then S5 crashed (isolated). One entry per request, so replication goes step by step."""
    logs = {1: [(0, 0), (1, 1), (1, 2)], 2: [(0, 0), (1, 1), (1, 2)], 3: [(0, 0), (1, 1)], 4: [(0, 0), (1, 1)]}
    logs[5] = [(0, 0), (1, 1), (2, 2), (2, 3)]
    votes = {1: (1, 1, True), 2: (1, 1, True), 3: (2, 5), 4: (2, 5), 5: (2, 5, True)}
    net = Network(ids=(1, 2, 3, 4, 5), logs=logs, votes=votes, config=Config(max_payload_entries=1))
    net.isolate(5)
    return net


def elect(net: Network, n: int, tries: int = 3) -> bool:
    """Campaign until ``n`` leads (a split term needs another round)."""
    for _ in range(tries):
        net.campaign(n)
        net.stabilize()
        if net.engines[n].leader is not None:
            return True
    return False


def deliver_until(net: Network, cond) -> None:
    while not cond():
        assert net.deliver(limit=1), "ran out of messages"


def test_figure_8_previous_term_entry_on_a_majority_is_not_committed():
    """§5.4.2 (Figure 8 c-d): S1, leader of term 3, gets its term-1 entry 1-2 onto S1, S2, S3
    (a majority) but crashes before its blank 3-3 is on a majority. 1-2 must not be
    committed, and indeed S5 (whose log ends with term 2) then wins term 4 with S3 and S4
    and overwrites index 2 everywhere. Nothing applied is ever lost."""
    net = figure_8_after_b()
    net.drop(1, 4)
    net.campaign(1)  # term 2: S3 and S4 already voted for S5 in term 2
    net.stabilize()
    assert net.engines[1].leader is None
    net.campaign(1)  # term 3: S2, S3, S4 grant
    s1 = net.engines[1]
    deliver_until(net, lambda: s1.leader is not None and net.entries[3].get(2) is not None)
    net.isolate(1)  # (c) crash: 1-2 is on S1, S2, S3; 3-3 on at most S1 and S2
    assert [n for n in net.ids if net.entries[n].get(2) is not None and net.entries[n][2].log_id == lid(1, 2)] == [1, 2, 3]
    assert s1.state.vote.term == 3 and s1.state.committed is None, "1-2 of term 1 is not committed by counting"
    # (d) S5 restarts; it is elected (term 4) by S3 and S4 and overwrites index 2.
    net.recover()
    net.isolate(1)
    assert elect(net, 5)
    assert net.engines[5].state.vote.term == 4
    for n in (2, 3, 4, 5):
        assert net.entries[n][2].log_id == lid(2, 2)
    assert all(e.log_id != lid(1, 2) for n in net.ids for e in net.applied[n])


def test_figure_8_current_term_entry_on_a_majority_commits_and_blocks_the_other_branch():
    """§5.4.2 (Figure 8 e): if S1 gets an entry of its own term (3-3) onto a majority before
    crashing, 3-3 and with it 1-2 are committed, and S5 can no longer win an election."""
    net = figure_8_after_b()
    net.drop(1, 4)
    assert elect(net, 1)
    s1 = net.engines[1]
    assert s1.state.committed == lid(3, 3), "blank 3-3 is on S1, S2, S3"
    net.recover()
    net.isolate(1)
    assert not elect(net, 5), "S2 and S3 hold 3-3: S5's log (last 2-3) is behind"
    assert elect(net, 2)
    net.stabilize()
    for n in (2, 3, 4, 5):
        assert net.entries[n][2].log_id == lid(1, 2) and net.entries[n][3].log_id == lid(3, 3)


def test_commit_rules_follower_applies_only_what_the_leader_committed():
    """§5.3: a follower learns the commit index from leaderCommit and never commits past the
    entries the leader's request proved to match; commit never moves back."""
    eng = make_engine(id=2, log=[(0, 0), (1, 1), (1, 2), (1, 3)], vote=(2, 1, True))
    L = vote(2, 1, True)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 1), [], lid(2, 5)), TX, now=0.0)
    assert eng.state.committed == lid(1, 1), "1-2, 1-3 are not proven to match the leader's log"
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), [], lid(1, 2)), TX, now=1.0)
    assert eng.state.committed == lid(1, 2)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), [], lid(1, 1)), TX, now=2.0)
    assert eng.state.committed == lid(1, 2)

