"""Engine unit tests: leader transfer (thesis 3.10, ``engine/handler/transfer.py``):
``transfer_leader``, the send once the target caught up, and ``handle_transfer_leader``.

Each test sets state, calls one handler and asserts the exact command list; ``validate()``
holds after every step.
"""

from __future__ import annotations

import pytest

from openraft_py.config import Config
from openraft_py.engine import (
    AppendEntries,
    Heartbeat,
    Matched,
    Replicate,
    Respond,
    SaveCommittedAndApply,
    SaveVote,
    SendTransferLeader,
    SendVote,
    StopReplication,
    Unreachable,
)
from openraft_py.errors import ForwardToLeader, InProgress, QuorumNotEnough
from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    Normal,
    ReadPolicy,
    ServerState,
    TransferLeaderRequest,
    VoteRequest,
    VoteResponse,
)

from .helpers import TX, ent, flush, lid, make_engine, make_idle_leader, make_leader, vote

L1 = vote(1, 1, True)
PEERS = {2: BasicNode(), 3: BasicNode()}
TIMEOUT_MAX = 300  # Config().election_timeout_max


def leader():
    """Leader 1 of {1,2,3}, term 1, blank 1-1 committed: nodes 2 and 3 answered the probe
    holding it at t=0; nothing in flight."""
    eng = make_idle_leader(id=1)
    assert eng.state.committed == lid(1, 1)
    return eng


def heartbeat(after: int, committed: int) -> list[Replicate]:
    """The heartbeat round of ``leader()`` once the requests for entries up to ``after`` are
    in flight: an empty request to each target, pipelined behind them."""
    return [Replicate(t, t - 1, lid(1, after), after + 1, after + 1, lid(1, committed)) for t in (2, 3)]


def transferring(now: float = 10.0):
    """``leader()`` with a write 1-2 not yet on node 3, transferring to node 3 at ``now``."""
    eng = leader()
    eng.client_write([Normal(b"a")])
    flush(eng)
    eng.take_commands()
    eng.transfer_leader(3, now)
    assert eng.take_commands() == heartbeat(2, 1), "node 3 lacks 1-2: no TransferLeader yet"
    return eng


# -- transfer_leader ------------------------------------------------------------------------------


def test_transfer_to_an_up_to_date_target_sends_once_it_answers_the_heartbeat():
    """The target holds the whole log: the notice goes out once it answered a request sent
    since the transfer started (the start's heartbeat round), not on an older answer: a
    target that went down just before the start is never told to take over."""
    eng = leader()
    eng.transfer_leader(3, 10.0)
    assert eng.take_commands() == heartbeat(1, 1)
    assert eng.leader.transfer_to == 3 and eng.leader.transfer_deadline == 10.0 + 2 * TIMEOUT_MAX
    eng.handle_replication_progress(3, L1, lid(1, 1), 9.0)  # an answer to a request sent before the start
    assert eng.take_commands() == [], "it proves nothing of the target since the start"
    eng.handle_replication_result(Matched(3, L1, 2, lid(1, 1), 10.0))  # the start's heartbeat
    assert eng.take_commands() == [SendTransferLeader(TransferLeaderRequest(L1, 3, lid(1, 1)), PEERS)]
    eng.state.validate()


def test_transfer_leader_waits_until_the_target_holds_the_whole_log():
    eng = transferring()
    eng.handle_replication_progress(2, L1, lid(1, 2), 11.0)
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 2))], (
        "node 2 catching up commits 1-2 but sends no TransferLeader"
    )
    eng.handle_replication_progress(3, L1, lid(1, 1), 12.0)
    assert eng.take_commands() == [], "still one entry behind"
    eng.handle_replication_progress(3, L1, lid(1, 2), 13.0)
    assert eng.take_commands() == [SendTransferLeader(TransferLeaderRequest(L1, 3, lid(1, 2)), PEERS)]
    eng.handle_replication_progress(3, L1, lid(1, 2), 14.0)
    assert eng.take_commands() == [], "TransferLeader is sent once"
    eng.state.validate()


