"""The Jepsen smoke run inside ``make test``: 60 seconds of real ``serve`` processes under
every nemesis kind, checked end to end.

Three nodes (the machine is small and shared; ``make jepsen`` runs five), four clients, the
register and multi-key workloads, a seed per run that is printed (rerun it with
``python -m openraft_py.testing.jepsen --seed N``); ``JEPSEN_SMOKE_SEED`` pins it and
``JEPSEN_SMOKE_TIME`` changes the duration. Passes only when every check passes: the history
is linearizable per key (lincheck), local reads invent nothing, every node ends with the same
state and no acknowledged write was lost, every node answers and none exited except by the
nemesis, and a write succeeds within the bound after the final heal. The run itself
(``cases.py``) starts in the background right after collection.
"""

from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")

from . import cases

pytestmark = pytest.mark.timeout(cases.TOTAL_BUDGET + 120)


def start_early(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Queue the smoke run (``tests/conftest.py``)."""
    cases.start(config, ["smoke"])


def test_jepsen_smoke() -> None:
    res = cases.result("smoke")
    text = "\n".join(res["lines"])
    assert res["ok"], f"jepsen smoke run failed, seed {res['seed']}:\n{text}"
    # The run did real work: operations completed, faults were applied, every check ran.
    assert res["has_summary"], text
    assert res["ok_ops"] > 100, text
    assert res["resolved_steps"] > 0, text
    assert {"linearizable", "local reads", "final state", "writes after the final heal",
            "no unexpected exits", "all nodes answer", "convergence"} <= set(res["verdicts"]), text
