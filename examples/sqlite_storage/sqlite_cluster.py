"""Nodes on SQLite storage in one process, talking through the in-process ``Router``.

``SqliteNode.start`` opens a node's databases in its directory and starts a ``Raft`` over
them; ``stop`` shuts the node down and closes the databases, leaving the files for a later
``start`` from the same directory (a process restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlite_store import SqliteLogStore, SqliteStateMachine, open_node_storage

from openraft_py import Config, NodeId, Raft
from openraft_py.network.router import Router

__all__ = ["SqliteNode", "leader_of"]


@dataclass
class SqliteNode:
    """One running node: its ``Raft`` handle and its two SQLite stores."""

    raft: Raft
    log: SqliteLogStore
    sm: SqliteStateMachine
    directory: Path

    @classmethod
    async def start(cls, node_id: NodeId, directory: Path, router: Router, config: Config) -> SqliteNode:
        """Open ``directory``'s databases (created if missing), start node ``node_id`` over
        them and register it with ``router``. A node whose files hold a log restores its
        vote, log and applied state from them and rejoins on its own."""
        log, sm = await open_node_storage(directory)
        try:
            raft = await Raft.new(node_id, config, router.factory(node_id), log, sm)
        except BaseException:
            await log.close()
            await sm.close()
            raise
        router.register(node_id, raft)
        return cls(raft, log, sm, directory)

    async def stop(self, router: Router) -> None:
        """Unregister from ``router``, shut the node down, close its databases."""
        router.unregister(self.raft.id)
        await self.raft.shutdown()
        await self.log.close()
        await self.sm.close()


def leader_of(nodes: dict[NodeId, SqliteNode]) -> SqliteNode | None:
    """The node that is leader now, or ``None``."""
    for node in nodes.values():
        if node.raft.is_leader():
            return node
    return None
