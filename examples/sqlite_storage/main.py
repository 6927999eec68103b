"""A 3-node cluster on SQLite storage: write, stop the leader, write on, restart it from its
files and watch it catch up.

Run it (from the repository root)::

    python examples/sqlite_storage/main.py [--dir DIR]

Without ``--dir`` the databases go to a temporary directory removed at the end. A ``--dir``
must be new or empty: the demo initializes a new cluster, which a node that kept an earlier
run's files refuses (it is not pristine).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from sqlite_cluster import SqliteNode, leader_of
from sqlite_store import set_command

from openraft_py import Config, NodeId
from openraft_py.network.router import Router

CONFIG = Config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=50)
TIMEOUT = 10.0
"""Seconds any single wait may take before the demo gives up."""


async def wait_for_leader(nodes: dict[NodeId, SqliteNode]) -> SqliteNode:
    """The leader once one of ``nodes`` is leader and every node knows it."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            leader = leader_of(nodes)
            if leader is not None and all(n.raft.current_leader() == leader.raft.id for n in nodes.values()):
                return leader
            await asyncio.sleep(0.02)


async def run(base: Path) -> dict[str, str]:
    """The demo; returns the restarted node's data once it caught up."""
    router = Router()
    ids = [1, 2, 3]
    nodes = {i: await SqliteNode.start(i, base / f"node{i}", router, CONFIG) for i in ids}
    try:
        await nodes[1].raft.initialize(ids)
        leader = await wait_for_leader(nodes)
        print(f"node {leader.raft.id} is the leader; databases in {base}")
        for i in range(5):
            resp = await leader.raft.client_write(set_command(f"k{i}", f"v{i}"))
            print(f"  set k{i}=v{i} committed at log index {resp.log_id.index}")

        # Stop the leader: its files keep its vote, log and applied state.
        old_id = leader.raft.id
        await leader.stop(router)
        del nodes[old_id]
        print(f"stopped node {old_id}")
        leader = await wait_for_leader(nodes)
        print(f"node {leader.raft.id} took over")
        resp = await leader.raft.client_write(set_command("after", "failover"))
        print(f"  set after=failover committed at log index {resp.log_id.index}")

        # Restart it from its SQLite files.
        restarted = await SqliteNode.start(old_id, base / f"node{old_id}", router, CONFIG)
        nodes[old_id] = restarted
        applied, _ = await restarted.sm.applied_state()
        print(f"restarted node {old_id} from its files: applied up to {applied!r} before hearing from anyone")
        await restarted.raft.wait(TIMEOUT).applied_index_at_least(resp.log_id.index, "the restarted node catches up")
        data = await restarted.sm.items()
        print(f"node {old_id} caught up: {dict(sorted(data.items()))}")
        return data
    finally:
        for node in nodes.values():
            await node.stop(router)


def main() -> None:
    """Parse the command line and run the demo."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where the nodes' databases go (default: a temporary directory)")
    args = parser.parse_args()
    if args.dir is not None:
        if args.dir.exists() and not args.dir.is_dir():
            parser.error(f"--dir {args.dir} is not a directory")
        if args.dir.is_dir() and any(args.dir.iterdir()):
            parser.error(f"--dir {args.dir} is not empty (an earlier run's databases?): the demo starts a new cluster; "
                         "give a new or empty directory")
        asyncio.run(run(args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="openraft-sqlite-") as tmp:
            asyncio.run(run(Path(tmp)))


if __name__ == "__main__":
    main()
