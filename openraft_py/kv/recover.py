"""``openraft-py cluster force-recover``: make a stopped survivor the sole voter of a new
cluster after a majority of the voters was lost for good (unsafe; the key-value service
guide's "Losing a majority", the design in ``docs/design/force-recover.md``).

::

    openraft-py cluster force-recover --data-dir DIR --new-cluster-name NAME     # shows the plan only
    openraft-py cluster force-recover --data-dir DIR --new-cluster-name NAME --i-know-writes-may-be-lost

It works on the data directory of a stopped node. It refuses (exit 1, nothing changed) when
the directory is not a node's (no ``node.json``), is used by another process (the node is
running: its ``flock``), holds a node still catching up (``catching-up.json``: it may lack
committed writes), a ``log/`` or ``sm/`` whose owner record names another node or cluster (as
``serve`` refuses it), a node never initialized, removed from its membership or already the only
voter, when the new cluster name is the node's current one (or the one an earlier forced
recovery left), and when any other voter of its
membership answers ``GET /cluster/status`` at its HTTP address within ``--timeout`` with a
status that holds a log (then the cluster is not lost, or that voter must be stopped first:
the survivor with the longest log is the one to recover from; a new node started at that
address on an empty data directory is not counted). Without ``--i-know-writes-may-be-lost`` it prints what it
would do and changes nothing (exit 1).

With it, in order, each step durable before the next:

1. ``node.json`` records the recovery under way (``recovering_to``: ``serve`` refuses the
   directory until it is finished; running the verb again finishes it);
2. the library's ``force_sole_voter`` saves a vote of a new term and appends the membership
   entry that makes this node the only voter and member (through the log store's protocol);
3. the stores' owner records (``check_owner``) name the new cluster (``replace_owners``);
4. ``node.json`` records the new cluster name (and ``recovered_from``, the old one).

The new cluster name is what keeps the lost voters out if they do come back with their old
data: the raft handshake refuses a peer of another cluster name, both ways, so they can
never replicate to, or be elected by, the new cluster's nodes (two of three old voters that
come back still form a majority of the *old* cluster among themselves: never start them).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp

from ..errors import StorageError, StoreOwnerMismatch
from ..recovery import AlreadySoleVoter, SoleVoterPlan, force_sole_voter, replace_owners
from ..types import Membership, NodeId, Vote
from .argtypes import check_cluster_name
from .identity import (
    IDENTITY_FILE,
    LOG_DIR,
    SM_DIR,
    DataDirMismatch,
    check_stores,
    lock_data_dir,
    owner_mismatch,
    read_identity,
    record_identity,
)
from .nodes import addrs_of
from .rejoin import CATCHING_UP_FILE

__all__ = ["CONFIRM_FLAG", "Refused", "abort_recovery", "check_cluster_name", "force_recover"]

CONFIRM_FLAG = "--i-know-writes-may-be-lost"
"""The flag without which ``force-recover`` only shows what it would do."""


class Refused(Exception):
    """``force-recover`` refused: one line saying why (nothing was changed)."""


def _voters(m: Membership) -> str:
    """``{1,2,3}`` (or ``{1,2,3} -> {1,4,5}`` for a joint membership)."""
    return " -> ".join("{" + ",".join(map(str, sorted(c))) + "}" for c in m.configs)


def _ids(ids: list[NodeId]) -> str:
    return ", ".join(map(str, ids)) or "-"


async def _answering_voters(plan: SoleVoterPlan, timeout: float) -> tuple[list[str], list[str]]:
    """The other voters of the node's membership that answer ``GET /cluster/status`` as
    themselves at their recorded HTTP address within ``timeout`` seconds, each described in
    a few words: those that hold a log (the old voter, or a node of some cluster), and those
    that hold none (a new node started at that address and id: not the voter that was lost)."""
    m = plan.previous.membership
    others = sorted(n for n in m.voter_ids() if n != plan.node_id)

    async def ask(session: aiohttp.ClientSession, nid: NodeId) -> tuple[str, bool] | None:
        http = addrs_of(m.nodes[nid]).http
        if not http:
            return None
        try:
            async with session.get(f"http://{http}/cluster/status") as r:
                if r.status != 200:
                    return None
                st = await r.json()
        except (OSError, TimeoutError, aiohttp.ClientError, ValueError):
            return None
        if not isinstance(st, dict) or st.get("id") != nid:
            return None
        if st.get("last_log_index") is None:
            return f"node {nid} at {http} answers but holds no log (a new node): not counted", False
        return (f"node {nid} at {http} (state {st.get('state')}, term {st.get('term')}, last log index "
                f"{st.get('last_log_index')}, committed {st.get('committed_index')}, voters {st.get('voters')})", True)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        found = [f for f in await asyncio.gather(*(ask(session, n) for n in others)) if f is not None]
    return [text for text, holds in found if holds], [text for text, holds in found if not holds]


def _describe(plan: SoleVoterPlan, data_dir: Path, old_name: str, new_name: str, done: bool) -> list[str]:
    """What the plan found and does, line by line (``done``: it was written)."""
    old = plan.previous.membership
    learners = sorted(old.learner_ids())
    lines = [
        f"node {plan.node_id} of cluster {old_name!r} (data directory {data_dir}):",
        f"  its membership (entry {plan.previous.log_id!r}): voters {_voters(old)}, learners {_ids(learners)}",
        f"  its log ends at {plan.last_log_id!r}; committed as far as it knew: {plan.committed!r}",
    ]
    if not old.is_voter(plan.node_id):
        lines.append(f"  node {plan.node_id} was a learner: its log may be behind the voters' (recover from a voter if one "
                     "survived)")
    lines += [
        "done:" if done else "what it would do (nothing was changed):",
        f"  vote: term {plan.vote.leader_id.term} for node {plan.node_id} (was term {plan.previous_vote.leader_id.term}"
        f" for node {plan.previous_vote.leader_id.node_id})",
        f"  membership entry {plan.entry!r} at the end of the log: node {plan.node_id} the only voter and the only member",
        f"  {IDENTITY_FILE}: cluster {new_name!r} (was {old_name!r})",
        f"  no longer members: {_ids(plan.lost_members())}",
    ]
    pending = plan.not_known_committed()
    if pending is None:
        lines.append("every entry of its log was known committed")
    else:
        first, last = pending
        lines.append(f"entries {first}..{last} were not known to be committed here: they are kept, and commit when "
                     f"node {plan.node_id} starts (writes whose clients may have been told the outcome is unknown)")
    lines.append(f"possibly lost: every write the old cluster committed after index {plan.last_log_id.index} (this "
                 "node never received it); which ones, if any, cannot be known")
    return lines


def _next_steps(plan: SoleVoterPlan, data_dir: Path, new_name: str) -> list[str]:
    addrs = addrs_of(plan.membership.nodes[plan.node_id])
    lost = sorted(n for n in plan.previous.membership.voter_ids() if n != plan.node_id)
    return [
        "next:",
        f"  1. start node {plan.node_id} with --cluster-name {new_name} (its other flags as before): openraft-py serve "
        f"--id {plan.node_id} --raft-addr {addrs.raft or 'H:P'} --http-addr {addrs.http or 'H:P'} --data-dir {data_dir} "
        f"--cluster-name {new_name}",
        f"  2. start each new node with --cluster-name {new_name} on an empty data directory, and add it: openraft-py "
        f"cluster add-learner --endpoints {addrs.http or 'H:P'} --id N --raft-addr H:P --http-addr H:P",
        f"  3. make them voters: openraft-py cluster members --endpoints {addrs.http or 'H:P'} --voters "
        f"{plan.node_id},N,M",
        f"  never start nodes {_ids(lost)} on their old data directories again (empty them first): the new cluster "
        f"refuses them, but a majority of them would still form the old cluster (voters "
        f"{_voters(plan.previous.membership)}) of their own",
    ]


def _check_owners(
    data_dir: Path,
    node_id: NodeId,
    names: tuple[str, str | None],
    log_owner: tuple[NodeId, str] | None,
    sm_owner: tuple[NodeId, str] | None,
) -> None:
    """``Refused``, worded as ``serve`` refuses it (``owner_mismatch``), when the owner record
    of the log store (``log_owner``) or of the state machine (``sm_owner``) names another node
    than ``node_id`` or a cluster other than ``names`` (the node's, and the one an interrupted
    recovery was renaming it to): ``log/`` or ``sm/`` came from another node's directory, and
    the recovery would have made this node the sole voter on that node's vote and log, then
    overwritten the record (``replace_owners``) that told. A store without a record (an
    earlier version's) passes, as ``serve`` adopts it."""
    for owner, what in ((log_owner, "log store"), (sm_owner, "state machine")):
        if owner is not None and (owner[0] != node_id or owner[1] not in names):
            e = StoreOwnerMismatch(f"opening {what}", owner[0], owner[1], node_id, names[0], what=what)
            raise Refused(str(owner_mismatch(data_dir, e)))


async def abort_recovery(data_dir: Path, new_name: str, say: Callable[[str], None]) -> None:
    """``cluster force-recover --abort``: give up a forced recovery that was interrupted
    before its membership entry was written (``node.json``'s ``recovering_to`` is
    ``new_name``), so the node may rejoin its old cluster, whose voters came back after all
    (the recovery itself refuses while they answer, and ``serve`` refuses the directory
    until the recovery is finished or given up). What the run may have written before the
    entry, a vote of a new term for the node, is made a candidate's (not committed): the node
    is a follower of its old membership with a higher term (its log is compared as any
    candidate's), and a leader its old voters elected in that term is greater. ``Refused``, nothing changed, when no recovery is under way, ``new_name``
    is not the one under way, or the entry was written: the node is then the only voter of a
    membership of its own, and started in its old cluster it could lead alone (run the
    recovery again to finish it)."""
    if not os.path.lexists(data_dir / IDENTITY_FILE):  # (a link to nothing: read_identity names it)
        raise Refused(f"{data_dir} is not a node's data directory (it holds no {IDENTITY_FILE})")
    try:
        lock = lock_data_dir(data_dir)
    except StorageError as e:
        raise Refused(f"{data_dir} is in use by another process (the node is running? stop it first): {e}") from None
    try:
        try:
            record = await asyncio.to_thread(read_identity, data_dir)
        except DataDirMismatch as e:
            raise Refused(str(e)) from None
        if record.recovering_to is None:
            raise Refused(f"{data_dir} holds no forced recovery under way: there is nothing to abort")
        if record.recovering_to != new_name:
            raise Refused(f"the recovery under way in {data_dir} is to cluster {record.recovering_to!r}, not "
                          f"{new_name!r}: give --new-cluster-name {record.recovering_to}")
        from ..storage.rocks import RocksLogStore
        from .commands import KvStateMachine

        log_store = await RocksLogStore.open(data_dir / LOG_DIR)
        try:
            sm = await KvStateMachine.open(data_dir / SM_DIR)
            try:
                try:
                    await force_sole_voter(record.node_id, log_store, sm, write=False)
                except AlreadySoleVoter:
                    raise Refused(
                        f"the recovery already wrote its membership entry: node {record.node_id} is the only voter of a "
                        "membership of its own, and started in its old cluster it could lead alone; it cannot be "
                        f"given up: run it again to finish it (--new-cluster-name {new_name})") from None
                except ValueError as e:
                    raise Refused(str(e)) from None
                # The run saves the vote of the new term as a leader's (committed): left so,
                # the node refused the requests of the leader its old voters elected in that
                # term (two committed votes of one term are not comparable), and stayed out
                # of its cluster until that leader went. As a candidate's vote, the leader's
                # is greater; the node still grants no one else in that term.
                vote = await log_store.read_vote()
                if vote is not None and vote.committed and vote.leader_id.node_id == record.node_id:
                    await log_store.save_vote(Vote(vote.leader_id, False))
            finally:
                await sm.aclose()
        finally:
            await log_store.aclose()
        await asyncio.to_thread(record_identity, data_dir, record.node_id, record.cluster_name,
                                recovered_from=record.recovered_from)
        say(f"aborted: node {record.node_id} is a node of cluster {record.cluster_name!r} again (its membership "
            f"unchanged; its term may be higher): start it with --cluster-name {record.cluster_name}")
    finally:
        os.close(lock)


async def force_recover(
    data_dir: Path, new_name: str, confirmed: bool, peer_timeout: float, say: Callable[[str], None]
) -> SoleVoterPlan | None:
    """Run ``cluster force-recover`` on ``data_dir`` (see the module docstring); ``say``
    prints a line on standard output. Returns the plan carried out (``None`` when it only
    finished an interrupted recovery whose entry was already written); ``Refused`` when it
    refuses, before anything is changed (without ``confirmed``, after printing the plan)."""
    if not data_dir.is_dir():
        raise Refused(f"{data_dir} is not a directory")
    if not os.path.lexists(data_dir / IDENTITY_FILE):  # (a link to nothing: read_identity names it)
        raise Refused(f"{data_dir} is not a node's data directory (it holds no {IDENTITY_FILE}): give the --data-dir "
                      "that serve was given")
    try:
        lock = lock_data_dir(data_dir)
    except StorageError as e:
        raise Refused(f"{data_dir} is in use by another process (the node is running? stop it first): {e}") from None
    try:
        return await _recover_locked(data_dir, new_name, confirmed, peer_timeout, say)
    finally:
        os.close(lock)


async def _recover_locked(
    data_dir: Path, new_name: str, confirmed: bool, peer_timeout: float, say: Callable[[str], None]
) -> SoleVoterPlan | None:
    try:
        record = await asyncio.to_thread(read_identity, data_dir)
    except DataDirMismatch as e:
        raise Refused(str(e)) from None
    old_name = record.cluster_name
    pending = record.recovering_to
    if pending is not None and pending != new_name:
        raise Refused(f"{data_dir} holds an unfinished forced recovery to cluster {pending!r}: give --new-cluster-name "
                      f"{pending} to finish it")
    # The same command again after a run that finished (killed after its last step, before it
    # said so): it said "the new cluster name must differ from the node's", as to a mistake.
    finished = pending is None and new_name == old_name and record.recovered_from is not None
    if pending is None and new_name == old_name and not finished:
        raise Refused(f"the new cluster name must differ from the node's, {old_name!r}: the raft handshake refuses a "
                      "peer of another cluster name, which keeps the lost voters out of the new cluster if they come back")
    if pending is None and new_name == record.recovered_from:
        raise Refused(f"{new_name!r} was this node's cluster name before an earlier forced recovery: the voters of that "
                      "cluster, if they come back, would be let in again; give a name no cluster of these nodes ever had")
    # (lexists: a record that is a link to nothing is there all the same; ``serve`` refuses it.)
    if os.path.lexists(data_dir / CATCHING_UP_FILE):
        raise Refused(f"node {record.node_id} is catching up ({data_dir / CATCHING_UP_FILE}): it started on an empty data "
                      "directory and has not caught up with its cluster, so it may lack committed writes; recover from "
                      f"another survivor (if there is none and you accept that, remove {CATCHING_UP_FILE} first)")
    try:
        await asyncio.to_thread(check_stores, data_dir, True)
    except StorageError as e:
        raise Refused(str(e)) from None
    from ..storage.rocks import RocksLogStore
    from .commands import KvStateMachine

    log_store = await RocksLogStore.open(data_dir / LOG_DIR)
    try:
        sm = await KvStateMachine.open(data_dir / SM_DIR)
        try:
            _check_owners(data_dir, record.node_id, (old_name, pending), log_store.owner, sm.owner)
            try:
                plan = await force_sole_voter(record.node_id, log_store, sm, write=False)
            except AlreadySoleVoter as e:
                if finished:
                    say(f"node {record.node_id} is already the only voter of cluster {new_name!r}: a forced recovery "
                        f"from cluster {record.recovered_from!r} to it finished (an earlier run, stopped before it "
                        f"said so?); nothing was changed: start it with --cluster-name {new_name}")
                    return None
                if pending is None:
                    raise Refused(str(e)) from None
                # Interrupted after the entry was appended: only the record is left to write.
                say(f"node {record.node_id} is already the only voter (an interrupted recovery): recording cluster "
                    f"{new_name!r}")
                await replace_owners(record.node_id, new_name, log_store, sm)
                await asyncio.to_thread(record_identity, data_dir, record.node_id, new_name, recovered_from=old_name)
                say(f"done: node {record.node_id} is the only voter of cluster {new_name!r}: start it with "
                    f"--cluster-name {new_name}")
                return None
            except ValueError as e:
                raise Refused(str(e)) from None
            if finished:
                raise Refused(f"node {record.node_id} already belongs to cluster {new_name!r}, made of it by a forced "
                              f"recovery from cluster {record.recovered_from!r}, and has other members since: there is "
                              "nothing to recover (a new cluster name must differ from the node's)")
            answering, empty = await _answering_voters(plan, peer_timeout)
            for line in empty:
                say(line)
            if answering:
                raise Refused(
                    f"other voters of node {record.node_id}'s membership answer: {'; '.join(answering)}. The cluster "
                    "is not lost (a majority may elect a leader again), or they must be stopped first: recover only "
                    "from the survivor whose log is the longest, with every other old node stopped"
                )
            if not confirmed:
                for line in _describe(plan, data_dir, old_name, new_name, done=False):
                    say(line)
                raise Refused(f"nothing was changed: this forced recovery is unsafe (see above); give {CONFIRM_FLAG} "
                              "to do it")
            if pending is None:
                await asyncio.to_thread(record_identity, data_dir, record.node_id, old_name, recovering_to=new_name)
            plan = await force_sole_voter(record.node_id, log_store, sm)
            # The stores' owner records name the cluster too (``Raft.new`` checks them).
            await replace_owners(record.node_id, new_name, log_store, sm)
            await asyncio.to_thread(record_identity, data_dir, record.node_id, new_name, recovered_from=old_name)
        finally:
            await sm.aclose()
    finally:
        await log_store.aclose()
    for line in _describe(plan, data_dir, old_name, new_name, done=True) + _next_steps(plan, data_dir, new_name):
        say(line)
    return plan
