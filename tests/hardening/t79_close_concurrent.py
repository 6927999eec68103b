"""A ``close()`` of a RocksDB store called while another thread's ``close()`` of it still runs
returns only once that close has ended: RocksDB closed, its lock released.

It returned at once (the store was marked closed as the first close began), while the first
still waited for the store's calls (``StoreCalls.wait_idle``, up to ``CLOSE_CALLS_WAIT``) or
drained the writer: its caller went on as if the store were closed, and an open of the same
path right after was refused as "in use" (its LOCK held). A close from another thread is
what ``aclose()`` runs (a worker thread), beside a sync ``close()`` of the store's owner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage.rocks import db
from openraft_py.storage.rocks.log_store import RocksLogStore

from .rocks_close_helpers import BOUND

pytestmark = pytest.mark.timeout(60)

WAIT = 8.0
"""``CLOSE_CALLS_WAIT`` in the test that must not wait for it: a close waiting for a call in
vain takes that long."""


def until(check: Callable[[], bool], what: str) -> None:
    """Return once ``check()`` holds; fail after ``BOUND`` seconds."""
    end = time.monotonic() + BOUND
    while not check():
        assert time.monotonic() < end, f"not within {BOUND}s: {what}"
        time.sleep(0.01)


def _second_close_waits(store: Any) -> bool:
    """Whether a second ``close()`` waits for the first to end (``CloseOnce``)."""
    once = getattr(store, "_close_once", None)
    return once is not None and bool(once._ended._cond._waiters)


@pytest.mark.parametrize("make", [RocksLogStore, RocksStateMachine], ids=["log_store", "state_machine"])
def test_a_second_close_returns_once_the_first_has_released_rocksdb(tmp_path: Path, make: Callable[[Path], Any]) -> None:
    store = make(tmp_path)
    token = store._calls.enter("a read of this thread")  # the first close waits for it
    first = threading.Thread(target=store.close, name="first close")
    first.start()
    outcome: list[str] = []

    def close_then_open() -> None:
        store.close()
        try:
            make(tmp_path).close()
            outcome.append("opened")
        except Exception as e:  # noqa: BLE001 - the test's answer
            outcome.append(f"{type(e).__name__}: {e}")

    second = threading.Thread(target=close_then_open, name="second close")
    try:
        until(lambda: store._calls.closing, "the first close began")
        second.start()
        until(lambda: not second.is_alive() or _second_close_waits(store), "the second close returned or waits")
        assert first.is_alive(), "the first close ended: it must wait for the read"
    finally:
        store._calls.leave(token)
        first.join(BOUND)
        second.join(BOUND)
    assert not first.is_alive() and not second.is_alive()
    assert outcome == ["opened"], outcome


@pytest.mark.parametrize("make", [RocksLogStore, RocksStateMachine], ids=["log_store", "state_machine"])
def test_a_close_again_in_the_same_thread_and_after_the_close_returns_at_once(
    tmp_path: Path, make: Callable[[Path], Any],
) -> None:
    store = make(tmp_path)
    store.close()
    store.close()  # (at once: the first has ended)
    done = threading.Event()
    threading.Thread(target=lambda: (store.close(), done.set())).start()
    assert done.wait(BOUND)
    make(tmp_path).close()


@pytest.mark.parametrize("make", [RocksLogStore, RocksStateMachine], ids=["log_store", "state_machine"])
def test_a_second_close_in_a_thread_the_first_waits_for_returns_at_once(
    tmp_path: Path, make: Callable[[Path], Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread with a call of the store counted (a loop's work held across its awaits,
    ``StoreCalls.hold``; a read) calls ``close()`` while another thread's close waits for
    that call: it returns at once, as before, instead of waiting for the first close, which
    waits for its call (each waited the whole ``CLOSE_CALLS_WAIT``, the loop blocked)."""
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", WAIT)
    store = make(tmp_path)
    token = store._calls.enter("a read of this thread")
    first = threading.Thread(target=store.close, name="first close")
    first.start()
    try:
        until(lambda: store._calls.closing, "the first close began")
        store.close()  # (this thread's call is what the first waits for)
        # (The first gives that call up only once ``WAIT`` has passed.)
        assert not store._calls.abandoned, "the second close waited for the first, which waited for this thread's call"
    finally:
        store._calls.leave(token)
        first.join(BOUND)
    assert not first.is_alive()
    make(tmp_path).close()
