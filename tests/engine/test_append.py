"""Engine unit tests: ``handle_append_entries`` (the follower side of replication)."""

from __future__ import annotations

import pytest

from openraft_py.engine import AppendEntries, Respond, SaveCommittedAndApply, SaveVote, StopReplication, TruncateLog
from openraft_py.errors import InvalidRequest
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, ServerState

from .helpers import TX, ent, ents, flush, lid, make_engine, make_leader, vote

L = vote(2, 1, True)  # the leader's vote; the follower (node 2) already holds it
LOG3 = [(0, 0), (1, 1), (1, 2), (1, 3)]


def ok(matching, v=L):
    return AppendEntriesResponse(v, True, matching=matching)


def conflict(hint, v=L):
    return AppendEntriesResponse(v, False, conflict_hint=hint)


# id, follower log, follower committed, request (prev, entries, leader_commit), expected commands
CASES = [
    (
        "heartbeat",
        LOG3,
        None,
        (lid(1, 3), [], None),
        [Respond(TX, ok(lid(1, 3)), when=0)],
    ),
    (
        "heartbeat-commits",
        LOG3,
        None,
        (lid(1, 3), [], lid(1, 2)),
        [Respond(TX, ok(lid(1, 3)), when=0), SaveCommittedAndApply(lid(1, 2), when=0)],
    ),
    (
        "append-new",
        LOG3,
        None,
        (lid(1, 3), ents((2, 4), (2, 5)), None),
        [AppendEntries(ents((2, 4), (2, 5)), 1), Respond(TX, ok(lid(2, 5)), when=1)],
    ),
    (
        "append-from-empty-log",
        [],
        None,
        (None, [ent(0, 0), ent(1, 1)], None),
        [AppendEntries([ent(0, 0), ent(1, 1)], 1), Respond(TX, ok(lid(1, 1)), when=1)],
    ),
    (
        "conflict-truncates-only-the-conflicting-suffix",
        LOG3,
        None,
        (lid(1, 1), ents((1, 2), (2, 3), (2, 4)), None),
        [TruncateLog(lid(1, 2), 1), AppendEntries(ents((2, 3), (2, 4)), 2), Respond(TX, ok(lid(2, 4)), when=2)],
    ),
    (
        "conflict-at-first-entry",
        LOG3,
        lid(1, 1),
        (lid(1, 1), ents((2, 2)), None),
        [TruncateLog(lid(1, 1), 1), AppendEntries(ents((2, 2)), 2), Respond(TX, ok(lid(2, 2)), when=2)],
    ),
    (
        "all-present-older-request-no-truncate",
        LOG3,
        None,
        (lid(1, 1), ents((1, 2)), None),
        [Respond(TX, ok(lid(1, 2)), when=0)],
    ),
    (
        "overlap-appends-only-the-new-tail",
        LOG3,
        None,
        (lid(1, 1), ents((1, 2), (1, 3), (1, 4)), None),
        [AppendEntries(ents((1, 4)), 1), Respond(TX, ok(lid(1, 4)), when=1)],
    ),
    (
        "prev-beyond-last-hints-last-plus-one",
        LOG3,
        None,
        (lid(2, 7), ents((2, 8)), None),
        [Respond(TX, conflict(4), when=0)],
    ),
    (
        "prev-term-mismatch-skips-the-conflicting-term",
        [(0, 0), (1, 1), (3, 2), (3, 3), (3, 4)],
        None,
        (lid(4, 4), [], None),
        [Respond(TX, conflict(2), when=0)],
    ),
    (
        "prev-term-mismatch-hint-never-below-committed",
        LOG3,
        lid(1, 2),
        (lid(2, 3), [], None),
        [Respond(TX, conflict(3), when=0)],
    ),
    (
        "commit-is-min-of-leader-commit-and-request-last",
        LOG3,
        None,
        (lid(1, 3), ents((2, 4)), lid(2, 9)),
        [AppendEntries(ents((2, 4)), 1), Respond(TX, ok(lid(2, 4)), when=1), SaveCommittedAndApply(lid(2, 4), when=1)],
    ),
    (
        "commit-bounded-by-what-this-request-proved",
        LOG3,
        None,
        (lid(1, 1), [], lid(2, 9)),
        [Respond(TX, ok(lid(1, 1)), when=0), SaveCommittedAndApply(lid(1, 1), when=0)],
    ),
    (
        "commit-never-goes-back",
        LOG3,
        lid(1, 3),
        (lid(1, 3), [], lid(1, 2)),
        [Respond(TX, ok(lid(1, 3)), when=0)],
    ),
]


