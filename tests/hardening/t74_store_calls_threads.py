"""Three more edges of the count of a RocksDB store's calls that its ``close()`` waits for
(``StoreCalls`` in ``openraft_py/storage/rocks/db.py``; t68 and t71 have the others).

A read made on the caller's own thread, from another thread than the one that closes: the
state machine's ``get`` and ``data`` may be called from any thread, and a log read of a few
stored entries runs on its caller's thread (another thread's loop). They were not counted,
so a ``close()`` in another thread closed RocksDB under them: ``get`` then failed with a
``StorageError`` of the closed store's ``AttributeError`` (``... no attribute '_cf'``), and
a log read's image pinned the database after the close returned. Now each is counted for
the time it runs, as a call in a worker thread is, and the close waits for it.

A ``KeyboardInterrupt`` (Ctrl-C) during a sync ``close()``'s wait for such calls left the
store marked closed with RocksDB open: every later ``close()`` returned at once, doing
nothing, and RocksDB's lock stayed held (the path refused as "in use"). Now the interrupt
ends the wait as its bound does: the close completes, then the interrupt is raised.

A call queued for a worker thread when its event loop was closed (a loop closed with its
tasks pending), then dropped by its executor: the loop is closed, so the executor's
cancellation never reached the call (``in_thread``'s ``dropped``), and it stayed counted:
every later ``close()`` waited the whole ``CLOSE_CALLS_WAIT`` for it and raised. Now the
close gives up at once a queued call whose loop is closed (it never runs, or it is refused
when it starts), releasing what its arguments hold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from openraft_py.errors import StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage.rocks import db, log_store
from openraft_py.storage.rocks.log_store import INLINE_READ_MAX, RocksLogStore
from openraft_py.types import Entry

from .rocks_close_helpers import BOUND, filled_log_store, kv_entries, no_collector

pytestmark = pytest.mark.timeout(60)

WAIT = 8.0
"""``CLOSE_CALLS_WAIT`` in these tests: a close that waits for a call in vain takes that long."""


def until(check: Callable[[], bool], what: str) -> None:
    """Return once ``check()`` holds; fail after ``BOUND`` seconds."""
    end = time.monotonic() + BOUND
    while not check():
        assert time.monotonic() < end, f"not within {BOUND}s: {what}"
        time.sleep(0.01)


def close_waits(calls: db.StoreCalls, closer: threading.Thread) -> bool:
    """Whether the close in ``closer`` ended or waits for calls (its ``Condition``)."""
    return not closer.is_alive() or bool(calls._cond._waiters)  # type: ignore[attr-defined]


class Gate:
    """Holds the thread that calls it until ``open`` (or ``BOUND``), after ``inside`` is set;
    then records whether the store is still open (``seen_open``) and calls ``then``."""

    def __init__(self, still_open: Callable[[], bool]) -> None:
        self.inside = threading.Event()
        self.open = threading.Event()
        self.seen_open: bool | None = None
        self._still_open = still_open

    def hold(self) -> None:
        self.inside.set()
        self.open.wait(BOUND)
        self.seen_open = self._still_open()


def in_thread_of_its_own(fn: Callable[[], Any], name: str) -> tuple[threading.Thread, list[Any]]:
    """``fn()`` started in a new thread named ``name``; the list gets what it returned or raised."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - reported by the test
            out.append(e)

    t = threading.Thread(target=run, name=name)
    t.start()
    return t, out


def close_under(store: Any, calls: db.StoreCalls, gate: Gate) -> list[Any]:
    """Close ``store`` in a thread while ``gate`` holds a call of it in another; open the
    gate once the close ended or waits. What the close returned or raised."""
    until(gate.inside.is_set, "the read reached its hold")
    closer, closed = in_thread_of_its_own(store.close, "t74-closer")
    try:
        until(lambda: close_waits(calls, closer), "the close ended or waits")
    finally:
        gate.open.set()
        closer.join(BOUND)
    assert not closer.is_alive()
    return closed


