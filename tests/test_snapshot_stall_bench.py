"""``bench/snapshot_stall.py --rocks``: a ``RocksStateMachine`` build is timed and the event
loop's timer keeps waking during it (the figures are not judged: the machine running the
suite is busy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(90)
def test_rocks_mode_reports_each_build_and_the_loops_lag() -> None:
    proc = subprocess.run([sys.executable, "bench/snapshot_stall.py", "--rocks", "--keys", "20000", "--runs", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pat = re.compile(r"run (\d): RocksStateMachine build of 20000 keys ([\d.]+) ms \(([\d.]+) us/key\); "
                     r"a 1 ms timer woke (\d+) times during it \(\d+ without delays\), late by median "
                     r"([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms")
    runs = [m.groups() for m in map(pat.fullmatch, proc.stdout.splitlines()) if m]
    assert [r[0] for r in runs] == ["0", "1"], proc.stdout
    for _, took, per_key, _woke, p50, p99, worst in runs:
        assert float(took) > 0 and float(per_key) > 0
        assert 0 <= float(p50) <= float(p99) <= float(worst)
