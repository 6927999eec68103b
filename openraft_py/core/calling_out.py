"""Plug-in calls in flight on a node's tasks other than its core and state machine worker:
a replication stream reading the log store's reader, the vote writer in ``save_vote``, a
snapshot build in ``build_snapshot``.

A plug-in may call its own node from there (``await raft.client_write(...)`` from a log
read, say). Most such calls complete, since the core and the worker go on meanwhile; a few
wait for what the very task they hold up would do next, and would wait for good. ``Raft``
looks the running task up here (only while the registry is not empty: the common case costs
one truthiness test) and ``refusal`` says which of its calls to refuse, and why.

The registry maps each such task to ``(source, target, unsent)``: ``READ`` (a replication
stream to ``target`` reading on past the entries it holds: from the cache, else the log
store's reader; ``unsent``: the first index it has not handed to ``target`` yet), ``VOTE``
(``save_vote``) or ``BUILD`` (``build_snapshot``). Invariant: a task is in it exactly while
it awaits that plug-in call (``enter`` before the call, ``leave`` in a ``finally`` after it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..metrics import RaftMetrics
from ..types import NodeId, ServerState

__all__ = ["BUILD", "COMMIT", "LINEARIZE", "READ", "VOTE", "CallingOut", "enter", "leave", "refusal"]

CallingOut = dict["asyncio.Task[Any]", tuple[str, "NodeId | None", int]]
"""``RaftCore.calling_out``: the node's tasks now inside a plug-in call, with its source."""

# Sources: where the plug-in call is made from.
READ = "read"
VOTE = "vote"
BUILD = "build"

# Kinds of calls of the handle, by what they wait for.
COMMIT = "commit"
"""Waits for a new entry to commit: ``client_write``, ``client_write_many``, the membership
changes."""
LINEARIZE = "linearize"
"""Waits for the leader's first entry of its term to commit (``ensure_linearizable``)."""


def enter(
    calling_out: CallingOut, source: str, target: NodeId | None = None, unsent: int = 0
) -> asyncio.Task[Any] | None:
    """Record the running task as making a plug-in call of ``source`` (to ``target``, not
    handed the entries from ``unsent`` on yet); return it for ``leave``. Not on the hot
    path: called only around a vote write, a build, or a stream's read past the entries it
    holds (the cache lacks them, or they fill more than one request)."""
    task = asyncio.current_task()
    if task is not None:
        calling_out[task] = (source, target, unsent)
    return task


def leave(calling_out: CallingOut, task: asyncio.Task[Any] | None) -> None:
    """The plug-in call recorded by ``enter`` (which returned ``task``) ended."""
    if task is not None:
        calling_out.pop(task, None)


def needed(node: NodeId, m: RaftMetrics) -> bool:
    """Whether every quorum of the effective membership holds ``node``: it is a voter of a
    config of at most two voters (a majority of one or two is all of them; of three or more,
    one voter less is still a majority)."""
    return any(node in cfg and len(cfg) <= 2 for cfg in m.membership_config.membership.configs)


def _term_entry_committed(m: RaftMetrics) -> bool:
    """Whether the leader's first entry of its term is committed (the read index of
    ``ensure_linearizable`` is then committed already)."""
    return m.committed is not None and m.committed.term >= m.current_term


def _committed_index(m: RaftMetrics) -> int:
    """The committed index (-1: nothing committed)."""
    return -1 if m.committed is None else m.committed.index


