"""Engine unit tests: the leader side (client writes, commit, reads, ticks) and ``initialize``."""

from __future__ import annotations

import time
from unittest.mock import ANY

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
from openraft_py.errors import ForwardToLeader, NotAllowed, NotInMembers, QuorumNotEnough
from openraft_py.types import (
    BLANK,
    AppendEntriesRequest,
    BasicNode,
    Entry,
    Membership,
    Normal,
    ReadPolicy,
    ServerState,
    VoteRequest,
    VoteResponse,
)

from .helpers import TX, ent, flush, lid, make_engine, make_idle_leader, make_leader, membership, vote

L1 = vote(1, 1, True)


# -- client_write ------------------------------------------------------------------------------


def test_client_write_appends_and_replicates():
    eng = make_idle_leader(id=1)
    first = eng.client_write([Normal(b"a"), Normal(b"b")])
    assert first == lid(1, 2)
    assert eng.take_commands() == [
        AppendEntries([ent(1, 2, b"a"), ent(1, 3, b"b")], 4),
        Replicate(2, 1, lid(1, 1), 2, 4, lid(1, 1)),
        Replicate(3, 2, lid(1, 1), 2, 4, lid(1, 1)),
    ]


def test_client_write_while_the_probe_is_in_flight_waits_for_its_answer():
    eng = make_leader(id=1)
    eng.client_write([Normal(b"a")])
    assert eng.take_commands() == [AppendEntries([ent(1, 2, b"a")], 4)], "probing: one request in flight"


def test_client_write_on_follower_forwards_to_known_leader():
    eng = make_engine(id=2, vote=(1, 1, True))
    with pytest.raises(ForwardToLeader) as ei:
        eng.client_write([Normal(b"a")])
    assert ei.value.leader_id == 1
    assert eng.take_commands() == [], "a refused write emits nothing"


# -- commit: handle_replication_progress / handle_io_flushed ------------------------------------

# Leader node 1 of {1,2,3}, log 0-0 + blank 1-1 flushed. (target, session, matching) steps and
# the commands each one must emit.
PROGRESS_CASES = [
    ("majority-commits-blank", [(2, L1, lid(1, 1))], [SaveCommittedAndApply(lid(1, 1))]),
    ("ack-without-matching", [(2, L1, None)], []),
    ("matching-below-blank", [(2, L1, lid(0, 0))], []),
    ("stale-session-ignored", [(2, vote(0, 1, True), lid(1, 1))], []),
    ("unknown-target-ignored", [(9, L1, lid(1, 1))], []),
    ("second-ack-no-recommit", [(2, L1, lid(1, 1)), (3, L1, lid(1, 1))], [SaveCommittedAndApply(lid(1, 1))]),
]


@pytest.mark.parametrize("steps,expected", [c[1:] for c in PROGRESS_CASES], ids=[c[0] for c in PROGRESS_CASES])
def test_handle_replication_progress(steps, expected):
    eng = make_leader(id=1)
    for target, session, matching in steps:
        eng.handle_replication_progress(target, session, matching, 0.0)
    assert eng.take_commands() == expected


def test_leader_own_entry_counts_only_once_flushed():
    eng = make_leader(id=1)
    eng.handle_replication_progress(2, L1, lid(1, 1), 0.0)
    eng.take_commands()
    eng.client_write([Normal(b"a")])
    eng.take_commands()
    assert eng.state.io.flushed_log_id == lid(1, 1), "the leader's own write of 1-2 is still in flight"
    eng.handle_replication_progress(2, L1, lid(1, 2), 1.0)
    eng.handle_replication_progress(3, L1, lid(1, 2), 1.0)
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 2))], (
        "2 and 3 are a quorum without the leader's own unflushed copy: 1-2 is committed and "
        "applied at once (it is readable here; restore copes with a log behind the state machine)"
    )
    eng2 = make_leader(id=1)
    eng2.client_write([Normal(b"a")])
    eng2.take_commands()
    eng2.handle_replication_progress(2, L1, lid(1, 2), 1.0)
    assert eng2.take_commands() == [SaveCommittedAndApply(lid(1, 1))], (
        "only 1-1: 2 alone is no quorum, and the leader's own copy of 1-2 counts only once durable"
    )
    flush(eng2)
    assert eng2.take_commands() == [SaveCommittedAndApply(lid(1, 2))]


