"""``make run``'s job (``openraft_py.demo``), scaled down: it must finish and find every
acknowledged write on every node, through the failover and the membership changes."""

from __future__ import annotations

import pytest

from openraft_py import demo

pytestmark = pytest.mark.timeout(60)


async def test_demo_small_run_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert await demo.run(total=1500, writers=16, seed=2) == 0
    out = capsys.readouterr().out
    assert "every acknowledged write is on every node" in out
    assert "n4 added as a learner" in out
    assert "every acknowledged write is on every member of [2, 3, 4]" in out