@pytest.mark.parametrize("log,committed,req,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_handle_append_entries(log, committed, req, expected):
    eng = make_engine(id=2, log=log, vote=L, committed=committed)
    prev, entries, leader_commit = req
    eng.handle_append_entries(AppendEntriesRequest(L, prev, entries, leader_commit), TX, now=10.0)
    assert eng.take_commands() == expected
    eng.state.validate()


def test_append_entries_stale_leader_rejected_with_no_other_command():
    eng = make_engine(id=2, log=LOG3, vote=L)
    deadline = eng.election_deadline
    eng.handle_append_entries(AppendEntriesRequest(vote(1, 3, True), lid(1, 3), ents((1, 4)), lid(1, 4)), TX, now=10.0)
    assert eng.take_commands() == [Respond(TX, AppendEntriesResponse(L, False))], (
        "no AppendEntries, no SaveVote, no commit from a stale leader"
    )
    assert eng.election_deadline == deadline, "a stale leader must not reset the election timer"
    assert eng.state.last_log_id() == lid(1, 3)


def test_append_entries_from_new_leader_saves_its_vote_first():
    eng = make_engine(id=2, log=LOG3, vote=L)
    new = vote(3, 3, True)
    eng.handle_append_entries(AppendEntriesRequest(new, lid(1, 3), ents((3, 4)), None), TX, now=10.0)
    assert eng.take_commands() == [
        SaveVote(new, 1),
        AppendEntries(ents((3, 4)), 2),
        Respond(TX, ok(lid(3, 4), new), when=2),
    ]


def test_append_entries_conflict_reply_waits_for_the_new_vote():
    eng = make_engine(id=2, log=LOG3, vote=L)
    new = vote(3, 3, True)
    eng.handle_append_entries(AppendEntriesRequest(new, lid(3, 9), [], None), TX, now=10.0)
    assert eng.take_commands() == [SaveVote(new, 1), Respond(TX, conflict(4, new), when=1)]


def test_append_entries_steps_down_leader_of_lower_term():
    eng = make_leader(id=1, now=0.0)
    new = vote(2, 2, True)
    eng.handle_append_entries(AppendEntriesRequest(new, lid(1, 1), [], None), TX, now=10.0)
    assert eng.take_commands() == [SaveVote(new, 4), StopReplication(), Respond(TX, ok(lid(1, 1), new), when=4)]
    assert eng.state.server_state is ServerState.FOLLOWER


def test_append_entries_candidate_of_same_term_yields_to_leader():
    eng = make_engine(id=2, log=LOG3, vote=(1, 1, True))
    eng.elect(now=0.0)  # candidate T2-N2
    flush(eng)
    eng.take_commands()
    leader = vote(2, 3, True)
    eng.handle_append_entries(AppendEntriesRequest(leader, lid(1, 3), [], None), TX, now=10.0)
    assert eng.take_commands() == [SaveVote(leader, 2), Respond(TX, ok(lid(1, 3), leader), when=2)]
    assert eng.candidate is None and eng.state.server_state is ServerState.FOLLOWER


def test_append_entries_resets_election_timer_and_records_leader_contact():
    eng = make_engine(id=2, log=LOG3, vote=L, seed=7)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), [], None), TX, now=1000.0)
    assert eng.leader_seen_at == 1000.0
    assert 1000.0 + 150 <= eng.election_deadline < 1000.0 + 300
    eng.handle_tick(eng.election_deadline - 1)
    eng.take_commands()
    assert eng.candidate is None, "no election before the new deadline"


