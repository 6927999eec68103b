"""``bench/tcp.py`` refuses bad arguments with a usage error before it starts anything (a
``--dir`` that does not exist raised ``FileNotFoundError`` from ``mkdtemp`` after the fsync
probe, and ``--writers x`` a ``ValueError`` traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args", [["--writers", "0"], ["--writers", "x"], ["--writers", ","], ["--seconds", "0"],
                                  ["--repeat", "0"], ["--dir", "/nonexistent/x"]])
def test_bad_arguments_are_refused(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "bench/tcp.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=50)
    assert proc.returncode == 2, proc.stderr
    assert "tcp.py: error:" in proc.stderr
    assert "Traceback" not in proc.stderr
