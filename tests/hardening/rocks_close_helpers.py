"""Helpers of the hardening tests that close a RocksDB store under its own calls (t68, t71, t74, t84, t89)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import Iterator
from pathlib import Path

from openraft_py import IOFlushed
from openraft_py.storage.memory import KvSet, encode_kv
from openraft_py.storage.rocks.db import StoreCalls
from openraft_py.storage.rocks.log_store import RocksLogStore
from openraft_py.types import Entry, LogId, Normal

BOUND = 10.0
"""Generous bound of every wait for something that must happen."""


@contextlib.contextmanager
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector off: what a dropped or given-up call's arguments hold (a
    log read's image pins the database) is released by the store, not by a collection that
    happened to run first (a caller's ``CancelledError``, a closed loop's pending task, keep
    them in reference cycles)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def one_stuck_call(calls: StoreCalls, what: str) -> Iterator[None]:
    """A worker thread inside one call ``what`` of ``calls`` for the ``with`` body (it has
    entered when the body starts); it leaves, and the thread ends, as the body ends."""
    entered, leave = threading.Event(), threading.Event()

    def stuck() -> None:
        token = calls.enter(what)
        try:
            entered.set()
            leave.wait(BOUND)
        finally:
            calls.leave(token)

    thread = threading.Thread(target=stuck)
    thread.start()
    try:
        assert entered.wait(BOUND)
        yield
    finally:
        leave.set()
        thread.join(BOUND)


def kv_entries(lo: int, hi: int) -> list[Entry]:
    """Key-value set entries at indexes ``lo`` to ``hi - 1``, in term 1."""
    return [Entry(LogId(1, i), Normal(encode_kv(KvSet(f"k{i}", f"v{i}")))) for i in range(lo, hi)]


async def filled_log_store(path: Path, n: int) -> RocksLogStore:
    """A log store at ``path`` holding ``kv_entries(0, n)``, every one durable."""
    store = RocksLogStore(path, sync=False)
    try:
        stored = asyncio.get_running_loop().create_future()
        await store.append(kv_entries(0, n), IOFlushed(stored.set_result))
        async with asyncio.timeout(BOUND):
            assert await stored is None
    except BaseException:
        store.close()
        raise
    return store


async def read_entered(store: RocksLogStore, n: int, inside: threading.Event) -> asyncio.Future[list[Entry]]:
    """Start a read of entries ``0`` to ``n - 1`` from ``store`` and return it once ``inside``
    is set (by a held ``_read_entries`` in its worker thread). The loop stays free meanwhile,
    for the read to start."""
    read = asyncio.ensure_future(store.get_log_reader().try_get_log_entries(0, n))
    async with asyncio.timeout(BOUND):
        while not inside.is_set():
            await asyncio.sleep(0.01)
    return read
