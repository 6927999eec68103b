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


@pytest.mark.parametrize(("args", "message"), [
    (["--writes", "0"], "argument --writes: '0' must be at least 1"),
    (["--writes", "-3"], "argument --writes: '-3' must be at least 1"),
    (["--writers", "0"], "argument --writers: '0' must be at least 1"),
    (["--writers", "many"], "argument --writers: 'many' is not an integer"),
])
def test_demo_refuses_no_writes_or_no_writers(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--writes 0`` or ``--writers 0`` is a usage error (exit 2), before any node starts
    (it ran the cluster, then died with an IndexError computing the latency of no write)."""
    with pytest.raises(SystemExit) as e:
        demo.main(args)
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
