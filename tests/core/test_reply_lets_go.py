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
