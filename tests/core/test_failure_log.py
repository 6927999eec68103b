"""``FailureLog``: a failure that repeats is logged at WARNING once it lasted ``after``
seconds, again on a new kind or every ``every`` seconds, and its end once at INFO."""

from __future__ import annotations

import logging

import pytest

from openraft_py.failure_log import FailureLog


def _log(caplog: pytest.LogCaptureFixture, **kw: float) -> FailureLog:
    caplog.set_level(logging.DEBUG, logger="test.failure_log")
    return FailureLog(logging.getLogger("test.failure_log"), "node 1: replication to node 2", **kw)


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test.failure_log"]


def test_one_warning_per_period_and_one_info_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    f = _log(caplog, after=0.0, every=60.0)
    for i in range(100):  # 100 failures in 10 s: one line
        f.failed(i * 0.1, "Unreachable", "Unreachable: connect to h:1 failed")
    assert [lvl for lvl, _ in _lines(caplog)] == ["WARNING"]
    assert _lines(caplog)[0][1].startswith("node 1: replication to node 2: Unreachable: connect to h:1 failed (1 failure in 0.0s")
    f.failed(61.0, "Unreachable", "Unreachable: connect to h:1 failed")  # a period later: a summary
    f.failed(61.5, "Unreachable", "Unreachable: connect to h:1 failed")
    assert [lvl for lvl, _ in _lines(caplog)] == ["WARNING", "WARNING"]
    assert "still failing" in _lines(caplog)[1][1] and "101 failures in 61.0s, 100 since the last report" in _lines(caplog)[1][1]
    f.failed(62.0, "Timeout", "Timeout: no answer")  # another kind: at once
    assert _lines(caplog)[2] == ("WARNING", "node 1: replication to node 2: now Timeout: no answer (103 failures in 62.0s)")
    f.cleared(63.0)
    f.cleared(64.0)
    assert _lines(caplog)[3] == ("INFO", "node 1: replication to node 2: recovered (103 failures in 63.0s)")
    assert len(_lines(caplog)) == 4 and not f.failing


def test_a_streak_shorter_than_after_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    f = _log(caplog, after=1.0)
    f.failed(10.0, "Timeout", "Timeout")
    f.failed(10.5, "Timeout", "Timeout")
    f.cleared(10.6)
    assert _lines(caplog) == []
    f.failed(20.0, "Timeout", "Timeout")  # a new streak: counted from its own start
    f.failed(20.9, "Timeout", "Timeout")
    assert _lines(caplog) == []
    f.failed(21.0, "Timeout", "Timeout")
    assert [lvl for lvl, _ in _lines(caplog)] == ["WARNING"]
    assert "3 failures in 1.0s" in _lines(caplog)[0][1]


def test_unit_and_what_the_end_says(caplog: pytest.LogCaptureFixture) -> None:
    f = _log(caplog, unit="refusal")
    f.failed(1.0, "wrong cluster name", "refused the connection from h:5: wrong cluster name")
    f.failed(2.0, "wrong cluster name", "refused the connection from h:6: wrong cluster name")
    f.cleared(3.0, "accepted node 4 from h:7, after refusing h")
    assert [m for _, m in _lines(caplog)] == [
        "node 1: replication to node 2: refused the connection from h:5: wrong cluster name (1 refusal in 0.0s; "
        "logged again every 300s while it goes on, and once it recovers)",
        "node 1: replication to node 2: accepted node 4 from h:7, after refusing h (2 refusals in 2.0s)",
    ]


def test_a_failure_a_period_after_the_last_starts_a_streak_of_its_own(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing may ever succeed to end a streak (a host refused once, for good): a failure
    long after it is not "still failing" for days."""
    f = _log(caplog, every=60.0, unit="refusal")
    f.failed(0.0, "not in the membership", "refused: node 4 is not in the membership")
    f.failed(86400.0, "not in the membership", "refused: node 4 is not in the membership")
    assert [m for _, m in _lines(caplog)] == [
        "node 1: replication to node 2: refused: node 4 is not in the membership (1 refusal in 0.0s; logged again "
        "every 60s while it goes on, and once it recovers)",
    ] * 2


def test_a_flapping_peer_is_two_lines_per_period_and_one_that_stays_down_is_said_within_the_hold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A peer in a crash loop (down 1 s, up 1 s, for 10 minutes) made a WARNING and an INFO
    per restart, 600 lines; a relapse within ``every`` of the last recovery logged now waits
    ``FLAP_HOLD`` before its WARNING, and the next WARNING counts the relapses not logged."""
    f = _log(caplog, after=0.3, every=300.0)
    t = 0.0
    while t < 600.0:
        for k in range(10):  # down for 1 s: a failure every 0.1 s
            f.failed(t + k * 0.1, "Unreachable", "Unreachable: connect to h:1 failed")
        f.cleared(t + 1.0)  # up again for 1 s
        t += 2.0
    lines = _lines(caplog)
    assert [lvl for lvl, _ in lines] == ["WARNING", "INFO", "WARNING", "INFO"], lines
    assert "it recovered and failed again 150 more times since the last report" in lines[2][1], lines[2]
    # Then it stays down: said once the relapse has gone on for FLAP_HOLD (30 s).
    t += 1.0
    f.failed(t, "Unreachable", "Unreachable: connect to h:1 failed")
    f.failed(t + 29.0, "Unreachable", "Unreachable: connect to h:1 failed")
    assert len(_lines(caplog)) == 4
    f.failed(t + 30.0, "Unreachable", "Unreachable: connect to h:1 failed")
    assert [lvl for lvl, _ in _lines(caplog)] == ["WARNING", "INFO", "WARNING", "INFO", "WARNING"]
    assert "3 failures in 30.0s; it recovered and failed again 148 more times" in _lines(caplog)[4][1]
