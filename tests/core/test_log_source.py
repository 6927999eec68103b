"""``LogSource``: reads come from the cache first and from the log reader for the rest; a
purge waits for a storage read in flight that covers what it deletes, and only for that;
store errors and short answers are reported as ``StorageError`` / ``Panicked``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py._core import EntryCache
from openraft_py.core.log_source import LogSource
from openraft_py.errors import LogCompacted, Panicked, StorageError
from openraft_py.types import Entry, LogId, Normal

pytestmark = pytest.mark.timeout(10)


def entries(start: int, stop: int) -> list[Entry]:
    return [Entry(LogId(1, i), Normal(b"%d" % i)) for i in range(start, stop)]


class Reader:
    """A log reader over ``[0, 100)``; while ``gate`` is set, each read waits for it."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.gate: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.short = False
        self.shift = 0

    async def try_get_log_entries(self, start: int, stop: int) -> list[Any]:
        self.calls.append((start, stop))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return entries(start + self.shift, (stop - 1 if self.short else stop) + self.shift)


def source(cached_from: int = 50) -> tuple[LogSource, Reader]:
    cache = EntryCache()
    cache.append(cached_from, entries(cached_from, 100))
    r = Reader()
    return LogSource(1, cache, r), r  # type: ignore[arg-type]


async def test_a_cached_range_does_not_touch_storage() -> None:
    src, r = source()
    got = await src.read(60, 70)
    assert [e.log_id.index for e in got] == list(range(60, 70))
    assert r.calls == []


async def test_what_the_cache_lacks_is_read_from_storage() -> None:
    src, r = source()
    # The cache does not hold the start: the whole range comes from storage.
    got = await src.read(40, 55)
    assert [e.log_id.index for e in got] == list(range(40, 55))
    # The cache holds the start but not the end: only the rest comes from storage.
    got = await src.read(95, 105)
    assert [e.log_id.index for e in got] == list(range(95, 105))
    assert r.calls == [(40, 55), (100, 105)]


async def test_cached_never_awaits_and_is_empty_outside_the_cache() -> None:
    src, _ = source()
    assert src.cached(10, 20) == []
    assert src.cached(5, 5) == []
    assert [e.log_id.index for e in src.cached(98, 120)] == [98, 99]


async def test_a_purge_waits_for_a_read_covering_it() -> None:
    src, r = source()
    r.gate = asyncio.Event()
    read = asyncio.ensure_future(src.read_storage(10, 20))
    await asyncio.sleep(0)
    purge = asyncio.ensure_future(src.purge_allowed(15))
    beyond = asyncio.ensure_future(src.purge_allowed(9))
    for _ in range(5):
        await asyncio.sleep(0)
    assert beyond.done() and not purge.done()
    r.gate.set()
    await read
    await asyncio.wait_for(purge, 5)


async def test_a_failed_read_releases_the_purge_and_names_the_cause() -> None:
    src, r = source()
    r.gate = asyncio.Event()
    r.error = LogCompacted("purged up to 30")
    read = asyncio.ensure_future(src.read(10, 20))
    await asyncio.sleep(0)
    purge = asyncio.ensure_future(src.purge_allowed(30))
    r.gate.set()
    with pytest.raises(StorageError) as ei:
        await read
    assert isinstance(ei.value.__cause__, LogCompacted)
    await asyncio.wait_for(purge, 5)


async def test_a_short_answer_is_a_bug_of_the_store() -> None:
    src, r = source()
    r.short = True
    with pytest.raises(Panicked):
        await src.read(0, 10)


@pytest.mark.parametrize("shift", [1, -1])
async def test_entries_of_other_indexes_are_a_bug_of_the_store(shift: int) -> None:
    """An off-by-one store answers with as many entries, of other indexes: they would have
    been replicated or applied in place of the ones asked for."""
    src, r = source()
    r.shift = shift
    with pytest.raises(Panicked, match=rf"log store returned entries 1-{5 + shift}\.\.1-{9 + shift} for \[5, 10\)"):
        await src.read(5, 10)


async def test_a_stray_cancelled_error_of_the_reader_is_a_storage_error() -> None:
    """A reader that lets out a ``CancelledError`` of its own (its task is not being
    cancelled): a failed read, which used to end the replication task that read, unreported
    (its request stayed in flight for good)."""
    src, r = source()
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.cancel()
    r.error = None
    r.gate = None

    async def stray(start: int, stop: int) -> list[Any]:
        await fut
        return []

    r.try_get_log_entries = stray  # type: ignore[method-assign]
    with pytest.raises(StorageError, match="try_get_log_entries raised CancelledError"):
        await src.read(0, 10)
    assert src._reads == {}  # the read is not tracked any more


async def test_a_cancelled_read_is_still_cancelled() -> None:
    src, r = source()
    r.gate = asyncio.Event()
    task = asyncio.ensure_future(src.read(0, 10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_begin_and_end_read_track_an_outside_read() -> None:
    src, _ = source()
    token = src.begin_read(5)
    purge = asyncio.ensure_future(src.purge_allowed(5))
    await asyncio.sleep(0)
    assert not purge.done()
    src.end_read(token)
    src.end_read(token)  # a second end is harmless
    await asyncio.wait_for(purge, 5)