def test_client_write_during_transfer_forwards_to_the_target():
    eng = transferring()
    with pytest.raises(ForwardToLeader) as ei:
        eng.client_write([Normal(b"b")])
    assert ei.value.leader_id == 3
    assert eng.take_commands() == []
    assert eng.state.last_log_id() == lid(1, 2)


def test_membership_change_during_transfer_forwards_to_the_target():
    eng = transferring()
    with pytest.raises(ForwardToLeader) as ei:
        eng.add_learner(4, BasicNode(), TX)
    assert ei.value.leader_id == 3, "forwarding to itself makes a client retry here in a loop"


def test_lease_read_refused_during_transfer_but_read_index_still_works():
    eng = transferring()
    eng.handle_replication_progress(2, L1, None, 10.0)  # a fresh quorum ack
    eng.take_commands()
    eng.handle_read(TX, ReadPolicy.LEASE_READ, 11.0)
    (resp,) = eng.take_commands()
    assert resp.tx == TX and isinstance(resp.value, QuorumNotEnough), (
        "followers may already grant the target: no lease"
    )
    assert str(resp.value) == "no lease: this leader is handing over leadership"
    eng.handle_read("ri", ReadPolicy.READ_INDEX, 12.0)
    assert eng.take_commands() == heartbeat(2, 1)
    eng.handle_replication_progress(2, L1, None, 12.0)
    assert eng.take_commands() == [Respond("ri", lid(1, 1))]


def test_transfer_deadline_without_the_notice_resumes_writes_and_lease_reads():
    """Node 3 never caught up: the notice never went out, and at the deadline the leader
    takes writes again, and lease reads: no follower was told of the hand-over, so each
    still counts this leader as alive. Lease reads stayed refused for the rest of the term
    (hours, for a stable leader) after a transfer nobody heard of."""
    eng = transferring(now=10.0)
    deadline = 10.0 + 2 * TIMEOUT_MAX
    for t in range(60, int(deadline), 50):  # node 2 keeps acking; node 3 never catches up
        eng.handle_replication_progress(2, L1, None, float(t))
        eng.handle_tick(float(t))
    eng.take_commands()
    assert eng.leader.transfer_to == 3
    with pytest.raises(ForwardToLeader):
        eng.client_write([Normal(b"b")])
    eng.handle_replication_progress(2, L1, None, deadline)
    eng.handle_tick(deadline + 1)
    assert eng.take_commands() == [heartbeat(2, 1)[0], Heartbeat(3, lid(1, 1), lid(1, 1))], (
        "node 3 answered nothing: its heartbeat goes beside its request in flight"
    )
    assert eng.leader is not None and eng.leader.transfer_to is None
    assert eng.client_write([Normal(b"b")]) == lid(1, 3)
    assert eng.take_commands() == [
        AppendEntries([ent(1, 3, b"b")], eng.state.io.submitted),
        Replicate(2, 1, lid(1, 2), 3, 4, lid(1, 1)),
        Replicate(3, 2, lid(1, 2), 3, 4, lid(1, 1)),
    ]
    assert not eng.leader.lease_disabled
    eng.handle_read(TX, ReadPolicy.LEASE_READ, deadline + 2)
    assert eng.take_commands() == [Respond(TX, lid(1, 1))], "node 2's ack at the deadline confirms the lease"
    eng.state.validate()