@pytest.mark.parametrize("read", ["get", "data"])
def test_a_state_machine_read_from_another_thread_holds_the_close(tmp_path: Path, read: str) -> None:
    sm = RocksStateMachine(tmp_path / "sm")
    try:
        asyncio.run(sm.apply(kv_entries(1, 3)))
        gate = Gate(lambda: hasattr(sm, "_cf"))
        deferred = sm._write_deferred

        def held(*a: Any) -> None:
            if threading.current_thread().name == "t74-reader":
                gate.hold()
            deferred(*a)

        sm._write_deferred = held  # type: ignore[method-assign,assignment]
        reader, got = in_thread_of_its_own(lambda: sm.get("k1") if read == "get" else sm.data, "t74-reader")
        closed = close_under(sm, sm._calls, gate)
        reader.join(BOUND)
        assert gate.seen_open, f"close() closed RocksDB under a {read} running in another thread: {got}"
        assert got == (["v1"] if read == "get" else [{"k1": "v1", "k2": "v2"}])
        assert closed == [None]
    finally:
        sm.close()
    RocksStateMachine(tmp_path / "sm").close()  # the lock is free


async def test_a_log_read_on_another_thread_s_loop_holds_the_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = INLINE_READ_MAX // 2  # read on the caller's thread (``_read_entries_inline``)
    store = await filled_log_store(tmp_path / "log", n)
    try:
        gate = Gate(lambda: hasattr(store, "_entries"))
        inline = log_store._read_entries_inline

        def held(image: Any, start: int) -> list[Entry] | None:
            gate.hold()
            return inline(image, start)

        monkeypatch.setattr(log_store, "_read_entries_inline", held)
        reader, got = in_thread_of_its_own(
            lambda: asyncio.run(store.get_log_reader().try_get_log_entries(0, n)), "t74-reader")
        closed = await asyncio.to_thread(close_under, store, store._calls, gate)
        reader.join(BOUND)
        assert gate.seen_open, f"close() closed RocksDB under a log read on another thread: {got}"
        assert got == [kv_entries(0, n)]
        assert closed == [None]
    finally:
        store.close()
    RocksLogStore(tmp_path / "log", sync=False).close()  # the lock is free


@pytest.mark.parametrize("kind", ["state machine", "log store"])
def test_ctrl_c_in_a_sync_close_s_wait_still_closes_the_store(tmp_path: Path, kind: str) -> None:
    """Ctrl-C while ``close()`` waits for a call of another thread: the close ends its wait,
    closes RocksDB and raises the ``KeyboardInterrupt``; a later close does nothing more,
    and the path opens again."""
    path = tmp_path / "store"
    store: Any = RocksStateMachine(path) if kind == "state machine" else RocksLogStore(path, sync=False)
    again: Any = None
    entered, gate = threading.Event(), threading.Event()

    def call() -> None:
        with store._calls.hold("a call of another thread"):
            entered.set()
            gate.wait(BOUND)

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT reaches the main thread only; the test runs in another")
    main = threading.get_ident()
    was = signal.signal(signal.SIGINT, signal.default_int_handler)  # (Ctrl-C as Python has it)
    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert entered.wait(BOUND)

        def interrupt() -> None:  # Ctrl-C, once the close waits for the call
            until(lambda: bool(store._calls._cond._waiters), "the close waits")
            signal.pthread_kill(main, signal.SIGINT)

        interrupter = threading.Thread(target=interrupt)
        interrupter.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            store.close()
        took = time.monotonic() - start
        interrupter.join(BOUND)
        assert took < BOUND, f"the interrupted close took {took:.1f}s"
        gate.set()
        caller.join(BOUND)
        store.close()  # a later close: nothing left to do, or what the interrupted one left
        again = RocksStateMachine(path) if kind == "state machine" else RocksLogStore(path, sync=False)
    finally:
        signal.signal(signal.SIGINT, was)
        gate.set()
        caller.join(BOUND)
        store.close()
        if again is not None:
            again.close()


