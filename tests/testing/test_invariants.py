"""The shared safety checks of ``openraft_py.testing.invariants``: each passes on logs and
states that respect its property and raises ``Violation`` (an ``AssertionError``) naming the
nodes and the index on ones that break it."""

from __future__ import annotations

import pytest

from openraft_py.testing.invariants import (
    Violation,
    check_applied_agree,
    check_compaction_order,
    check_election_safety,
    check_leader_completeness,
    check_log_matching,
)
from openraft_py.types import Entry, LogId, Normal


def e(term: int, index: int, data: bytes | None = None) -> Entry:
    return Entry(LogId(term, index), Normal(data if data is not None else f"t{term}i{index}".encode()))


def log(*terms: int, offset: int = 0) -> tuple[int, list[Entry]]:
    return offset, [e(t, offset + k) for k, t in enumerate(terms)]


def test_violation_is_an_assertion_error() -> None:
    assert issubclass(Violation, AssertionError)


def test_election_safety_records_and_refuses_a_second_leader() -> None:
    leaders: dict[int, int] = {}
    check_election_safety(leaders, 1, 1)
    check_election_safety(leaders, 1, 1)
    check_election_safety(leaders, 2, 3)
    assert leaders == {1: 1, 2: 3}
    with pytest.raises(Violation, match="two leaders in term 2: n3 and n2"):
        check_election_safety(leaders, 2, 2)


def test_log_matching_holds_for_diverging_tails_and_offsets() -> None:
    # n1 and n2 share terms up to index 2 then diverge (different terms: allowed); n3 holds
    # only from index 2 on (the rest purged).
    check_log_matching({1: log(1, 1, 1, 2, 2), 2: log(1, 1, 1, 3), 3: log(1, 2, offset=2), 4: (0, [])})


def test_log_matching_refuses_a_different_entry_below_a_common_log_id() -> None:
    a = log(1, 1, 2, 2)
    b_entries = list(log(1, 1, 2, 2)[1])
    b_entries[1] = e(1, 1, b"other")  # same log id, different payload, below the match at 3
    with pytest.raises(Violation, match=r"between n1 and n2: they agree at index 3 .* differ at 1"):
        check_log_matching({1: a, 2: (0, b_entries)})


def test_log_matching_compares_with_offsets() -> None:
    a = log(1, 1, 1, 1, 1)
    b = (2, [e(1, 2, b"x"), e(1, 3), e(1, 4)])
    with pytest.raises(Violation, match="differ at 2"):
        check_log_matching({1: a, 2: b})


def test_leader_completeness() -> None:
    committed = {1: (e(1, 1), 1), 2: (e(2, 2), 2), 3: (e(3, 3), 3)}
    # A leader of term 2 needs the entries committed up to term 2, not the one of term 3;
    # an entry below its offset is covered by its snapshot.
    check_leader_completeness(1, 2, (2, [e(2, 2)]), committed)
    with pytest.raises(Violation, match=r"leader n2 \(term 3\) lacks committed entry .* at 3"):
        check_leader_completeness(2, 3, log(1, 1, 2), committed)
    with pytest.raises(Violation, match="at 2"):
        check_leader_completeness(2, 2, (0, [e(1, 0), e(1, 1), e(1, 2)]), committed)


def test_applied_agree() -> None:
    check_applied_agree({})
    check_applied_agree({1: [b"a", b"b", b"c"], 2: [b"a"], 3: []})
    with pytest.raises(Violation, match="n2 applied b'x' at position 1, n1 applied b'b'"):
        check_applied_agree({1: [b"a", b"b", b"c"], 2: [b"a", b"x"]})


def test_compaction_order() -> None:
    check_compaction_order(1, None, None, None, -1)
    check_compaction_order(1, LogId(1, 3), LogId(1, 3), LogId(1, 5), 7)
    with pytest.raises(Violation, match="n1: purged 4 <= snapshot 3"):
        check_compaction_order(1, LogId(1, 4), LogId(1, 3), LogId(1, 5), 7)
    with pytest.raises(Violation, match="applied 8 <= committed 7"):
        check_compaction_order(1, None, None, LogId(1, 8), 7)