def test_transfer_deadline_after_the_notice_resumes_writes_but_lease_stays_off():
    """Node 3 was told to take over and no leader came of it: at the deadline the leader
    takes writes again, but not lease reads, for the rest of the term: the voters told of
    the hand-over may vote for another node at once, whatever they acknowledged."""
    eng = leader()
    eng.transfer_leader(3, 10.0)
    eng.take_commands()
    eng.handle_replication_result(Matched(3, L1, 2, lid(1, 1), 10.0))
    assert eng.take_commands() == [SendTransferLeader(TransferLeaderRequest(L1, 3, lid(1, 1)), PEERS)]
    assert eng.leader.lease_disabled
    deadline = 10.0 + 2 * TIMEOUT_MAX
    eng.handle_replication_progress(2, L1, None, deadline)
    eng.handle_tick(deadline + 1)
    eng.take_commands()
    assert eng.leader is not None and eng.leader.transfer_to is None
    assert eng.client_write([Normal(b"b")]) == lid(1, 2)
    eng.take_commands()
    eng.handle_read(TX, ReadPolicy.LEASE_READ, deadline + 2)
    (resp,) = eng.take_commands()
    assert isinstance(resp.value, QuorumNotEnough), "followers stopped treating this leader as alive this term"
    # Not "handing over" (it no longer is: it takes writes again), and not for a moment.
    assert str(resp.value) == (
        "no lease for the rest of term 1: a leadership transfer this leader started did not complete, and the "
        "followers it told of it may vote for another node at once; use READ_INDEX (the lease is back with the "
        "next leader term)"
    )
    # A later transfer of the term given up before its own notice does not bring it back.
    eng.transfer_leader(2, deadline + 3)
    eng.take_commands()
    eng.handle_replication_result(Unreachable(2, L1, 1, 3, "append_entries 1 -> 2: isolated"))
    assert eng.leader.transfer_to is None and eng.leader.lease_disabled
    eng.handle_read(TX, ReadPolicy.LEASE_READ, deadline + 4)
    (resp,) = eng.take_commands()
    assert isinstance(resp.value, QuorumNotEnough) and "for the rest of term 1" in str(resp.value)
    eng.state.validate()


def test_transfer_to_self_is_a_no_op():
    eng = leader()
    eng.transfer_leader(1, 10.0)
    assert eng.take_commands() == []
    assert eng.leader.transfer_to is None and not eng.leader.lease_disabled
    assert eng.client_write([Normal(b"a")]) == lid(1, 2)


def test_transfer_to_self_while_handing_over_forwards_to_the_target():
    """Naming the leader itself while it hands over did nothing: its caller was told this
    node leads (the key-value service answered 200 ``{"leader_id": 1}``), and the target
    took over a moment later. Refused as a write is, naming the target; the transfer goes
    on unchanged."""
    eng = transferring()
    with pytest.raises(ForwardToLeader) as ei:
        eng.transfer_leader(1, 11.0)
    assert ei.value.leader_id == 3
    assert eng.take_commands() == []
    assert eng.leader.transfer_to == 3 and not eng.leader.transfer_sent
    assert eng.leader.transfer_deadline == 10.0 + 2 * TIMEOUT_MAX, "the transfer is not restarted"
    eng.state.validate()


def test_transfer_to_a_non_voter_raises_value_error():
    eng = make_leader(id=1, learners=[4])
    for to in (4, 9):
        with pytest.raises(ValueError):
            eng.transfer_leader(to, 10.0)
    assert eng.take_commands() == []
    assert eng.leader.transfer_to is None and not eng.leader.lease_disabled


