"""``bench/start_snapshot.py``: it fills the stores, then reports each start's open and
``restore_state`` (the figures are not judged: the machine running the suite is busy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(90)
def test_it_reports_each_start_and_the_medians(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/start_snapshot.py", "--mb", "2", "--runs", "2", "--cold",
                           "--dir", str(tmp_path / "stores")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"filled .*/stores: snapshot of 1-32 in [\d.]+ s", lines[0]), proc.stdout
    assert re.fullmatch(r"snapshot file: 2 MB \(cold page cache\)", lines[1]), proc.stdout
    figures = r"open \d+ ms \(CPU \d+ ms\), restore_state \d+ ms \(CPU \d+ ms\)"
    assert [bool(re.fullmatch(rf"run {n}: {figures}", line)) for n, line in enumerate(lines[2:4], 1)] == [True, True], proc.stdout
    assert re.fullmatch(rf"median: {figures}", lines[4]), proc.stdout
    assert not (tmp_path / "stores").exists(), "the --dir this run made, without --keep, is removed"
