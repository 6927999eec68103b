"""Plug-in calls in flight on a node's tasks other than its core and state machine worker:
a replication stream reading the log store's reader, the vote writer in ``save_vote``, a
snapshot build in ``build_snapshot``.

A plug-in may call its own node from there (``await raft.client_write(...)`` from a log
read, say). Most such calls complete, since the core and the worker go on meanwhile; a few
wait for what the very task they hold up would do next, and would wait for good. ``Raft``
looks the running task up here (only while the registry is not empty: the common case costs
one truthiness test) and ``refusal`` says which of its calls to refuse, and why.

The registry maps each such task to an ``Out``: its source, ``READ`` (a replication stream
to ``target`` reading on past the entries it holds: from the cache, else the log store's
reader; ``unsent``: the first index it has not handed to ``target`` yet), ``VOTE``
(``save_vote``) or ``BUILD`` (``build_snapshot``), and the commit a call taken from there
awaits (``waiting``). Invariant: a task is in it exactly while it awaits that plug-in call
(``enter`` before the call, ``leave`` in a ``finally`` after it).

Such tasks hold each other up too: two streams whose reads each await a write, where no
majority is left without both followers, wait for each other for good, though either write
alone would commit. So a call is judged with the commits the others await (``_stuck``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..metrics import RaftMetrics
from ..types import NodeId, ServerState

__all__ = [
    "APPLIED", "BUILD", "COMMIT", "LINEARIZE", "READ", "VOTE", "CallingOut", "Out", "catch_up_refusal", "commit_awaited",
    "enter", "leave", "refusal", "waits",
]


class Out:
    """A plug-in call in flight on one of the node's tasks (``CallingOut``'s value).

    - ``source``: ``READ``, ``VOTE`` or ``BUILD``.
    - ``target``: for ``READ``, the node the stream replicates to (else ``None``).
    - ``unsent``: for ``READ``, the first index not handed to ``target`` when the read began
      (fixed while the read lasts: the stream hands nothing over meanwhile).
    - ``waiting``: the future of a call taken from inside the plug-in call that waits for a
      new entry to commit (``waits``), or ``None``. Invariant: while it is not done, the
      task waits for that commit (the caller awaits the future on this very task).
    - ``entry``: a lower bound of the index of the entry ``waiting`` waits for (the last
      log index, plus one, when the call was made).
    """

    __slots__ = ("entry", "source", "target", "unsent", "waiting")

    def __init__(self, source: str, target: NodeId | None = None, unsent: int = 0) -> None:
        self.source = source
        self.target = target
        self.unsent = unsent
        self.waiting: asyncio.Future[Any] | None = None
        self.entry = 0

    def stuck(self) -> bool:
        """Whether the task awaits a commit (a call taken from there) now."""
        return self.waiting is not None and not self.waiting.done()


CallingOut = dict["asyncio.Task[Any]", Out]
"""``RaftCore.calling_out``: the node's tasks now inside a plug-in call, with its ``Out``."""

# Sources: where the plug-in call is made from.
READ = "read"
VOTE = "vote"
BUILD = "build"

# Kinds of calls of the handle, by what they wait for.
COMMIT = "commit"
"""Waits for a new entry to commit: ``client_write``, ``client_write_many``, the membership
changes (but one that changes nothing: ``APPLIED``)."""
LINEARIZE = "linearize"
"""Waits for the leader's first entry of its term to commit (``ensure_linearizable``)."""
APPLIED = "wait().applied_index_at_least"
"""Waits for the entry at an index (the call's ``arg``) to be applied:
``wait().applied_index_at_least``, a membership change that changes nothing (answered with
the current membership entry once applied)."""


def enter(
    calling_out: CallingOut, source: str, target: NodeId | None = None, unsent: int = 0
) -> asyncio.Task[Any] | None:
    """Record the running task as making a plug-in call of ``source`` (to ``target``, not
    handed the entries from ``unsent`` on yet); return it for ``leave``. Not on the hot
    path: called only around a vote write, a build, or a stream's read past the entries it
    holds (the cache lacks them, or they fill more than one request)."""
    task = asyncio.current_task()
    if task is not None:
        calling_out[task] = Out(source, target, unsent)
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


def _majority_without(absent: set[NodeId], m: RaftMetrics) -> bool:
    """Whether every config of the effective membership keeps a majority of its voters
    without ``absent`` (an entry commits once a majority of each config acknowledged it).
    ``needed(node)`` is ``not _majority_without({node})``."""
    return all(2 * len(cfg - absent) > len(cfg) for cfg in m.membership_config.membership.configs)