def test_figure_3_7_previous_term_entry_not_committed_by_counting_replicas():
    """Thesis 3.6.2 / Figure 3.7: the leader of term 3 holds 2-2 from term 2; it being on a
    majority does not commit it. Only once the blank 3-3 is on a quorum do both commit."""
    eng = make_leader(id=1, log=[(0, 0), (1, 1), (2, 2)], vote=(2, 2))
    assert eng.state.vote == vote(3, 1, True) and eng.leader.noop_log_id == lid(3, 3)
    eng.handle_replication_progress(2, eng.state.vote, lid(2, 2), 0.0)
    assert eng.take_commands() == [], "no SaveCommittedAndApply: 2-2 is of a previous term"
    assert eng.state.committed is None
    eng.handle_replication_progress(2, eng.state.vote, lid(3, 3), 1.0)
    assert eng.take_commands() == [SaveCommittedAndApply(lid(3, 3))]


@pytest.mark.parametrize(
    "acks,committed",
    [
        ([2], None),  # majority of C_old {1,2,3} only
        ([4], None),  # majority of C_new {1,4,5} only
        ([2, 3], None),
        ([2, 4], lid(1, 1)),
        ([3, 5], lid(1, 1)),
    ],
)
def test_joint_config_commit_needs_a_majority_of_both(acks, committed):
    eng = make_leader(id=1, voters=[{1, 2, 3}, {1, 4, 5}])
    for t in acks:
        eng.handle_replication_progress(t, L1, lid(1, 1), 0.0)
    cmds = eng.take_commands()
    assert eng.state.committed == committed
    if committed is None:
        assert cmds == [], "no SaveCommittedAndApply without a majority of both configs"
    else:
        # The committed joint config is finished at once: the leader appends [C_new],
        # keeping the removed voters as learners (it does not know the caller's ``retain``).
        final = Membership.new([{1, 4, 5}], {n: BasicNode() for n in (1, 2, 3, 4, 5)})
        assert cmds[:2] == [SaveCommittedAndApply(committed), AppendEntries([Entry(lid(1, 2), final)], 4)]
        assert eng.state.membership.effective.membership == final


def test_joint_election_needs_a_majority_of_both():
    eng = make_engine(id=1, voters=[{1, 2, 3}, {1, 4, 5}])
    eng.elect(now=0.0)
    flush(eng)
    for t in (2, 3):
        eng.handle_vote_resp(t, VoteResponse(vote(1, 1), True, lid(0, 0)), now=1.0)
    assert eng.leader is None, "{1,2,3} granted but {1,4,5} did not"
    eng.handle_vote_resp(5, VoteResponse(vote(1, 1), True, lid(0, 0)), now=1.0)
    assert eng.leader is not None


# -- heartbeats and check-quorum: handle_tick ---------------------------------------------------

# An idle leader's heartbeat round: an empty request to each target after its whole log.
HEARTBEAT = [Replicate(2, 1, lid(1, 1), 2, 2, lid(1, 1)), Replicate(3, 2, lid(1, 1), 2, 2, lid(1, 1))]

TICK_CASES = [
    # id, ack sent_at from node 2 (None: none), tick time, expected commands, still leader
    ("quiet-before-interval", None, 49.0, [], True),
    ("heartbeat-on-interval", None, 50.0, HEARTBEAT, True),
    ("no-quorum-for-a-timeout-steps-down", None, 301.0, [StopReplication()], False),
    ("recent-ack-keeps-leadership", 200.0, 450.0, HEARTBEAT, True),
    ("old-ack-steps-down", 100.0, 401.0, [StopReplication()], False),
]


@pytest.mark.parametrize("ack,now,expected,still", [c[1:] for c in TICK_CASES], ids=[c[0] for c in TICK_CASES])
def test_leader_handle_tick(ack, now, expected, still):
    """A leader stepping down plans no heartbeat: its progress went with its role."""
    eng = make_idle_leader(id=1, now=0.0)
    if ack is not None:
        eng.handle_replication_progress(2, L1, None, ack)
        assert eng.take_commands() == []
    eng.handle_tick(now)
    assert eng.take_commands() == expected
    assert (eng.leader is not None) is still
    assert eng.state.server_state is (ServerState.LEADER if still else ServerState.FOLLOWER)


