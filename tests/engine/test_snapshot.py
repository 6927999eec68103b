"""Engine unit tests: snapshot building and log purging (thesis 5.1-5.4), and installing a
leader's snapshot on a follower.

Each test sets state, calls one handler and asserts the exact command list; ``validate()``
holds after every step.
"""

from __future__ import annotations

import pytest

from openraft_py.config import Config, SnapshotPolicy
from openraft_py.engine import (
    BuildSnapshot,
    InstallSnapshot,
    PurgeLog,
    ReceiveSnapshotChunk,
    Respond,
    SaveCommittedAndApply,
    SaveVote,
    StopReplication,
    TruncateLog,
)
from openraft_py.errors import ApiError
from openraft_py.types import (
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    ServerState,
    SnapshotMeta,
    StoredMembership,
)

from .helpers import TX, lid, make_engine, make_leader, membership, vote

LOG7 = [(0, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6)]
SM = StoredMembership(lid(0, 0), membership({1, 2, 3}))


def meta(term: int, index: int, sm: StoredMembership = SM) -> SnapshotMeta:
    return SnapshotMeta(lid(term, index), sm, f"snap-{term}-{index}")


def cfg(every: int | None = None, keep: int = 1000, batch: int = 1, pacing: float = 3.0) -> Config:
    policy = SnapshotPolicy.never() if every is None else SnapshotPolicy.logs_since_last(every)
    # No elections: the pacing tests tick a follower whose election deadline has passed.
    return Config(snapshot_policy=policy, max_in_snapshot_log_to_keep=keep, purge_batch_size=batch,
                  snapshot_pacing=pacing, enable_elect=False)


def node(config: Config, log=LOG7, committed=(1, 6), applied=None, snapshot=None):
    """Follower 1 of term 1 whose log ``log`` is committed up to ``committed``."""
    eng = make_engine(id=1, log=log, vote=(1, 2, True), committed=committed, config=config)
    eng.state.applied = applied
    eng.state.snapshot = snapshot
    eng.state.validate()
    return eng


# -- building --------------------------------------------------------------------------------------


def test_policy_starts_one_build_and_none_while_it_runs():
    eng = node(cfg(every=3))
    eng.handle_applied(lid(1, 1))
    assert eng.take_commands() == [], "2 entries applied since no snapshot: not due"
    eng.handle_applied(lid(1, 2))
    assert eng.take_commands() == [BuildSnapshot()], "3 entries (0..2) applied: due"
    assert eng.snapshot_building
    eng.handle_applied(lid(1, 5))
    assert eng.take_commands() == [], "a build is running: no second one"
    assert eng.trigger_snapshot() is False
    assert eng.take_commands() == [], "trigger.snapshot() does not start a second build either"
    eng.state.validate()


def test_a_trigger_during_a_build_builds_again_when_it_ends_unless_that_one_covers_it():
    """``trigger.snapshot()`` while a build runs starts none now, but once that build ends
    another, unless the ended one covers what was applied at the trigger. It was dropped: a
    caller waiting for a snapshot of its last write waited in vain once writes stopped."""
    eng = node(cfg(every=None), applied=lid(1, 3))
    assert eng.trigger_snapshot() is True
    assert eng.take_commands() == [BuildSnapshot()]
    eng.handle_applied(lid(1, 5))
    assert eng.trigger_snapshot() is False
    assert eng.trigger_snapshot() is False
    assert eng.take_commands() == [], "one build at a time"
    eng.handle_snapshot_built(meta(1, 3))
    assert eng.take_commands() == [BuildSnapshot()], "1-3 does not cover 1-5, applied at the trigger"
    assert eng.snapshot_building and eng.state.snapshot == lid(1, 3)
    eng.handle_snapshot_built(meta(1, 5))
    assert eng.take_commands() == [] and not eng.snapshot_building, "nothing was triggered during the second"
    # Covered: the build that ends holds everything applied at the trigger.
    eng.handle_applied(lid(1, 6))
    assert eng.trigger_snapshot() is True
    eng.take_commands()
    assert eng.trigger_snapshot() is False
    eng.handle_snapshot_built(meta(1, 6))
    assert eng.take_commands() == [] and not eng.snapshot_building
    assert eng.state.snapshot == lid(1, 6)
    eng.state.validate()


