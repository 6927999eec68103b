"""The benchmarks' command lines (``bench/tcp.py``, ``floor.py``, ``cluster.py``,
``tcp_one_process.py``) refuse bad arguments with a usage error before they start anything:
``tcp.py --dir`` naming no directory raised ``FileNotFoundError`` from ``mkdtemp`` after the
fsync probe, ``--writers x`` a ``ValueError`` traceback, ``floor.py --seconds -1`` a
``TypeError``; ``--writers 0`` and ``--repeat 0`` were taken."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

COMMON = [["--writers", "0"], ["--seconds", "0"], ["--seconds", "-1"], ["--repeat", "0"]]
CASES = [
    *(("tcp.py", a) for a in [*COMMON, ["--writers", "x"], ["--writers", ","], ["--dir", "/nonexistent/x"]]),
    *(("floor.py", a) for a in [*COMMON, ["--writers", "x"]]),
    *(("cluster.py", a) for a in COMMON),
    *(("tcp_one_process.py", a) for a in COMMON),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("script", "args"), CASES, ids=[f"{s}{' '.join(a)}" for s, a in CASES])
def test_bad_arguments_are_refused(script: str, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=50)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{script}: error:" in proc.stderr
    assert "Traceback" not in proc.stderr