def test_transfer_while_a_membership_change_is_in_progress_raises_in_progress():
    """A transfer while the joint config of a ``change_membership`` had not committed made the
    change's caller get ``ForwardToLeader``, and the new leader finished the change keeping
    the voter asked to leave as a learner (it cannot know ``retain=False``). Refused until the
    joint config commits; nothing changes. Then it is taken."""
    eng = make_idle_leader(id=1, learners=[4])
    eng.change_membership({1, 3, 4}, False, TX, allow_lagging=True)
    eng.take_commands()
    joint = eng.state.membership.effective.log_id
    with pytest.raises(InProgress) as ei:
        eng.transfer_leader(2, 10.0)
    assert ei.value.membership_log_id == joint
    assert "cannot transfer leadership to node 2 while a membership change is in progress" in str(ei.value)
    # (it said "(change_membership returned; ...)", as if that call had returned already)
    assert str(ei.value).endswith(
        "transfer once it has committed (the change_membership call that made it returns then; one this leader was "
        "elected with commits with its first entries)"), str(ei.value)
    assert eng.take_commands() == []
    assert eng.leader.transfer_to is None and not eng.leader.lease_disabled
    for t in (2, 3, 4):  # the joint config commits; the final config is appended
        eng.handle_replication_progress(t, eng.state.vote, joint, 10.0)
    assert eng.leader.change_tx is None
    eng.transfer_leader(3, 10.0)
    assert eng.leader.transfer_to == 3


@pytest.mark.parametrize("now,refused", [(TIMEOUT_MAX, False), (TIMEOUT_MAX + 1, True)], ids=["at-the-bound", "past-it"])
def test_transfer_to_a_target_silent_for_an_election_timeout_raises_value_error(now, refused):
    """Node 3 last answered a request sent at t=0 (its node went down since): a transfer to
    it refused writes (redirected to node 3) for two election timeouts and turned lease reads
    off for the rest of the term, for nothing. Refused; nothing changes."""
    eng = leader()
    if not refused:
        eng.transfer_leader(3, now)
        assert eng.leader.transfer_to == 3
        return
    with pytest.raises(ValueError, match=r"cannot transfer leadership to node 3: it answered none of this leader's") as ei:
        eng.transfer_leader(3, now)
    assert "is it down or cut off?" in str(ei.value)
    assert eng.take_commands() == []
    assert eng.leader.transfer_to is None and not eng.leader.lease_disabled
    assert eng.client_write([Normal(b"a")]) == lid(1, 2)


def test_transfer_on_a_follower_forwards_to_the_leader():
    eng = make_engine(id=2, vote=(1, 1, True))
    with pytest.raises(ForwardToLeader) as ei:
        eng.transfer_leader(3, 10.0)
    assert ei.value.leader_id == 1
    assert eng.take_commands() == []


def test_transferring_leader_grants_the_target_at_once():
    eng = transferring()
    eng.handle_replication_progress(3, L1, lid(1, 2), 11.0)
    eng.take_commands()
    eng.handle_vote_req(VoteRequest(vote(2, 3), lid(1, 2)), TX, 12.0)
    assert eng.take_commands() == [
        SaveVote(vote(2, 3), eng.state.io.submitted),
        StopReplication(),
        Respond(TX, VoteResponse(vote(2, 3), True, lid(1, 2)), when=eng.state.io.submitted),
    ], "no leader stickiness while handing over"
    assert eng.state.server_state is ServerState.FOLLOWER


# -- handle_transfer_leader ------------------------------------------------------------------------

LOG = [(0, 0), (1, 1), (1, 2)]


def follower(id: int, log=LOG, now: float = 100.0):
    """A follower of leader 1 (term 1) that just heard from it at ``now``."""
    eng = make_engine(id=id, log=log, vote=(1, 1, True), committed=(1, 1))
    last = eng.state.last_log_id()
    eng.handle_append_entries(AppendEntriesRequest(L1, last, [], lid(1, 1)), TX, now)
    eng.take_commands()
    return eng


def test_target_elects_itself_at_once():
    eng = follower(3)
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 101.0)
    assert eng.take_commands() == [
        SaveVote(vote(2, 3), 1),
        SendVote(VoteRequest(vote(2, 3), lid(1, 2), transfer_from=L1), {1: BasicNode(), 2: BasicNode()}, when=1),
    ], "no election timeout, and no pre-vote round; the request names the leader that handed over"
    assert eng.state.server_state is ServerState.CANDIDATE
    eng.state.validate()


