"""Codec kernel: ``normal_data_bytes``, the payload bytes of a log append or an
AppendEntries batch, against both implementations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=200, deadline=None)


def _entry(kind: str, index: int = 1, size: int = 3):
    from openraft_py.types import Blank, Entry, LogId, Membership, Normal

    payload = {"n": Normal(b"x" * size), "b": Blank(), "m": Membership.new([{1, 2, 3}])}[kind]
    return Entry(LogId(1, index), payload)


def test_normal_data_bytes_sums_the_normal_payloads_only(impl) -> None:
    from openraft_py.types import Normal

    entries = [_entry("n", 1, 5), _entry("b", 2), _entry("m", 3), _entry("n", 4, 0), _entry("n", 5, 70_000)]
    assert impl.normal_data_bytes(entries, Normal) == 70_005
    assert impl.normal_data_bytes([], Normal) == 0
    assert impl.normal_data_bytes([_entry("b"), _entry("m")], Normal) == 0


def test_normal_data_bytes_takes_the_len_of_any_data(impl) -> None:
    # ``data`` that is not bytes (a struct built without validation) counts its ``len``;
    # one without a length raises as ``len`` does.
    from openraft_py.types import Entry, LogId, Normal

    entries = [Entry(LogId(1, 1), Normal(bytearray(b"abcd"))), Entry(LogId(1, 2), Normal(memoryview(b"xy")))]
    assert impl.normal_data_bytes(entries, Normal) == 6
    with pytest.raises(TypeError):
        impl.normal_data_bytes([Entry(LogId(1, 1), Normal(7))], Normal)  # type: ignore[arg-type]


@SETTINGS
@given(items=st.lists(st.tuples(st.sampled_from("nbm"), st.integers(0, 300)), max_size=30))
def test_normal_data_bytes_matches_a_reference(impl, items) -> None:
    from openraft_py.types import Normal

    entries = [_entry(k, i, n) for i, (k, n) in enumerate(items)]
    assert impl.normal_data_bytes(entries, Normal) == sum(n for k, n in items if k == "n")
