"""Child of ``test_rocks_snapshot_crash``: works on RocksDB stores forever, reporting on stdout,
so that a SIGKILL lands inside a snapshot build, a log purge or a snapshot install.

``node DIR``: a one-node cluster on ``DIR/log`` and ``DIR/sm`` that builds a snapshot every
few entries and purges the log up to it at once; writes ``k<i> = v<i>`` and prints ``W <i>``
once the write of ``k<i>`` returned (committed and applied). Resumes after the last key the
state machine holds.

``install DIR``: installs snapshot ``n`` (``install_snapshot_pairs(n)``) into the state
machine at ``DIR`` for n = 1, 2, ... (resuming after the applied one), each received into a
``begin_receiving_snapshot`` file as a follower does, and prints ``I <n>`` once its install
returned."""

from __future__ import annotations

import asyncio
import sys

from openraft_py import Config, Raft, SnapshotPolicy
from openraft_py.kv.rocks_snapshot import write_snapshot
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.storage import KvSet, encode_kv
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import EMPTY_STORED_MEMBERSHIP, LogId, SnapshotMeta

INSTALL_INDEX_STEP = 10
"""Snapshot ``n`` covers the log up to index ``n * INSTALL_INDEX_STEP``."""


def install_snapshot_pairs(n: int) -> dict[str, str]:
    """The state snapshot ``n`` holds: its key set alternates, so that each install both adds
    keys and deletes some, and every value names ``n``."""
    count = 300 + (n % 2) * 200
    return {f"k{i:05d}": f"{n}-{i}" for i in range(count)}


def install_meta(n: int) -> SnapshotMeta:
    return SnapshotMeta(LogId(1, n * INSTALL_INDEX_STEP), EMPTY_STORED_MEMBERSHIP, f"install-{n}")


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def node(root: str) -> None:
    config = Config(election_timeout_min=50, election_timeout_max=100, heartbeat_interval=15,
                    snapshot_policy=SnapshotPolicy.logs_since_last(7), max_in_snapshot_log_to_keep=0)
    log, sm = await RocksLogStore.open(f"{root}/log"), await RocksStateMachine.open(f"{root}/sm")
    nxt = 0
    while sm.get(f"k{nxt}") is not None:
        nxt += 1
    fresh = (await log.get_log_state()).last_log_id is None
    router = Router(seed=1)
    raft = await Raft.new(1, config, router.factory(1), log, sm, seed=1)
    router.register(1, raft)
    if fresh:
        await raft.initialize({1})
    await raft.wait(10).current_leader(1, "elected")
    while True:
        await raft.client_write(encode_kv(KvSet(f"k{nxt}", f"v{nxt}")))
        report(f"W {nxt}")
        nxt += 1


async def install(path: str) -> None:
    sm = await RocksStateMachine.open(path)
    applied, _ = await sm.applied_state()
    n = 1 if applied is None else applied.index // INSTALL_INDEX_STEP + 1
    while True:
        f = await sm.begin_receiving_snapshot()
        pairs = install_snapshot_pairs(n)
        write_snapshot(f, install_meta(n).last_log_id, EMPTY_STORED_MEMBERSHIP,
                       ((k.encode(), v.encode()) for k, v in sorted(pairs.items())))
        f.flush()
        await sm.install_snapshot(install_meta(n), f)
        report(f"I {n}")
        n += 1


if __name__ == "__main__":
    asyncio.run({"node": node, "install": install}[sys.argv[1]](sys.argv[2]))
