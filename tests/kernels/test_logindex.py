"""LogIndex and EntryCache: unit tests and differential tests against naive models."""

from __future__ import annotations

import bisect
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=200, deadline=None)


def snapshot(li) -> tuple:
    return (li.purged(), li.key_log_ids(), li.last(), li.last_index(), li.last_term(),
            li.first_index(), len(li))


# -- LogIndex unit tests ----------------------------------------------------------------


def test_empty(impl) -> None:
    li = impl.LogIndex()
    assert snapshot(li) == (None, [], None, -1, -1, 0, 0)
    assert li.term_at(0) == -1
    assert li.term_at(-1) == -1
    assert li.term_first_index(0) == -1
    assert not li.has_log_id(-1, -1)
    assert li.first_conflict([(1, 0)]) == 0
    assert li.first_conflict([]) == 0


def test_append_and_term_at(impl) -> None:
    li = impl.LogIndex()
    li.append_term(0, 0, 1)
    li.append_term(1, 1, 3)
    li.append_term(1, 4, 2)
    li.append_many([(3, 6), (3, 7), (5, 8)])
    assert li.key_log_ids() == [(0, 0), (1, 1), (3, 6), (5, 8)]
    assert li.last() == (5, 8)
    assert len(li) == 9
    assert [li.term_at(i) for i in range(-1, 10)] == [-1, 0, 1, 1, 1, 1, 1, 3, 3, 5, -1]
    assert li.has_log_id(1, 5) and not li.has_log_id(3, 5)
    assert li.term_first_index(1) == 1
    assert li.term_first_index(3) == 6
    assert li.term_first_index(2) == -1
    assert li.term_first_index(9) == -1


def test_append_errors(impl) -> None:
    li = impl.LogIndex()
    li.append_term(2, 0, 3)
    with pytest.raises(ValueError):
        li.append_term(2, 4, 1)  # hole
    with pytest.raises(ValueError):
        li.append_term(2, 2, 1)  # overlap
    with pytest.raises(ValueError):
        li.append_term(1, 3, 1)  # lower term
    with pytest.raises(ValueError):
        li.append_term(2, 3, -1)
    with pytest.raises(ValueError):
        li.append_many([(2, 3), (2, 5)])
    with pytest.raises(ValueError):
        li.append_many([(3, 3), (2, 4)])
    assert li.last() == (2, 2), "a failed batch appends nothing"
    li.append_term(2, 3, 0)
    assert li.last() == (2, 2)


def test_truncate(impl) -> None:
    li = impl.LogIndex(None, [(1, 0), (2, 3), (4, 6)], 8)
    li.truncate_after(10)
    assert li.last_index() == 8
    li.truncate_after(6)
    assert li.key_log_ids() == [(1, 0), (2, 3), (4, 6)]
    li.truncate_after(5)
    assert li.key_log_ids() == [(1, 0), (2, 3)] and li.last() == (2, 5)
    li.truncate_after(-1)
    assert snapshot(li) == (None, [], None, -1, -1, 0, 0)
    with pytest.raises(ValueError):
        li.truncate_after(-2)
    li.append_term(1, 0, 1)


def test_purge(impl) -> None:
    li = impl.LogIndex(None, [(1, 0), (2, 3), (4, 6)], 8)
    li.purge(2, 4)
    assert li.purged() == (2, 4)
    assert li.key_log_ids() == [(2, 5), (4, 6)]
    assert li.first_index() == 5 and len(li) == 4
    assert li.term_at(4) == 2, "the purged log id still answers"
    assert li.term_at(3) == -1
    assert li.term_first_index(2) == 4
    li.purge(1, 2)  # older than purged: ignored
    assert li.purged() == (2, 4)
    with pytest.raises(ValueError):
        li.purge(3, 6)  # wrong term for a present entry
    with pytest.raises(ValueError):
        li.truncate_after(3)
    li.purge(2, 5)
    assert li.key_log_ids() == [(4, 6)]
    li.purge(4, 8)
    assert li.key_log_ids() == [] and li.last() == (4, 8) and len(li) == 0
    assert li.last_term() == 4
    with pytest.raises(ValueError):
        li.append_term(3, 9, 1)
    li.append_term(4, 9, 2)
    assert li.key_log_ids() == [(4, 9)] and li.last() == (4, 10)