def _holds_back(out: Out, m: RaftMetrics) -> tuple[NodeId, int] | None:
    """Whose acknowledgement ``out``'s task holds back while it is stuck, and from which
    index on: a stream's, its target's from ``unsent`` (what it handed over before may be
    acknowledged meanwhile), on a leader (one that stopped leading stopped its streams);
    ``save_vote``'s on a leader, the leader's own, of every entry (it counts its own log only
    once its vote is durable); else nobody's."""
    if m.state != ServerState.LEADER:
        return None
    if out.source == READ:
        assert out.target is not None
        return out.target, out.unsent
    if out.source == VOTE:
        return m.id, 0
    return None


def _stuck(calling_out: CallingOut, out: Out, entry: int, m: RaftMetrics) -> set[NodeId] | None:
    """Whether the entry at ``entry`` (or past it) that a call made on ``out``'s task waits
    for can never commit: the voters whose acknowledgements of it are held back, without
    whom no majority is left, or ``None`` (it may commit). A task that awaits a commit
    (``out``'s, and every other whose call taken before awaits one: ``Out.stuck``) holds
    back an acknowledgement (``_holds_back``) until that commit; a commit is stuck when no
    majority is left without the acknowledgements of it that stuck tasks hold back. Tasks
    whose commit may come are let go one by one (each then goes on); those left wait for
    each other for good: the largest such set. Of ``out`` alone, this is ``needed`` of the
    voter it holds back."""
    waiting = {o: o.entry for o in calling_out.values() if o is not out and o.stuck()}
    waiting[out] = entry
    held = {o: _holds_back(o, m) for o in waiting}

    def absent(need: int) -> set[NodeId]:
        return {h[0] for p in waiting if (h := held[p]) is not None and need >= h[1]}

    let_go = True
    while let_go and out in waiting:
        let_go = False
        for o, need in list(waiting.items()):
            if _majority_without(absent(need), m):
                del waiting[o]
                let_go = True
    return absent(entry) if out in waiting else None


def _held_up(absent: set[NodeId], own: NodeId, m: RaftMetrics) -> str:
    """Names the voters of ``absent`` but ``own``, each held up by a task of the node."""
    names = [
        "this leader's own log (its vote writer awaits a commit)" if nid == m.id
        else f"node {nid} (its stream's read awaits a commit)"
        for nid in sorted(absent - {own})
    ]
    return ", ".join(names)


def commit_awaited(kind: str, m: RaftMetrics, out: Out) -> int | None:
    """For a call of ``kind`` made on ``out``'s task that waits for an entry to commit, a
    lower bound of that entry's index: a ``COMMIT``'s new entry follows the log; a
    ``LINEARIZE`` made before the leader's first entry of its term committed waits for that
    entry, past the committed one (and, from a stream's read, not handed to its target: a
    new leader sends one request at a time until the target matched one). ``None``: the
    call waits for no commit."""
    if kind == COMMIT:
        return m.last_log_index + 1
    if kind == LINEARIZE and not _term_entry_committed(m):
        return max(_committed_index(m) + 1, out.unsent if out.source == READ else 0)
    return None


def waits(out: Out, kind: str, fut: asyncio.Future[Any], m: RaftMetrics, arg: object = None) -> None:
    """A call of ``kind`` (waiting for ``arg``) made on ``out``'s task was taken, and the
    task awaits ``fut`` for its outcome (or until ``fut`` is done): recorded when it waits
    for a commit (``commit_awaited``; a wait for an entry past the committed one to be
    applied waits for its commit too), for the calls made on the node's other tasks
    meanwhile (``_stuck``), until ``fut`` is done."""
    entry = commit_awaited(kind, m, out)
    if entry is None:
        entry = _applied_past_committed(kind, m, arg)
    if entry is not None:
        out.waiting = fut
        out.entry = entry