def test_append_entries_unflushed_entries_are_not_applied_before_they_are_durable():
    eng = make_engine(id=2, log=LOG3, vote=L)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), ents((2, 4)), None), TX, now=10.0)
    eng.take_commands()  # io 1 not flushed
    eng.handle_append_entries(AppendEntriesRequest(L, lid(2, 4), [], lid(2, 4)), "tx2", now=20.0)
    assert eng.take_commands() == [Respond("tx2", ok(lid(1, 3)), when=0), SaveCommittedAndApply(lid(2, 4), when=1)], (
        "the heartbeat is answered at once with what is durable; the apply waits for the write"
    )


# -- a heartbeat while writes are under way: answered at once, with what is durable --------------


def test_heartbeat_during_a_pending_append_is_answered_at_once_with_the_durable_prefix():
    eng = make_engine(id=2, log=LOG3, vote=L)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), ents((2, 4), (2, 5)), None), TX, now=10.0)
    assert eng.take_commands() == [AppendEntries(ents((2, 4), (2, 5)), 1), Respond(TX, ok(lid(2, 5)), when=1)]
    eng.handle_append_entries(AppendEntriesRequest(L, lid(2, 5), [], None), "hb", now=20.0)
    assert eng.take_commands() == [Respond("hb", ok(lid(1, 3)), when=0)], (
        "not after io 1: the entries it writes are not vouched for, what was durable before is"
    )
    flush(eng)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), [], None), "hb2", now=30.0)
    assert eng.take_commands() == [Respond("hb2", ok(lid(1, 3)), when=0)], "never past the request's prev_log_id"
    eng.handle_append_entries(AppendEntriesRequest(L, lid(2, 5), [], None), "hb3", now=40.0)
    assert eng.take_commands() == [Respond("hb3", ok(lid(2, 5)), when=0)]


def test_heartbeat_behind_a_later_pending_append_vouches_for_the_flushed_part():
    eng = make_engine(id=2, log=LOG3, vote=L)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), ents((2, 4)), None), TX, now=10.0)
    flush(eng)  # io 1: 2-4 durable
    eng.handle_append_entries(AppendEntriesRequest(L, lid(2, 4), ents((2, 5)), None), TX, now=20.0)
    eng.take_commands()  # io 2 (2-5) under way
    eng.handle_append_entries(AppendEntriesRequest(L, lid(2, 5), [], None), "hb", now=30.0)
    assert eng.take_commands() == [Respond("hb", ok(lid(2, 4)), when=0)]
    eng.handle_append_entries(AppendEntriesRequest(L, lid(2, 4), [], None), "hb2", now=40.0)
    assert eng.take_commands() == [Respond("hb2", ok(lid(2, 4)), when=0)], "its prev_log_id is durable: all of it"


def test_heartbeat_during_a_pending_truncation_vouches_only_for_what_the_truncation_keeps():
    eng = make_engine(id=2, log=LOG3, vote=L)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 1), ents((2, 2)), None), TX, now=10.0)
    assert eng.take_commands() == [TruncateLog(lid(1, 1), 1), AppendEntries(ents((2, 2)), 2), Respond(TX, ok(lid(2, 2)), when=2)]
    assert eng.state.io.flushed_log_id == lid(1, 3), "still names entries the truncation removes"
    eng.handle_append_entries(AppendEntriesRequest(L, lid(2, 2), [], None), "hb", now=20.0)
    assert eng.take_commands() == [Respond("hb", ok(lid(1, 1)), when=0)], (
        "1-2 and 1-3 are durable but not the leader's; 2-2 is the leader's but not durable"
    )


def test_heartbeat_with_nothing_durable_acks_without_a_match():
    eng = make_engine(id=2, log=[], vote=L)
    eng.handle_append_entries(AppendEntriesRequest(L, None, [ent(0, 0), ent(1, 1)], None), TX, now=10.0)
    eng.take_commands()
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 1), [], None), "hb", now=20.0)
    assert eng.take_commands() == [Respond("hb", ok(None), when=0)]


def test_heartbeat_of_a_new_leader_waits_for_its_vote_to_be_durable():
    eng = make_engine(id=2, log=LOG3, vote=L)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), ents((2, 4)), None), TX, now=10.0)
    eng.take_commands()  # io 1 under way
    new = vote(3, 3, True)
    eng.handle_append_entries(AppendEntriesRequest(new, lid(2, 4), [], None), "hb", now=20.0)
    assert eng.take_commands() == [SaveVote(new, 2), Respond("hb", ok(lid(1, 3), new), when=2)]