def test_purge_beyond_last(impl) -> None:
    li = impl.LogIndex(None, [(1, 0)], 3)
    with pytest.raises(ValueError):
        li.purge(0, 10)
    li.purge(7, 100)
    assert snapshot(li) == ((7, 100), [], (7, 100), 100, 7, 101, 0)
    li.truncate_after(100)
    li.append_many([(7, 101), (8, 102)])
    assert li.key_log_ids() == [(7, 101), (8, 102)]


def test_constructor(impl) -> None:
    li = impl.LogIndex((3, 10), [(3, 11), (5, 20)], 25)
    assert snapshot(li) == ((3, 10), [(3, 11), (5, 20)], (5, 25), 25, 5, 11, 15)
    assert snapshot(impl.LogIndex((3, 10), [], 10)) == ((3, 10), [], (3, 10), 10, 3, 11, 0)
    assert impl.LogIndex((3, 10)).last_index() == 10
    for bad in [
        ((3, 10), [(3, 12)], 20),  # does not start after purged
        (None, [(1, 1)], 3),  # does not start at 0
        (None, [(2, 0), (1, 5)], 6),  # terms decrease
        (None, [(1, 0), (1, 5)], 6),  # repeated term
        (None, [(1, 0), (2, 0)], 6),  # indexes not increasing
        (None, [(1, 0), (2, 5)], 4),  # last_index before last key
        ((3, 10), [(2, 11)], 12),  # term below purged term
        (None, [], 5),  # last_index without keys
        ((-1, 3), [], -1),
    ]:
        with pytest.raises(ValueError):
            impl.LogIndex(*bad)


def test_first_conflict(impl) -> None:
    li = impl.LogIndex((1, 2), [(1, 3), (2, 5)], 7)
    assert li.first_conflict([(1, 3), (2, 5), (2, 7)]) == 3
    assert li.first_conflict([(0, 1), (1, 2), (1, 3)]) == 3, "<= purged counts as present"
    assert li.first_conflict([(1, 4), (3, 5)]) == 1
    assert li.first_conflict([(2, 7), (2, 8)]) == 1
    assert li.first_conflict([(3, 8)]) == 0


# -- LogIndex vs a list-of-terms model -----------------------------------------------


class Model:
    """The log as an explicit dict index -> term, plus the purged log id."""

    def __init__(self) -> None:
        self.purged: tuple[int, int] | None = None
        self.terms: dict[int, int] = {}

    @property
    def p_index(self) -> int:
        return -1 if self.purged is None else self.purged[1]

    def last(self):
        if self.terms:
            i = max(self.terms)
            return (self.terms[i], i)
        return self.purged

    def term_at(self, index: int) -> int:
        if self.purged is not None and index == self.purged[1]:
            return self.purged[0]
        return self.terms.get(index, -1)

    def keys(self) -> list[tuple[int, int]]:
        out = []
        for i in sorted(self.terms):
            if not out or out[-1][0] != self.terms[i]:
                out.append((self.terms[i], i))
        return out


op_st = st.tuples(st.sampled_from(["append", "many", "bad_append", "truncate", "purge", "purge_far"]),
                  st.integers(0, 3), st.integers(0, 6))


