"""``make run``'s job (``openraft_py.demo``), scaled down: it must finish and find every
acknowledged write on every node, through the failover and the membership changes."""

from __future__ import annotations

import signal
import subprocess
import sys

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
    (["--seed", "1_0"], "argument --seed: '1_0' is not an integer written in the digits 0-9"),
    # Ten thousand writers starved the nodes' heartbeats on the one event loop: the cluster
    # kept re-electing and the demo never finished; ten million writes ran out of memory.
    (["--writers", "10000"], f"argument --writers: '10000' must be at most {demo.MAX_WRITERS}"),
    (["--writes", "10000000"], f"argument --writes: '10000000' must be at most {demo.MAX_WRITES}"),
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


@pytest.mark.timeout(90)
def test_ctrl_c_exits_130_with_one_line() -> None:
    """Ctrl-C printed a CancelledError and a KeyboardInterrupt traceback."""
    # Python ignores SIGINT in a child started with it ignored (a background job): restore it.
    code = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execv(sys.executable, [sys.executable, '-u', '-m', 'openraft_py.demo', '--writes', "
            f"'{demo.MAX_WRITES}'])")
    # (``with``: the pipes are closed even when the demo does not stop; they were left to the
    # garbage collector, whose ResourceWarning then failed the next test of the worker.)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout is not None
            first = p.stdout.readline()
            assert "cluster of 3 nodes up" in first, first
            p.send_signal(signal.SIGINT)
            _out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert p.returncode == 130, err
    assert err.splitlines()[-1] == "demo: interrupted" and "Traceback" not in err, err
