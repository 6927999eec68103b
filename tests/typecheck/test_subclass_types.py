"""A subclass of ``Raft``, ``TcpServer``, ``KvClient`` or ``Cluster`` keeps its type through
the constructors and ``async with``: ``Raft.new``, ``TcpServer.start`` and each
``__aenter__`` return ``Self``. They were annotated with the base class, so ``mypy
--strict`` refused a subclass's own methods on what they returned (``(await
MyRaft.new(...)).describe()``), which is a ``MyRaft`` when run.

The type check needs mypy (the ``lint`` extra, as ``make lint``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openraft_py import Config, Raft
from openraft_py.network.router import Router
from openraft_py.storage import MemLogStore, MemStateMachine
from openraft_py.testing import Cluster

from .test_must_not_type_check import mypy_strict_errors

pytestmark = pytest.mark.timeout(300)

SUBCLASSES = '''
from openraft_py import Config, Raft
from openraft_py.kv.client import KvClient
from openraft_py.network.router import Router
from openraft_py.network.tcp import TcpServer
from openraft_py.storage import MemLogStore, MemStateMachine
from openraft_py.testing import Cluster


class MyRaft(Raft):
    def describe(self) -> str:
        return f"node {self.id}"


class MyClient(KvClient):
    async def put_all(self, items: dict[str, str]) -> int:
        return len([await self.put(k, v) for k, v in items.items()])


class MyServer(TcpServer):
    def label(self) -> str:
        return self.address


class MyCluster(Cluster[MemStateMachine, MemLogStore]):
    def size(self) -> int:
        return len(self.nodes)


async def main() -> None:
    raft = await MyRaft.new(1, Config(), Router().factory(1), MemLogStore(), MemStateMachine())
    raft.describe()
    async with raft as entered:
        entered.describe()
    async with MyClient(["127.0.0.1:1"]) as client:
        await client.put_all({"k": "v"})
    async with await MyServer.start(raft, "127.0.0.1", 0, "c") as server:
        server.label()
    async with MyCluster() as cluster:
        cluster.size()
'''


def test_a_subclass_keeps_its_type(tmp_path: Path, mypy_cache: Path) -> None:
    assert mypy_strict_errors(SUBCLASSES, tmp_path, mypy_cache) == []


class _MyRaft(Raft):
    pass


class _MyCluster(Cluster[MemStateMachine, MemLogStore]):
    pass


async def test_and_is_that_type_when_run() -> None:
    raft = await _MyRaft.new(1, Config(), Router().factory(1), MemLogStore(), MemStateMachine())
    async with raft as entered:
        assert type(entered) is _MyRaft
    async with _MyCluster() as cluster:
        assert type(cluster) is _MyCluster
