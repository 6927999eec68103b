"""The Jepsen smoke run inside ``make test``: 60 seconds of real ``serve`` processes under
every nemesis kind, checked end to end.

Three nodes (the machine is small and shared; ``make jepsen`` runs five), four clients, the
register and multi-key workloads, a seed per run that is printed (rerun it with
``python -m openraft_py.testing.jepsen --seed N``); ``JEPSEN_SMOKE_SEED`` pins it and
``JEPSEN_SMOKE_TIME`` changes the duration. Passes only when every check passes: the history
is linearizable per key (lincheck), local reads invent nothing, every node ends with the same
state and no acknowledged write was lost, every node answers and none exited except by the
nemesis, and a write succeeds within the bound after the final heal.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from openraft_py.testing.jepsen import RunConfig, run
from openraft_py.testing.jepsen.nemesis import KINDS
from openraft_py.testing.jepsen.workload import WorkloadConfig

TIME = float(os.environ.get("JEPSEN_SMOKE_TIME", "60"))

pytestmark = pytest.mark.timeout(TIME + 240)


async def test_jepsen_smoke(tmp_path: Path) -> None:
    seed = int(os.environ.get("JEPSEN_SMOKE_SEED", random.randrange(2**31)))
    cfg = RunConfig(time=TIME, seed=seed, nodes=3, kinds=KINDS,
                    workload=WorkloadConfig(clients=4, think=0.02), check_timeout=120.0,
                    out=tmp_path / "artifacts")
    lines: list[str] = []
    result = await run(cfg, lines.append)
    text = "\n".join(lines)
    assert result.ok, f"jepsen smoke run failed, seed {seed}:\n{text}"
    # The run did real work: operations completed, faults were applied, every check ran.
    assert result.summary, text
    ok_ops = sum(n for row in result.summary.values() for k, n in row.items() if k.startswith("ok"))
    assert ok_ops > 100, text
    assert any(s.resolved for s in result.schedule), text
    names = {v.name for v in result.verdicts}
    assert {"linearizable", "local reads", "final state", "writes after the final heal",
            "no unexpected exits", "all nodes answer", "convergence"} <= names, text
