"""How the RocksDB stores put a batch's many keys: by item assignment into the ``WriteBatch``
with the column family as its default (rocksdict's mapping slot), not one ``put`` call with
the column family each; the same keys and values in the same column families, and the
batch's default column family unset again afterwards (``docs/design/performance.md``, the
fifty-sixth round)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict, WriteBatch

from openraft_py._core import encode_index_key
from openraft_py.kv.rocks_state_machine import _DATA, _BatchKv
from openraft_py.storage import KvSet, encode_kv
from openraft_py.storage.rocks.log_format import decode_entry_records, encode_entry_records, put_entries
from openraft_py.types import BLANK, Entry, LogId, Membership, Normal, Node

pytestmark = pytest.mark.timeout(60)


class _Recorder:
    """A stand-in ``WriteBatch`` that records what is done to it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def put(self, key: bytes, value: bytes, cf: Any = None) -> None:
        self.calls.append(("put", key, value, cf))

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.calls.append(("set", key, value))

    def set_default_column_family(self, cf: Any) -> None:
        self.calls.append(("default", cf))


def _entries(n: int, first: int = 5, term: int = 3) -> list[Entry]:
    out = [Entry(LogId(term, first + i), Normal(encode_kv(KvSet(f"k{i}", f"v{i}")))) for i in range(n)]
    out[1] = Entry(LogId(term, first + 1), BLANK)
    out[2] = Entry(LogId(term, first + 2), Membership(configs=({1, 2},), nodes={1: Node(), 2: Node()}))
    return out


def _db(path: Path) -> Rdict:
    opt = Options(raw_mode=True)
    opt.create_if_missing(True)
    db = Rdict(str(path), options=opt)
    db.create_column_family("entries", Options(raw_mode=True))
    return db


def test_put_entries_assigns_items_with_the_column_family_as_default() -> None:
    entries = _entries(6)
    cf = object()
    wb = _Recorder()
    put_entries(wb, cf, entries)  # type: ignore[arg-type]
    records = encode_entry_records(entries)
    assert wb.calls == [
        ("default", cf),
        *[("set", encode_index_key(e.log_id.index), r) for e, r in zip(entries, records, strict=True)],
        ("default", None),
    ]


def test_put_entries_writes_the_entries_column_family_only_and_unsets_the_default(tmp_path: Path) -> None:
    entries = _entries(40)
    db = _db(tmp_path / "db")
    try:
        cf = db.get_column_family_handle("entries")
        wb = WriteBatch(raw_mode=True)
        put_entries(wb, cf, entries)
        wb[b"after"] = b"x"  # no column family named: the database's default one
        db.write(wb)
        stored = dict(db.get_column_family("entries").items())
        assert list(stored) == [encode_index_key(e.log_id.index) for e in entries]
        assert decode_entry_records(list(stored.values())) == entries
        assert dict(db.items()) == {b"after": b"x"}
    finally:
        db.close()


def test_put_entries_unsets_the_default_when_an_entry_does_not_encode() -> None:
    wb = _Recorder()
    cf = object()
    bad = [Entry(LogId(2**63, 1), Normal(b"x"))]  # a term the record cannot hold
    with pytest.raises(ValueError):
        put_entries(wb, cf, bad)  # type: ignore[arg-type]
    assert wb.calls in ([], [("default", cf), ("default", None)])


def test_state_machine_batch_assigns_each_key_with_the_data_column_family_as_default() -> None:
    entries = [Entry(LogId(1, i), Normal(encode_kv(KvSet(f"k{i % 3}", f"v{i}")))) for i in range(1, 8)]
    h = object()
    for responses in (None, []):
        wb = _Recorder()
        kv = _BatchKv(None, wb, h)  # type: ignore[arg-type]
        if responses is not None:
            kv._read = {f"k{j}": None for j in range(3)}  # nothing stored before: no multi-get
        assert kv.apply_sets(entries, 0, responses) == len(entries)
        # One assignment per key, its last value, in the order of the keys' first sets.
        assert wb.calls == [
            ("default", h),
            ("set", _DATA + b"k1", b"v7"),
            ("set", _DATA + b"k2", b"v5"),
            ("set", _DATA + b"k0", b"v6"),
            ("default", None),
        ]
