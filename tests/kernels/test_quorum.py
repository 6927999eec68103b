"""Quorum kernel: unit tests and differential tests against a naive oracle (STYLE 19)."""

from __future__ import annotations

import enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=200, deadline=None)
INF = 2**63 - 1


def oracle_committed_index(matched: list[int]) -> int:
    """The largest index acknowledged by at least ``n // 2 + 1`` voters (naive, O(n^2))."""
    n = len(matched)
    if n == 0:
        return INF
    q = n // 2 + 1
    return max(i for i in matched if sum(1 for m in matched if m >= i) >= q)


def oracle_joint(configs: list[list[int]]) -> int:
    return min((oracle_committed_index(c) for c in configs), default=-1)


def oracle_granted(granted: set[int], configs: list[list[int]]) -> bool:
    if not configs:
        return False
    return all(sum(1 for n in c if n in granted) * 2 > len(c) for c in configs if c)


# -- majority / joint ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matched", "want"),
    [
        ([], INF),
        ([-1], -1),
        ([5], 5),
        ([5, 3], 3),
        ([5, 3, 1], 3),
        ([1, 3, 5], 3),
        ([2, 2, 2], 2),
        ([10, 9, -1, -1], -1),
        ([10, 9, 8, -1], 8),
        ([7, 7, 1, 1, 1], 1),
        ([7, 7, 7, 1, 1], 7),
    ],
)
def test_majority_committed(impl, matched, want) -> None:
    before = list(matched)
    assert impl.majority_committed(matched) == want
    assert matched == before, "input must not be modified"


def test_inf_index_exported(impl) -> None:
    assert impl.INF_INDEX == INF


def test_majority_committed_large(impl) -> None:
    matched = list(range(101))
    assert impl.majority_committed(matched) == 50


def test_majority_returns_the_element(impl) -> None:
    """The result is the element of ``matched`` itself (no new int), with ties in list order,
    as ``sorted(..., reverse=True)[n // 2]``."""
    matched = [1000 + i for i in (5, 9, 1, 7, 3)]
    assert impl.majority_committed(matched) is matched[0]
    big = [10**6 + i for i in range(20)]
    assert impl.majority_committed(big) is big[9]
    assert impl.joint_committed([matched, big]) is matched[0]


class _Level(enum.IntEnum):
    LOW = 1
    HIGH = 7


