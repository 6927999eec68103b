"""The suite under pytest-xdist: the test modules that start work early (``start_early``: the
wheel build, the Jepsen cases) have it started once, by one worker, in the modes
``tests/conftest.py`` groups them for (``EarlyTogether``). Each case runs pytest with two
workers on a few modules, their work replaced by a note and every test skipped
(``xdist_early_probe.py``): about 2 s each, the cost of starting two worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
EARLY = {"test_wheel": 6, "jepsen.test_smoke": 1}
"""The early modules the runs select, and how many tests each has."""


@pytest.mark.parametrize("dist", [[], ["--dist", "loadfile", "--no-loadscope-reorder"]], ids=["n-alone", "loadfile"])
def test_early_work_starts_once_in_one_worker(dist: list[str], tmp_path: Path) -> None:
    """``-n 2`` alone (xdist's ``load``: before, both workers were handed early tests and
    each started every early module's work, the wheel built twice at once in one checkout)
    and ``make test``'s ``--dist loadfile``: each early module's ``start_early`` is called
    once, with all its tests, all of them in the same worker."""
    pytest.importorskip("xdist")
    notes = tmp_path / "notes"
    # As a developer runs it: not inside this run's own xdist worker.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST"))}
    env["EARLY_PROBE_OUT"] = str(notes)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "xdist_early_probe", "-n", "2", *dist,
         "tests/test_wheel.py", "tests/jepsen/test_smoke.py", "tests/jepsen/test_queue.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    calls = sorted(line.split() for line in notes.read_text(encoding="utf-8").splitlines())
    assert sorted(module for _, module, _ in calls) == sorted(EARLY), calls
    assert {module: int(n) for _, module, n in calls} == EARLY, calls
    assert len({worker for worker, _, _ in calls}) == 1, calls
    assert all(worker.startswith("gw") for worker, _, _ in calls), calls
