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
"""

from __future__ import annotations

INF_INDEX: int = 2**63 - 1
"""Committed index of the empty config ("the empty majority commits ∞")."""


def majority_committed(matched: list[int], /) -> int:
    """Return the largest index acknowledged by a strict majority of ``matched``.

    ``matched`` holds one matched index per voter of a single config (any order; not
    modified). Returns that element of ``matched`` itself, or ``INF_INDEX`` for an empty list.
    Positional-only, as in the compiled twin (where that makes the call cheaper).
    """
    n = len(matched)
    if n == 0:
        return INF_INDEX
    return sorted(matched, reverse=True)[n // 2]


def joint_committed(configs: list[list[int]], /) -> int:
    """Return the min of :func:`majority_committed` over ``configs``; ``-1`` if no configs.

    Each inner list holds the matched indexes of one config's voters. An index is
    committed in a joint membership only if every config has it on a majority.
    Positional-only, as :func:`majority_committed`.
    """
    if not configs:
        return -1
    return min(map(majority_committed, configs))


def is_quorum_granted(granted: set[int] | frozenset[int], configs: list[list[int]]) -> bool:
    """Return whether every config has a strict majority of its voters in ``granted``.

    ``configs`` are lists of node ids. An empty config counts as granted; an empty
    ``configs`` list is never a quorum (``False``).
    """
    if not configs:
        return False
    for voters in configs:
        votes = 0
        for node_id in voters:
            if node_id in granted:
                votes += 1
        if voters and votes <= len(voters) // 2:
            return False
    return True


class ProgressTable:
    """The leader's matched index per target, with an incrementally maintained commit.

    ``ProgressTable(configs, learners, self_id)``: ``configs`` are the voter id lists of
    the (joint) membership, ``learners`` the non-voting members, ``self_id`` the leader
    (it is usually a voter and is tracked like any other node; the caller updates it
    when its own log is flushed). Every node starts at matched ``-1``.

    Invariants:
    - ``matched`` only grows through :meth:`update`; only :meth:`reset` can lower it.
    - ``committed()`` always equals ``joint_committed`` recomputed from scratch over the
      current matched indexes (``-1`` when there are no configs). It is recomputed only
      when a voter's matched index changes.
    """

    __slots__ = ("_configs", "_learners", "_self_id", "_matched", "_voters", "_committed")

    def __init__(self, configs: list[list[int]], learners: list[int], self_id: int) -> None:
        self._configs: list[list[int]] = [list(c) for c in configs]
        self._learners: list[int] = list(learners)
        self._self_id: int = self_id
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
        old = self._matched.get(node_id)
        if old is not None and index > old:
            self._matched[node_id] = index
            if node_id in self._voters:
                self._committed = self._recompute()
        return self._committed

    def update_many(self, pairs: list[tuple[int, int]]) -> int:
        """Apply :meth:`update` to each ``(node_id, index)``; return ``committed()`` once."""
        changed = False
        matched = self._matched
        for node_id, index in pairs:
            old = matched.get(node_id)
            if old is not None and index > old:
                matched[node_id] = index
                if node_id in self._voters:
                    changed = True
        if changed:
            self._committed = self._recompute()
        return self._committed

    def reset(self, node_id: int, index: int) -> int:
        """Set ``matched[node_id]`` to exactly ``index`` (may lower it); return ``committed()``.

        Used when a follower's log was found truncated. ``KeyError`` for an unknown id.
        NB: the committed index can move backwards here; the caller keeps its own
        monotonic commit and must never un-commit.
        """
        if node_id not in self._matched:
            raise KeyError(node_id)
        if self._matched[node_id] != index:
            self._matched[node_id] = index
            if node_id in self._voters:
                self._committed = self._recompute()
        return self._committed

    def matched(self, node_id: int) -> int:
        """Return the matched index of ``node_id``; ``KeyError`` if it is not tracked."""
        return self._matched[node_id]

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
