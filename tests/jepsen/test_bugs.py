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
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from openraft_py.testing.jepsen import RunConfig, run
from openraft_py.testing.jepsen.workload import WorkloadConfig

SEEDS = (1, 2, 3)
TIME = 30.0


def _cfg(seed: int, bugs: tuple[str, ...], nodes: int, out: Path | None = None) -> RunConfig:
    # Read-heavy, and a short client timeout: the clients of a stale leader must not spend
    # the window waiting on writes it cannot commit.
    wl = WorkloadConfig(clients=6, workloads=("register",), register_slots=1, timeout=0.5,
                        mix={"get-lease": 6.0, "get-linearizable": 1.0, "put": 2.0, "cas": 1.0})
    # Followers time out early (400 ms) while an isolated leader keeps leading until check
    # quorum steps it down (4 s): the window in which a stale leader can still answer.
    raft = {"heartbeat_interval": 100, "election_timeout_min": 400, "election_timeout_max": 4000}
    return RunConfig(time=TIME, seed=seed, nodes=nodes, bugs=bugs, kinds=("partition-leader",),
                     workload=wl, hold=(6.0, 10.0), check_timeout=60.0, out=out, raft_config=raft)


async def _first_failure(bug: str, nodes: int, tmp: Path) -> tuple[int, list[str]]:
    for seed in SEEDS:
        lines: list[str] = []
        result = await run(_cfg(seed, (bug,), nodes, tmp / f"seed{seed}"), lines.append)
        if not result.ok:
            assert result.out_dir is not None and (result.out_dir / "history.jsonl").exists()
            assert (result.out_dir / "schedule.json").exists()
            return seed, [v.name for v in result.verdicts if not v.ok]
    raise AssertionError(f"{bug} was not caught within seeds {SEEDS}")


@pytest.mark.timeout(len(SEEDS) * (TIME + 120))
async def test_expired_lease_read_is_caught(tmp_path: Path) -> None:
    seed, failed = await _first_failure("expired_lease_read", 3, tmp_path)
    assert "linearizable" in failed, failed


@pytest.mark.timeout(len(SEEDS) * (TIME + 120))
async def test_apply_before_commit_is_caught(tmp_path: Path) -> None:
    seed, failed = await _first_failure("apply_before_commit", 5, tmp_path)
    assert set(failed) & {"no unexpected exits", "all nodes answer", "final state", "convergence",
                          "linearizable"}, failed


@pytest.mark.timeout(TIME + 120)
async def test_same_schedule_without_a_bug_passes() -> None:
    lines: list[str] = []
    result = await run(_cfg(SEEDS[0], (), 3), lines.append)
    assert result.ok, "\n".join(lines)