@SETTINGS
@given(ops=st.lists(op_st, max_size=30), probes=st.lists(st.tuples(st.integers(0, 8), st.integers(-1, 40)), max_size=8))
def test_logindex_vs_model(impl, ops, probes) -> None:
    li, m = impl.LogIndex(), Model()
    for op, a, b in ops:
        last = m.last()
        last_index = -1 if last is None else last[1]
        last_term = -1 if last is None else last[0]
        if op == "append":
            li.append_term(last_term + a if last_term >= 0 else a, last_index + 1, b)
            for i in range(b):
                m.terms[last_index + 1 + i] = last_term + a if last_term >= 0 else a
        elif op == "many":
            t, pairs = max(last_term, 0), []
            for i in range(b):
                t += a % 2
                pairs.append((t, last_index + 1 + i))
            li.append_many(pairs)
            m.terms.update({i: t for t, i in pairs})
        elif op == "bad_append":
            with pytest.raises(ValueError):
                li.append_term(max(last_term, 0), last_index + 2 + a, 1)
        elif op == "truncate":
            idx = last_index - b
            if idx < m.p_index:
                with pytest.raises(ValueError):
                    li.truncate_after(idx)
            else:
                li.truncate_after(idx)
                m.terms = {i: t for i, t in m.terms.items() if i <= idx}
        elif op == "purge":
            idx = m.p_index + 1 + b
            if idx <= last_index:
                t = m.terms[idx]
                li.purge(t, idx)
                m.terms = {i: x for i, x in m.terms.items() if i > idx}
                m.purged = (t, idx)
        else:  # purge_far
            idx, t = last_index + 1 + b, max(last_term, 0) + a
            li.purge(t, idx)
            m.terms, m.purged = {}, (t, idx)
        assert li.last() == m.last()
        assert li.purged() == m.purged
        assert li.key_log_ids() == m.keys()
        assert len(li) == len(m.terms)
        assert li.first_index() == m.p_index + 1
        last = m.last()
        assert li.last_index() == (-1 if last is None else last[1])
        assert li.last_term() == (-1 if last is None else last[0])
    hi = li.last_index() + 3
    for i in range(-2, hi):
        assert li.term_at(i) == m.term_at(i), i
    for term in range(0, 12):
        known = [i for i in range(-1, hi) if m.term_at(i) == term and i >= m.p_index]
        assert li.term_first_index(term) == (min(known) if known else -1), term
    rebuilt = impl.LogIndex(li.purged(), li.key_log_ids(), li.last_index())
    assert snapshot(rebuilt) == snapshot(li)
    # first_conflict against a probe list sorted by index
    entries = sorted({i: (t, i) for t, i in probes}.values(), key=lambda e: e[1])
    want = len(entries)
    for pos, (t, i) in enumerate(entries):
        if i > m.p_index and m.terms.get(i) != t:
            want = pos
            break
    assert li.first_conflict(entries) == want


class KeyModel:
    """The log as its key log ids ``[(term, first index)]``, last index and purged log id: the
    reference for ``term_at`` over logs of many terms (the compiled ``term_at`` looks those up
    through a table rebuilt after every change of the keys)."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []
        self.last = -1
        self.purged: tuple[int, int] | None = None

    def term_at(self, i: int) -> int:
        if self.purged is not None and i == self.purged[1]:
            return self.purged[0]
        if i > self.last or not self.keys or i < self.keys[0][1]:
            return -1
        return self.keys[bisect.bisect_right([f for _, f in self.keys], i) - 1][0]

    def last_term(self) -> int:
        return self.keys[-1][0] if self.keys else (-1 if self.purged is None else self.purged[0])


@pytest.mark.parametrize("seed", range(40))
def test_term_at_over_many_terms_vs_model(impl, seed) -> None:
    """Logs of up to a few hundred terms of very different lengths (1 entry to 10**12), with
    appends, truncations, purges and rebuilds from the key log ids interleaved with lookups at
    every key's edges and at random indexes."""
    rng = random.Random(seed)
    li, m = impl.LogIndex(), KeyModel()

    def check(what: str) -> None:
        probes = {-1, m.last, m.last + 1, rng.randint(-2, m.last + 2)}
        for _, f in m.keys:
            probes.update((f - 1, f, f + 1))
        probes.update(rng.randint(0, max(m.last, 0)) for _ in range(30))
        for i in sorted(probes):
            assert li.term_at(i) == m.term_at(i), f"seed {seed}, after {what}: term_at({i})"
            t = m.term_at(i)
            assert li.has_log_id(t, i) == (t >= 0), f"seed {seed}, after {what}: has_log_id({t}, {i})"

    for _step in range(120):
        op = rng.random()
        if op < 0.55 or not m.keys:
            term = m.last_term() + rng.randint(1, 3) if m.last_term() >= 0 else rng.randint(0, 3)
            count = rng.choice([1, 1, 2, rng.randint(1, 40), rng.randint(1_000, 10**6), 10**12])
            li.append_term(term, m.last + 1, count)
            m.keys.append((term, m.last + 1))
            m.last += count
            what = f"append_term({term}, count {count})"
        elif op < 0.7:
            lo = -1 if m.purged is None else m.purged[1]
            idx = rng.randint(lo, m.last)
            li.truncate_after(idx)
            m.keys = [(t, f) for t, f in m.keys if f <= idx]
            m.last = idx
            what = f"truncate_after({idx})"
        elif op < 0.85:
            lo = 0 if m.purged is None else m.purged[1] + 1
            if lo > m.last:
                continue
            idx = rng.randint(lo, min(m.last, lo + rng.choice([0, 5, 10**6, 10**13])))
            term = m.term_at(idx)
            li.purge(term, idx)
            kept = [(t, f) for t, f in m.keys if f > idx]
            if idx < m.last and (not kept or kept[0][1] != idx + 1):
                kept.insert(0, (m.term_at(idx + 1), idx + 1))
            m.keys, m.purged = kept, (term, idx)
            what = f"purge({term}, {idx})"
        else:
            li = impl.LogIndex(m.purged, list(m.keys), m.last)
            what = "a rebuild from the key log ids"
        assert li.key_log_ids() == m.keys, f"seed {seed}, after {what}"
        check(what)


