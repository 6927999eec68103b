"""Start-up checks: what the runtime restores from a store pair.

Each check fills the log store and the state machine, then calls the very function
``Raft.new`` uses (``openraft_py.core.restore.restore_state``) and compares the restored vote, log
ids, committed and applied log ids and ``MembershipState`` with what the contract implies.
The membership checks cover every combination of the state machine's stored membership
(none / some) with membership entries in the log (none / before the applied index / after
it / purged), as Openraft's ``get_membership_*`` and ``get_initial_state_*`` checks do.

Part of ``LogStoreSuite`` (see ``log_store``); the builder contract is in ``base``.
"""

from __future__ import annotations

from ...core.restore import restore_state
from ...engine import RaftState
from ...types import EMPTY_STORED_MEMBERSHIP, Entry, LogId, Membership, StoredMembership, Vote
from .base import CheckRegistry, StoreHandle, append, blank, ents, expect, member, normal

__all__ = ["registry"]

registry = CheckRegistry()
check = registry.check

NODE = 1


def _sm(e: Entry) -> StoredMembership:
    assert isinstance(e.payload, Membership)
    return StoredMembership(e.log_id, e.payload)


async def _restore(h: StoreHandle) -> RaftState:
    state, _cache = await restore_state(NODE, h.log_store, h.state_machine)
    return state


def _expect_membership(
    state: RaftState, committed: StoredMembership, uncommitted: list[StoredMembership], what: str
) -> None:
    expect(state.membership.committed, committed, f"restored committed membership ({what})")
    expect(state.membership.uncommitted, uncommitted, f"restored uncommitted memberships ({what})")


def _log(*specs: Entry) -> list[Entry]:
    """``specs`` with normal entries filling the gaps from index 0 (term 1)."""
    out: list[Entry] = []
    by_index = {e.log_id.index: e for e in specs}
    for i in range(max(by_index) + 1):
        out.append(by_index.get(i, normal(1, i)))
    return out


M1 = member(1, 1, {1, 2, 3})
M2 = member(1, 3, {1, 2, 3, 4})
M3 = member(1, 6, {1, 2, 3}, {1, 4, 5})
LOG = _log(M1, M2, M3, normal(1, 8))
"""Entries 0..=8 with memberships at 1, 3 (uniform) and 6 (joint)."""


@check
async def restore_initial(h: StoreHandle) -> None:
    """A fresh pair restores to: vote ``T0-N0``, no log, nothing committed or applied, the
    empty membership."""
    st = await _restore(h)
    expect(st.vote, Vote.new(0, 0), "restored vote of a fresh store")
    expect((st.last_log_id(), st.purged_log_id(), st.committed, st.applied), (None, None, None, None), "restored (last, purged, committed, applied)")
    _expect_membership(st, EMPTY_STORED_MEMBERSHIP, [], "fresh store")


@check
async def restore_log_ids_and_vote(h: StoreHandle) -> None:
    """The restored vote, last and purged log ids and term boundaries match the store."""
    log = ents(0, 4) + ents(4, 7, term=3)
    await append(h.log_store, log)
    await h.state_machine.apply(log[:2])  # a log is purged only up to what was applied
    await h.log_store.purge(LogId(1, 1))
    await h.log_store.save_vote(Vote.new(3, 2, committed=True))
    st = await _restore(h)
    expect(st.vote, Vote.new(3, 2, committed=True), "restored vote")
    expect((st.purged_log_id(), st.last_log_id()), (LogId(1, 1), LogId(3, 6)), "restored (purged, last)")
    expect([st.log_id_at(i) for i in (2, 3, 4, 6)], [LogId(1, 2), LogId(1, 3), LogId(3, 4), LogId(3, 6)], "restored log ids")


@check
async def restore_committed_and_applied(h: StoreHandle) -> None:
    """The restored committed id is the saved one (or, if the store keeps none, at least
    the applied one); applied comes from the state machine."""
    await append(h.log_store, LOG)
    await h.log_store.save_committed(LogId(1, 7))
    await h.state_machine.apply(LOG[:5])
    st = await _restore(h)
    expect(st.applied, LogId(1, 4), "restored applied")
    if st.committed not in (LogId(1, 7), LogId(1, 4)):
        raise AssertionError(f"restored committed: expected 1-7 (saved) or 1-4 (applied), got {st.committed!r}")