def test_policy_counts_from_the_last_snapshot():
    eng = node(cfg(every=3), applied=lid(1, 3), snapshot=lid(1, 3))
    eng.handle_applied(lid(1, 5))
    assert eng.take_commands() == []
    eng.handle_applied(lid(1, 6))
    assert eng.take_commands() == [BuildSnapshot()]


def test_policy_never_builds_but_trigger_does():
    eng = node(cfg(every=None))
    eng.handle_applied(lid(1, 6))
    assert eng.take_commands() == []
    assert eng.trigger_snapshot() is True
    assert eng.take_commands() == [BuildSnapshot()]


def test_failed_build_allows_the_next_one():
    eng = node(cfg(every=None), applied=lid(1, 6))
    eng.trigger_snapshot()
    eng.take_commands()
    eng.handle_snapshot_built(None)
    assert eng.take_commands() == [] and eng.state.snapshot is None
    assert eng.trigger_snapshot() is True
    assert eng.take_commands() == [BuildSnapshot()]


def test_older_snapshot_never_moves_the_snapshot_back():
    eng = node(cfg(every=None, keep=1000), applied=lid(1, 6), snapshot=lid(1, 5))
    eng.trigger_snapshot()
    eng.handle_snapshot_built(meta(1, 3))
    assert eng.take_commands() == [BuildSnapshot()]
    assert eng.state.snapshot == lid(1, 5)
    assert not eng.snapshot_building


def built_after(eng, took_ms: float, snap: int) -> None:
    """The running build finishes ``took_ms`` after it started, covering up to ``1-snap``."""
    eng.now = eng.snapshot_build_started + took_ms
    eng.handle_snapshot_built(meta(1, snap))


def test_policy_waits_pacing_times_the_last_build_then_a_tick_starts_it():
    eng = node(cfg(every=3, pacing=3.0))
    eng.now = 1000.0
    eng.handle_applied(lid(1, 2))
    assert eng.take_commands() == [BuildSnapshot()]
    built_after(eng, 100.0, 2)
    assert eng.take_commands() == [], "keep 1000: nothing to purge"
    assert eng.snapshot_next_due == 1100.0 + 3 * 100.0
    eng.now = 1399.0
    eng.handle_applied(lid(1, 5))
    assert eng.take_commands() == [], "due by count (3 since 1-2) but within 3 x 100 ms of the last build's end"
    eng.handle_tick(1399.9)
    assert eng.take_commands() == [], "a tick before the time starts nothing"
    eng.handle_tick(1400.0)
    assert eng.take_commands() == [BuildSnapshot()], "the tick at the time starts the held-back build"
    assert eng.snapshot_building and eng.snapshot_build_started == 1400.0
    eng.handle_tick(1500.0)
    assert eng.take_commands() == [], "one build at a time"
    eng.state.validate()


def test_pacing_holds_nothing_back_once_its_time_has_passed():
    eng = node(cfg(every=3, pacing=3.0))
    eng.now = 0.0
    eng.handle_applied(lid(1, 2))
    eng.take_commands()
    built_after(eng, 10.0, 2)
    eng.now = 40.0
    eng.handle_applied(lid(1, 5))
    assert eng.take_commands() == [BuildSnapshot()], "10 + 3 x 10 = 40: due and allowed"


def test_pacing_does_not_start_a_build_that_is_not_due():
    eng = node(cfg(every=3, pacing=3.0))
    eng.handle_applied(lid(1, 2))
    eng.take_commands()
    built_after(eng, 10.0, 2)
    eng.handle_tick(10_000.0)
    assert eng.take_commands() == [], "nothing applied since the snapshot: not due"


def test_pacing_zero_builds_as_soon_as_one_is_due():
    eng = node(cfg(every=3, pacing=0.0))
    eng.handle_applied(lid(1, 2))
    eng.take_commands()
    built_after(eng, 5_000.0, 2)
    eng.handle_applied(lid(1, 5))
    assert eng.take_commands() == [BuildSnapshot()]


def test_trigger_is_never_paced():
    eng = node(cfg(every=3, pacing=3.0))
    eng.handle_applied(lid(1, 2))
    eng.take_commands()
    built_after(eng, 1_000.0, 2)
    assert eng.now < eng.snapshot_next_due
    assert eng.trigger_snapshot() is True
    assert eng.take_commands() == [BuildSnapshot()]


