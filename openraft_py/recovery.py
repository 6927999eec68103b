"""Forced recovery of a cluster that lost a majority of its voters for good: the offline
helper ``force_sole_voter``.

A Raft cluster that lost a majority of its voters (their machines and disks) can commit
nothing again: a membership change needs a leader, and a leader needs a majority of the
voters the membership names. The only way back is to give up on them: make one survivor the
sole voter of a new configuration, keeping what its log holds, and add new nodes to it. This
is **unsafe** by nature: a write that the lost voters alone held (acknowledged while the
survivor lagged) is gone, and nothing can tell which.

``force_sole_voter`` does it on a **stopped** node's storage, through the storage protocol
only (the design, and why it is safe for the new cluster: ``docs/design/force-recover.md``):

1. it reads the node's state as ``Raft.new`` would (``restore_state``: the vote, the log's
   bounds, the committed id, the memberships);
2. it saves the vote ``Vote(N, node_id, committed=True)``, where ``N`` is one more than the
   greatest term the node has seen (its vote's and its last entry's), durably;
3. it appends, at the end of the log, the membership entry ``LogId(N, last + 1)`` whose one
   voter config is ``{node_id}`` and whose only node is this node (with the ``BasicNode`` its
   last membership gave it), and waits until that entry is durable.

Nothing is truncated: entries past the node's committed index stay and commit once the node
leads (they may have been committed, and acknowledged, by the voters that were lost). The
stores then hold exactly what a one-voter cluster's leader of term ``N`` leaves when it stops
right after appending that entry: started again, the node elects itself and commits the
whole log. Learners and the other voters are no longer members.

What it does not do, and its caller must: make sure no process uses the stores (the node is
stopped) and that the lost voters never come back with their old data under the same
cluster (the key-value service records a new cluster name: ``openraft-py cluster
force-recover``).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

import msgspec

from .core.restore import restore_state
from .errors import StorageError
from .types import Entry, LogId, Membership, NodeId, StoredMembership, Vote
from .validation import (
    LOG_STORAGE_METHODS,
    MAX_TERM,
    STATE_MACHINE_METHODS,
    check_bool,
    check_implements,
    check_node_id,
    shown,
)

if TYPE_CHECKING:
    from .storage import RaftLogStorage, RaftStateMachine

__all__ = ["AlreadySoleVoter", "SoleVoterPlan", "force_sole_voter", "replace_owners"]


class AlreadySoleVoter(ValueError):
    """``force_sole_voter`` found the node already the sole voter of its membership."""


class SoleVoterPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What ``force_sole_voter`` found and what it writes (or wrote).

    ``node_id``: the node; ``previous``: its membership until then (the last one its log
    holds, committed or not) and the entry that carried it; ``committed``: the last log id
    it knew committed; ``last_log_id``: its last entry's id before the new one;
    ``previous_vote``: its vote before; ``vote``: the vote saved; ``entry``: the id of the
    new membership entry; ``membership``: the new membership (this node its only voter and
    only member); ``written``: whether the vote and the entry were written (``False`` for a
    plan made with ``write=False``)."""

    node_id: NodeId
    previous: StoredMembership
    committed: LogId | None
    last_log_id: LogId
    previous_vote: Vote
    vote: Vote
    entry: LogId
    membership: Membership
    written: bool

    def not_known_committed(self) -> tuple[int, int] | None:
        """The indexes ``(first, last)`` of the entries past the committed id (kept: they
        commit once the node leads), or ``None`` when every entry was known committed."""
        first = 0 if self.committed is None else self.committed.index + 1
        return None if first > self.last_log_id.index else (first, self.last_log_id.index)

    def lost_members(self) -> list[NodeId]:
        """The members of the previous membership, voters and learners, that the new one
        drops (every node but this one)."""
        return sorted(n for n in self.previous.membership.nodes if n != self.node_id)