@pytest.mark.parametrize("seed", range(10))
def test_term_at_up_to_the_largest_index(impl, seed) -> None:
    """A log of many terms whose last index is ``2**63 - 1``: the compiled lookup table's
    buckets reach past it (no overflow of the index arithmetic)."""
    rng = random.Random(seed)
    counts = [rng.choice([1, 7, 2**20, 2**40, 2**44, 2**46]) for _ in range(rng.randint(17, 80))]
    first = 2**63 - sum(counts)
    m = KeyModel()
    m.purged, m.last = (0, first - 1), first - 1
    li = impl.LogIndex(m.purged, None, m.last)
    for term, count in enumerate(counts, start=1):
        li.append_term(term, m.last + 1, count)
        m.keys.append((term, m.last + 1))
        m.last += count
    assert m.last == 2**63 - 1
    probes = {m.last, m.last - 1, first - 1, first - 2}
    for _, f in m.keys:
        probes.update((f - 1, f, f + 1))
    probes.update(rng.randint(first, m.last) for _ in range(200))
    for i in sorted(p for p in probes if p < 2**63):
        assert li.term_at(i) == m.term_at(i), f"seed {seed}: term_at({i})"


# -- EntryCache ------------------------------------------------------------------------


def test_entry_cache(impl) -> None:
    c = impl.EntryCache()
    assert (len(c), c.first_index(), c.last_index(), c.get(0, 10)) == (0, -1, -1, [])
    c.append(5, ["a", "b", "c"])
    assert (c.first_index(), c.last_index(), len(c)) == (5, 7, 3)
    assert c.get(5, 100) == ["a", "b", "c"]
    assert c.get(6, 7) == ["b"]
    assert c.get(4, 7) == [], "start not cached"
    assert c.get(8, 9) == []
    assert c.get(6, 6) == []
    with pytest.raises(ValueError):
        c.append(9, ["x"])
    with pytest.raises(ValueError):
        c.append(7, ["x"])
    c.append(8, ["d"])
    c.truncate_after(6)
    assert c.get(0, 100) == [] and c.get(5, 100) == ["a", "b"]
    c.evict_upto(5)
    assert (c.first_index(), c.last_index()) == (6, 6)
    c.evict_upto(6)
    assert (len(c), c.first_index(), c.last_index()) == (0, -1, -1)
    c.append(42, [1])
    assert c.get(42, 43) == [1]
    c.truncate_after(3)
    assert len(c) == 0
    c.append(0, [])
    assert len(c) == 0
    with pytest.raises(ValueError):
        c.append(-1, [1])


def test_entry_cache_long_run(impl) -> None:
    c = impl.EntryCache()
    for i in range(0, 10_000, 100):
        c.append(i, list(range(i, i + 100)))
        c.evict_upto(i - 50)
    assert c.first_index() == 9_851 and c.last_index() == 9_999
    assert c.get(9_900, 9_905) == list(range(9_900, 9_905))


@SETTINGS
@given(ops=st.lists(st.tuples(st.sampled_from(["append", "truncate", "evict", "get"]),
                              st.integers(0, 80), st.integers(0, 80)), max_size=60))