def refusal(
    calling_out: CallingOut, out: Out, kind: str, what: str, m: RaftMetrics, arg: object = None
) -> str | None:
    """Why the call ``what`` (of ``kind``: ``COMMIT``, ``LINEARIZE``, or the name of a
    ``wait()`` condition that does not hold yet, ``"wait().snapshot"`` say, with what it
    waits for, ``arg``: an index, a node id for ``"wait().current_leader"``, the state of
    ``"wait().state"``), made on a task inside the plug-in call ``out`` (as ``enter``
    records it; ``calling_out``: the registry, with the calls the node's other tasks await),
    can never complete; ``None`` when it can (it is then taken). ``m``: the node's metrics
    now.

    - ``READ`` (on a leader: once it stopped leading, its streams stopped, and nothing is
      refused): the stream to ``target`` hands nothing more over until the read returns, so
      an entry from ``unsent`` on does not commit where that needs ``target``'s
      acknowledgement (``needed``), or ``target``'s and those that the node's other tasks
      hold back while they await a commit of their own (``_stuck``: two streams whose
      reads each await a write, of a leader and two followers): a ``COMMIT`` (a new entry),
      a ``LINEARIZE`` before the term's first entry committed (a new leader sends one
      request at a time until the target matched one: that entry is never in flight beside
      a read past it), and a wait for such an entry to be applied. An entry handed over
      before (a request in flight: its answer is taken meanwhile) may commit, and anything
      else completes (heartbeats go on beside the stream).
    - ``VOTE``: the node's vote is not durable until ``save_vote`` returns, and a node
      counts its own vote and log toward a quorum only then; a follower applies what
      commits from then on only after every write submitted before it (the vote included):
      a ``COMMIT`` or a ``LINEARIZE`` before the term's first entry committed, on a leader
      that is ``needed`` (or whose other tasks hold back the rest of every majority:
      ``_stuck``); a wait for an entry past the committed one to be applied, on a follower
      or candidate, or on a leader as for a commit; on a candidate that is ``needed``, a
      wait for it to lead (it wins only with its own vote), and, where its membership is not
      joint, for any leader or for its log to grow (no election is won without its vote,
      and the grant of another vote waits behind this write: only a leader adds to its
      log). Anything else may complete (a follower appends its leader's entries meanwhile,
      a leader of three voters commits without its own, a candidate steps down when another
      campaigns in a higher term).
    - ``BUILD``: everything completes (the node applies, replicates and answers meanwhile)
      but a wait, on a leader, for a snapshot past the current one, or for a purge past it
      (a log is purged only up to its snapshot): only this build makes the next one (a
      follower may install one from its leader instead).
    """
    if out.source == READ:
        return _read_refusal(calling_out, out, kind, what, m, arg)
    if out.source == VOTE:
        return _vote_refusal(calling_out, out, kind, what, m, arg)
    if out.source == BUILD:
        return _build_refusal(kind, what, m, arg)
    return None


def _applied_past_committed(kind: str, m: RaftMetrics, arg: object) -> int | None:
    """The index a ``wait().applied_index_at_least`` waits for, when past the committed one."""
    if kind == APPLIED and type(arg) is int and arg > _committed_index(m):
        return arg
    return None


def _read_refusal(calling_out: CallingOut, out: Out, kind: str, what: str, m: RaftMetrics, arg: object) -> str | None:
    """``refusal`` from a log read on the replication stream to ``out.target``. Nothing
    is refused once the node stopped leading: its streams stopped, and it answers a write
    with ``ForwardToLeader`` at once, as anywhere else (it follows another leader's log)."""
    if m.state != ServerState.LEADER:
        return None
    entry = commit_awaited(kind, m, out)
    if entry is not None:
        why = "waits for an entry to commit"
    else:
        entry = _applied_past_committed(kind, m, arg)
        if entry is None:
            return None
        why = "waits for an entry past the committed one to be applied"
    absent = _stuck(calling_out, out, entry, m)
    if absent is None:
        return None
    target = out.target
    assert target is not None
    if needed(target, m):
        whose = f"node {target}'s acknowledgement (a voter of a config of at most two voters)"
    else:
        whose = (
            f"node {target}'s acknowledgement or that of {_held_up(absent, target, m)}, held up the same way "
            "(no majority is left without them all)"
        )
    return (
        f"{what} was called from inside node {m.id}'s log reader, on its replication stream to node "
        f"{target}, and it {why}, which needs {whose}, of an entry that stream has not sent yet: it sends "
        "nothing more until this read returns, so it would wait for good"
    )