# -- requests over the committed prefix: a legitimate leader's are taken, a contradiction refused --
#
# A correct leader's entries at or below a follower's committed index are the follower's own
# (leader completeness), so a request whose entries overlap the committed prefix is a resend
# (duplicated, reordered, or sent before the follower learned of the commit), and a request
# of an older leader is refused by the vote check first. Only a request that contradicts a
# committed entry is refused as ``InvalidRequest`` (``FollowingHandler.append_entries``).


def test_a_resend_over_the_committed_prefix_is_answered_without_a_write():
    eng = make_engine(id=2, log=LOG3, vote=L, committed=lid(1, 3))
    eng.handle_append_entries(AppendEntriesRequest(L, lid(0, 0), ents((1, 1), (1, 2), (1, 3)), lid(1, 3)), TX, now=10.0)
    assert eng.take_commands() == [Respond(TX, ok(lid(1, 3)), when=0)]
    # An older part of it, delivered after the rest (reordered): the same.
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 1), ents((1, 2)), lid(1, 2)), "tx2", now=11.0)
    assert eng.take_commands() == [Respond("tx2", ok(lid(1, 2)), when=0)]
    assert eng.state.committed == lid(1, 3)


def test_a_request_from_before_the_snapshot_skips_the_purged_entries_and_appends_the_rest():
    """The follower's committed index came from a snapshot and its log is purged through it:
    a request of the leader's whose ``prev_log_id`` and first entries lie in the purged part
    (sent before the snapshot, or from a leader that has not yet learned of it) matches, and
    only what follows the follower's log is written."""
    eng = make_engine(id=2, log=LOG3, vote=L, committed=lid(1, 3))
    st = eng.state
    st.applied = st.snapshot = lid(1, 3)
    st.log_ids.purge(1, 2)
    st.validate()
    eng.handle_append_entries(
        AppendEntriesRequest(L, lid(0, 0), ents((1, 1), (1, 2), (1, 3), (2, 4)), lid(1, 3)), TX, now=10.0)
    assert eng.take_commands() == [AppendEntries(ents((2, 4)), 1), Respond(TX, ok(lid(2, 4)), when=1)]
    st.validate()


def test_entries_contradicting_committed_ones_are_refused_and_nothing_is_written():
    eng = make_engine(id=2, log=LOG3, vote=L, committed=lid(1, 3))
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 1), ents((1, 2), (2, 3), (2, 4)), lid(2, 4)), TX, now=10.0)
    [cmd] = eng.take_commands()
    assert isinstance(cmd, Respond) and cmd.tx == TX and isinstance(cmd.value, InvalidRequest)
    assert cmd.value.rpc == "append_entries"
    assert "entry 2-3 contradicts committed entry 1-3" in str(cmd.value), str(cmd.value)
    assert eng.state.last_log_id() == lid(1, 3) and eng.state.committed == lid(1, 3)
    eng.state.validate()
    # The follower serves on: the leader's next (correct) request is taken.
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), ents((2, 4)), lid(2, 4)), "tx2", now=11.0)
    assert eng.take_commands() == [
        AppendEntries(ents((2, 4)), 1), Respond("tx2", ok(lid(2, 4)), when=1), SaveCommittedAndApply(lid(2, 4), when=1)]


def test_an_older_leaders_request_over_the_committed_prefix_is_refused_by_its_vote():
    """A request of an older term (delayed in the network) whose entries another leader has
    since replaced, committed here: a plain refusal carrying the newer vote, the way the old
    leader learns it is deposed, never ``InvalidRequest``."""
    new = vote(3, 3, True)
    eng = make_engine(id=2, log=[(0, 0), (1, 1), (3, 2), (3, 3)], vote=new, committed=lid(3, 3))
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 1), ents((2, 2), (2, 3)), lid(2, 3)), TX, now=10.0)
    assert eng.take_commands() == [Respond(TX, AppendEntriesResponse(new, False))]
