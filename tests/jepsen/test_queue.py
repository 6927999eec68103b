"""The background queue of ``cases.py``: a case whose runner fails is reported at once, and
the queue goes on with the next case."""

from __future__ import annotations

from pathlib import Path

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


def test_a_failed_spawn_is_tried_once_more_and_noted(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def popen(argv: list[str], **kw: object) -> str:
        calls.append(argv)
        if len(calls) == 1:
            raise OSError(14, "Bad address")
        return "started"

    with open(tmp_path / "case.log", "wb") as log:
        assert cases._spawn(["x"], log, popen) == "started"
    assert calls == [["x"], ["x"]]
    assert b"Bad address" in (tmp_path / "case.log").read_bytes()

    def never(argv: list[str], **kw: object) -> str:
        raise OSError(14, "Bad address")

    with open(tmp_path / "again.log", "wb") as log, pytest.raises(OSError):
        cases._spawn(["x"], log, never)
