"""The TCP client against a target that stops reading (stopped with SIGSTOP, a frozen VM, a
stalled network path): its connection stays open, and what is written to it stays in the
sender's transport buffer.

A leader resends a lagging follower's entries after each timeout (up to
``Config.max_payload_bytes`` every quarter second), so the buffer of its connection to a
frozen follower grew without bound, about 36 MB a second under load in a loopback run, until
the follower read again or the leader ran out of memory. Now a connection holding more than
``UNSENT_FRAMES_MAX`` frames' worth (``max_unsent``) of unsent bytes takes no new request:
each raises ``Unreachable`` at once, nothing written, and requests go out again once the
target has read what was written.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py.errors import Unreachable
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, BasicNode, Entry, LogId, Normal, RPCOption

from .tcp_cluster import TcpCluster, tcp_config
from .test_tcp import V1, FakeRaft

pytestmark = pytest.mark.timeout(60)

FRAME = 64 * 1024
"""The ``max_frame_size`` of these tests' client and server."""
BOUND = 2 * FRAME
"""The client's ``max_unsent`` with ``FRAME`` (``UNSENT_FRAMES_MAX`` frames)."""
PAYLOAD = 40 * 1024
"""Bytes of the entry each request carries (one request, one frame of about 40 KiB)."""
SENT_MAX = 256 * 1024 * 1024
"""What a test writes at most before it must have been refused: far more than the kernel's
socket buffers on loopback take, so without the bound the transport buffer would grow past
it."""


def _request(i: int) -> AppendEntriesRequest:
    return AppendEntriesRequest(V1, None, [Entry(LogId(3, i), Normal(b"x" * PAYLOAD))], None)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_target_that_reads_nothing_gets_no_more_than_the_bound_and_then_everything(tls: bool, pki: Any) -> None:
    """A stuck target (its server handles one request at a time and that one never ends, so
    it stops reading the connection): requests are written until ``max_unsent`` bytes are
    unsent, then refused at once with ``Unreachable`` saying why; the buffer never holds
    more than the bound and one frame. Once the target reads again, the buffer drains and a
    request is answered."""
    raft = FakeRaft()
    stuck = asyncio.Event()
    release = asyncio.Event()

    async def hang(req: AppendEntriesRequest) -> AppendEntriesResponse:
        stuck.set()
        await release.wait()
        return AppendEntriesResponse(req.vote, True, req.last_log_id())

    raft.behaviour["append_entries"] = hang
    server = await TcpServer.start(raft, "127.0.0.1", 0, "c", pki.server_ctx(mtls=False) if tls else None,
                                   max_frame_size=FRAME, max_inflight=1)
    factory = TcpNetworkFactory(1, "c", pki.client_ctx() if tls else None, max_frame_size=FRAME, seed=1)
    client = factory.new_client(2, BasicNode(server.address))
    option = RPCOption(hard_ttl=50.0, soft_ttl=50.0)
    sent: list[Any] = []
    try:
        sent.append(asyncio.ensure_future(client.send_append_entries(_request(0), option)))  # connects first
        await asyncio.wait_for(stuck.wait(), 10)
        peer = factory._peers[2]
        assert peer.conn is not None and peer.conn.transport is not None
        transport = peer.conn.transport
        refused: Unreachable | None = None
        largest = 0
        i = 1
        while refused is None:
            assert i * PAYLOAD < SENT_MAX, f"{i} requests ({i * PAYLOAD} bytes) written to a target that reads nothing"
            try:
                sent.append(client.send_append_entries(_request(i), option))
            except Unreachable as e:
                refused = e
            i += 1
            await asyncio.sleep(0)  # the writes of this turn go out
            largest = max(largest, transport.get_write_buffer_size())
            assert largest <= BOUND + FRAME, largest
        assert "not taking what is sent to it" in str(refused) and "paused or frozen" in str(refused), refused
        # The connection is up, the requests written before still on it: not a lost connection.
        assert refused.connection_kept, "a request not taken says the connection is kept"
        with pytest.raises(Unreachable, match="not taking"):  # and again: nothing drained
            client.send_append_entries(_request(i), option)
        with pytest.raises(Unreachable, match="not taking"):  # any request
            await client.append_entries(_request(i), option)
        release.set()  # the target reads again: the backlog is answered, the buffer drains

        async def until_taken() -> AppendEntriesResponse:
            while True:
                try:
                    return await client.append_entries(_request(i), option)
                except Unreachable:
                    await asyncio.sleep(0.01)  # still draining; bounded by wait_for

        resp = await asyncio.wait_for(until_taken(), 20)
        assert resp.success
        await asyncio.wait_for(asyncio.gather(*sent), 20)  # every request written was answered
    finally:
        release.set()
        for f in sent:
            if asyncio.isfuture(f):
                f.cancel()
        await factory.close()
        await server.close()


