"""``run_unless_stalled``: a scenario that failed (an assertion or another exception) after
the event loop stalled runs once more; a failure without a stall, or a second one, is raised
with the stall noted."""

from __future__ import annotations

import time

import pytest

from openraft_py import ForwardToLeader

from ._util import run_unless_stalled

pytestmark = pytest.mark.timeout(10)


class Scenario:
    """Fails its first ``failures`` runs (an assertion, or ``ForwardToLeader`` with
    ``forwarded``); with ``stall`` set, blocks the loop that long first."""

    def __init__(self, failures: int, stall: float, forwarded: bool = False) -> None:
        self.failures = failures
        self.stall = stall
        self.forwarded = forwarded
        self.runs = 0

    async def __call__(self) -> None:
        self.runs += 1
        if self.stall:
            time.sleep(self.stall)  # blocks the event loop, as a loaded machine would
        if self.forwarded and self.runs <= self.failures:
            raise ForwardToLeader(2)
        assert self.runs > self.failures, f"run {self.runs} fails"


async def test_a_failure_after_a_stall_runs_the_scenario_once_more(capsys: pytest.CaptureFixture[str]) -> None:
    s = Scenario(failures=1, stall=0.2)
    await run_unless_stalled(s, limit=0.15)
    assert s.runs == 2
    assert "the event loop stalled" in capsys.readouterr().out


async def test_a_moved_leader_after_a_stall_runs_the_scenario_once_more() -> None:
    s = Scenario(failures=1, stall=0.2, forwarded=True)
    await run_unless_stalled(s, limit=0.15)
    assert s.runs == 2


async def test_a_moved_leader_without_a_stall_is_raised_at_once() -> None:
    s = Scenario(failures=1, stall=0.0, forwarded=True)
    with pytest.raises(ForwardToLeader):
        await run_unless_stalled(s, limit=0.15)
    assert s.runs == 1


async def test_a_failure_without_a_stall_is_raised_at_once() -> None:
    s = Scenario(failures=1, stall=0.0)
    with pytest.raises(AssertionError, match="run 1 fails") as e:
        await run_unless_stalled(s, limit=0.15)
    assert s.runs == 1
    assert any("longest stall" in n for n in e.value.__notes__)


async def test_a_second_failure_is_raised_even_after_a_stall() -> None:
    s = Scenario(failures=2, stall=0.2)
    with pytest.raises(AssertionError, match="run 2 fails"):
        await run_unless_stalled(s, limit=0.15)
    assert s.runs == 2


async def test_a_passing_scenario_runs_once() -> None:
    s = Scenario(failures=0, stall=0.0)
    await run_unless_stalled(s)
    assert s.runs == 1
