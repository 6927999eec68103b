"""Quorum kernel, the pure-Python reference twin of ``_quorum_c.pyx``.

Plain data in, plain data out: matched indexes are ints (``-1`` = nothing matched yet),
node ids are ints, a (joint) membership is a list of configs, each config a list of voters.

Conventions (etcd ``quorum/majority.go``):

- The committed index of one config is the largest index acknowledged by a strict
  majority (``n // 2 + 1``) of its voters: sort the matched indexes descending and take
  element ``n // 2``.
- The empty majority commits ∞ (``INF_INDEX``), so that the min over a joint config
  ``[C_old, C_new]`` with an empty half is the other half's index.
- The empty majority also grants every vote; but no configs at all is not a quorum.

Indexes and node ids are integers in int64 (``[-2**63, 2**63)``), as the compiled twin
stores them: an ``int`` or any object ``operator.index`` takes, never a float (not even
``2.0``). Anything else raises ``operator.index``'s ``TypeError``; an integer outside int64,
``OverflowError``. Both twins raise the same exception, with the same message, for the same
argument (``tests/kernels/test_twins_agree.py``). ``is_quorum_granted`` only tests its node
ids for membership, and converts none.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

INF_INDEX: int = 2**63 - 1
"""Committed index of the empty config ("the empty majority commits ∞")."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _as_int64(value: Any, what: str) -> int:
    """``value`` as a plain ``int`` in int64: ``operator.index``'s ``TypeError`` for a
    non-integer, ``OverflowError`` naming ``what`` outside ``[-2**63, 2**63)``. The fast
    paths below test ``type(x) is int`` and the range inline, and call this for the rest."""
    v = operator.index(value)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise OverflowError(f"{what} out of the int64 range [-2**63, 2**63)")
    return v


def _pair(item: Any) -> tuple[Any, Any]:
    """``item`` unpacked as ``(node_id, index)``, with Python's own errors for anything that
    is not a pair (the compiled twin calls this for all but an exact 2-tuple)."""
    node_id, index = item
    return node_id, index


