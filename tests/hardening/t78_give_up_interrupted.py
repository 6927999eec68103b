"""A Ctrl-C (``KeyboardInterrupt``) that arrives while a RocksDB store's close releases the
holds of its own thread (``StoreCalls.give_up``, ``openraft_py/storage/rocks/db.py``)
releases them all, and is raised once they are released.

A close on the loop's thread cannot wait for that thread's own suspended work (a log read
holding RocksDB images, counted with ``StoreCalls.hold``): it calls each hold's ``release``
instead (t71). The releases were taken out of the count first and called in a plain loop:
an interrupt raised in one (or between two) ended the loop, and the holds after it were
never released: their images pinned the database, and RocksDB's lock stayed held after the
close (``close_after_calls`` calls ``give_up`` again on an interrupt, but those releases were
gone from the count already).
"""

from __future__ import annotations

import threading

import pytest

from openraft_py.storage.rocks import db

pytestmark = pytest.mark.timeout(30)


def _calls() -> db.StoreCalls:
    return db.StoreCalls("a test store", "/nowhere", "the store is closed")


def test_an_interrupt_in_one_release_does_not_skip_the_others() -> None:
    calls = _calls()
    released: list[str] = []

    def interrupted() -> None:
        released.append("a")
        raise KeyboardInterrupt

    with calls.hold("read a", interrupted), calls.hold("read b", lambda: released.append("b")), \
            calls.hold("read c", lambda: released.append("c")):
        with pytest.raises(KeyboardInterrupt):
            calls.give_up("now")
        assert released == ["a", "b", "c"]
        # Each release is called once: a second give_up (``close_after_calls``' after an
        # interrupt) calls none again.
        assert calls.give_up("again") is None
        assert released == ["a", "b", "c"]


def test_a_close_interrupted_in_a_release_releases_the_rest_and_raises() -> None:
    """Through ``close_after_calls``, as a store's sync ``close()`` runs it: the database is
    closed and the interrupt raised after it."""
    calls = _calls()
    released: list[str] = []
    closed: list[list[BaseException]] = []

    def interrupted() -> None:
        released.append("a")
        raise KeyboardInterrupt

    def close_db(errors: list[BaseException]) -> None:
        closed.append(errors)

    with calls.hold("read a", interrupted), calls.hold("read b", lambda: released.append("b")):
        with pytest.raises(KeyboardInterrupt):
            db.close_after_calls(calls, close_db)
        assert released == ["a", "b"]
        assert closed == [[]]


def test_a_failing_release_is_logged_and_the_others_run(caplog: pytest.LogCaptureFixture) -> None:
    calls = _calls()
    released: list[str] = []

    def failing() -> None:
        raise OSError("the image would not close")

    with calls.hold("read a", failing), calls.hold("read b", lambda: released.append("b")):
        assert calls.give_up("now") is None
        assert released == ["b"]
    assert "releasing what a call of this thread holds" in caplog.text


def test_the_holds_of_other_threads_are_not_released() -> None:
    """Only the calling thread's holds are released: another thread's work runs on, and is
    waited for (or given up as an error), as before."""
    calls = _calls()
    released: list[str] = []
    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with calls.hold("read elsewhere", lambda: released.append("other")):
            entered.set()
            leave.wait(10)

    t = threading.Thread(target=other)
    t.start()
    try:
        assert entered.wait(10)
        with calls.hold("read here", lambda: released.append("here")):
            error = calls.give_up("now")
        assert released == ["here"]
        assert error is not None and "read elsewhere" in str(error)
    finally:
        leave.set()
        t.join(10)
