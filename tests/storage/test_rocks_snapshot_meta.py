"""A start on ``RocksStateMachine`` reads its current snapshot's meta, not its file (which
``get_current_snapshot`` checks whole: about 2 s per GB from disk, at every start); the
file's integrity is checked when it is first handed out, and a damaged one is found and
replaced then, logged with its path."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from openraft_py.core.restore import restore_state
from openraft_py.errors import StorageError
from openraft_py.kv import rocks_state_machine as rsm
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import IOFlushed, KvSet, encode_kv
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import Entry, LogId, Membership, Normal, SnapshotMeta

pytestmark = pytest.mark.timeout(30)


async def _stores_with_a_snapshot(root: Path) -> SnapshotMeta:
    """A state machine under ``root/sm`` that applied 1-0..=1-300 and built a snapshot at
    1-200; a log store under ``root/log`` holding those entries, purged up to the snapshot.
    Both closed."""
    sm = await RocksStateMachine.open(root / "sm")
    log_store = await RocksLogStore.open(root / "log")
    es = [Entry(LogId(1, 0), Membership.new([{1}]))] + [
        Entry(LogId(1, i), Normal(encode_kv(KvSet(f"k{i}", "v" * 40 + str(i))))) for i in range(1, 301)
    ]
    try:
        await log_store.append(es, IOFlushed(lambda e: None))
        await sm.apply(es[:201])
        snap = await sm.get_snapshot_builder().build_snapshot()
        snap.data.close()
        await sm.apply(es[201:])
        await log_store.purge(LogId(1, 200))
    finally:
        await sm.aclose()
        await log_store.aclose()
    return snap.meta


async def test_a_start_reads_no_snapshot_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``restore_state`` on reopened stores restores the snapshot id without checking (or
    opening) the snapshot file; the meta is ``get_current_snapshot``'s, which still checks
    the file when it hands it out."""
    meta = await _stores_with_a_snapshot(tmp_path)
    checked: list[str] = []
    real_check = rsm.check_snapshot

    def check_snapshot(f: Any, snapshot_id: str) -> bool:
        checked.append(snapshot_id)
        return real_check(f, snapshot_id)

    monkeypatch.setattr(rsm, "check_snapshot", check_snapshot)
    sm = await RocksStateMachine.open(tmp_path / "sm")
    log_store = await RocksLogStore.open(tmp_path / "log")
    try:
        state, _ = await restore_state(1, log_store, sm)
        assert (state.snapshot, state.applied) == (LogId(1, 200), LogId(1, 300))
        assert checked == [], "the start checked the whole snapshot file"
        assert await sm.get_current_snapshot_meta() == meta
        cur = await sm.get_current_snapshot()
        assert cur is not None
        cur.data.close()
        assert cur.meta == meta and checked == [meta.snapshot_id]
    finally:
        await sm.aclose()
        await log_store.aclose()


async def test_a_damaged_snapshot_is_found_when_first_handed_out_naming_its_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot file damaged on disk while the node was down (one byte inside a value):
    the start goes on with the recorded meta; the first ``get_current_snapshot`` (a leader
    sending it to a follower) finds the damage, logs it at ERROR with the file's path and
    hands out a snapshot built then, which covers at least as much of the log."""
    meta = await _stores_with_a_snapshot(tmp_path)
    path = tmp_path / "sm" / "snapshots" / f"{meta.snapshot_id}.snap"
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"v" * 40 + b"100") + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    sm = await RocksStateMachine.open(tmp_path / "sm")
    log_store = await RocksLogStore.open(tmp_path / "log")
    try:
        state, _ = await restore_state(1, log_store, sm)
        assert state.snapshot == LogId(1, 200)
        caplog.set_level(logging.ERROR, logger="openraft_py.kv.state_machine")
        cur = await sm.get_current_snapshot()
        assert cur is not None
        cur.data.close()
        assert cur.meta.snapshot_id != meta.snapshot_id
        assert cur.meta.last_log_id == LogId(1, 300) and cur.meta.last_log_id >= meta.last_log_id
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(str(path) in m and "is damaged" in m and "checksum mismatch" in m
                   and "building a new snapshot in its place" in m for m in errors), errors
        assert not path.exists()
        assert await sm.get_current_snapshot_meta() == cur.meta
    finally:
        await sm.aclose()
        await log_store.aclose()


async def test_a_snapshot_file_removed_while_open_fails_the_meta_as_the_snapshot(tmp_path: Path) -> None:
    """The current snapshot's file removed after the open: ``get_current_snapshot_meta``
    raises the ``StorageError`` ``get_current_snapshot`` raises, naming the file and what to
    do (it does not describe a snapshot that cannot be handed out)."""
    meta = await _stores_with_a_snapshot(tmp_path)
    async with RocksStateMachine(tmp_path / "sm") as sm:
        os.unlink(tmp_path / "sm" / "snapshots" / f"{meta.snapshot_id}.snap")
        with pytest.raises(StorageError) as from_snapshot:
            await sm.get_current_snapshot()
        with pytest.raises(StorageError) as from_meta:
            await sm.get_current_snapshot_meta()
        assert str(from_meta.value) == str(from_snapshot.value)
        assert f"{meta.snapshot_id}.snap is missing" in str(from_meta.value)


async def test_meta_of_a_fresh_state_machine_is_none(tmp_path: Path) -> None:
    async with RocksStateMachine(tmp_path / "sm") as sm:
        assert await sm.get_current_snapshot_meta() is None
        assert await sm.get_current_snapshot() is None
