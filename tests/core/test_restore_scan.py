"""``core.restore.restore_state``'s scan of the log at start, on logs that are long or hold
large entries: what it reads, in how large reads, and what it says while it reads."""

from __future__ import annotations

import itertools
import logging

import pytest

from openraft_py.core import restore
from openraft_py.core.restore import restore_state
from openraft_py.storage import MemLogStore, MemStateMachine
from openraft_py.storage.memory import MemLogReader
from openraft_py.types import Entry, LogId, Membership, Normal, Vote


class SpyReader:
    """A reader that records each read's range and data bytes."""

    def __init__(self, inner: MemLogReader, reads: list[tuple[int, int, int]]) -> None:
        self._inner = inner
        self._reads = reads

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        got = await self._inner.try_get_log_entries(start, stop)
        self._reads.append((start, stop, sum(len(e.payload.data) for e in got if type(e.payload) is Normal)))
        return got

    async def read_vote(self) -> Vote | None:
        return await self._inner.read_vote()


class SpyLogStore(MemLogStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int, int]] = []

    def get_log_reader(self) -> SpyReader:  # type: ignore[override]
        return SpyReader(super().get_log_reader(), self.reads)


def _log(store: MemLogStore, sizes: list[int]) -> None:
    """Entry 0 a membership, then one normal entry of each size of ``sizes`` (term 1, then
    term 2 from the middle on)."""
    es = [Entry(LogId(1, 0), Membership.new([{1}]))]
    for i, n in enumerate(sizes, 1):
        es.append(Entry(LogId(1 if i <= len(sizes) // 2 else 2, i), Normal(b"v" * n)))
    store.append_durable(es)


async def test_the_scan_reads_every_entry_once_in_reads_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log of large entries is read in reads of about ``READ_CHUNK_BYTES`` of data each
    (here 64 KiB; 4 KiB entries, then small ones, then large again): a read of
    ``READ_CHUNK`` entries whatever their size held 256 MiB of a log of 64 KiB values at
    once. Every entry is still read exactly once, and the state is the log's."""
    monkeypatch.setattr(restore, "READ_CHUNK_BYTES", 64 * 1024)
    store = SpyLogStore()
    sizes = [4096] * 300 + [10] * 3000 + [4096] * 300
    _log(store, sizes)
    state, cache = await restore_state(1, store, MemStateMachine())
    reads = store.reads
    # Every index from 0 to the last, once, in order.
    assert [r[0] for r in reads] == [0] + [r[1] for r in reads[:-1]] and reads[-1][1] == len(sizes) + 1
    # The first read asks for READ_FIRST entries; each later one for as many as fit the
    # budget at the average size the read before it saw.
    assert reads[0][1] - reads[0][0] == restore.READ_FIRST
    for (s0, e0, b0), (s1, e1, _b1) in itertools.pairwise(reads):
        assert e1 - s1 <= max(1, min(restore.READ_CHUNK, 64 * 1024 * (e0 - s0) // max(b0, 1)))
    # Within a run of large entries no read holds more than the budget (and one entry: the
    # membership entry in the first read counts no data).
    uniform = [b for s, e, b in reads if s >= 1 and all(n == 4096 for n in sizes[s - 1 : e - 1])]
    assert len(uniform) > 10 and max(uniform) <= 64 * 1024 + 4096
    assert state.last_log_id() == LogId(2, len(sizes)) and state.log_ids.term_at(len(sizes) // 2 + 1) == 2
    assert cache.last_index() == len(sizes)


async def test_a_log_of_small_entries_is_read_in_reads_of_read_chunk_entries() -> None:
    """Small entries: after the first read, each read asks for ``READ_CHUNK`` entries (as
    many calls as before the byte bound)."""
    store = SpyLogStore()
    _log(store, [8] * 10_000)
    await restore_state(1, store, MemStateMachine())
    counts = [e - s for s, e, _b in store.reads]
    assert counts[0] == restore.READ_FIRST
    assert counts[1:-1] == [restore.READ_CHUNK] * (len(counts) - 2)


async def test_a_long_scan_says_at_info_what_it_does(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A log of more than ``SCAN_INFO_ENTRIES`` entries (here 1,000): the node says at INFO
    that it reads its log and answers nothing meanwhile, how far it is every
    ``SCAN_PROGRESS_SECONDS`` (here after every read), and when it is done; a start on
    5,000,000 entries took 12 s with nothing logged. A short quick scan says nothing."""
    monkeypatch.setattr(restore, "SCAN_INFO_ENTRIES", 1000)
    monkeypatch.setattr(restore, "SCAN_PROGRESS_SECONDS", 0.0)
    store = MemLogStore()
    _log(store, [8] * 10_000)
    with caplog.at_level(logging.INFO, logger="openraft_py.core.restore"):
        await restore_state(7, store, MemStateMachine())
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines[0].startswith("node 7: reading its log at start (entries 0 to 10000, 10001 entries)"), lines
    assert "answers no request until this is done" in lines[0]
    assert "node 7: reading its log at start: 16 of 10001 entries read in" in lines[1], lines
    assert len(lines) == 2 + 3 and lines[-1].startswith("node 7: read its log of 10001 entries at start in "), lines
    caplog.clear()
    monkeypatch.setattr(restore, "SCAN_PROGRESS_SECONDS", 60.0)
    small = MemLogStore()
    _log(small, [8] * 999)
    with caplog.at_level(logging.INFO, logger="openraft_py.core.restore"):
        await restore_state(7, small, MemStateMachine())
    assert caplog.records == []
