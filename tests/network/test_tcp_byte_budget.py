"""The payload limits over real TCP on loopback, with frames of 512 KiB on both sides:

- a ``Config`` whose requests cannot fit ``max_frame_size`` is refused with ``ConfigError``
  by ``Raft.new`` (``TcpNetworkFactory.check_config``) and by ``TcpServer.start``;
- a client write over ``Config.max_entry_bytes`` gets ``EntryTooLarge``, nothing is logged
  and the cluster keeps committing;
- a batch of writes adding up to many frames commits (the leader sends it as several
  requests within ``Config.max_payload_bytes``), as does an entry of exactly the limit;
- a frame over ``max_frame_size`` fails with a ``NetworkError`` that names what to change.

Runs on asyncio and uvloop (``conftest.py``)."""

from __future__ import annotations

import pytest

from openraft_py import Config, ConfigError, EntryTooLarge, NetworkError
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer, required_frame_size
from openraft_py.raft import Raft
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine
from openraft_py.types import AppendEntriesRequest, BasicNode, Entry, LeaderId, LogId, Normal, Vote

from .tcp_cluster import TcpCluster, tcp_config

pytestmark = pytest.mark.timeout(60)

FRAME = 512 * 1024
ENTRY = 64 * 1024
BUDGET = 256 * 1024


def limits_config(**kw: object) -> Config:
    base: dict[str, object] = dict(max_entry_bytes=ENTRY, max_payload_bytes=BUDGET, snapshot_max_chunk_size=BUDGET)
    base.update(kw)
    return tcp_config(**base)


def test_required_frame_size_covers_the_budget_the_entries_framing_and_snapshot_chunks() -> None:
    c = Config()
    assert required_frame_size(c) >= c.max_payload_bytes + c.max_payload_entries * 43
    assert required_frame_size(c) <= 32 * 1024 * 1024, "the defaults fit the default frame"
    small = Config(max_payload_bytes=1024, max_entry_bytes=1024, snapshot_max_chunk_size=4 * 1024 * 1024)
    assert required_frame_size(small) >= 4 * 1024 * 1024, "a snapshot chunk needs its frame too"


def test_a_full_request_of_the_budget_fits_required_frame_size() -> None:
    """The bound is not a guess: the largest AppendEntries a node with this Config sends
    (``max_payload_entries`` entries adding up to the budget, the greatest terms and indexes,
    a prev and a commit) encodes within it."""
    from openraft_py.network import wire

    c = Config(max_payload_entries=300, max_payload_bytes=300 * 100, max_entry_bytes=100)
    big = 2**62 - 1
    entries = [Entry(LogId(big, big - 300 + i), Normal(b"x" * 100)) for i in range(300)]
    req = AppendEntriesRequest(Vote(LeaderId(big, 2**63 - 1), True), LogId(big, big - 301), entries, LogId(big, big))
    frame = wire.frame_message(wire.KIND_APPEND_ENTRIES, 2**64 - 1, req)
    assert len(frame) - 4 <= required_frame_size(c)


async def test_raft_new_and_the_server_refuse_a_config_the_frames_cannot_carry() -> None:
    factory = TcpNetworkFactory(1, "c", max_frame_size=FRAME)
    too_big = limits_config(max_payload_bytes=FRAME)
    disk = MemDisk()
    with pytest.raises(ConfigError, match=r"max_frame_size=524288 cannot carry .* Config.max_payload_bytes=524288"):
        await Raft.new(1, too_big, factory, MemLogStore(disk), MemStateMachine(disk))
    raft = await Raft.new(1, too_big, TcpNetworkFactory(1, "c"), MemLogStore(disk), MemStateMachine(disk))
    try:
        with pytest.raises(ConfigError, match="TcpServer max_frame_size"):
            await TcpServer.start(raft, "127.0.0.1", 0, "c", max_frame_size=FRAME)
        server = await TcpServer.start(raft, "127.0.0.1", 0, "c")  # the default 32 MiB fits
        await server.close()
    finally:
        await raft.shutdown()
    factory.check_config(limits_config())  # fits: no error
    with pytest.raises(ConfigError, match="snapshot_max_chunk_size=3145728 needs"):
        factory.check_config(tcp_config(max_entry_bytes=ENTRY, max_payload_bytes=BUDGET))


async def test_limits_over_tcp_refuse_the_oversized_write_and_commit_large_batches() -> None:
    async with TcpCluster(
        limits_config(), server_kw={"max_frame_size": FRAME}, factory_kw={"max_frame_size": FRAME}
    ) as c:
        await c.start([1, 2, 3])
        leader = await c.wait_for_leader()
        raft = c.nodes[leader].raft
        assert raft is not None
        first = await raft.client_write(b"first")
        last = raft.metrics.last_log_index
        with pytest.raises(EntryTooLarge):
            await raft.client_write(b"x" * (ENTRY + 1))
        assert raft.metrics.last_log_index == last, "nothing was logged"
        # 96 entries of ~64 KiB: 6 MiB, twelve times the frame size.
        datas = [bytes([i]) * (ENTRY - i) for i in range(96)]
        resps = await raft.client_write_many(datas)
        exact = await raft.client_write(b"e" * ENTRY)
        assert resps[0].log_id.index == first.log_id.index + 1
        await c.wait_applied(exact.log_id.index, timeout=30.0)
        for nid, node in c.nodes.items():
            applied = [d for _, d in node.disk.applied_log]
            assert applied == [b"first", *datas, b"e" * ENTRY], f"n{nid} applied something else"
            assert node.server is not None and node.server.dropped == 0, f"n{nid} dropped a connection"
        delivered = {nid: n.counting.calls["append_entries"] for nid, n in c.nodes.items() if nid != leader}  # type: ignore[union-attr]
        for nid, calls in delivered.items():
            assert calls >= sum(map(len, datas)) // BUDGET, f"n{nid}: {calls} AppendEntries carried 6 MiB"


async def test_an_oversized_frame_names_the_setting_to_change() -> None:
    async with TcpCluster(limits_config(), server_kw={"max_frame_size": FRAME}) as c:
        node = await c.start_node(1)  # not initialized: the server accepts any sender
        factory = TcpNetworkFactory(2, "test-cluster", max_frame_size=FRAME)
        try:
            client = factory.new_client(1, BasicNode(node.addr))
            entry = Entry(LogId(1, 1), Normal(b"z" * FRAME))
            req = AppendEntriesRequest(Vote(LeaderId(1, 2), True), None, [entry], None)
            with pytest.raises(NetworkError, match=r"lower Config.max_payload_bytes .* or raise max_frame_size"):
                await client.append_entries(req)
        finally:
            await factory.close()