def test_target_missing_the_leaders_log_does_not_elect():
    eng = follower(3, log=[(0, 0), (1, 1)])
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 101.0)
    assert eng.take_commands() == []
    assert eng.state.vote == L1


def test_other_follower_only_stops_treating_the_leader_as_alive():
    eng = follower(2)
    req = VoteRequest(vote(2, 3), lid(1, 2))
    # Without the notice, leader stickiness refuses the candidate.
    probe = follower(2)
    probe.handle_vote_req(req, TX, 101.0)
    assert probe.take_commands() == [Respond(TX, VoteResponse(L1, False, lid(1, 2)))]

    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 101.0)
    assert eng.take_commands() == [], "not the target: no election"
    assert eng.state.vote == L1 and eng.state.server_state is ServerState.FOLLOWER
    # A heartbeat of the old leader arriving after the notice does not make it alive again.
    eng.handle_append_entries(AppendEntriesRequest(L1, lid(1, 2), [], lid(1, 1)), TX, 102.0)
    eng.take_commands()
    eng.handle_vote_req(req, TX, 103.0)
    assert eng.take_commands() == [
        SaveVote(vote(2, 3), 1),
        Respond(TX, VoteResponse(vote(2, 3), True, lid(1, 2)), when=1),
    ]
    eng.state.validate()


def heartbeat_from_l1(eng, now: float) -> None:
    eng.handle_append_entries(AppendEntriesRequest(L1, lid(1, 2), [], lid(1, 1)), TX, now)
    assert eng.take_commands() == [Respond(TX, AppendEntriesResponse(L1, True, matching=lid(1, 2)), when=0)]


def test_other_follower_counts_the_leader_as_alive_again_once_the_transfer_expired():
    # The target never took over: the leader gave up two election_timeout_max after it started
    # the transfer (before node 2 took the notice) and takes writes again. Node 2, hearing from
    # it every heartbeat interval, granted any candidate its vote and pre-vote for the rest of
    # the term: a node cut off for a while and back deposed a live leader.
    eng = follower(2)
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 101.0)
    assert eng.take_commands() == [] and eng.transfer_from == L1
    expired = 101.0 + 2 * TIMEOUT_MAX
    pre = VoteRequest(vote(2, 3), lid(1, 2), pre_vote=True)
    heartbeat_from_l1(eng, expired - 1)
    eng.handle_vote_req(pre, TX, expired - 1)
    assert eng.take_commands() == [Respond(TX, VoteResponse(L1, True, lid(1, 2), pre_vote=True))], (
        "the transfer may still run: no stickiness"
    )
    heartbeat_from_l1(eng, expired)
    assert eng.transfer_from is None and eng.leader_seen_at == expired
    eng.handle_vote_req(pre, TX, expired + 1)
    assert eng.take_commands() == [Respond(TX, VoteResponse(L1, False, lid(1, 2), pre_vote=True))], "sticky again"
    eng.handle_vote_req(VoteRequest(vote(2, 3), lid(1, 2)), TX, expired + 1)
    assert eng.take_commands() == [Respond(TX, VoteResponse(L1, False, lid(1, 2)))], "sticky again"
    # The target's own request, which names the leader that handed over, is granted still.
    eng.handle_vote_req(VoteRequest(vote(2, 3), lid(1, 2), transfer_from=L1), TX, expired + 2)
    assert eng.take_commands() == [
        SaveVote(vote(2, 3), 1),
        Respond(TX, VoteResponse(vote(2, 3), True, lid(1, 2)), when=1),
    ]
    eng.state.validate()


def test_without_ticks_a_transfer_notice_is_kept_for_the_term():
    # Ticks off: the leader's transfer never expires (it expires on a tick), nor does the notice.
    eng = make_engine(id=2, log=LOG, vote=(1, 1, True), committed=(1, 1), config=Config(enable_tick=False))
    heartbeat_from_l1(eng, 100.0)
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 101.0)
    assert eng.take_commands() == [] and eng.transfer_from == L1
    heartbeat_from_l1(eng, 101.0 + 10 * TIMEOUT_MAX)
    assert eng.transfer_from == L1 and eng.leader_seen_at == -1e18


