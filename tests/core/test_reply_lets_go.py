"""``Reply`` (``core/messages.py``) lets go of its callback once it has run or been
cancelled: the node keeps answered slots among its callers' until it compacts that set, and
the callback (the caller's state, e.g. a replication channel's ``partial``) lived as long."""

from __future__ import annotations

import weakref
from typing import Any

from openraft_py.core.messages import Reply


class _Caller:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def answered(self, value: Any) -> None:
        self.got.append(value)


def test_a_reply_lets_go_of_its_callback_once_answered_or_cancelled() -> None:
    for give_up in (False, True):
        caller = _Caller()
        ref = weakref.ref(caller)
        got = caller.got
        r = Reply(caller.answered)
        del caller
        assert ref() is not None  # held by the reply's callback
        if give_up:
            assert r.cancel()
        else:
            r.set_result(1)
        assert ref() is None  # let go (by reference counting, no collection needed)
        assert got == ([] if give_up else [1])
        # Later answers are still ignored.
        r.set_result(2)
        r.set_exception(RuntimeError("late"))
        assert not r.cancel() and r.done()
        assert got == ([] if give_up else [1])


def test_a_reply_answered_from_inside_its_callback_or_by_a_raising_callback_is_answered_once(
    caplog: Any,
) -> None:
    """The callback answering, cancelling or answering its own reply again (a transport
    whose write fails and reports it through the same slot; a channel stopped by what the
    answer reported) changes nothing: one call, with the first value; a callback that
    raises is logged, counts as the call, and is let go too."""
    calls: list[Any] = []
    r: Reply

    def reentrant(value: Any) -> None:
        calls.append(value)
        assert r.done()  # answered before the callback runs
        assert not r.cancel()
        r.set_result("again")
        r.set_exception(RuntimeError("again"))

    r = Reply(reentrant)
    r.set_result("first")
    assert calls == ["first"]

    def raising(value: Any) -> None:
        calls.append(value)
        raise ValueError("the caller's bug")

    r2 = Reply(raising)
    with caplog.at_level("ERROR", logger="openraft_py"):
        r2.set_exception(KeyError("x"))
    assert len(calls) == 2 and isinstance(calls[1], KeyError)
    assert [rec.levelname for rec in caplog.records if "reply callback" in rec.getMessage()] == ["ERROR"]
    r2.set_result("late")
    assert len(calls) == 2 and r2.done() and not r2.cancel()


def test_a_reply_maps_only_its_errors_through_map_error() -> None:
    """``map_error`` (the router's fast mode: a stopped target's ``Fatal`` reaches the
    channel as ``Unreachable``) is consulted only for an exception: a result goes to the
    callback as it is, with no call of the mapper; a mapper that raises is logged and the
    callback still gets the original error."""
    mapped: list[BaseException] = []

    def map_error(e: BaseException) -> BaseException:
        mapped.append(e)
        return LookupError(f"mapped {e}")

    got: list[Any] = []
    ok = Reply(got.append, map_error)
    ok.set_result("resp")
    assert got == ["resp"] and mapped == []

    failed = Reply(got.append, map_error)
    original = RuntimeError("stopped")
    failed.set_exception(original)
    assert mapped == [original]
    assert isinstance(got[1], LookupError) and str(got[1]) == "mapped stopped"
    failed.set_exception(RuntimeError("late"))  # answered once: no second mapping
    assert len(mapped) == 1 and len(got) == 2


def test_a_raising_error_mapper_still_answers_with_the_original_error(caplog: Any) -> None:
    def bad_mapper(e: BaseException) -> BaseException:
        raise ValueError("mapper bug")

    got: list[Any] = []
    r = Reply(got.append, bad_mapper)
    err = RuntimeError("stopped")
    r.set_exception(err)
    assert got == [err]
    assert "error mapper" in caplog.text