def test_check_quorum_counts_an_answer_when_it_comes_and_the_lease_when_its_request_left():
    """Node 2 answers every 100 ms, each answer to a request sent 400 ms before it (requests
    carrying megabytes of entries, on busy nodes): it follows this leader, and check-quorum
    counts each answer when it comes (etcd's CheckQuorum: recent activity). Counted by when
    the request left, as before, the leader stepped down within 300 ms while every follower
    answered it (64 concurrent 1 MB writes to a 3-node serve cluster: 5 terms in 5 s). The
    lease still counts by when requests left: no lease read from such answers."""
    eng = make_idle_leader(id=1, now=0.0)
    for t in range(100, 1001, 100):
        eng.handle_tick(float(t))
        eng.take_commands()
        assert eng.leader is not None, f"at {t} ms: node 2 answered 100 ms ago"
        eng.handle_replication_progress(2, L1, None, float(max(t - 400, 0)))
        assert eng.take_commands() == []
    assert eng.leader.quorum_acked_at(1000.0) == 600.0 and eng.leader.quorum_heard_at(1000.0) == 1000.0
    eng.handle_read(TX, ReadPolicy.LEASE_READ, now=1000.0)
    (resp,) = eng.take_commands()
    assert isinstance(resp.value, QuorumNotEnough), "no lease from answers to requests sent 400 ms ago"
    eng.handle_tick(1300.0)
    assert eng.leader is not None, "heard 300 ms ago: not more than election_timeout_max"
    eng.take_commands()
    eng.handle_tick(1301.0)
    assert eng.take_commands() == [StopReplication()], "no answer for more than election_timeout_max"
    assert eng.leader is None


def test_follower_tick_elects_on_deadline_only():
    eng = make_engine(id=1, seed=3, config=Config(enable_pre_vote=False))
    deadline = eng.election_deadline
    assert 150 <= deadline < 300
    eng.handle_tick(deadline - 0.5)
    assert eng.take_commands() == [], "no election before the deadline"
    eng.handle_tick(deadline)
    assert eng.take_commands() == [
        SaveVote(vote(1, 1), 1),
        SendVote(VoteRequest(vote(1, 1), lid(0, 0)), {2: BasicNode(), 3: BasicNode()}, when=1),
    ]


def test_learner_tick_never_elects():
    eng = make_engine(id=4, voters={1, 2, 3}, learners=[4])
    assert eng.state.server_state is ServerState.LEARNER
    eng.handle_tick(10_000.0)
    assert eng.take_commands() == [], "a learner has no vote to campaign with"


def test_tick_with_elections_disabled():
    eng = make_engine(id=1, config=Config(enable_elect=False))
    eng.handle_tick(10_000.0)
    assert eng.take_commands() == []


# -- reads --------------------------------------------------------------------------------------


def test_read_index_answers_after_a_quorum_ack_sent_after_the_request():
    eng = make_idle_leader(id=1, now=0.0)
    eng.handle_read(TX, ReadPolicy.READ_INDEX, now=10.0)
    assert eng.take_commands() == HEARTBEAT, "no Respond before a quorum confirms leadership"
    eng.handle_replication_progress(2, L1, None, 9.0)
    assert eng.take_commands() == [], "an ack of a request sent before the read confirms nothing"
    eng.handle_replication_progress(2, L1, None, 10.0)
    assert eng.take_commands() == [Respond(TX, lid(1, 1))], "read_log_id is the blank entry of this term"


