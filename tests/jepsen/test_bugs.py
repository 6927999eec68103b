"""The process-level Jepsen runner catches injected engine bugs (test-only switches).

Each case starts real ``serve`` processes through ``faulty_serve`` with one engine fault on,
runs a short, targeted schedule, and expects a failed check within a bounded number of seeds:

- ``expired_lease_read``: the leader is isolated in a minority (``partition-leader``) and
  keeps answering lease reads without a valid lease, while the majority elects a new leader
  and takes writes: lincheck finds a stale read.
- ``apply_before_commit``: with five nodes the isolated leader keeps a companion; the
  companion applies entries that are never committed, and is then told to truncate them:
  the node stops (or its state diverges), which the liveness and final-state checks report.

The same runs without the fault pass (the control case), so the catches come from the bug.
The runs themselves (``cases.py``) start in the background right after collection.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("aiohttp")

from . import cases

pytestmark = pytest.mark.timeout(cases.TOTAL_BUDGET + 120)

CASE_OF = {  # each test's run in cases.py
    "test_expired_lease_read_is_caught": "expired_lease_read",
    "test_apply_before_commit_is_caught": "apply_before_commit",
    "test_same_schedule_without_a_bug_passes": "no_bug",
}


def start_early(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Queue the selected tests' runs (``tests/conftest.py``)."""
    cases.start(config, [CASE_OF[item.originalname] for item in items if item.originalname in CASE_OF])


def _caught(name: str) -> dict[str, Any]:
    res = cases.result(name)
    text = "\n".join(res["lines"])
    assert res["seed"] is not None, f"{name} was not caught within seeds {cases.BUG_SEEDS}:\n{text}"
    assert res["artifacts"], f"a failed run left no history.jsonl and schedule.json:\n{text}"
    return res


def test_expired_lease_read_is_caught() -> None:
    res = _caught("expired_lease_read")
    assert "linearizable" in res["failed"], res["failed"]


def test_apply_before_commit_is_caught() -> None:
    res = _caught("apply_before_commit")
    assert set(res["failed"]) & {"no unexpected exits", "all nodes answer", "final state", "convergence",
                                 "linearizable"}, res["failed"]


def test_same_schedule_without_a_bug_passes() -> None:
    res = cases.result("no_bug")
    assert res["ok"], "\n".join(res["lines"])
