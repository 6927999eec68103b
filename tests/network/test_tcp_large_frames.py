"""Large frames on the event loop: what the TCP transport copies of a multi-MB AppendEntries.

The frames queued on a connection in one loop turn were joined into one buffer before the
transport write: a 4 MiB AppendEntries queued with a heartbeat, or with the next batch to
the same follower, was copied once more, on the loop, into a new buffer of its size. Now a
turn that queued a frame of ``JOIN_MAX_FRAME_BYTES`` or more hands the frames to the
transport as they are (``writelines``); small frames are still joined, for one send.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py.network import _tcp_common
from openraft_py.network._tcp_common import _FrameWriter
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.types import AppendEntriesRequest, BasicNode, Entry, LogId, Normal, VoteRequest

from .test_tcp import OPT, V1, FakeRaft, _pair

pytestmark = pytest.mark.timeout(60)


class _RecordingTransport:
    """The part of a transport ``_FrameWriter`` uses; records what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: Any) -> None:
        self.calls.append(("write", data))

    def writelines(self, data: Any) -> None:
        self.calls.append(("writelines", list(data)))


async def test_a_large_frame_queued_with_others_is_written_as_it_is_not_joined() -> None:
    loop = asyncio.get_running_loop()
    t = _RecordingTransport()
    w = _FrameWriter(loop, t)  # type: ignore[arg-type]
    big = bytearray(b"B" * (4 * 1024 * 1024))
    small = b"s" * 40
    w.send(small)
    w.send(big)
    w.send(small)
    w.flush()
    assert len(t.calls) == 1
    how, data = t.calls[0]
    assert how == "writelines"
    # The very objects: the large frame is not copied.
    assert [id(f) for f in data] == [id(small), id(big), id(small)]


async def test_small_frames_queued_together_are_joined_into_one_write() -> None:
    loop = asyncio.get_running_loop()
    t = _RecordingTransport()
    w = _FrameWriter(loop, t)  # type: ignore[arg-type]
    limit = _tcp_common.JOIN_MAX_FRAME_BYTES
    frames = [bytes([i]) * (limit - 1) for i in range(3)]
    for f in frames:
        w.send(f)
    w.flush()
    assert t.calls == [("write", b"".join(frames))]
    # A large frame earlier does not make a later turn's small frames go unjoined.
    w.send(b"x" * limit)
    w.send(b"y")
    w.flush()
    w.send(b"a")
    w.send(b"b")
    w.flush()
    assert [how for how, _ in t.calls] == ["write", "writelines", "write"]
    assert t.calls[-1] == ("write", b"ab")


def _append(index: int, size: int) -> AppendEntriesRequest:
    data = bytes([index % 256]) * size
    return AppendEntriesRequest(V1, LogId(3, index - 1), [Entry(LogId(3, index), Normal(data))], LogId(3, index - 1))


async def _large_and_small_in_one_turn(raft: FakeRaft, client: Any) -> None:
    assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 10)).vote_granted  # connected
    sizes = [4 * 1024 * 1024, 10, 2 * 1024 * 1024 + 7, 0]
    # Queued in the same loop turn: one flush of the connection's writer gets them all.
    answers = await asyncio.wait_for(
        asyncio.gather(*(client.append_entries(_append(10 + i, n), OPT) for i, n in enumerate(sizes)),
                       client.vote(VoteRequest(V1, None), OPT)), 30)
    assert all(a.success for a in answers[:-1]) and answers[-1].vote_granted
    got = {r.entries[0].log_id.index: r.entries[0].payload.data for name, r in raft.received if name == "append_entries"}
    assert got == {10 + i: bytes([(10 + i) % 256]) * n for i, n in enumerate(sizes)}


async def test_large_and_small_frames_queued_together_all_arrive_whole() -> None:
    raft, server, factory, client = await _pair()
    try:
        await _large_and_small_in_one_turn(raft, client)
    finally:
        await factory.close()
        await server.close()


async def test_large_and_small_frames_queued_together_all_arrive_whole_over_tls(pki: Any) -> None:
    raft = FakeRaft()
    server = await TcpServer.start(raft, "127.0.0.1", 0, "c", ssl=pki.server_ctx(mtls=False))
    factory = TcpNetworkFactory(1, "c", ssl=pki.client_ctx(None), backoff_min=0.01, backoff_max=0.05, seed=1)
    try:
        await _large_and_small_in_one_turn(raft, factory.new_client(2, BasicNode(server.address)))
    finally:
        await factory.close()
        await server.close()
