"""The Raft safety properties as plain functions over nodes' logs and states, shared by the
simulator's checker (``openraft_py.testing.sim.checks``), the integration tests
(``tests/integration/checks.py``) and the engine test harness (``tests/engine/harness.py``).

Each check takes what it needs as plain values (no runtime, no storage class) and raises
``Violation`` (an ``AssertionError``, so pytest reports it as a failed assertion) with a
message naming the nodes and the index, or returns ``None`` when the property holds.

A node's log is given as a ``HeldLog``: ``(offset, entries)``, where ``entries[k]`` is the
entry at index ``offset + k`` (``MemDisk.offset`` / ``MemDisk.entries``; an engine test log
that starts at index 0 is ``(0, entries)``). Only the entries a node still holds are compared:
purged ones are covered by its snapshot.

The properties (Raft paper, Figure 3, plus log compaction):

- election safety: at most one leader per term (``check_election_safety``);
- log matching: two logs holding the same log id at an index agree on every entry up to it
  (``check_log_matching``);
- leader completeness: a leader holds every entry committed in a term up to its own
  (``check_leader_completeness``);
- state machine safety: the nodes' applied sequences are prefixes of one another
  (``check_applied_agree``);
- log compaction: purged <= snapshot <= applied <= committed on a node
  (``check_compaction_order``).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, TypeAlias

from ..types import Entry, LogId, NodeId

__all__ = [
    "HeldLog",
    "Violation",
    "check_applied_agree",
    "check_compaction_order",
    "check_election_safety",
    "check_leader_completeness",
    "check_log_matching",
]

HeldLog: TypeAlias = tuple[int, Sequence[Entry]]
"""``(offset, entries)``: ``entries[k]`` is the entry at index ``offset + k``; ``entries`` is a
list (slices of the two logs are compared with ``==``)."""


class Violation(AssertionError):
    """A Raft safety property broke (the simulator also raises it for liveness); the message
    says which, between which nodes, where."""


def check_election_safety(leaders: MutableMapping[int, NodeId], term: int, node: NodeId) -> None:
    """Record that ``node`` leads ``term`` in ``leaders`` (``term -> leader``, kept by the
    caller across calls) and raise ``Violation`` if another node was seen leading that term."""
    prev = leaders.setdefault(term, node)
    if prev != node:
        raise Violation(f"two leaders in term {term}: n{prev} and n{node}")


def _top_match(a: HeldLog, b: HeldLog) -> tuple[int, int, int]:
    """``(lo, hi, top)``: the index range both logs hold, and the highest index in it where
    their log ids are equal (``lo - 1`` if none)."""
    oa, la = a
    ob, lb = b
    lo = max(oa, ob)
    hi = min(oa + len(la), ob + len(lb))
    for i in range(hi - 1, lo - 1, -1):
        if la[i - oa].log_id == lb[i - ob].log_id:
            return lo, hi, i
    return lo, hi, lo - 1


def check_log_matching(logs: Mapping[NodeId, HeldLog]) -> None:
    """Log matching, pairwise: for every two nodes, take the highest index both hold with the
    same log id; every entry both hold up to that index must be equal. Raises ``Violation``
    naming the two nodes, that index and the first index where they differ."""
    ids = sorted(logs)
    for k, a in enumerate(ids):
        oa, la = logs[a]
        for b in ids[k + 1 :]:
            ob, lb = logs[b]
            lo, _, top = _top_match(logs[a], logs[b])
            if top < lo:
                continue
            # Slices compare in C; the per-index walk runs only to describe a failure.
            if la[lo - oa : top - oa + 1] == lb[lo - ob : top - ob + 1]:
                continue
            i = next(i for i in range(lo, top + 1) if la[i - oa] != lb[i - ob])
            raise Violation(
                f"log matching broken between n{a} and n{b}: they agree at index {top} "
                f"({la[top - oa].log_id!r}) but differ at {i}: {la[i - oa]!r} vs {lb[i - ob]!r}"
            )


def check_leader_completeness(
    leader: NodeId, term: int, log: HeldLog, committed: Mapping[int, tuple[Entry, int]]
) -> None:
    """Leader completeness: ``leader``, leading ``term`` with ``log``, holds every entry of
    ``committed`` (``index -> (entry, the term in which it was first seen committed)``) seen
    committed in a term ``<= term``. Entries below the log's offset are covered by its
    snapshot and not checked. Raises ``Violation`` naming the missing entry."""
    off, entries = log
    for i, (e, seen_term) in committed.items():
        if seen_term > term or i < off:
            continue
        if i - off >= len(entries) or entries[i - off] != e:
            raise Violation(f"leader n{leader} (term {term}) lacks committed entry {e!r} at {i}")


def check_applied_agree(applied: Mapping[NodeId, Sequence[Any]]) -> None:
    """State machine safety: every node's applied sequence (entries, or ``(log_id, data)``
    records: anything comparable with ``==``) is a prefix of the longest one. Raises
    ``Violation`` naming the first position where a node differs."""
    if not applied:
        return
    ids = sorted(applied, key=lambda n: len(applied[n]), reverse=True)
    longest = list(applied[ids[0]])
    for n in ids[1:]:
        al = list(applied[n])
        if al != longest[: len(al)]:
            k = next(i for i, (x, y) in enumerate(zip(al, longest)) if x != y)
            raise Violation(
                f"state machine safety violated: n{n} applied {al[k]!r} at position {k}, "
                f"n{ids[0]} applied {longest[k]!r}"
            )


def _index(log_id: LogId | None) -> int:
    return -1 if log_id is None else log_id.index


def check_compaction_order(
    node: NodeId,
    purged: LogId | None,
    snapshot: LogId | None,
    applied: LogId | None,
    committed: int,
) -> None:
    """Log compaction on one node: purged <= snapshot <= applied <= committed (only what a
    snapshot covers is purged, a snapshot covers only applied entries, only committed entries
    are applied). ``None`` log ids count as index -1; ``committed`` is an index (-1: none).
    Raises ``Violation`` with the four indexes."""
    pi, si, ai = _index(purged), _index(snapshot), _index(applied)
    if not (pi <= si <= ai <= committed):
        raise Violation(
            f"n{node}: purged {pi} <= snapshot {si} <= applied {ai} <= committed {committed} broken"
        )
