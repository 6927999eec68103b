"""Process-level crash tests of the RocksDB state machine's snapshot files and the log purge:
SIGKILL a child (``rocks_snapshot_crash_child``) at random points of its work, then check what
a restart finds.

- ``node``: a one-node cluster that builds a snapshot every 7 entries and purges its log up
  to it at once, so kills land inside builds and purges. After each kill the stores open,
  the current snapshot is intact and covers the purged log, the state machine has applied
  at least up to the purge, and a restarted node holds every acknowledged write.
- ``install``: a state machine installing snapshot after snapshot. After each kill the state
  is exactly the last snapshot whose install returned, or the one after it (never a mix),
  and the current snapshot file is intact and holds what its meta says.

Kills come after a random number of the child's reports (``random.Random(seed)``; the seed
is in every failure message, and ``ROCKS_CRASH_SEED`` replays it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from openraft_py import Config, Raft
from openraft_py.kv.rocks_snapshot import read_snapshot_pairs
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.storage.rocks import RocksLogStore
from tests.process.rocks_snapshot_crash_child import INSTALL_INDEX_STEP, install_snapshot_pairs

ROUNDS = 8
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(90)


def _seed() -> int:
    return int(os.environ.get("ROCKS_CRASH_SEED", time.time_ns() % 1_000_000))


def _run_and_kill(mode: str, path: Path, reports: int) -> Iterator[int]:
    """Start the child in ``mode`` on ``path``, SIGKILL it once it printed ``reports`` lines,
    and yield the number of every line it printed (``_kill_after``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    yield from _kill_after([sys.executable, "-m", "tests.process.rocks_snapshot_crash_child", mode, str(path)],
                           reports, env)


def _kill_after(argv: list[str], reports: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run ``argv``, SIGKILL it once it printed ``reports`` lines (``report N``), and yield
    every ``N`` it printed. Checks that it died of the kill (a child that could not open its
    stores exits with an error instead: the end of its stderr is in the failure).

    Its stderr goes to a file, read only then: a pipe nobody read while the child ran held
    64 KiB, and a child that logged more blocked on it, its reports never came, and the test
    hung until its timeout."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT, env=env)
        try:
            assert proc.stdout is not None
            seen = 0
            for line in proc.stdout:
                yield int(line.split()[1])
                seen += 1
                if seen == reports:
                    proc.send_signal(signal.SIGKILL)
            rc = proc.wait(20)
            assert rc == -signal.SIGKILL, f"the child exited by itself ({rc}): {_tail(stderr)}"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(20)
            if proc.stdout is not None:
                proc.stdout.close()


def _tail(file: IO[bytes], most: int = 2000) -> str:
    """The last ``most`` bytes of ``file``, decoded."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - most))
    return file.read().decode(errors="replace")


@pytest.mark.timeout(20)
def test_a_child_that_logs_much_is_still_read_and_killed() -> None:
    """A child that writes 1 MiB to its stderr before its first report: its reports are
    read and it is killed after them. Before, its stderr was a pipe read only after it
    died: the child blocked once 64 KiB filled it, and the test waited for its report until
    the timeout."""
    script = ("import sys, time\n"
              "sys.stderr.write('x' * (1 << 20)); sys.stderr.flush()\n"
              "print('report 0', flush=True)\n"
              "time.sleep(60)\n")  # (killed after its report)
    assert list(_kill_after([sys.executable, "-c", script], 1)) == [0]


def _pairs_of(sm_snapshot_data: object, snapshot_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in read_snapshot_pairs(sm_snapshot_data, snapshot_id)}  # type: ignore[arg-type]


async def _check_node_dir(root: Path, acked: int, where: str) -> None:
    """After a kill of the ``node`` child: the stores open; the current snapshot is intact,
    holds ``k0 .. k<m-1>`` for some m, and covers the purged log; the state machine has
    applied at least up to the purge. ``acked``: the last write acknowledged (-1: none)."""
    log, sm = await RocksLogStore.open(root / "log"), await RocksStateMachine.open(root / "sm")
    try:
        purged = (await log.get_log_state()).last_purged_log_id
        applied, _ = await sm.applied_state()
        snap = await sm.get_current_snapshot()
        if purged is not None:
            assert snap is not None, f"{where}: the log is purged up to {purged} but there is no snapshot"
            assert snap.meta.last_log_id is not None and snap.meta.last_log_id >= purged, (
                f"{where}: the snapshot ({snap.meta.last_log_id}) does not cover the purged log ({purged})")
            assert applied is not None and applied >= purged, (
                f"{where}: the state machine applied up to {applied}, behind the purged log ({purged})")
        if snap is not None:
            try:
                pairs = _pairs_of(snap.data, snap.meta.snapshot_id)
            finally:
                snap.data.close()
            assert pairs == {f"k{i}": f"v{i}" for i in range(len(pairs))}, f"{where}: the snapshot's data is not a prefix of the writes"
    finally:
        await log.aclose()
        await sm.aclose()


async def _check_node_holds(root: Path, acked: int, where: str) -> None:
    """Start the node on ``root`` again and wait until it applied its whole log: every write up
    to ``acked`` is there."""
    config = Config(election_timeout_min=50, election_timeout_max=100, heartbeat_interval=15)
    log, sm = await RocksLogStore.open(root / "log"), await RocksStateMachine.open(root / "sm")
    router = Router(seed=2)
    raft = await Raft.new(1, config, router.factory(1), log, sm, seed=2)
    try:
        router.register(1, raft)
        await raft.wait(10).current_leader(1, "elected again")
        last = raft.metrics.last_log_index
        assert last is not None
        await raft.wait(10).applied_index_at_least(last, "the log applied")
        missing = [i for i in range(acked + 1) if sm.get(f"k{i}") != f"v{i}"]
        assert not missing, f"{where}: acknowledged writes lost: {missing[:20]} ({len(missing)})"
    finally:
        await raft.shutdown()
        await log.aclose()
        await sm.aclose()


def test_sigkill_during_snapshot_builds_and_purges_loses_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seed = _seed()
    rng = random.Random(seed)
    caplog.set_level(logging.ERROR)
    acked = -1
    for round_ in range(ROUNDS):
        for i in _run_and_kill("node", tmp_path, rng.randint(1, 40)):
            acked = max(acked, i)
        asyncio.run(_check_node_dir(tmp_path, acked, f"seed {seed}, kill {round_ + 1}"))
    assert acked >= ROUNDS, f"seed {seed}: only {acked + 1} writes in {ROUNDS} runs"
    asyncio.run(_check_node_holds(tmp_path, acked, f"seed {seed}"))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, f"seed {seed}: {errors}"  # e.g. a damaged snapshot file, replaced when read


async def _check_installed(path: Path, acked: int, where: str) -> int:
    """After a kill of the ``install`` child: the state is snapshot ``acked`` or ``acked + 1``,
    whole; the current snapshot file holds what its meta names. Returns the n installed."""
    sm = await RocksStateMachine.open(path)
    try:
        applied, _ = await sm.applied_state()
        n = 0 if applied is None else applied.index // INSTALL_INDEX_STEP
        assert n in (acked, acked + 1), f"{where}: installed snapshot {n}, but {acked} was the last whose install returned"
        assert sm.data == (install_snapshot_pairs(n) if n else {}), f"{where}: the state is not snapshot {n}'s"
        snap = await sm.get_current_snapshot()
        if n:
            assert snap is not None, f"{where}: snapshot {n} is installed but none is current"
        if snap is not None:
            try:
                m = re.fullmatch(r"install-(\d+)", snap.meta.snapshot_id)
                assert m is not None, f"{where}: the current snapshot is {snap.meta.snapshot_id!r}"
                # Killed between the ingestion and the rename, the one before stays current.
                assert int(m[1]) in (n - 1, n), f"{where}: snapshot {m[1]} is current, {n} is installed"
                assert _pairs_of(snap.data, snap.meta.snapshot_id) == install_snapshot_pairs(int(m[1])), (
                    f"{where}: the current snapshot's file does not hold snapshot {m[1]}")
            finally:
                snap.data.close()
        return n
    finally:
        await sm.aclose()


def test_sigkill_during_snapshot_installs_leaves_one_whole_snapshot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seed = _seed()
    rng = random.Random(seed)
    caplog.set_level(logging.ERROR)
    path = tmp_path / "sm"
    acked = 0
    for round_ in range(ROUNDS):
        for n in _run_and_kill("install", path, rng.randint(1, 4)):
            acked = max(acked, n)
        acked = asyncio.run(_check_installed(path, acked, f"seed {seed}, kill {round_ + 1}"))
    assert acked >= ROUNDS, f"seed {seed}: only {acked} installs in {ROUNDS} runs"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, f"seed {seed}: {errors}"
    leftovers = [p.name for p in (path / "snapshots").iterdir() if p.suffix == ".tmp" or p.name.endswith(".sst")]
    assert not leftovers, f"seed {seed}: files of killed installs left behind: {leftovers}"
