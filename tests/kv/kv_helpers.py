"""Shared helpers of the key-value service tests: in-process nodes on loopback ports."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import aiohttp

from openraft_py.kv.node import KvNode, ServeOptions
from openraft_py.testing.proc_cluster import free_port
from openraft_py.types import ServerState

STABLE_TIMEOUTS = {"heartbeat_interval": 50, "election_timeout_min": 1000, "election_timeout_max": 2000}
"""The in-process tests' Raft timeouts (ms); the process-level test runs the defaults."""


def node_options(nid: int, data_root: str, **kw: Any) -> ServeOptions:
    """Options of node ``nid`` on fresh loopback ports, its data under ``data_root``."""
    return ServeOptions(id=nid, raft_addr=f"127.0.0.1:{free_port()}", http_addr=f"127.0.0.1:{free_port()}",
                        data_dir=f"{data_root}/n{nid}", cluster_name="kv-test", **kw)


def members_of(nodes: list[KvNode]) -> dict[str, dict[str, str]]:
    """The ``/cluster/init`` members of ``nodes``."""
    return {str(n.id): {"raft_addr": n.opts.raft_addr, "http_addr": n.opts.http_addr} for n in nodes}


def url(node: KvNode, path: str) -> str:
    """``http://<node's http addr><path>``."""
    return f"http://{node.opts.http_addr}{path}"


class KvCluster:
    """In-process service nodes (one event loop) with their data in a temporary directory
    removed by ``close()``."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="kv-test-")
        self.nodes: dict[int, KvNode] = {}
        self.session: aiohttp.ClientSession | None = None

    async def start_node(self, nid: int, **kw: Any) -> KvNode:
        """Start node ``nid`` (not initialized). Unless ``raft_config`` says otherwise, the
        election timeout is 1-2 s: these tests share two cores with other work, and a
        leader change under CPU contention would move the leader they address."""
        kw.setdefault("raft_config", STABLE_TIMEOUTS)
        node = KvNode(node_options(nid, self.root, **kw))
        await node.start()
        self.nodes[nid] = node
        return node

    async def start(self, n: int, init: bool = True, **kw: Any) -> KvCluster:
        """Start nodes 1..n; with ``init``, initialize them through node 1's HTTP API and
        wait until every node knows the leader and none is catching up (``kv/rejoin.py``:
        a node started on an empty directory votes, and takes leadership when it is handed
        over, once it holds the leader's first commit)."""
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        for nid in range(1, n + 1):
            await self.start_node(nid, **kw)
        if init:
            first = self.nodes[1]
            async with self.session.post(url(first, "/cluster/init"),
                                         json={"members": members_of(list(self.nodes.values()))}) as r:
                assert r.status == 200, await r.text()
            await first.raft.trigger.elect()  # type: ignore[union-attr]  # no election timeout to wait
            await self.wait_leader()
            await self.wait_caught_up()
        return self

    async def wait_caught_up(self, timeout: float = 5.0) -> None:
        """Until no running node is catching up (``kv/rejoin.py``)."""
        async def settled() -> None:
            while any(n.catch_up is not None and n.catch_up.active for n in self.nodes.values() if n.raft is not None):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(settled(), timeout)

    async def wait_leader(self, among: list[int] | None = None, timeout: float = 5.0) -> KvNode:
        """The leader once every node of ``among`` (default all running) agrees on it and
        knows its addresses."""
        ids = among or [i for i, n in self.nodes.items() if n.raft is not None]

        async def agreed() -> KvNode:
            while True:
                leaders = {self.nodes[i].raft.metrics.current_leader for i in ids}  # type: ignore[union-attr]
                if len(leaders) == 1 and None not in leaders:
                    lid = leaders.pop()
                    # ... and every node has a membership naming it (a follower may hear
                    # from the leader before it holds the membership entry with its address)
                    known = all(lid in self.nodes[i].nodes() for i in ids)
                    if known and lid in self.nodes and self.nodes[lid].raft is not None and self.nodes[lid].is_leader():
                        return self.nodes[lid]
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(agreed(), timeout)

    def followers(self, leader: KvNode) -> list[KvNode]:
        """Running nodes other than ``leader``."""
        return [n for n in self.nodes.values() if n is not leader and n.raft is not None
                and n.raft.metrics.state != ServerState.SHUTDOWN]

    async def wait_applied(self, index: int, timeout: float = 5.0) -> None:
        """Until every running node applied ``index``."""
        for n in self.nodes.values():
            if n.raft is not None and n.raft.metrics.running:
                await n.raft.wait(timeout).applied_index_at_least(index, f"n{n.id} applied {index}")

    async def close(self) -> None:
        """Stop every node, close the session, remove the data."""
        try:
            for n in self.nodes.values():
                await n.stop()
            if self.session is not None:
                await self.session.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


async def until_true(what: str, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until ``cond()`` is true, checked every 20 ms; ``TimeoutError`` naming ``what``."""
    async def wait() -> None:
        while not cond():
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        raise TimeoutError(f"{what}: not within {timeout}s") from None
