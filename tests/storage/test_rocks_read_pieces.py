"""``RocksLogReader`` reads of large entries share the GIL with the event loop.

A leader reads the entries a follower or learner lacks from its log store (the entry cache
holds only the newest). rocksdict holds the GIL while it copies a value out, and the batch
decode is one ``_core`` call: one read of 300 entries of 64 kB (19.7 MB) held the leader's
loop for 25-50 ms at a time, and a read of 64 such entries ran on the loop itself. A read is
now copied and decoded ``READ_PIECE_MAX_BYTES`` at a time in a worker thread (the GIL
released between two pieces), and a read on the loop stops at ``INLINE_READ_MAX_BYTES``.
The tests count what one decode call handles and where it runs, not wall times.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from openraft_py.errors import StorageError
from openraft_py.storage import IOFlushed
from openraft_py.storage.rocks import RocksLogStore, log_store
from openraft_py.types import Entry, LogId, Normal

PIECE = 1024 * 1024  # log_store.READ_PIECE_MAX_BYTES (stated here: the test holds the contract)
INLINE = 256 * 1024  # log_store.INLINE_READ_MAX_BYTES
BIG = 64 * 1024


def big(term: int, index: int) -> Entry:
    return Entry(LogId(term, index), Normal(index.to_bytes(8, "big") * (BIG // 8)))


async def append_durable(store: RocksLogStore, batch: list[Entry]) -> None:
    loop = asyncio.get_running_loop()
    ack: asyncio.Future[BaseException | None] = loop.create_future()
    await store.append(batch, IOFlushed(ack.set_result, loop))
    assert await asyncio.wait_for(ack, 30) is None


class Decodes:
    """Records every batch decode of the log store: its stored bytes and its thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int]] = []
        real = log_store.decode_entry_records

        def recorded(blobs: list[bytes]) -> list[Entry]:
            self.calls.append((sum(map(len, blobs)), threading.get_ident()))
            return real(blobs)

        monkeypatch.setattr(log_store, "decode_entry_records", recorded)


def test_the_stated_limits_are_the_stores() -> None:
    assert log_store.READ_PIECE_MAX_BYTES == PIECE
    assert log_store.INLINE_READ_MAX_BYTES == INLINE


async def test_a_large_read_is_decoded_in_pieces_in_a_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 entries of 64 kB (6.5 MB) read in one call: decoded in pieces of at most
    ``READ_PIECE_MAX_BYTES`` plus one record, none on the loop's thread; the entries come back
    whole and in order (also a range starting mid-log)."""
    written = [big(1, i) for i in range(100)]
    async with RocksLogStore(tmp_path / "log") as s:
        await append_durable(s, written)
        decodes = Decodes(monkeypatch)
        assert await s.try_get_log_entries(0, 100) == written
        assert len(decodes.calls) >= 6, decodes.calls
        assert max(n for n, _ in decodes.calls) <= PIECE + BIG + 64, decodes.calls
        assert threading.get_ident() not in {t for _, t in decodes.calls}
        assert await s.try_get_log_entries(37, 99) == written[37:99]


async def test_a_short_read_of_large_entries_is_not_decoded_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``INLINE_READ_MAX`` (64) entries of 64 kB (4 MB) are more than ``INLINE_READ_MAX_BYTES``:
    read in a worker thread, not on the loop; 64 small entries still are read on the loop."""
    async with RocksLogStore(tmp_path / "log") as s:
        written = [big(1, i) for i in range(64)]
        await append_durable(s, written)
        decodes = Decodes(monkeypatch)
        assert await s.try_get_log_entries(0, 64) == written
        assert decodes.calls and threading.get_ident() not in {t for _, t in decodes.calls}, decodes.calls
        # Exactly at the limit in stored bytes: on the loop.
        small = [Entry(LogId(1, i), Normal(b"s" * 100)) for i in range(64, 128)]
        await append_durable(s, small)
        decodes.calls.clear()
        assert await s.try_get_log_entries(64, 128) == small
        assert [t for _, t in decodes.calls] == [threading.get_ident()]


def _record(term: int, index: int, payload: bytes) -> bytes:
    """An ``entries`` value as the log store writes it for a ``Normal`` entry."""
    return term.to_bytes(8, "big") + index.to_bytes(8, "big") + bytes([1]) + payload


def _tamper(path: Path, put: dict[int, bytes], delete: tuple[int, ...] = ()) -> None:
    """Write and delete records of the closed log store at ``path`` behind its back."""
    from rocksdict import Options, Rdict

    db = Rdict(str(path), Options(raw_mode=True), column_families={cf: Options(raw_mode=True) for cf in ("entries", "meta")})
    cf = db.get_column_family("entries")
    for i, v in put.items():
        cf[i.to_bytes(8, "big")] = v
    for i in delete:
        del cf[i.to_bytes(8, "big")]
    cf.close()
    del cf
    db.close()
    del db


@pytest.mark.parametrize(
    ("put", "delete", "error"),
    [
        ({70: b"xx"}, (), "the record of entry 70 (key 0000000000000046) does not decode"),
        ({70: _record(2, 71, b"q")}, (), "the record of entry 70 (key 0000000000000046) holds index 71"),
        # Term 1 after term 2: the term of the previous piece's last entry is carried over.
        ({70: _record(1, 70, b"q")}, (), "the record of entry 70 holds term 1, below the term 2 of the entry before it"),
        ({}, (70,), "no entry at index 70"),
    ],
    ids=["short", "index", "term-down", "hole"],
)
async def test_a_damaged_record_in_a_later_piece_is_a_storage_error_naming_it(
    tmp_path: Path, put: dict[int, bytes], delete: tuple[int, ...], error: str
) -> None:
    """A damaged record or a hole past the first piece of a read in pieces: ``StorageError``
    naming the entry, as in a read of one piece (``test_rocks.py``)."""
    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, [big(2, i) for i in range(100)])
    _tamper(p, put, delete)
    async with RocksLogStore(p) as s:
        assert await s.try_get_log_entries(0, 70) == [big(2, i) for i in range(70)]
        with pytest.raises(StorageError) as ei:
            await asyncio.wait_for(s.try_get_log_entries(0, 100), 30)
        assert error in str(ei.value), str(ei.value)


async def test_a_read_in_pieces_cancelled_leaves_no_image_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read handed from the loop to a thread (more than ``INLINE_READ_MAX_BYTES``) closes its
    image once the thread is done, also when its caller was cancelled meanwhile."""
    images: list[Any] = []

    class Recorded(log_store.BoundedIter):  # type: ignore[misc, name-defined]
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            images.append(self)

    async with RocksLogStore(tmp_path / "log") as s:
        await append_durable(s, [big(1, i) for i in range(64)])
        monkeypatch.setattr(log_store, "BoundedIter", Recorded)
        read = asyncio.ensure_future(s.try_get_log_entries(0, 64))
        await asyncio.sleep(0)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(read, 10)
        assert len(images) == 1 and not hasattr(images[0], "_it")