@check
async def restore_log_behind_state_machine(h: StoreHandle) -> None:
    """A log that lost a tail the state machine applied (a leader applies what a quorum of
    followers holds before its own copy is durable; a crash then loses that copy): the log
    is discarded up to the applied id, which becomes the purged and last log id; committed is
    the applied id (the saved one past the log is clamped); the membership is the state
    machine's. The purged range stays covered: a snapshot of the applied id is built first."""
    await append(h.log_store, LOG[:5])
    await h.state_machine.apply(LOG[:3])
    (await h.state_machine.get_snapshot_builder().build_snapshot()).data.close()  # 1-2: older
    await h.state_machine.apply(LOG[3:8])
    await h.log_store.save_committed(LogId(1, 7))
    st = await _restore(h)
    expect((st.purged_log_id(), st.last_log_id()), (LogId(1, 7), LogId(1, 7)), "restored (purged, last)")
    expect((st.committed, st.applied), (LogId(1, 7), LogId(1, 7)), "restored (committed, applied)")
    _expect_membership(st, _sm(M3), [], "the state machine's, the log holds none past it")
    expect(st.snapshot, LogId(1, 7), "restored snapshot id (built to cover the purged range)")
    snap = await h.state_machine.get_current_snapshot()
    if snap is None:
        raise AssertionError("no current snapshot after a restore that purged the log past it")
    snap.data.close()
    expect(snap.meta.last_log_id, LogId(1, 7), "the current snapshot's last log id")
    log_state = await h.log_store.get_log_state()
    expect((log_state.last_purged_log_id, log_state.last_log_id), (LogId(1, 7), LogId(1, 7)), "the store's log state after restore")
    await append(h.log_store, [normal(1, 8)])  # the log continues after the applied id
    expect((await h.log_store.get_log_state()).last_log_id, LogId(1, 8), "last log id after an append")


@check
async def restore_snapshot_id(h: StoreHandle) -> None:
    """The restored snapshot id is the last log id of the state machine's current snapshot
    (from its optional ``get_current_snapshot_meta`` when it has one, else from
    ``get_current_snapshot``): none before a build; after a build at 1-4, more applies and a
    purge of the log up to the snapshot, 1-4."""
    await append(h.log_store, LOG)
    await h.state_machine.apply(LOG[:5])
    expect((await _restore(h)).snapshot, None, "restored snapshot id before any build")
    (await h.state_machine.get_snapshot_builder().build_snapshot()).data.close()
    await h.state_machine.apply(LOG[5:8])
    await h.log_store.purge(LogId(1, 4))
    st = await _restore(h)
    expect((st.snapshot, st.applied, st.purged_log_id()), (LogId(1, 4), LogId(1, 7), LogId(1, 4)), "restored (snapshot, applied, purged)")


@check
async def membership_in_log_uncommitted(h: StoreHandle) -> None:
    """Memberships only in the log, nothing committed: all uncommitted, in order."""
    await append(h.log_store, LOG)
    st = await _restore(h)
    _expect_membership(st, EMPTY_STORED_MEMBERSHIP, [_sm(M1), _sm(M2), _sm(M3)], "log only, nothing committed")


@check
async def membership_in_log_committed(h: StoreHandle) -> None:
    """Memberships only in the log, saved committed 1-7 covers them all: the last is the
    committed one (when the store keeps committed; else all stay uncommitted)."""
    await append(h.log_store, LOG)
    await h.log_store.save_committed(LogId(1, 7))
    st = await _restore(h)
    if st.committed is None:  # the store does not keep committed: nothing can be promoted
        _expect_membership(st, EMPTY_STORED_MEMBERSHIP, [_sm(M1), _sm(M2), _sm(M3)], "committed not kept")
    else:
        _expect_membership(st, _sm(M3), [], "log only, committed 1-7")


@check
async def membership_in_log_partly_committed(h: StoreHandle) -> None:
    """Saved committed 1-4 lies between the memberships at 3 and 6: 3 is committed, 6 is not."""
    await append(h.log_store, LOG)
    await h.log_store.save_committed(LogId(1, 4))
    st = await _restore(h)
    if st.committed is not None:
        _expect_membership(st, _sm(M2), [_sm(M3)], "log only, committed 1-4")