def test_many_reads_in_one_pass_cost_each_the_same_and_are_all_answered_by_one_ack():
    """``READ_INDEX`` reads issued at once (one core pass: the same ``now``) each emit the
    same heartbeat round and wait; one quorum ack of a request sent at or after them answers
    every one, in order. Each new read was checked with every waiting one (``check_reads``
    from ``read``): n reads in a pass cost O(n**2), 10,000 at once stalled a leader's event
    loop for 1.7 s and 100,000 for 98 s. 40,000 reads here took 11 s of CPU (compiled build)
    before, 0.04 s now (0.09 s on the pure build); the bound is over 20 times that (the CPU
    time of this thread, not the wall clock: the machine is shared)."""
    n = 40_000
    eng = make_idle_leader(id=1, now=0.0)
    txs = [object() for _ in range(n)]
    t0 = time.thread_time()
    for tx in txs:
        eng.handle_read(tx, ReadPolicy.READ_INDEX, now=10.0)
    took = time.thread_time() - t0
    assert eng.take_commands() == HEARTBEAT, "no Respond before a quorum confirms leadership"
    assert took < 2.0, f"{n} reads in one pass took {took:.2f} s of CPU"
    eng.handle_replication_progress(2, L1, None, 10.0)
    assert eng.take_commands() == [Respond(tx, lid(1, 1)) for tx in txs]


def test_read_index_uses_committed_when_past_the_blank():
    eng = make_leader(id=1, now=0.0)  # probes in flight: the read's heartbeat waits for a slot
    eng.handle_replication_progress(2, L1, lid(1, 1), 0.0)
    eng.client_write([Normal(b"a")])
    flush(eng)
    eng.handle_replication_progress(2, L1, lid(1, 2), 1.0)
    eng.take_commands()
    eng.handle_read(TX, ReadPolicy.READ_INDEX, now=10.0)
    eng.handle_replication_progress(3, L1, None, 11.0)
    assert eng.take_commands() == [Respond(TX, lid(1, 2))]


def test_read_index_single_voter_answers_at_once():
    eng = make_leader(id=1, voters={1}, now=0.0)
    eng.handle_read(TX, ReadPolicy.READ_INDEX, now=10.0)
    assert eng.take_commands() == [Respond(TX, lid(1, 1))], "no target, no heartbeat"


def test_read_on_follower_forwards():
    eng = make_engine(id=2, vote=(1, 1, True))
    eng.handle_read(TX, ReadPolicy.READ_INDEX, now=0.0)
    cmds = eng.take_commands()
    assert cmds == [Respond(TX, ANY)]
    assert isinstance(cmds[0].value, ForwardToLeader) and cmds[0].value.leader_id == 1


def test_pending_reads_fail_when_the_leader_steps_down():
    eng = make_leader(id=1, now=0.0)
    eng.handle_read(TX, ReadPolicy.READ_INDEX, now=10.0)
    eng.take_commands()
    eng.handle_tick(301.0)
    cmds = eng.take_commands()
    assert cmds == [StopReplication(), Respond(TX, ANY)]
    assert isinstance(cmds[1].value, ForwardToLeader)


def test_pending_reads_of_a_leader_that_steps_down_for_a_new_leader_name_it():
    """The leader steps down for a newer leader's AppendEntries (its vote committed): its
    pending reads fail with ``ForwardToLeader`` naming that leader, so the caller goes there
    (the key-value service redirects with 307; naming no leader, it answered 503)."""
    eng = make_leader(id=1, now=0.0)
    eng.handle_read(TX, ReadPolicy.READ_INDEX, now=10.0)
    eng.take_commands()
    eng.handle_append_entries(AppendEntriesRequest(vote(2, 2, True), lid(1, 1), [], None), "tx-ae", 20.0)
    cmds = eng.take_commands()
    read = [c for c in cmds if isinstance(c, Respond) and c.tx is TX]
    assert StopReplication() in cmds and len(read) == 1
    err = read[0].value
    assert isinstance(err, ForwardToLeader) and err.leader_id == 2
    assert err.leader_node == eng.state.effective_membership().nodes[2]