def refusal(
    out: tuple[str, NodeId | None, int], kind: str, what: str, m: RaftMetrics, arg: object = None
) -> str | None:
    """Why the call ``what`` (of ``kind``: ``COMMIT``, ``LINEARIZE``, or the name of a
    ``wait()`` condition that does not hold yet, ``"wait().snapshot"`` say, with what it
    waits for, ``arg``: an index, or the state of ``"wait().state"``), made on a task inside the plug-in call ``out``
    (``(source, target, unsent)``, as ``enter`` records it), can never complete; ``None``
    when it can (it is then taken). ``m``: the node's metrics now.

    - ``READ``: the stream to ``target`` hands nothing more over until the read returns, so
      an entry from ``unsent`` on that needs ``target``'s acknowledgement to commit
      (``needed``) does not commit: a ``COMMIT`` (a new entry), a ``LINEARIZE`` before the
      term's first entry committed (a new leader sends one request at a time until the
      target matched one: that entry is never in flight beside a read past it), and a wait
      for such an entry to be applied. An entry handed over before (a request in flight:
      its answer is taken meanwhile) may commit, and anything else completes (heartbeats go
      on beside the stream).
    - ``VOTE``: the node's vote is not durable until ``save_vote`` returns, and a node
      counts its own vote and log toward a quorum only then; a follower applies what
      commits from then on only after every write submitted before it (the vote included):
      a ``COMMIT`` or a ``LINEARIZE`` before the term's first entry committed, on a leader
      that is ``needed``; a wait for an entry past the committed one to be applied, on a
      follower or candidate, or on a leader that is ``needed``; a wait for a candidate that
      is ``needed`` to lead (it wins only with its own vote). Anything else may complete (a
      follower appends its leader's entries meanwhile, a leader of three voters commits
      without its own, a candidate steps down when another campaigns in a higher term).
    - ``BUILD``: everything completes (the node applies, replicates and answers meanwhile)
      but a wait, on a leader, for a snapshot past the current one, or for a purge past it
      (a log is purged only up to its snapshot): only this build makes the next one (a
      follower may install one from its leader instead).
    """
    source, target, unsent = out
    index = arg if type(arg) is int else None
    first_uncommitted = _committed_index(m) + 1
    uncommitted = index is not None and index >= first_uncommitted
    if source == READ:
        assert target is not None
        if not needed(target, m):
            return None
        # (An entry the stream holds back: not committed, and not handed to ``target``.)
        held_back = index is not None and index >= max(first_uncommitted, unsent)
        if kind == COMMIT or (kind == LINEARIZE and not _term_entry_committed(m)):
            why = "waits for an entry to commit"
        elif kind == "wait().applied_index_at_least" and held_back:
            why = "waits for an entry past the committed one to be applied"
        else:
            return None
        return (
            f"{what} was called from inside node {m.id}'s log reader, on its replication stream to node "
            f"{target}, and it {why}, which needs node {target}'s acknowledgement (a voter of a config of "
            f"at most two voters) of an entry that stream has not sent yet: it sends nothing more until this "
            "read returns, so it would wait for good"
        )
    if source == VOTE:
        leader = m.state == ServerState.LEADER
        if kind in (COMMIT, LINEARIZE):
            if not leader or not needed(m.id, m) or (kind == LINEARIZE and _term_entry_committed(m)):
                return None
            why = "waits for an entry to commit, which needs this leader's own log counted, and that waits for its vote"
        elif kind == "wait().applied_index_at_least" and uncommitted:
            if not leader:
                why = (
                    "waits for an entry past the committed one to be applied, and a follower applies what "
                    "commits from now on only once every write submitted before, this vote included, is durable"
                )
            elif needed(m.id, m):
                why = "waits for an entry past the committed one to be applied, which needs this leader's own log counted"
            else:
                return None
        elif (
            kind == "wait().state" and arg is ServerState.LEADER and m.state == ServerState.CANDIDATE
            and needed(m.id, m)
        ):
            why = "waits for this candidate to lead, and its election needs its own vote counted"
        else:
            return None
        return (
            f"{what} was called from inside node {m.id}'s log store save_vote, on its vote writer task, and "
            f"it {why}: the vote is not durable until save_vote returns, so it would wait for good"
        )
    if source == BUILD and m.state == ServerState.LEADER:
        if kind == "wait().snapshot":
            why = "waits for a snapshot past the current one"
        elif kind == "wait().purged" and index is not None and index > _snapshot_index(m):
            why = "waits for a purge past the current snapshot, and so for a snapshot past it (a log is purged only up to its snapshot)"
        else:
            return None
        return (
            f"{what} was called from inside node {m.id}'s snapshot builder (build_snapshot), and it {why}, "
            "which only this build would make: it would wait for good"
        )
    return None


def _snapshot_index(m: RaftMetrics) -> int:
    """The index of the node's current snapshot (-1: none)."""
    return -1 if m.snapshot is None else m.snapshot.index