LAGGING = 128
"""Entries of 64 KiB the leader takes while the follower is frozen (8 MiB): more than a
full window of requests (``max_inflight_requests`` of ``max_payload_bytes``) and more than
the kernel's socket buffers on loopback take, so that without the bound the resends fill
the leader's buffer past it; and few enough that the follower catches them up in a fraction
of a second. The rest of the freeze's writes are of one byte. (All of them were of 64 KiB,
as many as the machine made in 5 s: 2,500 to 62,000 in runs on a shared 2-core machine, up
to 4 GB for the follower to catch up, and about 144 KB of the process's memory per write.
The catch-up runs at the speed of the machine then: on a CI run whose load rose after the
writes, 45,446 of 48,970 were caught up when the 20 s ran out.)"""


async def test_a_leader_keeps_a_bounded_buffer_to_a_frozen_follower_which_then_catches_up() -> None:
    """Three nodes on loopback; one follower stops reading (its server's connections stop
    being read, as under SIGSTOP) while the leader takes writes: the leader's buffer to it
    stays within the bound (it grew by the resent entries every timeout), the cluster keeps
    committing, and the follower catches up once it reads again."""
    frame = 1024 * 1024
    # A minimum link rate so high that each request's deadline is about the base one:
    # the leader resends to the frozen follower after every such timeout, as it does on any
    # link slower than its ``replication_min_rate``. (With the default rate, 1 MiB/s, a
    # request behind the window's bytes waits seconds, and 2.5 s of writes fill no buffer.)
    # Election timeouts of 500-1000 ms: the writes all go to the leader elected first, and
    # with tcp_config's 150-300 ms a stall of a loaded machine's loop elected the follower
    # still reading (ForwardToLeader). The base deadline grows with them (500 ms): the
    # writes go on for ten of them.
    config = tcp_config(max_payload_bytes=512 * 1024, max_entry_bytes=256 * 1024, snapshot_max_chunk_size=256 * 1024,
                        replication_min_rate=1024**4, election_timeout_min=500, election_timeout_max=1000)
    resend_every = max(4 * config.heartbeat_interval, config.election_timeout_min) / 1000.0
    async with TcpCluster(config, factory_kw={"max_frame_size": frame}, server_kw={"max_frame_size": frame}) as c:
        await c.start([1, 2, 3])
        lid = await c.wait_for_leader()
        frozen = max(n for n in (1, 2, 3) if n != lid)
        leader = c.nodes[lid]
        assert leader.raft is not None and leader.factory is not None and c.nodes[frozen].server is not None
        first = await c.write(b"first")
        conns = list(c.nodes[frozen].server._conns)
        for conn in conns:
            conn.transport.pause_reading()
        peer = leader.factory._peers[frozen]
        bound = 2 * frame + frame  # max_unsent (UNSENT_FRAMES_MAX frames) and the request over it
        largest = 0
        payload = b"y" * (64 * 1024)
        loop = asyncio.get_running_loop()
        end = loop.time() + 10 * resend_every  # about 10 resends of 512 KiB: past the bound without it
        written = 0
        last = None
        while loop.time() < end:
            # The lagging entries first, eight at a time; then one small write at a time, so
            # that what the follower has to catch up does not grow with the machine's speed.
            batch = [payload] * 8 if written < LAGGING else [b"z"]
            resps = await asyncio.wait_for(asyncio.gather(*(leader.raft.client_write(d) for d in batch)), 10)
            written += len(batch)
            last = resps[-1].log_id.index
            conn = peer.conn
            if conn is not None and conn.transport is not None:
                largest = max(largest, conn.transport.get_write_buffer_size())
                assert largest <= bound, f"{largest} bytes buffered to a follower that reads nothing"
        frozen_raft = c.nodes[frozen].raft
        assert last is not None and frozen_raft is not None
        assert written >= LAGGING, f"only {written} writes in {10 * resend_every}s"
        applied = frozen_raft.metrics.last_applied
        assert applied is None or applied.index <= first.index, f"the follower was not frozen: it applied {applied}"
        assert largest > frame, f"the leader's buffer to the frozen follower never filled ({largest} bytes)"
        for conn in conns:
            conn.transport.resume_reading()
        await c.wait_applied(last, timeout=20)
