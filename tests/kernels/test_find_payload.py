"""Codec kernel: ``find_payload``, the membership scan of a log append and of a state
machine's apply, against both implementations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=200, deadline=None)


def _entry(kind: str, index: int = 1):
    from openraft_py.types import Blank, Entry, LogId, Membership, Normal

    payload = {"n": Normal(b"x"), "b": Blank(), "m": Membership.new([{1, 2, 3}])}[kind]
    return Entry(LogId(1, index), payload)


def test_find_payload_finds_the_first_one_at_or_after_start(impl) -> None:
    from openraft_py.types import Blank, Membership, Normal

    entries = [_entry(k, i) for i, k in enumerate("nmbnm")]
    assert impl.find_payload(entries, Membership) == 1
    assert impl.find_payload(entries, Membership, 1) == 1
    assert impl.find_payload(entries, Membership, 2) == 4
    assert impl.find_payload(entries, Membership, 5) == -1
    assert impl.find_payload(entries, Membership, 99) == -1
    assert impl.find_payload(entries, Membership, -3) == 1  # below 0 counts as 0
    assert impl.find_payload(entries, Blank) == 2
    assert impl.find_payload(entries, Normal, 1) == 3
    assert impl.find_payload([], Membership) == -1
    assert impl.find_payload([_entry("n"), _entry("b")], Membership) == -1


@SETTINGS
@given(kinds=st.lists(st.sampled_from("nbm"), max_size=20), start=st.integers(-2, 22))
def test_find_payload_matches_a_reference(impl, kinds, start) -> None:
    from openraft_py.types import Membership

    entries = [_entry(k, i) for i, k in enumerate(kinds)]
    want = next((i for i, k in enumerate(kinds) if k == "m" and i >= start), -1)
    assert impl.find_payload(entries, Membership, start) == want