@check
async def membership_in_sm_only(h: StoreHandle) -> None:
    """The state machine holds a membership (applied from entries the log no longer holds)
    and the log holds none: it is the committed membership."""
    await h.state_machine.apply(_log(M1, normal(1, 2)))
    await append(h.log_store, ents(0, 3))
    st = await _restore(h)
    _expect_membership(st, _sm(M1), [], "state machine only")
    expect(st.applied, LogId(1, 2), "restored applied")


@check
async def membership_in_log_le_applied(h: StoreHandle) -> None:
    """Log memberships at or below the applied index, also applied by the state machine:
    the last of them is committed, none is uncommitted."""
    await append(h.log_store, LOG)
    await h.state_machine.apply(LOG[:8])
    st = await _restore(h)
    _expect_membership(st, _sm(M3), [], "log memberships <= applied")


@check
async def membership_in_log_gt_applied(h: StoreHandle) -> None:
    """State machine applied up to 2 (membership at 1); the log's later memberships at 3
    and 6 are uncommitted."""
    await append(h.log_store, LOG)
    await h.state_machine.apply(LOG[:3])
    st = await _restore(h)
    _expect_membership(st, _sm(M1), [_sm(M2), _sm(M3)], "state machine at 2, log memberships after")


@check
async def membership_in_log_gt_applied_committed(h: StoreHandle) -> None:
    """As ``membership_in_log_gt_applied`` with committed 1-7 saved: the membership at 6 is
    committed from the log even though the state machine has not applied it."""
    await append(h.log_store, LOG)
    await h.state_machine.apply(LOG[:3])
    await h.log_store.save_committed(LogId(1, 7))
    st = await _restore(h)
    if st.committed == LogId(1, 7):
        _expect_membership(st, _sm(M3), [], "state machine at 2, committed 1-7")
    else:  # committed not kept: the state machine's applied id is the committed one
        _expect_membership(st, _sm(M1), [_sm(M2), _sm(M3)], "committed not kept")


@check
async def membership_sm_newer_than_log(h: StoreHandle) -> None:
    """The state machine's membership (from a snapshot at 2-9) is newer than every
    membership left in the log: it stays the committed one."""
    await append(h.log_store, LOG)
    newer = member(2, 9, {7, 8, 9})
    await h.state_machine.apply(LOG + [newer])
    st = await _restore(h)
    _expect_membership(st, _sm(newer), [], "state machine newer than the log")


@check
async def membership_purged_from_log_kept_by_sm(h: StoreHandle) -> None:
    """The log's membership entries were purged; the state machine, which applied them, is
    where the restored committed membership comes from; later log ones are uncommitted."""
    await append(h.log_store, LOG)
    await h.state_machine.apply(LOG[:5])
    await h.log_store.purge(LogId(1, 4))
    st = await _restore(h)
    _expect_membership(st, _sm(M2), [_sm(M3)], "memberships purged from the log")


@check
async def membership_joint_effective(h: StoreHandle) -> None:
    """A joint membership entry last in the log is the effective membership."""
    await append(h.log_store, LOG)
    await h.state_machine.apply(LOG[:2])
    st = await _restore(h)
    expect(st.membership.effective, _sm(M3), "effective membership")
    expect(st.membership.effective.membership.is_joint(), True, "effective membership is joint")


@check
async def restore_reapplies_committed(h: StoreHandle) -> None:
    """A node restarted with committed > applied re-applies the rest: a real single-node
    ``Raft`` over the pair (in-process router) applies up to the saved committed id."""
    from ...config import Config
    from ...network.router import Router
    from ...raft import Raft

    log = [member(1, 0, {NODE})] + [normal(1, i, h.normal_data(i)) for i in range(1, 6)] + [blank(1, 6)]
    await append(h.log_store, log)
    await h.log_store.save_committed(LogId(1, 6))
    await h.state_machine.apply(log[:3])
    # A store that keeps no committed id still gets there: the node elects itself and
    # commits everything with its blank entry.
    router = Router(seed=1)
    raft = await Raft.new(NODE, Config(), router.factory(NODE), h.log_store, h.state_machine, seed=1)
    try:
        router.register(NODE, raft)
        await raft.wait(5.0).applied_index_at_least(6, "the restarted node re-applies 3..=6")
    finally:
        await raft.shutdown()
    applied, membership = await h.state_machine.applied_state()
    if applied is None or applied < LogId(1, 6):
        raise AssertionError(f"applied_state() after the restarted node ran: expected >= 1-6, got {applied!r}")
    expect(membership, _sm(log[0]), "stored membership after re-apply")