def _vote_refusal(calling_out: CallingOut, out: Out, kind: str, what: str, m: RaftMetrics, arg: object) -> str | None:
    """``refusal`` from ``save_vote``, on the vote writer task."""
    leader = m.state == ServerState.LEADER
    committing = commit_awaited(kind, m, out)
    entry = committing if committing is not None else _applied_past_committed(kind, m, arg)
    if entry is not None and leader:
        absent = _stuck(calling_out, out, entry, m)
        if absent is None:
            return None
        what_for = "an entry to commit" if committing is not None else "an entry past the committed one to be applied"
        why = f"waits for {what_for}, which needs this leader's own log counted, and that waits for its vote"
        if not needed(m.id, m):
            why += f", or the acknowledgement of {_held_up(absent, m.id, m)} (no majority is left without them all)"
    elif entry is not None and kind == APPLIED:
        why = (
            "waits for an entry past the committed one to be applied, and a follower applies what "
            "commits from now on only once every write submitted before, this vote included, is durable"
        )
    elif m.state == ServerState.CANDIDATE and needed(m.id, m) and (leads := _awaits_a_leader(kind, m, arg)):
        why = leads
    else:
        return None
    return (
        f"{what} was called from inside node {m.id}'s log store save_vote, on its vote writer task, and "
        f"it {why}: the vote is not durable until save_vote returns, so it would wait for good"
    )


def _awaits_a_leader(kind: str, m: RaftMetrics, arg: object) -> str | None:
    """Why a wait of ``kind`` for ``arg`` made on a ``needed`` candidate holds only once a
    leader is elected that cannot be while its vote is out, or ``None``. Its own election
    needs its own vote: ``wait().state(LEADER)``, ``wait().current_leader`` of itself. Where
    its membership is not joint, every election does (every majority holds it, and a grant
    to another waits until this write is durable: the vote writer writes in order; of a
    joint one, the other config may be the cluster's, without it): a wait for another
    leader, or for its log to grow (only a leader adds to it)."""
    if (kind == "wait().state" and arg is ServerState.LEADER) or (kind == "wait().current_leader" and arg == m.id):
        return "waits for this candidate to lead, and its election needs its own vote counted"
    if m.membership_config.membership.is_joint():
        return None
    if kind == "wait().current_leader" and arg is not None:
        return (
            f"waits for node {arg} to lead, and no election is won without this candidate's vote (every majority "
            "holds it), which it grants another only once this one is durable"
        )
    if kind == "wait().log_index_at_least" and type(arg) is int and arg > m.last_log_index:
        return (
            "waits for its log to grow, which only a leader does, and no election is won without this "
            "candidate's vote (every majority holds it), which it grants another only once this one is durable"
        )
    return None


def _build_refusal(kind: str, what: str, m: RaftMetrics, arg: object) -> str | None:
    """``refusal`` from ``build_snapshot``."""
    if m.state != ServerState.LEADER:
        return None
    index = arg if type(arg) is int else None
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


def catch_up_refusal(out: Out, node_id: NodeId, node: object, threshold: int, m: RaftMetrics) -> str | None:
    """Why ``add_learner(node_id, node, blocking=True)`` made on a task inside the plug-in
    call ``out`` can never return, or ``None`` (then it is taken). From a log read on the
    stream to ``node_id`` itself, the learner's matched index cannot pass ``out.unsent - 1``
    (what the stream handed over before the read) until the read returns; the call returns
    once it is past the entry that adds ``node_id`` (the current membership entry when
    ``node_id`` is a member at ``node`` already, else a new one, past the log) and within
    ``threshold`` entries of the leader's log (which only grows)."""
    if out.source != READ or out.target != node_id or m.state != ServerState.LEADER:
        return None
    reach = out.unsent - 1
    eff = m.membership_config
    if eff.membership.nodes.get(node_id) != node:
        why = "appends an entry that this stream has not sent, and waits for the learner to hold it"
    elif eff.log_id is not None and eff.log_id.index > reach:
        why = "waits for the learner to hold the entry that added it, which this stream has not sent"
    elif m.last_log_index - reach > threshold:
        why = (
            f"waits for the learner to be within replication_lag_threshold ({threshold}) entries of this "
            f"leader's log ({m.last_log_index}), which needs entries this stream has not sent (from {out.unsent})"
        )
    else:
        return None
    return (
        f"add_learner with blocking=True was called from inside node {m.id}'s log reader, on its replication stream to "
        f"node {node_id}, and it {why}: that stream sends nothing more until this read returns, so it would "
        "wait for good (add it with blocking=False)"
    )


def _snapshot_index(m: RaftMetrics) -> int:
    """The index of the node's current snapshot (-1: none)."""
    return -1 if m.snapshot is None else m.snapshot.index