def majority_committed(matched: list[int], /) -> int:
    """Return the largest index acknowledged by a strict majority of ``matched``.

    ``matched`` holds one matched index per voter of a single config (any iterable, in any
    order; not modified). Returns that element of ``matched`` itself, or ``INF_INDEX`` for an
    empty one. ``TypeError`` / ``OverflowError`` at the first element that is not an int64
    integer (module docstring). Positional-only, as in the compiled twin (where that makes
    the call cheaper).
    """
    m: list[int] = matched if type(matched) is list else list(matched)
    n = len(m)
    if n == 0:
        return INF_INDEX
    for x in m:
        if type(x) is not int:
            return _majority_any(m)
    s = sorted(m, reverse=True)
    if s[0] > _INT64_MAX or s[-1] < _INT64_MIN:
        return _majority_any(m)
    return s[n // 2]


def _majority_any(m: list[int]) -> int:
    """:func:`majority_committed` of a non-empty list of any integers (``int`` subclasses,
    ``__index__`` objects): each converted in list order, the first that is not an int64
    integer refused; the element whose value ranks ``n // 2`` (ties in list order). Ranks a
    copy: converting an element may run code that changes ``m``."""
    m = list(m)
    values = [_as_int64(x, "matched index") for x in m]
    ranked = sorted(range(len(m)), key=values.__getitem__, reverse=True)
    return m[ranked[len(m) // 2]]


def joint_committed(configs: list[list[int]], /) -> int:
    """Return the min of :func:`majority_committed` over ``configs``; ``-1`` if no configs.

    Each inner list holds the matched indexes of one config's voters. An index is
    committed in a joint membership only if every config has it on a majority.
    Positional-only, as :func:`majority_committed`.
    """
    if not configs:
        return -1
    # By value (an element may be an integer only through ``__index__``); the first of
    # equal minima, as the compiled twin.
    return min(map(majority_committed, configs), key=operator.index)


def is_quorum_granted(granted: set[int] | frozenset[int], configs: list[list[int]]) -> bool:
    """Return whether every config has a strict majority of its voters in ``granted``.

    ``configs`` are lists of node ids. An empty config counts as granted; an empty
    ``configs`` list is never a quorum (``False``).
    """
    if not configs:
        return False
    for voters in configs:
        n = len(voters)
        votes = 0
        for node_id in voters:
            if node_id in granted:
                votes += 1
        if n and votes <= n // 2:
            return False
    return True


class ProgressTable:
    """The leader's matched index per target, with an incrementally maintained commit.

    ``ProgressTable(configs, learners, self_id)``: ``configs`` are the voter id lists of
    the (joint) membership, ``learners`` the non-voting members, ``self_id`` the leader
    (it is usually a voter and is tracked like any other node; the caller updates it
    when its own log is flushed). Every node starts at matched ``-1``. Node ids and indexes
    are int64 integers (module docstring), checked in argument order, each method's before
    it looks its node up.

    Invariants:
    - ``matched`` only grows through :meth:`update`; only :meth:`reset` can lower it.
    - ``committed()`` always equals ``joint_committed`` recomputed from scratch over the
      current matched indexes (``-1`` when there are no configs). It is recomputed only
      when a voter's matched index changes.
    """

    __slots__ = ("_configs", "_learners", "_self_id", "_matched", "_voters", "_committed")

    def __init__(self, configs: list[list[int]], learners: list[int], self_id: int) -> None:
        cfgs = [list(c) for c in configs]
        lrn = list(learners)
        # Ids as plain ints, checked in order: configs, learners, self_id.
        self._configs: list[list[int]] = [[_as_int64(n, "node id") for n in c] for c in cfgs]
        self._learners: list[int] = [_as_int64(n, "node id") for n in lrn]
        self._self_id: int = _as_int64(self_id, "node id")
        # Invariant: one entry per voter (of any config) and learner.
        self._matched: dict[int, int] = {}
        # Invariant: the set of node ids appearing in any config.
        self._voters: frozenset[int] = frozenset(n for c in self._configs for n in c)
        for n in self._voters:
            self._matched[n] = -1
        for n in self._learners:
            self._matched.setdefault(n, -1)
        self._committed: int = self._recompute()

    def _recompute(self) -> int:
        matched = self._matched
        return joint_committed([[matched[n] for n in c] for c in self._configs])

    def update(self, node_id: int, index: int) -> int:
        """Raise ``matched[node_id]`` to ``index`` (never lowers it); return ``committed()``.

        Unknown node ids are ignored.
        """
        if type(node_id) is not int or type(index) is not int:
            node_id = _as_int64(node_id, "node id")
            index = _as_int64(index, "matched index")
        old = self._matched.get(node_id)
        # The range checks, each only where the value could be out of range: every tracked
        # id is in int64, and so is ``old``.
        if old is None:
            _as_int64(node_id, "node id")
            _as_int64(index, "matched index")
        elif index > old:
            if index > _INT64_MAX:
                _as_int64(index, "matched index")
            self._matched[node_id] = index
            if node_id in self._voters:
                self._committed = self._recompute()
        elif index < _INT64_MIN:
            _as_int64(index, "matched index")
        return self._committed

    def update_many(self, pairs: Iterable[tuple[int, int]]) -> int:
        """Apply :meth:`update` to each ``(node_id, index)`` of ``pairs`` (any iterable of
        pairs), in order; return ``committed()``, computed once.

        An item that is not a pair raises Python's own error for unpacking it into two (the
        compiled twin calls ``_pair``), and an id or index that is not an int64 integer that
        of :meth:`update`; the items before it stay applied, as with :meth:`update` called
        for each, and ``committed()`` counts them.
        """
        changed = False
        matched = self._matched
        voters = self._voters
        lo, hi = _INT64_MIN, _INT64_MAX
        try:
            for node_id, index in pairs:
                if type(node_id) is not int or type(index) is not int:
                    node_id = _as_int64(node_id, "node id")
                    index = _as_int64(index, "matched index")
                old = matched.get(node_id)
                # The range checks as in ``update``.
                if old is None:
                    _as_int64(node_id, "node id")
                    _as_int64(index, "matched index")
                elif index > old:
                    if index > hi:
                        _as_int64(index, "matched index")
                    matched[node_id] = index
                    if node_id in voters:
                        changed = True
                elif index < lo:
                    _as_int64(index, "matched index")
        finally:
            # Also when an item was refused: ``_committed`` is always computed from
            # ``_matched`` as it is.
            if changed:
                self._committed = self._recompute()
        return self._committed

    def reset(self, node_id: int, index: int) -> int:
        """Set ``matched[node_id]`` to exactly ``index`` (may lower it); return ``committed()``.

        Used when a follower's log was found truncated. ``KeyError`` for an unknown id.
        NB: the committed index can move backwards here; the caller keeps its own
        monotonic commit and must never un-commit.
        """
        nid = _as_int64(node_id, "node id")
        index = _as_int64(index, "matched index")
        if nid not in self._matched:
            raise KeyError(node_id)
        if self._matched[nid] != index:
            self._matched[nid] = index
            if nid in self._voters:
                self._committed = self._recompute()
        return self._committed

    def matched(self, node_id: int) -> int:
        """Return the matched index of ``node_id``; ``KeyError`` if it is not tracked."""
        nid = _as_int64(node_id, "node id")
        if nid not in self._matched:
            raise KeyError(node_id)
        return self._matched[nid]

    def committed(self) -> int:
        """Return the joint committed index (``-1`` if nothing is committed or no configs)."""
        return self._committed

    def voter_ids(self) -> list[int]:
        """Return the sorted ids of all voters (union of the configs)."""
        return sorted(self._voters)

    def learner_ids(self) -> list[int]:
        """Return the sorted ids of the learners that are not also voters."""
        return sorted(n for n in set(self._learners) if n not in self._voters)

    def target_ids(self) -> list[int]:
        """Return the sorted ids of every tracked node except ``self_id`` (replication targets)."""
        return sorted(n for n in self._matched if n != self._self_id)

    def as_dict(self) -> dict[int, int]:
        """Return a copy of ``{node_id: matched}`` for every tracked node."""
        return dict(self._matched)

    def __len__(self) -> int:
        return len(self._matched)

    def __repr__(self) -> str:
        body = " ".join(f"{n}:{m}" for n, m in sorted(self._matched.items()))
        return f"ProgressTable(committed={self._committed} {body})"