def test_pacing_counts_a_triggered_build_and_a_failed_one():
    eng = node(cfg(every=3, pacing=2.0), applied=lid(1, 6))
    eng.now = 50.0
    eng.trigger_snapshot()
    eng.take_commands()
    eng.now = 80.0
    eng.handle_snapshot_built(None)
    assert eng.snapshot_next_due == 80.0 + 2 * 30.0
    eng.handle_tick(139.0)
    assert eng.take_commands() == [], "6 applied, no snapshot: due, but paced after the failed build"
    eng.handle_tick(140.0)
    assert eng.take_commands() == [BuildSnapshot()]


# -- purging after a build -------------------------------------------------------------------------

# (keep, batch, purged before, snapshot built at) -> PurgeLog upto (None: nothing purged)
PURGE_CASES = [
    ("keep-0-purges-whole-snapshot", 0, 1, None, 5, lid(1, 5)),
    ("keep-2", 2, 1, None, 5, lid(1, 3)),
    ("keep-more-than-snapshot", 10, 1, None, 5, None),
    ("batch-reached-exactly", 2, 4, None, 5, lid(1, 3)),  # purges 0..3: 4 entries
    ("batch-not-reached", 2, 5, None, 5, None),
    ("batch-counts-from-last-purge", 2, 2, lid(1, 2), 5, None),  # only entry 3 would go: 1 < 2
    ("batch-from-last-purge-reached", 0, 3, lid(1, 2), 5, lid(1, 5)),
]


@pytest.mark.parametrize(
    "keep,batch,purged,snap,upto", [c[1:] for c in PURGE_CASES], ids=[c[0] for c in PURGE_CASES]
)
def test_snapshot_built_purges_per_keep_and_batch(keep, batch, purged, snap, upto):
    eng = node(cfg(every=None, keep=keep, batch=batch), applied=lid(1, 6), snapshot=purged)
    if purged is not None:
        eng.log_handler().purge(purged)
        eng.take_commands()
    io = eng.state.io.submitted
    eng.trigger_snapshot()
    eng.take_commands()
    eng.handle_snapshot_built(meta(1, snap))
    expected = [] if upto is None else [PurgeLog(upto, io + 1)]
    assert eng.take_commands() == expected
    assert eng.state.snapshot == lid(1, snap)
    assert eng.state.purged_log_id() == (upto or purged)
    assert eng.state.last_log_id() == lid(1, 6), "purging never touches entries after the snapshot"
    eng.state.validate()


def test_build_then_purge_end_to_end_on_apply():
    eng = node(cfg(every=3, keep=2, batch=2))
    eng.handle_applied(lid(1, 2))
    assert eng.take_commands() == [BuildSnapshot()]
    eng.handle_applied(lid(1, 4))
    eng.handle_snapshot_built(meta(1, 3))
    assert eng.take_commands() == [PurgeLog(lid(1, 1), 1)], "up to 3 - keep 2 = 1: two entries, one batch"
    eng.handle_applied(lid(1, 6))
    assert eng.take_commands() == [BuildSnapshot()], "3 applied since snapshot 1-3"
    eng.handle_snapshot_built(meta(1, 6))
    assert eng.take_commands() == [PurgeLog(lid(1, 4), 2)]
    assert eng.state.purged_log_id() == lid(1, 4)
    eng.state.validate()


# -- trigger.purge_log -----------------------------------------------------------------------------


def test_trigger_purge_log_clamps_at_the_snapshot():
    eng = node(cfg(), applied=lid(1, 6), snapshot=lid(1, 4))
    assert eng.trigger_purge_log(100) == lid(1, 4)
    assert eng.take_commands() == [PurgeLog(lid(1, 4), 1)]
    assert eng.state.purged_log_id() == lid(1, 4)
    assert eng.state.last_log_id() == lid(1, 6)
    eng.state.validate()