@pytest.mark.parametrize("n", [3, 5, 20])
def test_majority_of_int_subclasses(impl, n) -> None:
    matched = [(_Level.HIGH, True, _Level.LOW)[i % 3] for i in range(n)]
    got = impl.majority_committed(matched)
    assert got == sorted(matched, reverse=True)[n // 2]
    assert type(got) is type(sorted(matched, reverse=True)[n // 2])
    assert impl.majority_committed(tuple(matched)) == got
    assert impl.joint_committed([matched, [5, 5, 5]]) == min(got, 5)


class _Clearing:
    """An index whose conversion to an int empties the list it is in."""

    def __init__(self, value: int, home: list[object]) -> None:
        self.value, self.home = value, home

    def __index__(self) -> int:
        self.home.clear()
        return self.value

    __int__ = __index__  # what Cython's int64 conversion calls

    def __lt__(self, other: _Clearing) -> bool:
        return self.value < other.value


def test_majority_survives_a_list_changed_while_read(impl) -> None:
    """The compiled twin reads a private copy of a list whose elements run Python code."""
    for n in (3, 20):
        matched: list[object] = []
        matched.extend(_Clearing(v, matched) for v in range(n))
        got = impl.majority_committed(matched)
        assert isinstance(got, _Clearing) and got.value == n - 1 - n // 2


def test_majority_positional_only(impl) -> None:
    """Both twins take ``matched`` and ``configs`` by position only."""
    with pytest.raises(TypeError):
        impl.majority_committed(matched=[1, 2, 3])
    with pytest.raises(TypeError):
        impl.joint_committed(configs=[[1, 2, 3]])


def test_joint_committed(impl) -> None:
    assert impl.joint_committed([]) == -1
    assert impl.joint_committed([[3, 4, 5]]) == 4
    assert impl.joint_committed([[3, 4, 5], [1, 2, 9]]) == 2
    assert impl.joint_committed([[3, 4, 5], []]) == 4, "the empty majority commits ∞"
    assert impl.joint_committed([[], []]) == INF


def test_is_quorum_granted(impl) -> None:
    assert impl.is_quorum_granted({1, 2}, [[1, 2, 3]])
    assert not impl.is_quorum_granted({1}, [[1, 2, 3]])
    assert not impl.is_quorum_granted({1, 2}, [[1, 2, 3, 4]])
    assert impl.is_quorum_granted(frozenset({1, 2, 3}), [[1, 2, 3, 4]])
    assert impl.is_quorum_granted({1, 2}, [[1, 2, 3], [2, 1]])
    assert not impl.is_quorum_granted({1, 2}, [[1, 2, 3], [3, 4, 5]])
    assert impl.is_quorum_granted(set(), [[]]), "an empty config counts as granted"
    assert not impl.is_quorum_granted({1}, []), "no configs is not a quorum"


configs_st = st.lists(st.lists(st.integers(-1, 20), max_size=9), max_size=3)


@SETTINGS
@given(matched=st.lists(st.integers(-1, 2**62), max_size=40))
def test_majority_vs_oracle(impl, matched) -> None:
    assert impl.majority_committed(matched) == oracle_committed_index(matched)


@SETTINGS
@given(configs=configs_st)
def test_joint_vs_oracle(impl, configs) -> None:
    assert impl.joint_committed(configs) == oracle_joint(configs)
    # symmetry: swapped halves and a self-joint give the same result
    assert impl.joint_committed(configs[::-1]) == oracle_joint(configs)
    if configs:
        assert impl.joint_committed([configs[0], configs[0]]) == oracle_joint(configs[:1])


@SETTINGS
@given(granted=st.sets(st.integers(0, 9)), configs=st.lists(st.lists(st.integers(0, 9), unique=True, max_size=7), max_size=3))
def test_granted_vs_oracle(impl, granted, configs) -> None:
    assert impl.is_quorum_granted(granted, configs) is oracle_granted(granted, configs)


# -- ProgressTable ----------------------------------------------------------------------


def test_progress_table_basics(impl) -> None:
    t = impl.ProgressTable([[1, 2, 3]], [4], 1)
    assert t.committed() == -1
    assert t.voter_ids() == [1, 2, 3]
    assert t.learner_ids() == [4]
    assert t.target_ids() == [2, 3, 4]
    assert t.as_dict() == {1: -1, 2: -1, 3: -1, 4: -1}
    assert t.update(1, 5) == -1
    assert t.update(2, 3) == 3
    assert t.update(4, 100) == 3, "learners do not count"
    assert t.update(3, 7) == 5
    assert t.update(3, 1) == 5, "update never lowers"
    assert t.matched(3) == 7
    assert t.update(99, 1000) == 5, "unknown ids are ignored"
    with pytest.raises(KeyError):
        t.matched(99)
    assert t.update_many([(1, 9), (2, 8), (99, 1)]) == 8
    assert t.reset(2, 0) == 7
    assert t.matched(2) == 0
    with pytest.raises(KeyError):
        t.reset(99, 0)
    assert t.committed() == 7
    assert len(t) == 4


def test_progress_table_joint(impl) -> None:
    t = impl.ProgressTable([[1, 2, 3], [3, 4, 5]], [6], 3)
    assert t.voter_ids() == [1, 2, 3, 4, 5]
    assert t.target_ids() == [1, 2, 4, 5, 6]
    t.update_many([(1, 10), (2, 10), (3, 10)])
    assert t.committed() == -1, "the new config has no majority yet"
    assert t.update(4, 6) == 6
    assert t.update(5, 12) == 10


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ((3,), ValueError, "not enough values to unpack (expected 2, got 1)"),
        ((3, 9, 0), ValueError, "too many values to unpack (expected 2)"),
        (None, TypeError, "cannot unpack non-iterable NoneType object"),
        ((3, 1.5), TypeError, "'float' object cannot be interpreted as an integer"),
        ((3, 2**63), OverflowError, "matched index out of the int64 range [-2**63, 2**63)"),
    ],
    ids=["short", "long", "none", "float", "overflow"],
)
def test_update_many_applies_the_items_before_a_malformed_one(impl, bad, error, message) -> None:
    """``update_many`` is ``update`` of each item in turn: an item that is not a
    ``(node_id, index)`` pair of int64 integers raises Python's own error for it (the
    compiled kernel said "need more than 1 value to unpack" where the twin said "not enough
    values to unpack (expected 2, got 1)"), and the items before it stay applied, with
    ``committed()`` computed from them (it was left at its old value: -1 here, while 1 and
    2 of the 3 voters had matched 9)."""
    t = impl.ProgressTable([[1, 2, 3]], [4], 1)
    t.update(1, 9)
    with pytest.raises(error) as info:
        t.update_many([(4, 5), (2, 9), bad, (3, 9)])
    assert str(info.value) == message
    assert t.as_dict() == {1: 9, 2: 9, 3: -1, 4: 5}
    assert t.committed() == 9 == impl.majority_committed([9, 9, -1])
    assert t.update(4, 6) == 9, "the next update answers from the same matched indexes"


def test_progress_table_edge_configs(impl) -> None:
    assert impl.ProgressTable([], [], 1).committed() == -1
    t = impl.ProgressTable([[1], []], [2, 1], 1)
    assert t.learner_ids() == [2], "a learner that is also a voter is a voter"
    assert t.target_ids() == [2]
    assert t.update(1, 4) == 4


@SETTINGS
@given(
    configs=st.lists(st.lists(st.integers(0, 7), unique=True, max_size=6), max_size=2),
    learners=st.lists(st.integers(0, 9), max_size=3),
    ops=st.lists(st.tuples(st.sampled_from(["update", "many", "reset"]), st.integers(0, 10), st.integers(-1, 50)), max_size=40),
)
def test_progress_table_vs_recompute(impl, configs, learners, ops) -> None:
    t = impl.ProgressTable(configs, learners, 0)
    model = {n: -1 for c in configs for n in c} | {n: -1 for n in learners}
    for op, node, index in ops:
        if op == "update":
            got = t.update(node, index)
            if node in model:
                model[node] = max(model[node], index)
        elif op == "many":
            pairs = [(node, index), (node + 1, index - 1)]
            got = t.update_many(pairs)
            for n, i in pairs:
                if n in model:
                    model[n] = max(model[n], i)
        else:
            if node not in model:
                with pytest.raises(KeyError):
                    t.reset(node, index)
                continue
            got = t.reset(node, index)
            model[node] = index
        want = oracle_joint([[model[n] for n in c] for c in configs])
        assert got == want == t.committed()
        assert t.as_dict() == model


class _Index:
    """An integer only through ``__index__`` (as numpy's integers are)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def _integer_places(impl, v) -> dict[str, object]:
    """Every call of the quorum kernel that takes an index or a node id, given ``v`` there."""
    def table():
        return impl.ProgressTable([[1, 2, 3]], [4], 1)

    return {
        "majority_committed": lambda: impl.majority_committed([1, v, 3]),
        "majority_committed (wide)": lambda: impl.majority_committed([*range(19), v]),
        "joint_committed": lambda: impl.joint_committed([[1, 2, 3], [v, 2, 3]]),
        "ProgressTable voter": lambda: impl.ProgressTable([[1, v]], [], 1),
        "ProgressTable learner": lambda: impl.ProgressTable([[1]], [v], 1),
        "ProgressTable self_id": lambda: impl.ProgressTable([[1]], [], v),
        "update node": lambda: table().update(v, 5),
        "update index": lambda: table().update(2, v),
        "update unknown node's index": lambda: table().update(9, v),
        "update_many node": lambda: table().update_many([(v, 5)]),
        "update_many index": lambda: table().update_many([(2, v)]),
        "reset node": lambda: table().reset(v, 5),
        "reset index": lambda: table().reset(2, v),
        "matched": lambda: table().matched(v),
    }


@pytest.mark.parametrize(
    ("value", "error"),
    [(1.5, TypeError), (2.0, TypeError), ("2", TypeError), (None, TypeError), (2**63, OverflowError), (-(2**63) - 1, OverflowError)],
)
def test_indexes_and_ids_are_int64_integers(impl, value, error) -> None:
    """A float is refused, never truncated (the compiled kernel's conversion, through
    ``__int__``, made ``update(1.5, 7)`` raise node 1's matched index, and the pure twin
    stored 1.5); as is an integer outside int64 (the pure twin stored it)."""
    for place, call in _integer_places(impl, value).items():
        with pytest.raises(error):
            call()
            pytest.fail(f"{place} took {value!r}")


def test_index_objects_and_int_subclasses_are_integers(impl) -> None:
    t = impl.ProgressTable([[1, _Index(2), 3]], [True], _Index(1))
    assert t.as_dict() == {1: -1, 2: -1, 3: -1}, "True is node 1, a voter already"
    assert t.update(_Index(2), _Index(7)) == -1
    assert t.update(True, 7) == 7
    assert t.update_many([(_Index(3), 9)]) == 7
    assert t.reset(_Index(3), _Index(8)) == 7
    assert t.matched(_Index(3)) == 8
    assert all(type(k) is int and type(v) is int for k, v in t.as_dict().items())
    got = impl.majority_committed([_Index(5), 1, _Index(9)])
    assert isinstance(got, _Index) and got.value == 5, "the element itself, as for ints"
    assert impl.joint_committed([[_Index(5), 1, 9], [2, 2, 2]]) == 2