def test_entry_cache_vs_dict(impl, ops) -> None:
    c, d = impl.EntryCache(), {}
    for op, a, b in ops:
        if op == "append":
            start = max(d) + 1 if d else a
            items = [object() for _ in range(b % 10)]
            c.append(start, items)
            d.update({start + k: x for k, x in enumerate(items)})
        elif op == "truncate":
            c.truncate_after(a)
            d = {i: x for i, x in d.items() if i <= a}
        elif op == "evict":
            c.evict_upto(a)
            d = {i: x for i, x in d.items() if i > a}
        want = []
        if a in d:
            want = [d[i] for i in range(a, b) if i in d]
        assert c.get(a, b) == want
        assert len(c) == len(d)
        assert c.first_index() == (min(d) if d else -1)
        assert c.last_index() == (max(d) if d else -1)


# -- wrong types and the int64 range ---------------------------------------------------------


class _Index:
    """An integer only through ``__index__`` (as numpy's integers are)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def _integer_places(impl, v) -> dict[str, object]:
    """Every call of the log index kernel that takes a term, index or count, given ``v`` there."""
    def log():
        return impl.LogIndex(None, [(1, 0), (3, 4)], 9)

    def cache():
        c = impl.EntryCache()
        c.append(5, ["a", "b"])
        return c

    return {
        "LogIndex purged term": lambda: impl.LogIndex((v, 5), [], 5),
        "LogIndex purged index": lambda: impl.LogIndex((1, v), [], -1),
        "LogIndex key term": lambda: impl.LogIndex(None, [(v, 0)], 9),
        "LogIndex key index": lambda: impl.LogIndex(None, [(1, 0), (3, v)], 9),
        "LogIndex last_index": lambda: impl.LogIndex(None, [(1, 0)], v),
        "term_at": lambda: log().term_at(v),
        "has_log_id term": lambda: log().has_log_id(v, 5),
        "has_log_id index": lambda: log().has_log_id(3, v),
        "term_first_index": lambda: log().term_first_index(v),
        "first_conflict term": lambda: log().first_conflict([(1, 0), (v, 5)]),
        "first_conflict index": lambda: log().first_conflict([(1, 0), (3, v)]),
        "append_term term": lambda: log().append_term(v, 10, 1),
        "append_term first_index": lambda: log().append_term(3, v, 1),
        "append_term count": lambda: log().append_term(3, 10, v),
        "append_many term": lambda: log().append_many([(3, 10), (v, 11)]),
        "append_many index": lambda: log().append_many([(3, 10), (3, v)]),
        "truncate_after": lambda: log().truncate_after(v),
        "purge term": lambda: log().purge(v, 5),
        "purge index": lambda: log().purge(3, v),
        "EntryCache.append": lambda: cache().append(v, ["c"]),
        "EntryCache.get start": lambda: cache().get(v, 7),
        "EntryCache.get stop": lambda: cache().get(5, v),
        "EntryCache.truncate_after": lambda: cache().truncate_after(v),
        "EntryCache.evict_upto": lambda: cache().evict_upto(v),
        "empty EntryCache.get": lambda: impl.EntryCache().get(v, 3),
        "empty EntryCache.truncate_after": lambda: impl.EntryCache().truncate_after(v),
    }


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (1.5, TypeError, "'float' object cannot be interpreted as an integer"),
        (2.0, TypeError, "'float' object cannot be interpreted as an integer"),
        ("2", TypeError, "'str' object cannot be interpreted as an integer"),
        (None, TypeError, "'NoneType' object cannot be interpreted as an integer"),
        (2**63, OverflowError, "out of the int64 range [-2**63, 2**63)"),
        (-(2**63) - 1, OverflowError, "out of the int64 range [-2**63, 2**63)"),
    ],
)
def test_terms_indexes_and_counts_are_int64_integers(impl, value, error, message) -> None:
    """A float is refused, never truncated (the compiled kernel's typed arguments converted
    one through ``__int__``: ``truncate_after(1.5)`` kept index 1, where the pure twin stored
    1.5 as the last index), and so is an integer outside int64 (the pure twin took it)."""
    for place, call in _integer_places(impl, value).items():
        with pytest.raises(error) as info:
            call()
            pytest.fail(f"{place} took {value!r}")
        assert message in str(info.value), place


def test_a_refused_integer_changes_nothing(impl) -> None:
    li = impl.LogIndex(None, [(1, 0), (3, 4)], 9)
    for call in (lambda: li.truncate_after(1.5), lambda: li.purge(3, 2**63), lambda: li.append_term(3, 10, 1.0),
                 lambda: li.append_many([(3, 10), (3, 11.0)])):
        with pytest.raises((TypeError, OverflowError)):
            call()
    assert snapshot(li) == (None, [(1, 0), (3, 4)], (3, 9), 9, 3, 0, 10)


def test_index_objects_and_int_subclasses_are_integers(impl) -> None:
    li = impl.LogIndex((True, _Index(2)), [(_Index(1), 3)], _Index(5))
    li.append_term(_Index(2), _Index(6), _Index(2))
    li.append_many([(_Index(2), _Index(8))])
    assert snapshot(li) == ((1, 2), [(1, 3), (2, 6)], (2, 8), 8, 2, 3, 6)
    assert li.term_at(_Index(7)) == 2 and li.has_log_id(_Index(1), True) is False
    assert li.first_conflict([(_Index(2), _Index(7))]) == 1
    li.truncate_after(_Index(7))
    li.purge(_Index(1), _Index(4))
    assert snapshot(li) == ((1, 4), [(1, 5), (2, 6)], (2, 7), 7, 2, 5, 3)
    flat = [x for pair in [li.purged(), li.last(), *li.key_log_ids()] for x in pair]
    assert all(type(x) is int for x in flat), "stored as plain ints"
    c = impl.EntryCache()
    c.append(_Index(5), ["a", "b"])
    assert (c.first_index(), c.get(_Index(5), _Index(6))) == (5, ["a"])
    assert type(c.first_index()) is int


def test_malformed_pairs_raise_not_crash(impl) -> None:
    """A purged log id or key log id that is not a pair raises (the compiled kernel read past
    the end of a 1-tuple given as ``purged`` or as a key log id, and crashed the
    interpreter with a segmentation fault)."""
    for args in [((1,), [], 5), ([1], [], 5), ((), [], 5)]:
        with pytest.raises(IndexError):
            impl.LogIndex(*args)
    with pytest.raises(ValueError, match="not enough values to unpack"):
        impl.LogIndex(None, [(1,)], 5)
    with pytest.raises(ValueError, match="too many values to unpack"):
        impl.LogIndex(None, [(1, 0, 0)], 5)
    li = impl.LogIndex(None, [(1, 0)], 3)
    with pytest.raises(ValueError, match="not enough values to unpack"):
        li.first_conflict([(1, 0), (1,)])
    with pytest.raises(TypeError, match="cannot unpack non-iterable NoneType object"):
        li.append_many([(1, 4), None])
    assert li.last() == (1, 3)


TOP = 2**63 - 1


def test_the_int64_ceiling(impl) -> None:
    """Sums that pass int64 are answered as Python ints or refused, on both builds (the
    compiled kernel wrapped them around: after ``purge(2, 2**63 - 1)``, ``first_index()`` was
    ``-2**63``, ``append_term(1, -2**63, 1)`` on a log ending at ``2**63 - 1`` was taken, and
    ``len()`` of a log of every index raised ``SystemError``)."""
    li = impl.LogIndex(None, [(1, 0)], TOP)
    with pytest.raises(OverflowError, match="cannot fit 'int' into an index-sized integer"):
        len(li)
    with pytest.raises(ValueError, match=f"append at {-(2**63)}, expected {2**63}"):
        li.append_term(1, -(2**63), 1)
    with pytest.raises(ValueError, match=f"expected {2**63}"):
        li.append_many([(1, -(2**63))])
    li = impl.LogIndex(None, [(1, 0)], 9)
    with pytest.raises(OverflowError, match=f"last index {2**63} out of the int64 range"):
        li.append_term(1, 10, TOP - 8)
    assert li.last() == (1, 9), "nothing appended"
    li.append_term(2, 10, TOP - 9)
    assert li.last() == (2, TOP)
    li.purge(2, TOP)
    assert (li.first_index(), len(li), li.last()) == (2**63, 0, (2, TOP))
    c = impl.EntryCache()
    with pytest.raises(OverflowError, match=f"last index {2**63} out of the int64 range"):
        c.append(TOP - 1, ["a", "b", "c"])
    c.append(TOP - 1, ["a", "b"])
    assert (c.first_index(), c.last_index(), c.get(TOP, TOP)) == (TOP - 1, TOP, [])
    with pytest.raises(ValueError, match=f"append at {TOP}, expected {2**63}"):
        c.append(TOP, ["c"])
    assert c.get(TOP - 1, TOP) == ["a"] and c.get(TOP, 2**63 - 1) == []
