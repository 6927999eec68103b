"""``openraft_py.recovery.force_sole_voter``: the offline, unsafe way back after losing a
majority of the voters (the key-value service's ``cluster force-recover`` runs it; its tests
are ``tests/kv/test_force_recover.py``)."""

from __future__ import annotations

import pytest

from openraft_py.errors import StoreOwnerMismatch
from openraft_py.recovery import AlreadySoleVoter, force_sole_voter, replace_owners
from openraft_py.storage import MemDisk, MemLogStore, MemStateMachine
from openraft_py.types import BasicNode, Entry, LogId, Membership, Normal, Vote


async def test_force_sole_voter_appends_a_membership_entry_in_a_new_term() -> None:
    """On memory stores: a vote of a new term for the node and, after the last entry, the
    membership of the node alone, with its own node kept; the entries past the committed
    id stay; a second call is ``AlreadySoleVoter``."""
    log, sm = MemLogStore(), MemStateMachine()
    old = Membership.new([{1, 2, 3}], {i: BasicNode(f"h{i}:1") for i in (1, 2, 3, 4)})
    entries = [Entry(LogId(0, 0), old), Entry(LogId(3, 1), Normal(b"a")), Entry(LogId(3, 2), Normal(b"b"))]
    log.append_durable(entries)
    await log.save_vote(Vote.new(5, 2, committed=True))
    await log.save_committed(LogId(3, 1))
    plan = await force_sole_voter(1, log, sm, write=False)
    assert plan.written is False and await log.read_vote() == Vote.new(5, 2, committed=True)
    assert (await log.get_log_state()).last_log_id == LogId(3, 2)
    plan = await force_sole_voter(1, log, sm)
    assert plan.entry == LogId(6, 3) and plan.vote == Vote.new(6, 1, committed=True)
    assert plan.not_known_committed() == (2, 2) and plan.lost_members() == [2, 3, 4]
    assert await log.read_vote() == plan.vote
    [e] = await log.get_log_reader().try_get_log_entries(3, 4)
    assert e == Entry(LogId(6, 3), Membership.new([{1}], {1: BasicNode("h1:1")}))
    with pytest.raises(AlreadySoleVoter, match="already the only voter"):
        await force_sole_voter(1, log, sm)


async def test_force_sole_voter_refuses_a_node_with_nothing_to_recover() -> None:
    """A node never initialized, and one its membership does not name (removed)."""
    with pytest.raises(ValueError, match="never initialized"):
        await force_sole_voter(1, MemLogStore(), MemStateMachine())
    log = MemLogStore()
    log.append_durable([Entry(LogId(0, 0), Membership.new([{2, 3, 4}]))])
    with pytest.raises(ValueError, match="not a member of its last membership"):
        await force_sole_voter(1, log, MemStateMachine())


async def test_replace_owners_renames_the_cluster_the_stores_record() -> None:
    """After a forced recovery under a new cluster name, the stores' owner records name the
    new cluster (``Raft.new``'s ``check_owner`` under it passes, under the old one refuses);
    a store that records an owner but cannot replace it is refused before anything is
    written."""
    disk = MemDisk()
    log, sm = MemLogStore(disk), MemStateMachine()
    await log.check_owner(1, "old")
    await replace_owners(1, "new", log, sm)
    assert disk.owner == (1, "new")
    await log.check_owner(1, "new")
    with pytest.raises(StoreOwnerMismatch):
        await log.check_owner(1, "old")

    class NoReplace(MemLogStore):
        replace_owner = None  # type: ignore[assignment]

    other = MemDisk()
    stuck = NoReplace(other)
    await stuck.check_owner(1, "old")
    with pytest.raises(TypeError, match="no async replace_owner"):
        await replace_owners(1, "new", stuck, sm)
    assert other.owner == (1, "old")
    with pytest.raises(ValueError, match="must not be empty"):
        await replace_owners(1, "", log, sm)


async def test_force_sole_voter_and_replace_owners_refuse_bad_arguments_before_anything() -> None:
    """``force_sole_voter(True, ...)`` (or ``1.0``) wrote a vote and a membership of node
    ``True``; ``write="no"`` wrote (any truthy value did); stores given in the wrong order
    failed with an ``AttributeError``; ``replace_owners`` checked nothing when no store
    records an owner. Each is refused now, the stores unchanged."""
    old = Membership.new([{1, 2, 3}], {i: BasicNode(f"h{i}:1") for i in (1, 2, 3)})
    log, sm = MemLogStore(), MemStateMachine()
    log.append_durable([Entry(LogId(0, 0), old), Entry(LogId(3, 1), Normal(b"a"))])
    for node_id, error in ((True, TypeError), (1.0, TypeError), ("1", TypeError), (-1, ValueError)):
        with pytest.raises(error, match=r"^node id must be"):
            await force_sole_voter(node_id, log, sm)  # type: ignore[arg-type]
    for write in ("no", 0, None):
        with pytest.raises(TypeError, match=r"^write must be a bool"):
            await force_sole_voter(1, log, sm, write=write)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^log_store must implement RaftLogStorage: MemStateMachine has no method"):
        await force_sole_voter(1, sm, log)  # type: ignore[arg-type]
    assert await log.read_vote() is None
    assert (await log.get_log_state()).last_log_id == LogId(3, 1)
    assert (await force_sole_voter(1, log, sm)).written is True
    for node_id, name, match in ((True, "c", r"^node id must be an int"), (1, 7, r"^cluster_name must be a str")):
        with pytest.raises(TypeError, match=match):
            await replace_owners(node_id, name, object(), object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^cluster_name must not be empty$"):
        await replace_owners(1, "", object(), object())  # type: ignore[arg-type]
