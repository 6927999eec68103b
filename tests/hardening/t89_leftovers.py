"""What the last stop found and left, fixed.

1. ``StoreCalls.give_up`` (``openraft_py/storage/rocks/db.py``) marked its "still ran in
   worker threads" WARNING as logged before logging it: an interrupt (Ctrl-C) arriving in
   between made ``close_after_calls`` call it again, which then logged nothing: the one
   WARNING of the close was lost for good.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from openraft_py.storage.rocks import db

from .rocks_close_helpers import BOUND

pytestmark = pytest.mark.timeout(60)


# -- 1. StoreCalls.give_up's WARNING, not lost -------------------------------------------------


class _InterruptedBeforeFirstWarning:
    """``db.log`` with a Ctrl-C that arrives as the first WARNING is about to be logged
    (before any handler has it); every other call goes to the real logger."""

    def __init__(self, real: logging.Logger) -> None:
        self._real = real
        self.fired = False

    def warning(self, *args: Any, **kwargs: Any) -> None:
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        self._real.warning(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_the_give_up_warning_is_not_lost_to_an_interrupt_before_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", 0.2)
    interrupting = _InterruptedBeforeFirstWarning(db.log)
    monkeypatch.setattr(db, "log", interrupting)
    calls = db.StoreCalls("a test store", "/nowhere", "the store is closed")
    entered, leave = threading.Event(), threading.Event()

    def stuck_read() -> None:
        token = calls.enter("a stuck read")
        try:
            entered.set()
            leave.wait(BOUND)
        finally:
            calls.leave(token)

    reader = threading.Thread(target=stuck_read)
    reader.start()
    caplog.set_level(logging.WARNING, logger=interrupting._real.name)
    closed: list[list[BaseException]] = []
    try:
        assert entered.wait(BOUND)
        with pytest.raises(KeyboardInterrupt):
            db.close_after_calls(calls, closed.append)
    finally:
        leave.set()
        reader.join(BOUND)
    assert interrupting.fired
    warned = [r for r in caplog.records if "still ran in worker threads" in r.getMessage()]
    # The retried give_up (close_after_calls') logs it: once, not never.
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "a stuck read" in warned[0].getMessage()
    assert len(closed) == 1 and len(closed[0]) == 1 and "a stuck read" in str(closed[0][0])
