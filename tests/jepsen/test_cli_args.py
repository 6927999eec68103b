"""The Jepsen runner's command line refuses odd arguments with a usage error, before any
process starts: a ``--time`` of ``nan`` or ``inf`` made the nemesis schedule loop forever
(the run hung, its memory growing, before starting anything)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openraft_py.kv.argtypes import positive_int_at_most
from openraft_py.testing.jepsen.__main__ import MAX_CLIENTS, MAX_NODES, main
from openraft_py.testing.jepsen.nemesis import make_schedule
from tests.process.children import alive, children


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("argv", "message"), [
    (["--time", "nan"], "--time must be a finite number of seconds > 0, not nan"),
    (["--time", "inf"], "--time must be a finite number of seconds > 0, not inf"),
    (["--time", "0"], "--time must be a finite number of seconds > 0"),
    (["--check-timeout", "-1"], "--check-timeout must be a finite number of seconds > 0"),
    (["--check-timeout", "nan"], "--check-timeout must be a finite number of seconds > 0"),
    (["--nodes", "0"], "argument --nodes: '0' must be at least 1"),
    (["--clients", "0"], "argument --clients: '0' must be at least 1"),
    (["--nodes", "five"], "argument --nodes: 'five' is not an integer"),
    # ``int`` read ``1_0`` as 10 and ``+7`` as 7: a replay of another seed than the one written.
    (["--seed", "1_0"], "argument --seed: '1_0' is not an integer written in the digits 0-9"),
    (["--seed", "+7"], "argument --seed: '+7' is not an integer written in the digits 0-9"),
    # A few zeros too many started that many serve processes / connections.
    (["--nodes", "100000"], f"argument --nodes: '100000' must be at most {MAX_NODES}"),
    (["--nodes", str(MAX_NODES + 1)], f"must be at most {MAX_NODES}"),
    (["--clients", "100000"], f"argument --clients: '100000' must be at most {MAX_CLIENTS}"),
    (["--clients", str(MAX_CLIENTS + 1)], f"must be at most {MAX_CLIENTS}"),
    # Every node would refuse it at its start: said once, before any node starts.
    (["--raft-config", "{"], "--raft-config: not valid JSON"),
    (["--raft-config", "[1]"], "--raft-config: a JSON object of Config fields, not list"),
    (["--raft-config", '{"snapshot_every": 10}'], "--raft-config: unknown Config fields ['snapshot_every']"),
    (["--raft-config", '{"heartbeat_interval": "50"}'], "--raft-config: Expected `int`, got `str`"),
    # Checked over the run's timing (election_timeout_min 800).
    (["--raft-config", '{"election_timeout_max": 500}'], "must be less than election_timeout_max=500"),
    # An empty item was dropped (a kind meant there, lost without a word). ``--bogus``: should
    # the list be taken, the command line is still refused, and nothing runs.
    (["--nemesis", "kill,,pause", "--bogus"], "argument --nemesis: an empty item in 'kill,,pause'"),
    (["--nemesis", "kill,", "--bogus"], "argument --nemesis: an empty item in 'kill,'"),
    (["--workload", ",register", "--bogus"], "argument --workload: an empty item in ',register'"),
])
def test_cli_refuses_odd_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_cli_refuses_an_out_that_cannot_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out`` naming a file was found only after the whole run, when the artifacts were
    written: a FileExistsError traceback, no report, the data directory left behind."""
    a_file = tmp_path / "report.txt"
    a_file.write_text("x")
    for out in (a_file, a_file / "sub"):
        with pytest.raises(SystemExit) as e:
            main(["--out", str(out)])
        assert e.value.code == 2
        assert f"--out {out}: cannot make this directory" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_schedule_refuses_a_duration_that_never_ends() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="duration must be a finite number"):
            make_schedule(1, bad, 3)
    assert make_schedule(1, 30.0, 3)


def test_the_count_bounds_are_inclusive() -> None:
    """The largest count allowed is accepted (the bound is documented in --help)."""
    nodes = positive_int_at_most(MAX_NODES)
    assert nodes("1") == 1 and nodes(str(MAX_NODES)) == MAX_NODES
    assert positive_int_at_most(MAX_CLIENTS)(str(MAX_CLIENTS)) == MAX_CLIENTS
    assert 3 <= MAX_NODES < 16 and 6 <= MAX_CLIENTS <= 256


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the node processes")
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("signum", "status", "word"), [
    (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_stops_every_node_and_removes_the_data(
    tmp_path: Path, signum: signal.Signals, status: int, word: str
) -> None:
    """Ctrl-C (SIGINT) or SIGTERM (``timeout``, a cancelled CI job) during a run: one line,
    no traceback, no node process left and no data directory left in the temporary
    directory. Ctrl-C printed a KeyboardInterrupt traceback and left the nodes' data behind;
    SIGTERM killed the runner alone and left every node running (they are in sessions of
    their own)."""
    pytest.importorskip("aiohttp")
    # Python ignores SIGINT in a child started with it ignored (a background job): restore it.
    code = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execv(sys.executable, [sys.executable, '-m', 'openraft_py.testing.jepsen', "
            "'--time', '25', '--nodes', '3', '--clients', '1', '--seed', '11'])")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    kids: set[int] = set()
    try:
        assert p.stdout is not None
        lines = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            lines.append(line)
            if "cluster up" in line or not line:
                break
        assert any("cluster up" in x for x in lines), "".join(lines)
        kids = children(p.pid)
        assert len(kids) >= 3, kids  # the three nodes
        p.send_signal(signum)
        _out, err = p.communicate(timeout=40)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for k in kids:  # whatever the outcome, leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, signal.SIGKILL)
    assert p.returncode == status, err
    assert f"jepsen: {word} (seed 11); every node process was stopped" in err
    assert "Traceback" not in err
    assert not alive(kids)
    assert not list(tmp_path.glob("jepsen-11-*")), list(tmp_path.iterdir())


@pytest.mark.timeout(30)
def test_a_raft_config_serve_takes_is_returned_as_given() -> None:
    from openraft_py.testing.jepsen.__main__ import raft_config_arg

    got = raft_config_arg('{"snapshot_policy": {"logs_since_last_n": 300}, "max_in_snapshot_log_to_keep": 20}')
    assert got == {"snapshot_policy": {"logs_since_last_n": 300}, "max_in_snapshot_log_to_keep": 20}