@pytest.mark.parametrize("from_leader", [vote(0, 2, True), vote(1, 2, True), vote(2, 1, True)], ids=["older", "other-leader", "newer"])
def test_transfer_notice_from_another_leader_is_ignored(from_leader):
    eng = follower(3)
    seen = eng.leader_seen_at
    eng.handle_transfer_leader(TransferLeaderRequest(from_leader, 3, lid(1, 2)), 101.0)
    assert eng.take_commands() == []
    assert eng.leader_seen_at == seen and eng.transfer_from is None
    eng.handle_vote_req(VoteRequest(vote(2, 2), lid(1, 2)), TX, 102.0)
    assert eng.take_commands() == [Respond(TX, VoteResponse(L1, False, lid(1, 2)))], "still sticky"


# -- a notice read too late (notice_is_stale) ----------------------------------------------------


def test_target_silent_for_election_timeout_max_ignores_the_notice():
    # Paused (SIGSTOP, a stalled loop) that long, it reads the notice when it wakes up: the
    # transfer may have expired (two such timeouts), and the leader taking writes again would
    # be deposed by an election it gave up on.
    eng = follower(3)
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 100.0 + TIMEOUT_MAX)
    assert eng.take_commands() == []
    assert eng.state.vote == L1 and eng.transfer_from is None and eng.leader_seen_at == 100.0


def test_target_whose_election_timer_fired_then_read_the_notice_late_ignores_it():
    eng = follower(3)
    eng.handle_tick(eng.election_deadline)  # a pre-vote round: the vote is still the leader's
    eng.take_commands()
    assert eng.state.vote == L1
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 100.0 + TIMEOUT_MAX)
    assert eng.take_commands() == [] and eng.transfer_from is None


def test_target_that_stalled_past_its_election_timeout_only_acts_on_the_notice():
    # A stall of the event loop past the election timeout but under election_timeout_max: the
    # transfer, which expires after two election_timeout_max, cannot have expired meanwhile.
    for tick_first in (False, True):
        eng = follower(3)
        late = 100.0 + TIMEOUT_MAX - 1  # past the election deadline (at most 100 + 300)
        if tick_first:
            eng.handle_tick(late)
            eng.take_commands()
        eng.handle_append_entries(AppendEntriesRequest(L1, lid(1, 2), [], lid(1, 1)), TX, late)
        eng.take_commands()
        assert eng.silence_ended_at == -1e18
        eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), late + 1)
        assert [type(c) for c in eng.take_commands()] == [SaveVote, SendVote], tick_first


def test_target_that_heard_from_its_leader_only_after_a_long_silence_ignores_the_notice():
    # Woken from a pause, it reads first a heartbeat that waited in its buffers as long as
    # the notice did: the leader seems live again, but the silence was long.
    eng = follower(3)
    late = 100.0 + TIMEOUT_MAX + 1_000
    eng.handle_append_entries(AppendEntriesRequest(L1, lid(1, 2), [], lid(1, 1)), TX, late)
    eng.take_commands()
    assert eng.silence_ended_at == late and eng.current_leader() == 1
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), late + 1)
    assert eng.take_commands() == [] and eng.transfer_from is None
    # Heard from its leader for election_timeout_max since: a notice is acted on again.
    t = late
    while t < late + TIMEOUT_MAX:
        t += 50
        eng.handle_append_entries(AppendEntriesRequest(L1, lid(1, 2), [], lid(1, 1)), TX, t)
        eng.take_commands()
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), t + 1)
    assert [type(c) for c in eng.take_commands()] == [SaveVote, SendVote]


