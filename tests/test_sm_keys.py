"""``bench/sm_keys.py``: every key order it reports is measured (not judged: the machine
running the suite is busy), the databases it makes are removed, and bad arguments are
refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "bench/sm_keys.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.timeout(150)
def test_reports_every_order_per_segment(tmp_path: Path) -> None:
    out = tmp_path / "keys.json"
    work = tmp_path / "dbs"
    work.mkdir()
    proc = run("--batches", "6", "--batch", "32", "--segment", "4", "--dir", str(work), "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(out.read_text())
    assert got["orders"] == ["writers", "sorted", "sequential", "random"]
    # Segments of 4 batches, the last one short.
    assert [s["batches"] for s in got["segments"]] == [[1, 4], [5, 6]]
    assert [s["keys_per_order"] for s in got["segments"]] == [128, 192]
    for seg in got["segments"]:
        assert set(seg["us_per_entry"]) == set(got["orders"])
        assert all(v > 0 for v in seg["us_per_entry"].values())
    assert sum(line.startswith("batches ") for line in proc.stdout.splitlines()) == 2
    assert list(work.iterdir()) == []  # every state machine's directory is gone


@pytest.mark.timeout(60)
def test_the_keys_of_each_order() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.sm_keys import keys_for
    finally:
        sys.path.remove(str(ROOT))
    import random

    rng = random.Random(0)
    assert keys_for("writers", 7, 3, rng) == ["b0-7", "b1-7", "b2-7"]
    assert keys_for("sorted", 7, 12, rng) == sorted(keys_for("writers", 7, 12, rng))
    assert keys_for("sequential", 2, 3, rng) == [f"{i:016d}" for i in (6, 7, 8)]
    got = keys_for("random", 0, 50, rng)
    assert len(set(got)) == 50 and all(len(k) == 16 for k in got)
    with pytest.raises(ValueError, match="unknown key order"):
        keys_for("reverse", 0, 1, rng)


@pytest.mark.parametrize("args", [["--batches", "0"], ["--batch", "0"], ["--batch", "65537"], ["--segment", "0"], ["--orders", "foo"],
                                  ["--orders", "random,random"], ["--orders", ","], ["--dir", "/nonexistent/x"]])
def test_bad_arguments_are_refused(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert "error:" in proc.stderr
