"""Codec kernel: ``plain_entries_prefix``, the fast path of a follower's AppendEntries
check (``validation.check_append_entries``), against both implementations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=200, deadline=None)


def _prefix(impl, entries: list, next_index: int = 5, min_term: int = 2, max_term: int = 9) -> int:
    from openraft_py.types import Blank, Entry, LogId, Normal

    return impl.plain_entries_prefix(entries, next_index, min_term, max_term, Entry, LogId, Normal, Blank)


def _plain(term: int, index: int, data: object = b"x"):
    from openraft_py.types import Entry, LogId, Normal

    return Entry(LogId(term, index), Normal(data))  # type: ignore[arg-type]  # bad data on purpose


def test_plain_entries_prefix_accepts_plain_entries(impl) -> None:
    from openraft_py.types import Blank, Entry, LogId

    entries = [_plain(2, 5), Entry(LogId(2, 6), Blank()), _plain(4, 7, b""), _plain(9, 8)]
    assert _prefix(impl, entries) == 4
    assert _prefix(impl, []) == 0


@pytest.mark.parametrize(
    "bad",
    [
        "membership",  # not plain: the caller checks it
        "index gap",
        "index repeated",
        "term below the previous",
        "term above max",
        "bool index",
        "huge index",
        "huge term",
        "str data",
        "bytearray data",
        "not an Entry",
        "log_id not a LogId",
        "unknown payload",
    ],
)
def test_plain_entries_prefix_stops_at_the_first_odd_entry(impl, bad: str) -> None:
    from openraft_py.types import Entry, LogId, Membership

    odd = {
        "membership": Entry(LogId(3, 7), Membership.new([{1}], {1: None})),  # type: ignore[dict-item]
        "index gap": _plain(3, 8),
        "index repeated": _plain(3, 6),
        "term below the previous": _plain(2, 7),
        "term above max": _plain(10, 7),
        "bool index": Entry(LogId(3, True), _plain(3, 7).payload),  # type: ignore[arg-type]
        "huge index": _plain(3, 2**64),
        "huge term": _plain(2**64, 7),
        "str data": _plain(3, 7, "x"),
        "bytearray data": _plain(3, 7, bytearray(b"x")),
        "not an Entry": (3, 7, b"x"),
        "log_id not a LogId": Entry((3, 7), _plain(3, 7).payload),  # type: ignore[arg-type]
        "unknown payload": Entry(LogId(3, 7), b"x"),  # type: ignore[arg-type]
    }[bad]
    entries = [_plain(2, 5), _plain(3, 6), odd, _plain(3, 8)]
    assert _prefix(impl, entries) == 2


def test_plain_entries_prefix_bounds_of_the_first_entry(impl) -> None:
    # The first entry continues next_index, with a term within [min_term, max_term].
    assert _prefix(impl, [_plain(1, 5)]) == 0
    assert _prefix(impl, [_plain(2, 4)]) == 0
    assert _prefix(impl, [_plain(2, 5)], max_term=1) == 0
    assert _prefix(impl, [_plain(2, 2**63 - 1)], next_index=2**63 - 1, max_term=2**63 - 1) == 1


@SETTINGS
@given(
    steps=st.lists(st.tuples(st.integers(-1, 2), st.integers(-1, 2), st.sampled_from(["n", "b", "s"])), max_size=12)
)
def test_plain_entries_prefix_matches_a_reference(impl, steps) -> None:
    # Random index and term steps: the kernel passes exactly the prefix a direct reading of
    # the contract passes.
    from openraft_py.types import Blank, Entry, LogId

    entries = []
    index, term = 5, 2
    for di, dt, kind in steps:
        index += di
        term += dt
        payload = {"n": _plain(0, 0).payload, "b": Blank(), "s": _plain(0, 0, "s").payload}[kind]
        entries.append(Entry(LogId(term, index), payload))
    want = 0
    nxt, lt = 5, 2
    for e in entries:
        ok_payload = type(e.payload) is Blank or type(e.payload.data) is bytes
        if e.log_id.index != nxt or not lt <= e.log_id.term <= 9 or not ok_payload:
            break
        want += 1
        nxt += 1
        lt = e.log_id.term
    assert _prefix(impl, entries) == want


@pytest.mark.parametrize(
    ("value", "error"),
    [(1.5, TypeError), (5.0, TypeError), ("5", TypeError), (None, TypeError), (2**63, OverflowError),
     (-(2**63) - 1, OverflowError)],
)
def test_the_bounds_are_int64_integers(impl, value, error) -> None:
    """A float bound is refused (the compiled build truncated it: ``next_index=5.5`` passed the
    entry at index 5, which the pure twin compared with 5.5 and refused) and so is one outside
    int64 (the pure twin compared it; the compiled build said "Python int too large to
    convert to C long")."""
    entries = [_plain(3, 5)]
    for args in ((value, 2, 9), (5, value, 9), (5, 2, value)):
        with pytest.raises(error):
            _prefix(impl, entries, *args)
            pytest.fail(f"took {args!r}")


def test_no_entry_follows_the_largest_index(impl) -> None:
    """After an entry at ``2**63 - 1``, no index follows (the compiled build's next index
    wrapped around to ``-2**63`` and passed an entry there; the pure twin passed ``2**63``)."""
    top = 2**63 - 1
    assert _prefix(impl, [_plain(3, top - 1), _plain(3, top)], next_index=top - 1) == 2
    for after in (-(2**63), 2**63):
        assert _prefix(impl, [_plain(3, top), _plain(3, after)], next_index=top) == 1


def test_a_list_shrunk_while_it_is_read(impl) -> None:
    """An entry type whose ``log_id`` is a property that empties the list: the scan stops at
    the list's new end (the compiled build read the next entry past it and crashed the
    interpreter with a segmentation fault)."""
    from openraft_py.types import LogId

    entries: list = []

    class Shrinking:
        payload = None

        @property
        def log_id(self) -> LogId:
            entries.clear()
            return LogId(3, 5)

    entries.extend(Shrinking() for _ in range(5))
    assert impl.plain_entries_prefix(entries, 5, 2, 9, Shrinking, LogId, bytes, type(None)) == 1