def test_target_whose_timer_ran_out_before_it_followed_a_leader_acts_on_the_notice():
    # A new node's timer runs out before the first leader is elected: no leader it followed
    # went silent, so a transfer to it right after is acted on.
    eng = make_engine(id=3, log=LOG, committed=(1, 1))
    eng.handle_tick(eng.election_deadline)
    eng.take_commands()
    eng.handle_append_entries(AppendEntriesRequest(L1, lid(1, 2), [], lid(1, 1)), TX, eng.now + TIMEOUT_MAX)
    eng.take_commands()
    assert eng.silence_ended_at == -1e18
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), eng.now + 1)
    assert [type(c) for c in eng.take_commands()] == [SaveVote, SendVote]


def test_target_holding_an_entry_appended_after_the_notice_ignores_it():
    # The leader appended 1-3 after sending the notice naming 1-2: a leader handing over
    # appends nothing, so it had given the transfer up and taken writes again.
    eng = follower(3, log=[*LOG, (1, 3)])
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 101.0)
    assert eng.take_commands() == []
    assert eng.state.vote == L1 and eng.transfer_from is None


def test_target_of_a_removed_leader_elects_holding_more_than_it_names():
    # A leader removed from the voters names what it knew the target held (hand_over_as_removed):
    # the target may hold more of its entries, and still elects at once.
    eng = make_engine(id=3, voters={2, 3}, log=[*LOG, (1, 3)], vote=(1, 1, True), committed=(1, 1))
    eng.handle_append_entries(AppendEntriesRequest(L1, lid(1, 3), [], lid(1, 1)), TX, 100.0)
    eng.take_commands()
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 101.0)
    assert eng.take_commands() == [
        SaveVote(vote(2, 3), 1),
        SendVote(VoteRequest(vote(2, 3), lid(1, 3), transfer_from=L1), {2: BasicNode()}, when=1),
    ]


def test_without_elections_a_late_notice_is_acted_on():
    # Elections off (a cluster driven by hand): no election timer says the leader is gone.
    eng = make_engine(id=3, log=LOG, vote=(1, 1, True), committed=(1, 1), config=Config(enable_elect=False))
    eng.handle_append_entries(AppendEntriesRequest(L1, lid(1, 2), [], lid(1, 1)), TX, 100.0)
    eng.take_commands()
    eng.handle_transfer_leader(TransferLeaderRequest(L1, 3, lid(1, 2)), 100_000.0)
    assert [type(c) for c in eng.take_commands()] == [SaveVote, SendVote]


def test_transfer_while_an_inherited_joint_config_is_in_force_raises_in_progress():
    """A leader elected with a joint config in force, which it finishes once it commits (no
    ``change_membership`` call of its own: ``change_tx`` is None), took a transfer: the final
    config it appended after the notice left the target's log shorter than the leader's, so
    the target lost its election or took the notice for a stale one. Refused as a change of
    its own is; nothing changes."""
    eng = make_leader(id=1, voters=[{1, 2, 3}, {1, 3, 4}])
    eng.take_commands()
    assert eng.leader.change_tx is None and eng.state.membership.effective.membership.is_joint()
    with pytest.raises(InProgress, match="cannot transfer leadership to node 3 while a membership change is in progress"):
        eng.transfer_leader(3, 10.0)
    assert eng.take_commands() == []
    assert eng.leader.transfer_to is None and not eng.leader.lease_disabled


# -- a target the network cannot reach ------------------------------------------------------------

REFUSED = "append_entries 1 -> 3: node 3 is not registered"


