"""Stores a program forgets to close: a ``RocksLogStore`` or ``RocksStateMachine`` collected
without ``close()`` / ``aclose()`` is closed then, with a ``ResourceWarning`` naming its path
(as Python's own files). A log store kept its writer thread, about a dozen descriptors and
RocksDB's lock (its path could not be opened again in the process) until the process ended,
and nothing said so."""

from __future__ import annotations

import asyncio
import gc
import re
import threading
from pathlib import Path

import pytest
from rocksdict import WriteBatch

from openraft_py.errors import StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import IOFlushed, KvSet, encode_kv
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import Entry, LogId, Normal, Vote


async def _loop_passes() -> None:
    """Let the loop run what the store scheduled on it (it holds the store until then)."""
    for _ in range(5):
        await asyncio.sleep(0)


def _writer_threads(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"rocks-log-writer:{path}"]


def _closer_threads(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"rocks-log-closer:{path}"]


async def _append(store: RocksLogStore, first: int, n: int) -> None:
    """Append ``n`` entries from index ``first`` and wait until they are durable."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[BaseException | None] = loop.create_future()
    batch = [Entry(LogId(1, i), Normal(b"x%d" % i)) for i in range(first, first + n)]
    await store.append(batch, IOFlushed(lambda e: done.set_result(e), loop))
    assert await asyncio.wait_for(done, 10) is None


async def test_a_log_store_collected_unclosed_is_closed_with_a_resource_warning(tmp_path: Path) -> None:
    path = tmp_path / "log"
    store = RocksLogStore(path)
    await store.save_vote(Vote.new(1, 1))
    await _append(store, 0, 3)  # the writer thread (the WAL syncer is not ready yet)
    await _append(store, 3, 3)  # the loop's fast path (Linux native AIO): the loop watches its eventfd
    await _append(store, 6, 600)  # the writer thread (too many for the fast path)
    await store.save_committed(LogId(1, 605))  # waits for the next write, or the close
    assert _writer_threads(path)
    for _ in range(1000):  # the writer thread drops its last write's callback once idle again
        if not store._writer._busy:
            break
        await asyncio.sleep(0.005)
    await _loop_passes()
    with pytest.warns(ResourceWarning, match=re.escape(f"unclosed log store at {str(path)!r}")):
        del store
        gc.collect()  # (the store refers to itself: it is collected by the cycle collector)
    assert not _writer_threads(path)
    reopened = RocksLogStore(path)  # refused before: "the database is in use (its LOCK is held)"
    try:
        assert (await reopened.get_log_state()).last_log_id == LogId(1, 605)
        assert await reopened.read_committed() == LogId(1, 605)  # written by the close
        assert await reopened.read_vote() == Vote.new(1, 1)
    finally:
        await reopened.aclose()


async def test_a_log_store_collected_in_its_writer_thread_is_closed_from_another_thread(tmp_path: Path) -> None:
    """The close joins the writer thread, so when the collection happens in that thread
    (the cycle collector runs in whichever thread allocates) a closer thread does it."""
    path = tmp_path / "log"
    store = RocksLogStore(path)
    await _append(store, 0, 2)

    def build(store: RocksLogStore = store) -> WriteBatch:  # runs in the writer thread
        store.__del__()
        return WriteBatch(raw_mode=True)

    with pytest.warns(ResourceWarning, match="unclosed log store"):
        store._writer.submit(build, lambda e: None)
        # The closer thread is started before the writer thread can end, and its close ends
        # the fast path on this loop (``_close_aio``), so the loop must keep running until the
        # closer has warned: a blocking join here held the closer, and the warning came after
        # this block (seen under load: "DID NOT WARN", then the warning raised in the closer).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while _writer_threads(path) or _closer_threads(path) or not store._closed:
            assert loop.time() < deadline, f"still running: {_writer_threads(path) + _closer_threads(path)}"
            await asyncio.sleep(0.01)
    del store, build
    RocksLogStore(path).close()  # the lock is free


async def test_a_log_store_collected_in_another_thread_while_its_loop_runs_is_closed(tmp_path: Path) -> None:
    """Collected in a worker thread while the loop that runs its fast path runs: the close
    waits for that loop (it ends the fast path there), so a closer thread does it, and the
    collecting thread does not wait."""
    path = tmp_path / "log"
    store = RocksLogStore(path)
    await _append(store, 0, 3)
    await _append(store, 3, 3)
    if store._writer._aio is not None:  # native AIO: the fast path is this loop's
        assert store._writer._reader_loop is asyncio.get_running_loop()
    for _ in range(1000):
        if not store._writer._busy:
            break
        await asyncio.sleep(0.005)
    await _loop_passes()
    box = [store]
    del store

    def drop() -> None:
        box.clear()
        gc.collect()

    with pytest.warns(ResourceWarning, match="unclosed log store"):
        dropper = threading.Thread(target=drop)
        dropper.start()
        for _ in range(1000):
            if not dropper.is_alive() and not _writer_threads(path) and not _closer_threads(path):
                break
            await asyncio.sleep(0.01)
    assert not _writer_threads(path)
    async with RocksLogStore(path) as reopened:
        assert (await reopened.get_log_state()).last_log_id == LogId(1, 5)


async def test_a_state_machine_collected_unclosed_is_closed_with_a_resource_warning(tmp_path: Path) -> None:
    path = tmp_path / "sm"
    sm = RocksStateMachine(path)
    await sm.apply([Entry(LogId(1, 0), Normal(encode_kv(KvSet("k", "v"))))])
    await _loop_passes()
    with pytest.warns(ResourceWarning, match=re.escape(f"unclosed state machine at {str(path)!r}")):
        del sm
        gc.collect()
    reopened = RocksStateMachine(path)
    try:
        assert reopened.get("k") == "v"
        assert (await reopened.applied_state())[0] == LogId(1, 0)
    finally:
        reopened.close()


async def test_closed_stores_and_failed_opens_say_nothing_when_collected(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        store = RocksLogStore(tmp_path / "log")
        await store.aclose()
        sm = RocksStateMachine(tmp_path / "sm")
        sm.close()
        del store, sm
        (tmp_path / "file").write_bytes(b"x")
        with pytest.raises(StorageError):
            RocksLogStore(tmp_path / "file")
        with pytest.raises(TypeError):
            RocksLogStore(tmp_path / "log", sync=None)  # type: ignore[arg-type]
        gc.collect()