async def force_sole_voter(
    node_id: NodeId,
    log_store: RaftLogStorage,
    state_machine: RaftStateMachine,
    *,
    write: bool = True,
) -> SoleVoterPlan:
    """Make node ``node_id`` the sole voter of a new membership on its stopped node's stores
    (see the module docstring for the steps), and return the ``SoleVoterPlan``. With
    ``write=False`` nothing is written: the plan says what would be (the stores may still be
    repaired as ``Raft.new`` repairs them at start).

    Contract: the stores are open and no ``Raft`` runs on them (a running node would keep
    its old state in memory and overwrite the vote); the caller closes them afterwards.
    Raises ``ValueError`` when there is nothing to recover: the node was never initialized
    (no membership), is not a member of its membership (it was removed), or is already the
    sole voter (a uniform membership whose one config is ``{node_id}``: it needs no other
    node to commit; ``AlreadySoleVoter``, a ``ValueError``), or has seen ``MAX_TERM``;
    ``StorageError`` when the stores fail, are inconsistent, or the entry
    could not be made durable. ``TypeError``/``ValueError`` before anything is read for a
    ``node_id`` that is not a node id (``True``, ``1.0``, ``"1"``: a vote and a membership of
    node ``True`` were written), a ``write`` that is not a ``bool`` (``write="no"`` wrote),
    or stores that do not implement their protocols (given in the wrong order, say). The
    vote is saved before the entry is appended: a crash between leaves the node in its old
    membership with a higher term (run it again)."""
    node_id = check_node_id(node_id)
    check_bool(write, "write")
    check_implements(log_store, "log_store", "RaftLogStorage", LOG_STORAGE_METHODS)
    check_implements(state_machine, "state_machine", "RaftStateMachine", STATE_MACHINE_METHODS)
    state, _cache = await restore_state(node_id, log_store, state_machine)
    previous = state.membership.effective
    old = previous.membership
    last = state.last_log_id()
    if previous.log_id is None or last is None:
        raise ValueError(f"node {node_id} holds no membership: it was never initialized (there is nothing to recover)")
    if node_id not in old.nodes:
        raise ValueError(
            f"node {node_id} is not a member of its last membership {old!r} (at {previous.log_id!r}): it was "
            "removed from its cluster, so its data may be far behind; recover from a node of that membership"
        )
    if old.configs == (frozenset({node_id}),):
        raise AlreadySoleVoter(
            f"node {node_id} is already the only voter of its membership {old!r} (at {previous.log_id!r}): it "
            "commits on its own, there is nothing to recover"
        )
    term = max(state.vote.leader_id.term, last.term) + 1
    if term > MAX_TERM:
        raise ValueError(f"node {node_id} has seen term {term - 1}, the last term there is (MAX_TERM): no new term is left")
    entry_id = LogId(term, last.index + 1)
    membership = Membership.new([{node_id}], {node_id: old.nodes[node_id]})
    vote = Vote.new(term, node_id, committed=True)
    plan = SoleVoterPlan(
        node_id=node_id, previous=previous, committed=state.committed, last_log_id=last,
        previous_vote=state.vote, vote=vote, entry=entry_id, membership=membership, written=write,
    )
    if not write:
        return plan
    await log_store.save_vote(vote)
    await _append_durably(log_store, Entry(entry_id, membership))
    return plan


async def replace_owners(
    node_id: NodeId, cluster_name: str, log_store: RaftLogStorage, state_machine: RaftStateMachine
) -> None:
    """Record node ``node_id`` of ``cluster_name`` as the owner of both stores, over their
    records (``check_owner``, which ``Raft.new`` calls with the cluster's name): after
    ``force_sole_voter`` gave the survivor a new cluster name, its stores would otherwise
    still name the old cluster, and ``Raft.new`` under the new name would refuse them with
    ``StoreOwnerMismatch``. A store without ``check_owner`` records no owner and is skipped.

    Contract: as ``force_sole_voter``'s (stopped node, open stores). Raises ``TypeError``,
    before writing anything, for a store that has ``check_owner`` but no
    ``replace_owner(node_id, cluster_name)`` coroutine method (it could not start under the
    new name); ``TypeError``/``ValueError`` for a bad ``node_id`` or ``cluster_name``
    (checked here, also when no store records an owner);
    ``StorageError`` when a write fails (run it again: it is idempotent)."""
    node_id = check_node_id(node_id)
    if not isinstance(cluster_name, str):
        raise TypeError(f"cluster_name must be a str, got {type(cluster_name).__name__} {shown(cluster_name)}")
    if not cluster_name:
        raise ValueError("cluster_name must not be empty")
    stores = [s for s in (log_store, state_machine) if getattr(s, "check_owner", None) is not None]
    for store in stores:
        if not inspect.iscoroutinefunction(getattr(store, "replace_owner", None)):
            raise TypeError(
                f"{type(store).__name__} records an owner (check_owner) but has no async replace_owner(node_id, "
                "cluster_name): the node could not start under its new cluster name"
            )
    for store in stores:
        replace: Any = getattr(store, "replace_owner")  # noqa: B009 - checked above, not in the protocols
        await replace(node_id, cluster_name)


async def _append_durably(log_store: RaftLogStorage, entry: Entry) -> None:
    """Append ``entry`` and wait until the store reports it durable; ``StorageError`` if it
    reports a failure."""
    from .storage import IOFlushed

    loop = asyncio.get_running_loop()
    flushed: asyncio.Future[BaseException | None] = loop.create_future()

    def done(error: BaseException | None) -> None:
        if not flushed.done():
            flushed.set_result(error)

    await log_store.append([entry], IOFlushed(done, loop))
    error = await flushed
    if error is not None:
        raise StorageError(f"appending the membership entry {entry.log_id!r}", error)