def test_trigger_purge_log_below_the_snapshot_and_again():
    eng = node(cfg(), applied=lid(1, 6), snapshot=lid(1, 4))
    assert eng.trigger_purge_log(2) == lid(1, 2)
    assert eng.take_commands() == [PurgeLog(lid(1, 2), 1)]
    assert eng.trigger_purge_log(1) is None, "already purged further"
    assert eng.trigger_purge_log(2) is None
    assert eng.take_commands() == []


def test_trigger_purge_log_without_snapshot_purges_nothing():
    eng = node(cfg(), applied=lid(1, 6))
    assert eng.trigger_purge_log(3) is None
    assert eng.take_commands() == []
    assert eng.state.purged_log_id() is None


# -- install: receiving chunks ---------------------------------------------------------------------


def chunk(v, m: SnapshotMeta, done: bool = True) -> InstallSnapshotRequest:
    return InstallSnapshotRequest(v, m, 0, b"data", done)


def test_install_snapshot_from_a_stale_leader_is_refused():
    eng = make_engine(id=2, log=LOG7, vote=(2, 3, True), committed=(1, 1))
    eng.handle_install_snapshot(chunk(vote(1, 1, True), meta(1, 5)), TX, 10.0)
    assert eng.take_commands() == [Respond(TX, InstallSnapshotResponse(vote(2, 3, True)))]
    assert eng.state.vote == vote(2, 3, True)


def test_install_snapshot_chunk_waits_for_the_adopted_vote():
    eng = make_engine(id=2, log=LOG7, vote=(1, 1, True), committed=(1, 1))
    req = chunk(vote(2, 3, True), meta(1, 5))
    eng.handle_install_snapshot(req, TX, 10.0)
    assert eng.take_commands() == [SaveVote(vote(2, 3, True), 1), ReceiveSnapshotChunk(req, TX, when=1)]
    assert eng.leader_seen_at == 10.0, "a snapshot chunk is leader contact (stickiness)"


def test_install_snapshot_chunk_from_the_current_leader_needs_no_vote_write():
    eng = make_engine(id=2, log=LOG7, vote=(1, 1, True), committed=(1, 1))
    req = chunk(vote(1, 1, True), meta(1, 5), done=False)
    eng.handle_install_snapshot(req, TX, 10.0)
    assert eng.take_commands() == [ReceiveSnapshotChunk(req, TX, when=0)]


def test_install_snapshot_makes_a_leader_of_a_lower_term_step_down():
    eng = make_leader(id=1, log=LOG7)  # term 1
    req = chunk(vote(2, 3, True), meta(1, 6))
    eng.handle_install_snapshot(req, TX, 10.0)
    io = eng.state.io.submitted
    assert eng.take_commands() == [SaveVote(vote(2, 3, True), io), StopReplication(), ReceiveSnapshotChunk(req, TX, when=io)]
    assert eng.leader is None and eng.state.server_state is ServerState.FOLLOWER


def test_snapshot_received_at_or_below_committed_is_answered_at_once():
    eng = make_engine(id=2, log=LOG7, vote=(1, 1, True), committed=(1, 4))
    for m in (meta(1, 4), meta(1, 2)):
        eng.handle_snapshot_received(m, "file", TX)
        assert eng.take_commands() == [Respond(TX, InstallSnapshotResponse(vote(1, 1, True)))]
    assert eng.snapshot_installing is None


def test_snapshot_received_beyond_committed_is_installed_one_at_a_time():
    eng = make_engine(id=2, log=LOG7, vote=(1, 1, True), committed=(1, 1))
    eng.handle_snapshot_received(meta(1, 4), "file", TX)
    assert eng.take_commands() == [InstallSnapshot(meta(1, 4), "file", TX)]
    eng.handle_snapshot_received(meta(1, 5), "file2", "tx2")
    (cmd,) = eng.take_commands()
    assert isinstance(cmd, Respond) and cmd.tx == "tx2" and isinstance(cmd.value, ApiError)


# -- install: the state machine holds it -----------------------------------------------------------


