"""The background queue of ``cases.py``: a case whose runner fails is reported at once, and
the queue goes on with the next case."""

from __future__ import annotations

import pytest

from . import cases

pytestmark = pytest.mark.timeout(30)


def test_a_runner_error_fails_its_case_at_once_and_the_queue_goes_on() -> None:
    q = cases._Queue(None)
    ran: list[str] = []

    def run(p: cases._Pending) -> None:
        ran.append(p.name)
        if p.name == "no_bug":
            raise OSError(11, "Resource temporarily unavailable")
        p.result = {"ok": True}

    q._run = run  # type: ignore[method-assign]
    try:
        failed, next_one = q.submit("no_bug"), q.submit("smoke")
        assert failed.done.wait(10) and next_one.done.wait(10)
        assert failed.result is None and failed.error is not None
        assert "the case runner failed" in failed.error and "Resource temporarily unavailable" in failed.error
        assert next_one.result == {"ok": True} and ran == ["no_bug", "smoke"]
    finally:
        q.close()
