"""The testing kit's command lines (the simulator, the linearizability checker, the Jepsen
test) refuse a flag of one value given twice, as ``openraft-py`` does (``GivenOnce``).

argparse keeps the last value of a repeated flag without a word: ``lincheck --format jsonl
--format jepsen FILE`` read a JSON-lines history as Jepsen's and said it held no operation,
``sim --seeds 1000 --seeds 10`` ran 10 seeds, and ``jepsen --time 300 --time 3`` ran for
3 s."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from openraft_py.testing.jepsen.__main__ import main as jepsen_main
from openraft_py.testing.lincheck.cli import main as lincheck_main
from openraft_py.testing.sim.cli import main as sim_main

pytestmark = pytest.mark.timeout(60)

_MAINS: dict[str, Callable[[list[str]], int]] = {"sim": sim_main, "lincheck": lincheck_main, "jepsen": jepsen_main}


@pytest.mark.parametrize(("cli", "argv", "flag"), [
    ("lincheck", ["--format", "jsonl", "--format", "jepsen", "h.jsonl"], "--format"),
    ("lincheck", ["--format", "jsonl", "--timeout", "5", "--timeout", "1", "h.jsonl"], "--timeout"),
    ("sim", ["--seeds", "1000", "--seeds", "10"], "--seeds"),
    ("sim", ["--seed", "17", "--seed", "18"], "--seed"),
    ("sim", ["--seeds", "1", "--jobs", "1", "--jobs", "2"], "--jobs"),
    ("sim", ["--seeds", "1", "--wire", "all", "--wire", "none"], "--wire"),
    ("jepsen", ["--time", "300", "--time", "3"], "--time"),
    ("jepsen", ["--nodes", "5", "--nodes", "3"], "--nodes"),
    ("jepsen", ["--nemesis", "kill", "--nemesis", "pause"], "--nemesis"),
    ("jepsen", ["--raft-config", "{}", "--raft-config", "{}"], "--raft-config"),
], ids=lambda x: " ".join(x) if isinstance(x, list) else str(x))
def test_a_flag_of_one_value_given_twice_is_a_usage_error_naming_it(
        cli: str, argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    # (``--bogus`` last: a parse that takes the repeated flag fails on it, before anything runs.)
    with pytest.raises(SystemExit) as exited:
        _MAINS[cli]([*argv, "--bogus"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {flag}: given twice" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("cli", ["sim", "jepsen"])
def test_a_flag_that_may_repeat_still_repeats(cli: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--fault`` / ``--bug`` (one engine bug each) are meant to be given more than once: the
    parse gets past them (to the usage error of a flag given after them)."""
    flag = {"sim": "--fault", "jepsen": "--bug"}[cli]
    argv = [flag, "commit_previous_term", flag, "apply_before_commit", "--bogus"]
    with pytest.raises(SystemExit):
        _MAINS[cli](argv)
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err and "given twice" not in err, err
