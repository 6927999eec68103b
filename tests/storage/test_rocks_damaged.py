"""A RocksDB store whose files were damaged on disk (a flipped byte, a truncated or removed
file) is refused at open with a ``StorageError`` that says the database is damaged, names
the file where it can, and says what to do: keep the directory, do not delete files to make
it start, replace the node (``DAMAGED_ADVICE``). Before, most of these errors named RocksDB's
complaint alone ("Exception: Corruption: block checksum mismatch ..."), and the one for a
damaged table file blamed "a damaged write-ahead log record"."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from integration.checks import fast_config

from openraft_py import Raft, StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.storage import KvSet, encode_kv
from openraft_py.storage.rocks import DAMAGED_ADVICE, RocksLogStore

pytestmark = pytest.mark.timeout(30)


async def _make(root: Path) -> None:
    """A one-node cluster on RocksDB stores under ``root``: writes, a snapshot, the log
    purged up to it, more writes; stopped cleanly (its stores hold table files and WALs)."""
    log, sm = await RocksLogStore.open(root / "log"), await RocksStateMachine.open(root / "sm")
    router = Router(seed=3)
    raft = await Raft.new(1, fast_config(), router.factory(1), log, sm, seed=3)
    try:
        router.register(1, raft)
        await raft.initialize({1})
        await raft.wait(10).current_leader(1, "elected")
        for i in range(20):
            await raft.client_write(encode_kv(KvSet(f"k{i}", "v" * 50)))
        applied = raft.metrics.last_applied
        assert applied is not None
        await raft.trigger.snapshot()
        await raft.wait(10).snapshot(applied, "snapshot built")
        await raft.trigger.purge_log(applied.index - 5)
        for i in range(5):
            await raft.client_write(encode_kv(KvSet(f"j{i}", "w")))
    finally:
        await raft.shutdown()
        await log.aclose()
        await sm.aclose()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    root = tmp_path_factory.mktemp("damaged") / "node"
    asyncio.run(_make(root))
    return root


def _newest(db: Path, suffix: str) -> Path:
    files = sorted((p for p in db.iterdir() if p.name.endswith(suffix) and p.stat().st_size), key=lambda p: p.name)
    assert files, sorted(p.name for p in db.iterdir())
    return files[-1]


def _flip(f: Path, offset: int) -> None:
    data = bytearray(f.read_bytes())
    data[offset % len(data)] ^= 0xFF
    f.write_bytes(bytes(data))


def _truncate(f: Path, size: int) -> None:
    with open(f, "r+b") as fh:
        fh.truncate(size)


DAMAGES: dict[str, Callable[[Path], Path | None]] = {
    # each damages the database directory ``db`` and returns the file the error must name
    "table file byte flipped": lambda db: (_flip(f := _newest(db, ".sst"), 100), f)[1],
    "table file removed": lambda db: (f := _newest(db, ".sst"), f.unlink(), f)[2],
    "table file truncated": lambda db: (_truncate(f := _newest(db, ".sst"), 200), f)[1],
    "CURRENT removed": lambda db: ((db / "CURRENT").unlink(), db / "CURRENT")[1],
    "CURRENT emptied": lambda db: (_truncate(db / "CURRENT", 0), db / "CURRENT")[1],
    "MANIFEST removed": lambda db: (f := _newest(db, "MANIFEST-000005"), f.unlink(), f)[2],
    "MANIFEST truncated": lambda db: (_truncate(_newest(db, "MANIFEST-000005"), 60), None)[1],
    "write-ahead log truncated": lambda db: (_truncate(f := _newest(db, ".log"), f.stat().st_size // 3), None)[1],
    "acknowledged mark removed": lambda db: ((db / "OPENRAFT-ACKED").unlink(), db / "OPENRAFT-ACKED")[1],
    "acknowledged mark garbled": lambda db: ((db / "OPENRAFT-ACKED").write_bytes(b"\0" * 40), db / "OPENRAFT-ACKED")[1],
}


@pytest.mark.parametrize(("damage", "store"), [
    (damage, store) for damage in sorted(DAMAGES) for store in ("log", "sm")
    if (damage, store) != ("write-ahead log truncated", "sm")  # (a closed state machine's WALs are empty)
])
async def test_a_damaged_store_is_refused_saying_so_and_what_to_do(made: Path, tmp_path: Path, store: str,
                                                                  damage: str) -> None:
    root = tmp_path / "node"
    shutil.copytree(made, root)
    db = root / "log" if store == "log" else root / "sm" / "db"
    named = DAMAGES[damage](db)
    opener = RocksLogStore.open if store == "log" else RocksStateMachine.open
    with pytest.raises(StorageError) as ei:
        s = await opener(root / store)
        await s.aclose()
    msg = str(ei.value)
    assert "the database is damaged" in msg, msg
    assert DAMAGED_ADVICE in msg, msg
    assert str(db) in msg, msg
    if named is not None:
        assert named.name in msg, msg


async def test_an_undamaged_copy_opens(made: Path, tmp_path: Path) -> None:
    """The damages above are what fails the opens: the copy alone opens."""
    shutil.copytree(made, tmp_path / "node")
    log = await RocksLogStore.open(tmp_path / "node" / "log")
    sm = await RocksStateMachine.open(tmp_path / "node" / "sm")
    try:
        assert (await log.get_log_state()).last_purged_log_id is not None
        assert sm.get("j4") == "w"
    finally:
        await log.aclose()
        await sm.aclose()


@pytest.mark.parametrize("raw", [b"\xc1", b""])
async def test_a_current_meta_that_does_not_decode_is_refused_saying_to_remove_it(made: Path, tmp_path: Path,
                                                                                 raw: bytes) -> None:
    """``snapshots/current.meta`` garbled (or emptied): the state machine's data is intact, only
    the record naming its snapshot is not. The error names the file and says to remove it, as
    for a current snapshot file that is missing (it named the file alone); removed, the state
    machine opens with its data and no snapshot (a node builds one when it needs one)."""
    root = tmp_path / "node"
    shutil.copytree(made, root)
    meta = root / "sm" / "snapshots" / "current.meta"
    meta.write_bytes(raw)
    with pytest.raises(StorageError) as ei:
        s = await RocksStateMachine.open(root / "sm")
        await s.aclose()
    assert f"{meta} does not decode" in str(ei.value), str(ei.value)
    assert f"remove {meta}" in str(ei.value), str(ei.value)
    meta.unlink()
    sm = await RocksStateMachine.open(root / "sm")
    try:
        assert sm.get("j4") == "w"
        assert await sm.get_current_snapshot() is None
    finally:
        await sm.aclose()
