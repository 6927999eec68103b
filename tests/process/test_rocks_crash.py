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


def _read_until_ended(zygote: subprocess.Popen[bytes], errors: Path) -> tuple[int, int, int]:
    """Read the zygote's stdout until its child ended (``X``); return (max acked index, max
    acked vote term, the child's wait status)."""
    acked, voted = -1, 0
    assert zygote.stdout is not None
    for line in zygote.stdout:
        kind, _, num = line.decode().partition(" ")
        if kind == "A":
            acked = max(acked, int(num))
        elif kind == "V":
            voted = max(voted, int(num))
        elif kind == "X":
            return acked, voted, int(num)
    raise AssertionError(f"the zygote died: {errors.read_text()}")


def test_sigkill_never_loses_acknowledged_writes(tmp_path: Path) -> None:
    seed = int(os.environ.get("ROCKS_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    path = str(tmp_path / "log")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    best_acked, best_vote = -1, 0
    started = time.monotonic()
    # One interpreter start for all the kills: the zygote forks each writing child, so the
    # rounds cost the writes and the kills, not KILLS starts of Python on a loaded machine.
    errors = tmp_path / "stderr"  # a file: read in a failure message without blocking
    with errors.open("wb") as err:
        zygote = subprocess.Popen(
            [sys.executable, "-m", "tests.process.rocks_crash_child", "--zygote", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env=env,
        )
    assert zygote.stdin is not None and zygote.stdout is not None
    try:
        for round_ in range(KILLS):
            zygote.stdin.write(b"run\n")
            zygote.stdin.flush()
            pid_line = zygote.stdout.readline()
            assert pid_line.startswith(b"P "), f"seed={seed} round={round_}: no child: {pid_line!r}"
            # Wait for the first ack (the child is up), then kill at a random moment.
            first = zygote.stdout.readline()
            assert first and not first.startswith(b"X "), (
                f"seed={seed} round={round_}: child died ({first!r}): "
                f"{errors.read_text()}"
            )
            time.sleep(rng.uniform(0.0, 0.25))
            os.kill(int(pid_line.split()[1]), signal.SIGKILL)
            acked, voted, status = _read_until_ended(zygote, errors)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"seed={seed} round={round_}: the child ended by itself (status {status})"
            )
            kind, _, num = first.decode().partition(" ")
            if kind == "A":
                acked = max(acked, int(num))
            elif kind == "V":
                voted = max(voted, int(num))
            best_acked = max(best_acked, acked)
            best_vote = max(best_vote, voted)
            asyncio.run(_check(path, seed, round_, best_acked, best_vote))
    finally:
        zygote.stdin.close()
        try:
            zygote.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - it ends at EOF on stdin
            zygote.kill()
            zygote.wait(5)
        zygote.stdout.close()
    assert best_acked > 0, f"seed={seed}: nothing was acknowledged"
    assert time.monotonic() - started < 45, f"seed={seed}: too slow"


async def _check(path: str, seed: int, round_: int, best_acked: int, best_vote: int) -> None:
    """The store at ``path`` after a kill: it opens cleanly, holds every acknowledged index
    with its payload and no hole, and its vote is not behind the last acknowledged one."""
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