def test_installed_snapshot_in_the_log_keeps_later_entries():
    eng = make_engine(id=2, log=LOG7, vote=(1, 1, True), committed=(1, 1))
    eng.handle_snapshot_received(meta(1, 4), "file", TX)
    eng.take_commands()
    eng.handle_snapshot_installed(meta(1, 4), TX)
    assert eng.take_commands() == [
        PurgeLog(lid(1, 4), 1),
        SaveCommittedAndApply(lid(1, 4)),
        Respond(TX, InstallSnapshotResponse(vote(1, 1, True)), when=1),
    ], "no TruncateLog: 1-5 and 1-6 continue the snapshot"
    st = eng.state
    assert (st.purged_log_id(), st.snapshot, st.applied, st.committed) == (lid(1, 4),) * 4
    assert st.last_log_id() == lid(1, 6)
    assert eng.snapshot_installing is None
    st.validate()


def test_installed_snapshot_conflicting_with_the_log_truncates_uncommitted_entries():
    eng = make_engine(id=2, log=LOG7, vote=(1, 1, True), committed=(1, 2))
    eng.handle_install_snapshot(chunk(vote(2, 3, True), meta(2, 5)), TX, 10.0)
    eng.handle_snapshot_received(meta(2, 5), "file", TX)
    eng.take_commands()
    eng.handle_snapshot_installed(meta(2, 5), TX)
    assert eng.take_commands() == [
        TruncateLog(lid(1, 2), 2),
        PurgeLog(lid(2, 5), 3),
        SaveCommittedAndApply(lid(2, 5)),
        Respond(TX, InstallSnapshotResponse(vote(2, 3, True)), when=3),
    ], "1-3..1-6 may conflict with the leader's log (its 2-5): dropped; the log restarts after 2-5"
    st = eng.state
    assert (st.purged_log_id(), st.last_log_id(), st.snapshot, st.applied, st.committed) == (lid(2, 5),) * 5
    st.validate()


def test_installed_snapshot_beyond_a_short_log_leaves_it_empty_after_the_snapshot():
    eng = make_engine(id=2, log=[(0, 0), (1, 1)], vote=(1, 1, True), committed=(1, 1))
    eng.handle_snapshot_received(meta(1, 9), "file", TX)
    eng.take_commands()
    eng.handle_snapshot_installed(meta(1, 9), TX)
    assert eng.take_commands() == [
        PurgeLog(lid(1, 9), 1),
        SaveCommittedAndApply(lid(1, 9)),
        Respond(TX, InstallSnapshotResponse(vote(1, 1, True)), when=1),
    ], "everything held is committed: nothing to truncate"
    assert eng.state.last_log_id() == lid(1, 9)
    eng.state.validate()


def test_an_install_does_not_make_the_policy_build_a_snapshot_of_what_it_installed():
    """The runtime reports an install as ``Applied(last)`` then ``SnapshotInstalled``: the
    policy counted the entries up to ``last`` against the node's older (or no) snapshot and
    started a build of the very state just installed. A learner added to a cluster of 350 MB
    rewrote a 354 MB snapshot file at once (2.6 s of work while it caught up, its loop late by
    up to 88 ms). Neither the tick nor the report starts one while the install runs."""
    eng = make_engine(id=2, log=[(0, 0), (1, 1)], vote=(1, 1, True), committed=(1, 1), config=cfg(every=3, pacing=0.0))
    eng.handle_snapshot_received(meta(1, 9), "file", TX)
    assert eng.take_commands() == [InstallSnapshot(meta(1, 9), "file", TX)]
    eng.handle_applied(lid(1, 9))
    eng.handle_tick(10.0)
    assert BuildSnapshot() not in eng.take_commands(), "the install is the snapshot: no build of it"
    eng.handle_snapshot_installed(meta(1, 9), TX)
    assert BuildSnapshot() not in eng.take_commands()
    assert eng.state.snapshot == lid(1, 9)
    eng.handle_applied(lid(1, 9))
    assert BuildSnapshot() not in eng.take_commands(), "nothing applied since the install"
    eng.state.validate()


def test_installed_snapshot_membership_replaces_uncommitted_ones_it_covers():
    m4 = StoredMembership(lid(1, 3), membership({1, 2, 3}, learners=[4]))
    eng = make_engine(id=2, log=LOG7, vote=(1, 1, True), committed=(1, 1))
    eng.state.membership.append(m4)
    eng.handle_snapshot_installed(meta(1, 4, sm=m4), TX)
    eng.take_commands()
    assert eng.state.membership.committed == m4
    assert eng.state.membership.uncommitted == []
    eng.state.validate()