@pytest.mark.parametrize(
    "ack,now,served",
    [
        (100.0, 100.0, True),
        (100.0, 229.0, True),  # lease = election_timeout_min 150 - drift 20 = 130 ms
        (100.0, 230.0, False),
        (None, 20.0, False),  # no heartbeat acked yet: vote grants are no lease
    ],
)
def test_lease_read(ack, now, served):
    eng = make_leader(id=1, now=0.0)
    if ack is not None:
        eng.handle_replication_progress(2, L1, lid(1, 1), ack)  # also commits the blank entry
        eng.take_commands()
    eng.handle_read(TX, ReadPolicy.LEASE_READ, now=now)
    cmds = eng.take_commands()
    assert cmds == [Respond(TX, ANY)], "a lease read sends no heartbeat"
    if served:
        assert cmds[0].value == lid(1, 1)
    else:
        assert isinstance(cmds[0].value, QuorumNotEnough)
        if ack is None:
            # Not "expired <the clock's whole value> ms ago": nothing was ever acked.
            assert str(cmds[0].value) == (
                "no leader lease yet: no quorum has acknowledged this leader since it was elected 20.0 ms ago "
                "(or since its voters changed); read with READ_INDEX (it waits for a quorum's answer), or retry "
                "the lease read after the next heartbeat"
            )
        else:
            assert str(cmds[0].value) == (
                f"leader lease expired: last quorum ack {now - ack:.1f} ms ago; read with READ_INDEX (it waits for "
                "a quorum's answer), or retry the lease read after the next heartbeat"
            )


@pytest.mark.parametrize(
    "voters,acks,confirmed",
    [
        # Joint {1,2,3} + {1,4,5}: the lease needs a majority of each config.
        ([{1, 2, 3}, {1, 4, 5}], [2, 3], False),  # C_old only: C_new's voters may elect
        ([{1, 2, 3}, {1, 4, 5}], [4, 5], False),  # C_new only
        ([{1, 2, 3}, {1, 4, 5}], [2, 4], True),
        # The leader removes itself ({2,3} does not hold it): it counts for C_old only.
        ([{1, 2, 3}, {2, 3}], [2], False),
        ([{1, 2, 3}, {2, 3}], [2, 3], True),
    ],
)
def test_lease_read_in_a_joint_config_needs_a_quorum_of_each(voters, acks, confirmed):
    """A lease read during a membership change is confirmed only by acknowledgements of a
    majority of every config: a new leader needs votes of a majority of each, and any config
    whose majority did not ack this leader may hold a majority that is not sticky to it."""
    eng = make_leader(id=1, voters=voters, now=0.0)  # the blank entry is in flight
    for t in acks:
        eng.handle_replication_progress(t, L1, None, 100.0)  # acks, no match: nothing commits
    eng.take_commands()
    eng.handle_read(TX, ReadPolicy.LEASE_READ, now=110.0)
    cmds = eng.take_commands()
    if confirmed:
        # Confirmed by the lease, answered once the blank entry commits.
        assert cmds == [] and len(eng.leader.reads) == 1
    else:
        assert cmds == [Respond(TX, ANY)] and isinstance(cmds[0].value, QuorumNotEnough)


def test_read_index_in_a_joint_config_waits_for_a_quorum_of_each():
    eng = make_leader(id=1, voters=[{1, 2, 3}, {1, 4, 5}], now=0.0)
    eng.handle_replication_progress(2, L1, None, 0.0)  # frees the probe windows of 2 and 3
    eng.handle_replication_progress(3, L1, None, 0.0)
    eng.take_commands()
    eng.handle_read(TX, ReadPolicy.READ_INDEX, now=10.0)
    eng.take_commands()
    for t in (2, 3):
        eng.handle_replication_progress(t, L1, lid(1, 1), 10.0)
    assert [c for c in eng.take_commands() if isinstance(c, Respond)] == [], "C_old's majority alone"
    eng.handle_replication_progress(5, L1, lid(1, 1), 10.0)
    cmds = eng.take_commands()
    assert Respond(TX, lid(1, 1)) in cmds, cmds


def test_read_index_confirmed_before_the_blank_commits_waits_for_it():
    """A new leader's read log id is its blank entry: a quorum ack that does not hold the
    entry (a conflict, a lagging follower) confirms leadership, but the answer waits until
    the entry commits."""
    eng = make_leader(id=1, now=0.0)  # the blank entry lid(1, 1) is in flight, not committed
    eng.handle_read(TX, ReadPolicy.READ_INDEX, now=10.0)
    eng.take_commands()
    eng.handle_replication_progress(2, L1, None, 10.0)
    assert eng.take_commands() == [], "confirmed, but lid(1, 1) is not committed: no answer yet"
    eng.handle_replication_progress(2, L1, lid(1, 1), 11.0)
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 1)), Respond(TX, lid(1, 1))]


