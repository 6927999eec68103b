"""Process-level WAL corruption test of RocksLogStore (issue 9, "a WAL corruption test").

A child (``rocks_crash_child``) appends and saves votes until it has acknowledged enough
entries; the parent SIGKILLs it (an unclean stop: the data is only in the write-ahead log),
then, for each case, copies the directory, damages the live WAL (the newest ``<n>.log``) and
reopens it. The rule checked: either the store opens and holds every acknowledged entry (with
its payload) and a vote not behind the last acknowledged one, or the open raises
``StorageError`` naming the path. Never a silently shortened log.

Cases: one byte flipped at the start, in the middle, near the end and in the last byte; the
length field of the first record flipped; the length field of the first record of the last
32 KiB block and of the last record flipped (RocksDB's tail tolerance takes these for a record
cut off by a crash and drops the rest without an error: the store's acknowledged mark turns
that into ``StorageError``); and a torn tail (a partial record appended after the last one,
which a crash mid-write leaves and which was never acknowledged): the store must open.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openraft_py.errors import StorageError
from openraft_py.storage.rocks import RocksLogStore
from tests.process.rocks_crash_child import payload

ROOT = Path(__file__).resolve().parents[2]
MIN_ACKED = 2500  # enough for a WAL of several 32 KiB blocks
BLOCK = 32 * 1024  # RocksDB's log block size
HEADER = 7  # crc32c (4), length (2, little-endian), type (1)

pytestmark = pytest.mark.timeout(120)


def _newest_wal(path: Path) -> Path:
    wals = sorted((p for p in path.iterdir() if p.name.endswith(".log") and p.name[:-4].isdigit()), key=lambda p: int(p.name[:-4]))
    assert wals, f"no WAL in {sorted(os.listdir(path))}"
    return wals[-1]


def _last_block_records(data: bytes) -> list[int]:
    """Offsets of the record headers in the last (partial) block of a WAL file."""
    off = (len(data) // BLOCK) * BLOCK
    if off == len(data):
        off -= BLOCK
    out = []
    while off + HEADER <= len(data):
        out.append(off)
        off += HEADER + int.from_bytes(data[off + 4:off + 6], "little")
    return out


def _flip(wal: Path, offset: int) -> None:
    with open(wal, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def _torn_tail(wal: Path) -> None:
    """Append the start of a record that was never finished (header says 1000 bytes)."""
    with open(wal, "ab") as f:
        f.write(b"\x12\x34\x56\x78" + (1000).to_bytes(2, "little") + b"\x01" + b"partial")


CASES: dict[str, Callable[[Path, bytes], None]] = {
    "start": lambda w, d: _flip(w, 0),
    "first-record-length": lambda w, d: _flip(w, 5),
    "middle": lambda w, d: _flip(w, len(d) // 2),
    "near-end": lambda w, d: _flip(w, len(d) - 100),
    "last-byte": lambda w, d: _flip(w, len(d) - 1),
    "last-block-first-length": lambda w, d: _flip(w, _last_block_records(d)[0] + 5),
    "last-record-length": lambda w, d: _flip(w, _last_block_records(d)[-1] + 5),
    "torn-tail": lambda w, d: _torn_tail(w),
}


class Crashed:
    """The directory of a store whose writer was SIGKILLed, and what it had acknowledged."""

    def __init__(self, path: Path, acked: int, voted: int) -> None:
        self.path = path
        self.acked = acked
        self.voted = voted


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashed]:
    root = tmp_path_factory.mktemp("walcorrupt")
    path = root / "log"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.process.rocks_crash_child", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    acked, voted = -1, 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while acked < MIN_ACKED and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            kind, _, num = line.decode().partition(" ")
            if kind == "A":
                acked = max(acked, int(num))
            elif kind == "V":
                voted = max(voted, int(num))
        proc.send_signal(signal.SIGKILL)
        for line in proc.stdout:  # acknowledgements written before the kill landed
            kind, _, num = line.decode().partition(" ")
            if kind == "A":
                acked = max(acked, int(num))
            elif kind == "V":
                voted = max(voted, int(num))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        err = proc.stderr.read().decode() if proc.stderr is not None else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert acked >= MIN_ACKED, f"the child acknowledged only {acked}: {err[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert os.path.getsize(_newest_wal(path)) > 2 * BLOCK, "the WAL is too small for the cases"
    yield Crashed(path, acked, voted)
    shutil.rmtree(root, ignore_errors=True)


async def _check_all_acknowledged(path: Path, acked: int, voted: int) -> None:
    store = RocksLogStore(path)
    try:
        state = await store.get_log_state()
        last = -1 if state.last_log_id is None else state.last_log_id.index
        assert last >= acked, f"silent loss: the log ends at {last}, {acked} was acknowledged"
        got = await store.try_get_log_entries(0, acked + 1)
        assert [e.log_id.index for e in got] == list(range(acked + 1)), "a hole in the log"
        for e in got:
            assert e.payload.data == payload(e.log_id.index), f"entry {e.log_id} corrupted"  # type: ignore[union-attr]
        vote = await store.read_vote()
        assert (0 if vote is None else vote.term) >= voted, f"the vote {vote} is behind the acknowledged term {voted}"
    finally:
        await store.aclose()


def test_unflipped_copy_opens_with_everything(crashed: Crashed, tmp_path: Path) -> None:
    """The control: the crashed directory itself reopens with every acknowledged write."""
    copy = tmp_path / "log"
    shutil.copytree(crashed.path, copy)
    try:
        asyncio.run(asyncio.wait_for(_check_all_acknowledged(copy, crashed.acked, crashed.voted), 30))
    finally:
        shutil.rmtree(copy, ignore_errors=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_wal_never_loses_acknowledged_entries_silently(crashed: Crashed, tmp_path: Path, case: str) -> None:
    copy = tmp_path / "log"
    shutil.copytree(crashed.path, copy)
    wal = _newest_wal(copy)
    CASES[case](wal, wal.read_bytes())
    try:
        asyncio.run(asyncio.wait_for(_check_all_acknowledged(copy, crashed.acked, crashed.voted), 30))
    except StorageError as e:
        assert str(copy) in str(e), f"{case}: the error does not name the path: {e}"
        assert case != "torn-tail", f"a torn, never acknowledged tail must be dropped, not refused: {e}"
        # The refusal changed nothing: the same refusal again.
        with pytest.raises(StorageError):
            RocksLogStore(copy)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
