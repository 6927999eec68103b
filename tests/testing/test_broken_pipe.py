"""The testing kit's command lines piped into a reader that goes away (``--trace | head``,
``lincheck ... | head -1``) stop quietly with 141, as other tools killed by SIGPIPE do: they
printed a BrokenPipeError traceback (the simulator from inside its run, its workers then
left to the executor; the Jepsen runner also left its data directory behind)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"client": 1, "op": "put", "key": "k", "value": "a", "ok": True, "call": 1, "ret": 2})
                    + "\n")
    return path


@pytest.mark.timeout(90)
@pytest.mark.parametrize("argv", [
    ["openraft_py.testing.lincheck", "--format", "jsonl", "HISTORY"],
    ["openraft_py.testing.sim", "--seed", "3", "--trace"],
    # Two chunks of seeds (sim/cli.py's _CHUNK is 10) in two workers: the one-seed chunk ends
    # first, and its progress line meets the closed pipe while the other worker still runs
    # its ten. Short runs (3 steps): with 20 seeds of 30 steps the first line waited for ten
    # whole runs (50 s on a loaded machine, of the test's 90).
    ["openraft_py.testing.sim", "--seeds", "11", "--jobs", "2", "--steps", "3"],
    # The Jepsen runner's first line: it left its (empty) data directory behind too.
    ["openraft_py.testing.jepsen", "--time", "5", "--nodes", "3", "--clients", "1", "--seed", "5"],
], ids=["lincheck", "sim-trace", "sim-seeds", "jepsen"])
def test_a_reader_that_went_away_stops_the_command_quietly(argv: list[str], tmp_path: Path) -> None:
    argv = [str(_jsonl(tmp_path)) if a == "HISTORY" else a for a in argv]
    temp = tmp_path / "temp"
    temp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "TMPDIR": str(temp)})
    try:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()  # the reader is gone before the first line is written
        err = p.stderr.read()
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stderr is not None:
            p.stderr.close()  # left open, the pipe was a ResourceWarning when collected
    assert p.returncode == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert list(temp.iterdir()) == []
