"""Process-level crash test of RocksLogStore: SIGKILL a writing child at random moments and
check that every acknowledged entry and vote survived.

The child (``rocks_crash_child``) reports each durable append and each saved vote on stdout;
the parent kills it after a random delay (``random.Random(seed)``; the seed is in every
failure message), reopens the store and checks: it opens cleanly, every acknowledged index is
present with the payload derived from its index, the log has no hole, and the vote is not
behind the last acknowledged one.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openraft_py.storage.rocks import RocksLogStore
from tests.process.rocks_crash_child import payload

KILLS = 20
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def _read_acks(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, int]:
    """Read the child's stdout until it dies; return (max acked index, max acked vote term)."""
    acked, voted = -1, 0
    assert proc.stdout is not None
    for line in proc.stdout:
        kind, _, num = line.decode().partition(" ")
        if kind == "A":
            acked = max(acked, int(num))
        elif kind == "V":
            voted = max(voted, int(num))
    return acked, voted


def test_sigkill_never_loses_acknowledged_writes(tmp_path: Path) -> None:
    seed = int(os.environ.get("ROCKS_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    path = str(tmp_path / "log")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    best_acked, best_vote = -1, 0
    started = time.monotonic()
    for round_ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.process.rocks_crash_child", path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        try:
            # Wait for the first ack (the child is up), then kill at a random moment.
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first, f"seed={seed} round={round_}: child died: {proc.stderr.read().decode() if proc.stderr else ''}"
            time.sleep(rng.uniform(0.0, 0.25))
            proc.send_signal(signal.SIGKILL)
            acked, voted = _read_acks(proc, time.monotonic() + 5)
            kind, _, num = first.decode().partition(" ")
            if kind == "A":
                acked = max(acked, int(num))
            elif kind == "V":
                voted = max(voted, int(num))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        best_acked = max(best_acked, acked)
        best_vote = max(best_vote, voted)

        async def check(round_: int, best_acked: int, best_vote: int) -> None:
            store = RocksLogStore(path)  # opens cleanly after the kill
            try:
                state = await store.get_log_state()
                last = -1 if state.last_log_id is None else state.last_log_id.index
                assert last >= best_acked, f"seed={seed} round={round_}: last {last} < acked {best_acked}"
                got = await store.try_get_log_entries(0, last + 1)
                assert [e.log_id.index for e in got] == list(range(last + 1)), f"seed={seed}: hole"
                for e in got:
                    assert e.payload.data == payload(e.log_id.index), f"seed={seed}: entry {e.log_id} corrupted"  # type: ignore[union-attr]
                vote = await store.read_vote()
                term = 0 if vote is None else vote.term
                assert term >= best_vote, f"seed={seed} round={round_}: vote {term} behind acked {best_vote}"
            finally:
                await store.aclose()

        asyncio.run(check(round_, best_acked, best_vote))
    assert best_acked > 0, f"seed={seed}: nothing was acknowledged"
    assert time.monotonic() - started < 45, f"seed={seed}: too slow"
