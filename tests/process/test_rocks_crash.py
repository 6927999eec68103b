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


class _Zygote:
    """The ``rocks_crash_child --zygote`` process writing to the store at ``path``: ``start``
    forks one writing child, ``ended`` reads until it ended. ``close`` ends them both."""

    def __init__(self, path: str, errors: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.errors = errors  # a file: read in a failure message without blocking
        self.child: int | None = None  # the writing child's pid until its end is read
        with errors.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.process.rocks_crash_child", "--zygote", path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                env=env,
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def start(self) -> int:
        """Fork a writing child; its pid."""
        self.stdin.write(b"run\n")
        self.stdin.flush()
        pid_line = self.stdout.readline()
        assert pid_line.startswith(b"P "), f"no child: {pid_line!r}: {self.errors.read_text()}"
        self.child = int(pid_line.split()[1])
        return self.child

    def ended(self) -> tuple[int, int, int]:
        """Read until the child ended (``X``); return (max acked index, max acked vote term,
        the child's wait status)."""
        acked, voted = -1, 0
        for line in self.stdout:
            kind, _, num = line.decode().partition(" ")
            if kind == "A":
                acked = max(acked, int(num))
            elif kind == "V":
                voted = max(voted, int(num))
            elif kind == "X":
                self.child = None
                return acked, voted, int(num)
        raise AssertionError(f"the zygote died: {self.errors.read_text()}")

    def close(self) -> None:
        """End the writing child, if one runs, then the zygote (EOF on its stdin, read only
        between children: a zygote waiting for its child would not see it)."""
        # (The zygote reaps a child only after it ended; one killed here is not reaped yet,
        # so the pid is still its own, unless it ended by itself a moment ago.)
        if self.child is not None:
            try:
                os.kill(self.child, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - it ended, and the zygote reaped it
                pass
            self.child = None
        self.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - it ends at EOF on stdin
            self.proc.kill()
            self.proc.wait(5)
        self.stdout.close()


def test_sigkill_never_loses_acknowledged_writes(tmp_path: Path) -> None:
    seed = int(os.environ.get("ROCKS_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    path = str(tmp_path / "log")
    best_acked, best_vote = -1, 0
    started = time.monotonic()
    # One interpreter start for all the kills: the zygote forks each writing child, so the
    # rounds cost the writes and the kills, not KILLS starts of Python on a loaded machine.
    zygote = _Zygote(path, tmp_path / "stderr")
    try:
        for round_ in range(KILLS):
            pid = zygote.start()
            # Wait for the first ack (the child is up), then kill at a random moment.
            first = zygote.stdout.readline()
            assert first and not first.startswith(b"X "), (
                f"seed={seed} round={round_}: child died ({first!r}): "
                f"{zygote.errors.read_text()}"
            )
            time.sleep(rng.uniform(0.0, 0.25))
            os.kill(pid, signal.SIGKILL)
            acked, voted, status = zygote.ended()
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
        zygote.close()
    assert best_acked > 0, f"seed={seed}: nothing was acknowledged"
    assert time.monotonic() - started < 45, f"seed={seed}: too slow"


def test_a_round_that_fails_leaves_no_writer_running(tmp_path: Path) -> None:
    """A failure between a child's start and its kill (an assertion, the test's timeout)
    ends the writing child with the zygote, at once: the zygote waited for that child, so
    closing its stdin ended nothing; after 10 s the zygote was killed and the child,
    orphaned, went on holding the store (stuck once its acks found the pipe closed)."""
    zygote = _Zygote(str(tmp_path / "log"), tmp_path / "stderr")
    pid = zygote.start()
    try:
        assert zygote.stdout.readline().startswith((b"A ", b"V ")), zygote.errors.read_text()
    finally:
        t0 = time.monotonic()
        zygote.close()
        took = time.monotonic() - t0
    deadline = time.monotonic() + 5
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    alive = _running(pid)
    if alive:  # (the test's own cleanup)
        os.kill(pid, signal.SIGKILL)
    assert not alive and took < 5, f"the writing child outlived the zygote ({alive}), close took {took:.1f}s"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an orphan init has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


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