def test_transfer_gives_up_at_once_when_the_network_refuses_the_target():
    """Node 3 went down a moment before the transfer (it acked a request sent at t=0, well
    within ``election_timeout_max``, so ``start`` took it). A request to it is then refused
    by the network (``Unreachable.refused``): it will never read the notice, and writes were
    refused, redirected to it, until the deadline two election timeouts later. Now the
    transfer is given up at once: writes are taken again; the lease stays off."""
    eng = transferring(now=10.0)
    eng.handle_replication_result(Unreachable(3, L1, 2, 3, REFUSED))
    assert eng.take_commands() == [], "node 3 backs off a heartbeat interval; nothing else is sent"
    assert eng.leader is not None and eng.leader.transfer_to is None
    assert eng.client_write([Normal(b"b")]) == lid(1, 3)
    assert eng.take_commands() == [
        AppendEntries([ent(1, 3, b"b")], eng.state.io.submitted),
        Replicate(2, 1, lid(1, 2), 3, 4, lid(1, 1)),
    ]
    # No follower was told of the hand-over: the lease (nodes 2 and 3 acked at t=0) is
    # served again. It stayed off for the rest of the term.
    assert not eng.leader.lease_disabled
    eng.handle_read(TX, ReadPolicy.LEASE_READ, 11.0)
    assert eng.take_commands() == [Respond(TX, lid(1, 1))]
    eng.state.validate()


def test_transfer_goes_on_when_the_target_only_answers_late():
    """A request to node 3 that went unanswered in time (``Timeout``: ``refused`` is None)
    says nothing of node 3 being gone: a slow but live target is still waited for."""
    eng = transferring(now=10.0)
    eng.handle_replication_result(Unreachable(3, L1, 2, 3))
    assert eng.take_commands() == []
    assert eng.leader.transfer_to == 3
    with pytest.raises(ForwardToLeader) as ei:
        eng.client_write([Normal(b"b")])
    assert ei.value.leader_id == 3
    eng.state.validate()


def test_transfer_goes_on_when_the_network_refuses_another_node():
    """Node 2 is refused; the transfer is to node 3: it goes on."""
    eng = transferring(now=10.0)
    eng.handle_replication_result(Unreachable(2, L1, 1, 3, "append_entries 1 -> 2: isolated"))
    assert eng.take_commands() == []
    assert eng.leader.transfer_to == 3
    with pytest.raises(ForwardToLeader):
        eng.client_write([Normal(b"b")])
    eng.state.validate()


def test_a_target_down_before_the_start_is_never_sent_the_notice():
    """Node 3 holds the whole log but went down a moment before the transfer: the start's
    heartbeat to it is refused. It was not sent the notice (it did not answer since the
    start): the transfer is given up at once; before, the notice went out at the start (to
    a dead node) and writes were refused for two election timeouts."""
    eng = leader()
    eng.transfer_leader(3, 10.0)
    assert eng.take_commands() == heartbeat(1, 1)
    eng.handle_replication_result(Unreachable(3, L1, 2, 2, REFUSED))
    assert eng.take_commands() == []
    assert eng.leader.transfer_to is None and not eng.leader.lease_disabled, "nobody was told: the lease stands"
    assert eng.client_write([Normal(b"a")]) == lid(1, 2)
    eng.state.validate()


def test_a_refusal_after_the_notice_leaves_the_deadline():
    """Node 3 answered the start's heartbeat and was sent the notice; then a request to it
    is refused. It may hold the notice unread (a paused process) and act on it later, which
    ``notice_is_stale`` makes safe only within the transfer's two election timeouts: the
    transfer stands until its deadline."""
    eng = leader()
    eng.transfer_leader(3, 10.0)
    eng.take_commands()
    eng.handle_replication_result(Matched(3, L1, 2, lid(1, 1), 10.0))
    assert eng.take_commands() == [SendTransferLeader(TransferLeaderRequest(L1, 3, lid(1, 1)), PEERS)]
    eng.handle_replication_result(Unreachable(3, L1, 2, 2, REFUSED))
    assert eng.take_commands() == []
    assert eng.leader.transfer_to == 3 and eng.leader.lease_disabled
    with pytest.raises(ForwardToLeader):
        eng.client_write([Normal(b"a")])
    eng.state.validate()