def test_read_confirmed_before_the_blank_commits_fails_when_the_leader_steps_down():
    """The blank entry never commits (the leader is cut off right after the quorum confirmed
    the read): the read fails with ``ForwardToLeader`` at the step-down. Answered at once, the
    caller waited for the entry to be applied, until the partition healed."""
    eng = make_leader(id=1, now=0.0)
    eng.handle_read(TX, ReadPolicy.READ_INDEX, now=10.0)
    eng.handle_replication_progress(2, L1, None, 10.0)
    eng.handle_read("tx-lease", ReadPolicy.LEASE_READ, now=11.0)
    eng.take_commands()
    eng.handle_tick(311.0)  # check quorum: no ack since 10.0
    cmds = eng.take_commands()
    assert cmds == [StopReplication(), Respond(TX, ANY), Respond("tx-lease", ANY)]
    assert all(isinstance(c.value, ForwardToLeader) for c in cmds[1:])


def test_lease_read_before_the_blank_commits_waits_for_it():
    eng = make_leader(id=1, now=0.0)
    eng.handle_replication_progress(2, L1, None, 100.0)  # a conflict: an ack, no match
    eng.handle_read(TX, ReadPolicy.LEASE_READ, now=100.0)
    assert eng.take_commands() == [], "within the lease, sends nothing, waits for lid(1, 1)"
    eng.handle_replication_progress(3, L1, lid(1, 1), 90.0)
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 1)), Respond(TX, lid(1, 1))]


def test_vote_grant_gives_no_lease():
    """Why a fresh leader may not serve lease reads on its vote grants: the voter's vote for
    it is not committed, so leader stickiness does not hold it back from granting a
    higher-term candidate right away, and that candidate may win and commit writes."""
    voter = make_engine(id=2)
    voter.handle_vote_req(VoteRequest(vote(1, 1), lid(0, 0)), "to-1", now=0.0)
    voter.handle_vote_req(VoteRequest(vote(2, 3), lid(0, 0)), "to-3", now=1.0)
    granted = [c.value.vote_granted for c in voter.take_commands() if isinstance(c, Respond)]
    assert granted == [True, True]
    leader = make_leader(id=1, now=0.0)  # won with node 2's grant
    leader.handle_read(TX, ReadPolicy.LEASE_READ, now=2.0)
    (resp,) = leader.take_commands()
    assert isinstance(resp.value, QuorumNotEnough), "node 3 may lead term 2 already: no lease"


# -- initialize ---------------------------------------------------------------------------------


def pristine(id=1):
    return make_engine(id=id, voters=set(), log=[])


def test_initialize_appends_membership_at_0_0_and_elects():
    eng = pristine()
    m = membership({1, 2, 3})
    eng.initialize(m, now=0.0)
    assert eng.take_commands() == [
        AppendEntries([Entry(lid(0, 0), m)], 1),
        SaveVote(vote(1, 1), 2),
        SendVote(VoteRequest(vote(1, 1), lid(0, 0)), {2: BasicNode(), 3: BasicNode()}, when=2),
    ]
    assert eng.state.server_state is ServerState.CANDIDATE
    assert eng.state.effective_membership() == m


def test_initialize_single_node_becomes_leader_when_flushed():
    eng = pristine()
    eng.initialize(membership({1}), now=0.0)
    eng.take_commands()
    flush(eng)
    assert eng.take_commands() == [
        SaveVote(vote(1, 1, True), 3),
        StartReplication(vote(1, 1, True), {}),
        AppendEntries([Entry(lid(1, 1), BLANK)], 4),
    ]


@pytest.mark.parametrize(
    "kw,members,error",
    [
        (dict(log=[(0, 0)]), {1, 2, 3}, NotAllowed),
        (dict(log=[], vote=(1, 2)), {1, 2, 3}, NotAllowed),
        (dict(log=[]), {2, 3}, NotInMembers),
    ],
    ids=["has-log", "has-vote", "not-in-members"],
)
def test_initialize_refused(kw, members, error):
    eng = make_engine(id=1, voters=set(), **kw)
    with pytest.raises(error):
        eng.initialize(membership(members), now=0.0)
    assert eng.take_commands() == [], "a refused initialize writes nothing"
