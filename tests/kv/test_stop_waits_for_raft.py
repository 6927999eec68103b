"""``KvNode.stop()`` closes the stores only once every task of Raft ended.

A task of the node finishing a store call in its worker thread (an apply batch, a snapshot
build: ``in_thread``) ends once the thread has, up to ``CANCELLED_THREAD_WAIT`` after it was
cancelled. ``Raft.shutdown()`` cancelled by the stop's step bound (``STOP_STEP_WAIT``)
returns at once without waiting for it, and the stop went on to close the log store and the
state machine under the thread still using RocksDB (``RocksStateMachine.close``: "call it
when no apply / snapshot build is running")."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from openraft_py.kv import node as kv_node
from openraft_py.kv.commands import KvSet, encode_kv
from openraft_py.kv.node import KvNode
from openraft_py.storage.rocks.db import in_thread
from openraft_py.types import Entry, Normal

pytestmark = pytest.mark.timeout(60)

STEP_WAIT = 0.5
"""The stop's step bound in this test (``STOP_STEP_WAIT``)."""
THREAD_BUSY = 4 * STEP_WAIT
"""Seconds the apply's thread runs: well past the step bound once the stop has begun."""
SLOW = encode_kv(KvSet("slow", "v"))


async def test_the_stores_close_only_once_an_apply_finishing_in_its_thread_ended(
    leader: KvNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kv_node, "STOP_STEP_WAIT", STEP_WAIT)
    sm = leader.sm
    raft = leader.raft
    assert sm is not None and raft is not None
    running = threading.Event()
    release = threading.Event()  # (set only when the test ends: the thread runs THREAD_BUSY)
    ended = threading.Event()
    closed_under_thread: list[bool] = []

    def slow() -> None:
        running.set()
        release.wait(THREAD_BUSY)
        ended.set()

    real_apply = sm.apply
    real_close = sm.close

    async def apply(entries: list[Entry]) -> list[Any]:
        if any(isinstance(e.payload, Normal) and e.payload.data == SLOW for e in entries):
            await in_thread(slow)
        return await real_apply(entries)

    def close() -> None:
        closed_under_thread.append(running.is_set() and not ended.is_set())
        real_close()

    monkeypatch.setattr(sm, "apply", apply)
    monkeypatch.setattr(sm, "close", close)
    write = asyncio.ensure_future(raft.client_write(SLOW))
    try:
        async with asyncio.timeout(5.0):
            while not running.is_set():
                await asyncio.sleep(0.01)
        stop = asyncio.ensure_future(leader.stop())
        async with asyncio.timeout(THREAD_BUSY + 10 * STEP_WAIT + 5.0):
            await stop
    finally:
        release.set()
        await asyncio.wait({write}, timeout=1.0)
        if write.done():
            write.exception()  # (retrieved: the node stopped under it)
    assert closed_under_thread == [False], "the state machine was closed while its apply thread still ran"
    assert ended.is_set() and write.done()


async def test_a_store_s_stop_step_takes_the_close_s_wait_for_its_calls_into_its_bound(
    leader: KvNode, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A call of the state machine running in its worker thread when the stop comes (one an
    application made, not Raft's) holds the state machine's close up to ``CLOSE_CALLS_WAIT``
    (``StoreCalls``). The stop's step for the store was bounded by ``STOP_STEP_WAIT`` alone:
    it gave the close up ("stopping the state machine failed: TimeoutError()") while the
    close was still waiting, as designed, for the call."""
    from openraft_py.storage.rocks import db as rocks_db

    monkeypatch.setattr(kv_node, "STOP_STEP_WAIT", STEP_WAIT)
    monkeypatch.setattr(rocks_db, "CLOSE_CALLS_WAIT", 6 * STEP_WAIT)
    monkeypatch.setattr(kv_node, "STORE_STOP_WAIT", STEP_WAIT + 6 * STEP_WAIT, raising=False)
    sm = leader.sm
    assert sm is not None
    running = threading.Event()
    ended = threading.Event()

    def busy() -> None:
        running.set()
        threading.Event().wait(3 * STEP_WAIT)  # past the step's own bound, within the close's
        ended.set()

    call = asyncio.ensure_future(sm._calls.run(busy))
    async with asyncio.timeout(5.0):
        while not running.is_set():
            await asyncio.sleep(0.01)
    with caplog.at_level("DEBUG", logger="openraft_py"):
        async with asyncio.timeout(20 * STEP_WAIT):
            await leader.stop()
    await call
    assert ended.is_set()
    failed = [r.getMessage() for r in caplog.records if "stopping the state machine failed" in r.getMessage()]
    assert failed == [], failed
    assert any("stopped the state machine" in r.getMessage() for r in caplog.records)
