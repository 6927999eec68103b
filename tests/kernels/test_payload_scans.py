"""What the two payload scans of a batch share (``find_payload``, the membership scan, and
``normal_data_bytes``, the payload bytes), against both implementations: each counts a
payload of exactly the type it is given (a subclass is another type); it reads ``payload`` as
``getattr`` does, from any object; an entry without one raises ``AttributeError``; and a read
that runs code and shrinks the list ends the scan at the new end. Each scan's own contract is
tested in its module."""

from __future__ import annotations

from typing import Any

import pytest

# Per scan: its call on a batch, and what it makes of the payloads below.
SCANS = {
    #                  [Plain(1), Plain(hit)]  [a 3-byte normal entry, Computed()]  shrunk to the first entry
    "find_payload": (1, 1, -1),
    "normal_data_bytes": (5, 8, 3),
}


def _scan(impl, name: str, entries: list[Any], payload_type: type | None = None) -> int:
    """The scan ``name`` of ``entries`` for ``payload_type`` (by default the type it is used
    for: ``Membership`` for ``find_payload``, ``Normal`` for ``normal_data_bytes``)."""
    from openraft_py.types import Membership, Normal

    if name == "find_payload":
        return impl.find_payload(entries, Membership if payload_type is None else payload_type)
    return impl.normal_data_bytes(entries, Normal if payload_type is None else payload_type)


def _hit(name: str) -> Any:
    """A payload the scan counts: a membership for one, 5 bytes of data for the other."""
    from openraft_py.types import Membership, Normal

    return Membership.new([{1}]) if name == "find_payload" else Normal(b"12345")


@pytest.mark.parametrize(("name", "for_normal", "for_subclass"), [("find_payload", 1, 0), ("normal_data_bytes", 3, 2)])
def test_a_scan_wants_the_exact_type(impl, name: str, for_normal: int, for_subclass: int) -> None:
    # find_payload: the index of the first such payload; normal_data_bytes: their bytes.
    from openraft_py.types import Entry, LogId, Normal

    class MyNormal(Normal):
        pass

    entries = [Entry(LogId(1, 1), MyNormal(b"xx")), Entry(LogId(1, 2), Normal(b"yyy"))]
    assert _scan(impl, name, entries, Normal) == for_normal
    assert _scan(impl, name, entries, MyNormal) == for_subclass


@pytest.mark.parametrize("name", SCANS)
def test_a_scan_reads_any_object_with_a_payload(impl, name: str) -> None:
    # Not only Entry structs: an attribute read through getattr (a plain class, a property).
    from openraft_py.types import Entry, LogId, Normal

    class Plain:
        def __init__(self, payload: object) -> None:
            self.payload = payload

    class Computed:
        @property
        def payload(self) -> object:
            return _hit(name)

    plain, computed, _ = SCANS[name]
    assert _scan(impl, name, [Plain(1), Plain(_hit(name))]) == plain
    assert _scan(impl, name, [Entry(LogId(1, 1), Normal(b"xyz")), Computed()]) == computed


@pytest.mark.parametrize("name", SCANS)
def test_a_scan_raises_for_an_entry_without_a_payload(impl, name: str) -> None:
    from openraft_py.types import Entry, LogId, Normal

    with pytest.raises(AttributeError):
        _scan(impl, name, [Entry(LogId(1, 1), Normal(b"x")), object()])


@pytest.mark.parametrize("name", SCANS)
def test_a_scan_survives_a_list_shrinking_under_it(impl, name: str) -> None:
    # A payload read that runs code may shrink the list: the scan stops at the new end (the
    # entries it drops would count).
    from openraft_py.types import Entry, LogId, Normal

    entries: list = []

    class Shrinking:
        @property
        def payload(self) -> object:
            del entries[1:]
            return Normal(b"abc")

    entries.extend([Shrinking(), Entry(LogId(1, 2), _hit(name)), Entry(LogId(1, 3), _hit(name))])
    assert _scan(impl, name, entries) == SCANS[name][2]
    assert len(entries) == 1