def queued_when_its_loop_closed(make_call: Callable[[], Awaitable[Any]], close: bool = True) -> asyncio.AbstractEventLoop:
    """Start ``make_call()`` on a loop whose one-thread default executor is kept busy, close
    the loop with the call still queued (with ``close=False``: leave it stopped, not closed),
    then shut the executor down dropping it. The loop, which the caller closes if it is not."""
    loop = asyncio.new_event_loop()
    one = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="t74-one")
    loop.set_default_executor(one)
    started, gate = threading.Event(), threading.Event()
    left: list[asyncio.Future[Any]] = []  # (the call's task, pending when the loop closes)

    def occupy() -> None:
        started.set()
        gate.wait(BOUND)

    async def start() -> None:
        loop.run_in_executor(None, occupy)
        async with asyncio.timeout(BOUND):
            while not started.is_set():
                await asyncio.sleep(0.01)
            left.append(asyncio.ensure_future(make_call()))
            while one._work_queue.qsize() < 1:  # the call is queued behind ``occupy``
                await asyncio.sleep(0.01)

    try:
        loop.run_until_complete(start())
    finally:
        if close:
            loop.close()  # the call's task is left pending: the loop is gone
        one.shutdown(wait=False, cancel_futures=True)
        gate.set()
        one.shutdown(wait=True)
    return loop


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The cyclic garbage collector off (``no_collector``, as t71): the pending task of the
    closed loop keeps the call's arguments in reference cycles; the store must release them,
    not a collection that happened to run."""
    try:
        with no_collector():
            yield
    finally:
        gc.collect()


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_call_queued_when_its_loop_stopped_does_not_hold_the_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector_off: None
) -> None:
    """A loop stopped and not closed (``run_until_complete`` returned with the call's task
    pending, the loop kept for later): the executor's cancellation of the dropped call waits
    for the loop to run again to reach the call (``in_thread``'s ``dropped``), and the close,
    which gave up only calls of a closed loop, waited the whole ``CLOSE_CALLS_WAIT`` for it
    and raised. A queued call of a loop that is not running is given up as one of a closed
    loop is: nothing queued runs once the close began (a call that starts is refused), so
    the close need not wait for the loop to learn it."""
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", WAIT)
    sm = RocksStateMachine(tmp_path / "sm")
    n = 4 * INLINE_READ_MAX
    store = asyncio.run(filled_log_store(tmp_path / "log", n))
    loops: list[asyncio.AbstractEventLoop] = []
    try:
        asyncio.run(sm.apply(kv_entries(1, 11)))
        loops.append(queued_when_its_loop_closed(sm.get_current_snapshot_meta, close=False))
        reader = store.get_log_reader()
        loops.append(queued_when_its_loop_closed(lambda: reader.try_get_log_entries(0, n), close=False))
        assert not any(loop.is_closed() or loop.is_running() for loop in loops)
        start = time.monotonic()
        sm.close()
        store.close()
        took = time.monotonic() - start
    finally:
        sm.close()
        store.close()
        for loop in loops:
            loop.close()
    assert took < WAIT / 2, f"close() waited {took:.1f}s for calls queued on a stopped loop"
    RocksStateMachine(tmp_path / "sm").close()  # the locks are free at once: the read's image was released
    RocksLogStore(tmp_path / "log", sync=False).close()


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_call_queued_when_its_loop_closed_does_not_hold_the_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector_off: None
) -> None:
    """(The task left pending by the closed loop is reported destroyed when collected.)"""
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", WAIT)
    sm = RocksStateMachine(tmp_path / "sm")
    n = 4 * INLINE_READ_MAX
    store = asyncio.run(filled_log_store(tmp_path / "log", n))
    try:
        asyncio.run(sm.apply(kv_entries(1, 11)))
        queued_when_its_loop_closed(sm.get_current_snapshot_meta)
        reader = store.get_log_reader()
        queued_when_its_loop_closed(lambda: reader.try_get_log_entries(0, n))  # in a worker thread
    finally:
        start = time.monotonic()
        sm.close()
        store.close()
        took = time.monotonic() - start
    assert took < WAIT / 2, f"close() waited {took:.1f}s for calls queued on a closed loop"
    RocksStateMachine(tmp_path / "sm").close()  # the locks are free at once: the read's image was released
    RocksLogStore(tmp_path / "log", sync=False).close()
    assert os.path.isdir(tmp_path / "log")


async def test_a_close_between_a_log_read_s_image_and_its_thread_waits_for_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log read of more than ``INLINE_READ_MAX`` entries makes its image on its caller's
    thread (counted: ``enter``), then hands it to a worker thread (``StoreCalls.run``). A
    ``close()`` in another thread that came between the two found no call counted: it closed
    RocksDB with the image alive, and returned with RocksDB's lock held (an open of the same
    path right after was refused as "in use"). The read's count now passes to ``run``: the
    close waits for the image to be released."""
    n = 4 * INLINE_READ_MAX  # read in a worker thread (``_read_entries``)
    path = tmp_path / "log"
    store = await filled_log_store(path, n)
    closed: list[Any] = []
    closer: threading.Thread | None = None
    enter = db.StoreCalls._enter

    def close_then_open() -> None:
        store.close()
        RocksLogStore(path, sync=False).close()  # the lock is free once the close returned

    def entering(calls: db.StoreCalls, name: str, ident: int | None, *a: Any, **kw: Any) -> int:
        nonlocal closer
        if kw.get("queued") is not None and closer is None and threading.current_thread().name == "t74-reader":
            # The read hands its image to a worker thread: a close in another thread now.
            closer, got = in_thread_of_its_own(close_then_open, "t74-closer")
            closed.append(got)
            until(lambda: close_waits(calls, closer), "the close ended or waits")
        return enter(calls, name, ident, *a, **kw)

    monkeypatch.setattr(db.StoreCalls, "_enter", entering)
    try:
        reader, got = in_thread_of_its_own(
            lambda: asyncio.run(store.get_log_reader().try_get_log_entries(0, n)), "t74-reader")
        await asyncio.to_thread(reader.join, BOUND)
        assert closer is not None, "the read never reached its worker thread"
        await asyncio.to_thread(closer.join, BOUND)
        assert not closer.is_alive()
        assert closed[0] == [None], f"the close, or the open of the path right after it: {closed[0]}"
        assert len(got) == 1 and isinstance(got[0], StorageError) and "closed" in str(got[0]), got
    finally:
        store.close()


def interrupted_once(real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, whose first call raises ``KeyboardInterrupt`` instead (Ctrl-C delivered as
    the call begins, or right after the blocking call it makes returns)."""
    calls = 0

    def call(*a: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        return real(*a, **kw)

    return call


@pytest.mark.parametrize("step", ["the log's writer drains", "the state machine's WAL is synced"])
def test_ctrl_c_in_a_sync_close_s_own_steps_still_closes_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Ctrl-C while ``close()`` makes the store durable (the log's writer thread draining and
    joined, the state machine's WAL fsynced: seconds on a slow disk) escaped the close there:
    RocksDB was left open with the store marked closed, so a later ``close()`` did nothing
    and the path stayed "in use". Now the close completes, then raises the interrupt."""
    if step == "the log's writer drains":
        path = tmp_path / "log"
        store: Any = asyncio.run(filled_log_store(path, 10))
        monkeypatch.setattr(store._writer, "close", interrupted_once(store._writer.close))

        def reopen() -> None:
            again = RocksLogStore(path, sync=False)
            try:
                assert asyncio.run(again.get_log_reader().try_get_log_entries(0, 10)) == kv_entries(0, 10)
            finally:
                again.close()
    else:
        path = tmp_path / "sm"
        store = RocksStateMachine(path)
        asyncio.run(store.apply(kv_entries(1, 3)))
        monkeypatch.setattr(type(store._mark), "record", interrupted_once(type(store._mark).record))

        def reopen() -> None:
            again = RocksStateMachine(path)
            try:
                assert again.data == {"k1": "v1", "k2": "v2"}
            finally:
                again.close()
    try:
        with pytest.raises(KeyboardInterrupt):
            store.close()
        store.close()  # a later close: nothing left to do
        monkeypatch.undo()
        reopen()  # RocksDB's lock was released, what was written is there
    finally:
        monkeypatch.undo()
        store.close()
