"""Replication over a slow link: a leader whose follower is reached through a loopback proxy
that carries ``RATE`` bytes per second (``throttle.ThrottledProxy``).

An AppendEntries had a fixed deadline (``max(4 * heartbeat_interval, election_timeout_min)``)
however many bytes it and the requests ahead of it on the connection carried: on a link that
carries fewer bytes than the window holds within that deadline, every request timed out
and was sent again, behind the bytes of the ones that had timed out, and the follower never
caught up: a write that needed it never committed. Now each request's deadline grows with
those bytes at ``Config.replication_min_rate``.

A snapshot chunk had the fixed deadline ``install_snapshot_timeout`` (200 ms): a chunk of the
default 3 MiB never crossed a link below about 15 MiB/s in time, and a learner that needed
the snapshot never caught up. Its deadline grows with its bytes at the same rate now.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from openraft_py.types import BasicNode, ServerState

from .tcp_cluster import TcpCluster, tcp_config
from .throttle import ThrottledProxy

pytestmark = pytest.mark.timeout(60)

RATE = 4 * 1024 * 1024
"""The proxied link's rate, bytes per second: 4 MiB/s (about 34 Mbit/s)."""
VALUE = 256 * 1024
WRITES = 24
"""``WRITES`` values of ``VALUE`` bytes, written at once: 6 MiB, 1.5 s on the link, three times
what it carries within the old fixed deadline (the base one, 500 ms here: 2 MiB)."""
ELECTION_TIMEOUT = (500, 1000)
"""The writes test's election timeouts (ms): with ``tcp_config``'s 150-300 ms a stall of a loaded
machine's shared loop let the follower's timer run out while the writes crossed, and it took
the next term (the leader lost its term though every write committed)."""
BOUND = 10.0
"""Seconds the writes may take to commit (about 1 s expected; generous for a loaded machine).
Before the fix they never did."""


@contextlib.asynccontextmanager
async def leader_behind_a_slow_link(min_rate: int, rate: int) -> AsyncIterator[tuple[TcpCluster, Any, ThrottledProxy]]:
    """A two-voter TCP cluster with ``replication_min_rate`` ``min_rate``: node 1 leads and
    reaches node 2 through a proxy carrying ``rate`` bytes a second. Yields the cluster,
    node 1 and the proxy (closed at the end)."""
    config = tcp_config(replication_min_rate=min_rate, election_timeout_min=ELECTION_TIMEOUT[0],
                        election_timeout_max=ELECTION_TIMEOUT[1])
    async with TcpCluster(config) as c:
        n1 = await c.start_node(1)
        n2 = await c.start_node(2)
        proxy = await ThrottledProxy(n2.port, rate).start()
        try:
            assert n1.raft is not None
            await n1.raft.initialize({1: BasicNode(n1.addr), 2: BasicNode(proxy.addr)})
            await n1.raft.wait(10).state(ServerState.LEADER, "n1 leads")
            yield c, n1, proxy
        finally:
            await proxy.close()



async def test_writes_commit_over_a_link_slower_than_the_window_per_deadline() -> None:
    """Two voters; the leader reaches its follower only through the slow link, so every
    write needs it. All ``WRITES`` commit within ``BOUND``, the leader keeps its term, and
    the entries cross the link once. Before: none committed within ``BOUND``, and 35 to
    38 MB crossed the link for 2 MiB of entries (with 12 writes, 3 MiB: they took about 7 s
    and the leader lost its term; both measured with 8 writes and 150-300 ms election
    timeouts). About 1.6 s now."""
    # The link carries RATE, but on a loaded 2-core machine the proxy, both nodes and the
    # test share one starved event loop, and what it carries fell below the default
    # replication_min_rate (1 MiB/s, a quarter of RATE): the first deadline ran out, and the
    # resends behind the bytes still in the pipe never caught up (0 of 8 in 10 s, nothing
    # committed, the leader in its term). The deadlines are sized for RATE / 8 here: still
    # seconds past the base deadline this test shows is not enough.
    async with leader_behind_a_slow_link(RATE // 8, RATE) as (c, n1, proxy):
        assert n1.raft is not None
        term = n1.raft.metrics.current_term
        began = time.monotonic()
        writes = [asyncio.ensure_future(n1.raft.client_write(bytes([i]) * VALUE)) for i in range(WRITES)]
        done, pending = await asyncio.wait(writes, timeout=BOUND)
        for w in pending:
            w.cancel()
        took = time.monotonic() - began
        what = (f"{len(done)} of {WRITES} writes of {VALUE} bytes done in {took:.2f}s over a {RATE} bytes/s link, "
                f"{proxy.forwarded} bytes carried; {n1.raft.metrics.describe()}")
        assert not pending, f"not all committed within {BOUND}s: {what}"
        for w in done:
            w.result()
        assert n1.raft.metrics.current_term == term, f"the leader lost its term: {what}"
        # Each value crossed the link about once (before: seven to eight times, resent
        # after every timeout behind the bytes of the ones that timed out).
        assert proxy.forwarded < 1.5 * WRITES * VALUE, f"the entries were resent: {what}"
        last = max(w.result().log_id.index for w in done)
        await c.wait_applied(last, timeout=BOUND)
        print(f"{WRITES} x {VALUE} bytes committed in {took:.2f}s, {proxy.forwarded} bytes carried")


SNAPSHOT_VALUES = 13
"""Values of ``VALUE`` bytes in the state a learner receives as a snapshot: 3.25 MiB, two
chunks of the default ``snapshot_max_chunk_size`` (3 MiB and the rest)."""
SNAPSHOT_RATE = 8 * 1024 * 1024
"""The link's rate in the snapshot test: a 3 MiB chunk takes 0.375 s, about twice the old
fixed chunk deadline (``install_snapshot_timeout``, 200 ms)."""


async def test_a_learner_installs_a_snapshot_over_a_link_slower_than_a_chunk_per_timeout() -> None:
    """A leader whose log is purged sends a new learner its snapshot through the slow link,
    in chunks of the default size. Each chunk's deadline grows with its bytes at
    ``replication_min_rate``: the learner installs it within ``BOUND`` (about 0.5 s), each
    byte sent once. Before, every chunk timed out and was sent again (65 to 72 MB crossed
    the link in 10 s for 3.25 MiB), and the learner never caught up."""
    config = tcp_config(max_in_snapshot_log_to_keep=0, purge_batch_size=1)
    async with TcpCluster(config) as c:
        await c.start([1])
        n1 = c.nodes[1]
        assert n1.raft is not None
        await n1.raft.wait(10).state(ServerState.LEADER, "n1 leads")
        resps = await n1.raft.client_write_many([bytes([i]) * VALUE for i in range(SNAPSHOT_VALUES)])
        last = resps[-1].log_id.index
        await n1.raft.trigger.snapshot()
        await n1.raft.wait(10).purged(last, "n1 purged its log")
        n2 = await c.start_node(2)
        assert n2.raft is not None and n2.counting is not None
        proxy = await ThrottledProxy(n2.port, SNAPSHOT_RATE).start()
        try:
            began = time.monotonic()
            await n1.raft.add_learner(2, BasicNode(proxy.addr), blocking=False)
            try:
                await n2.raft.wait(BOUND).snapshot(last, "n2 installed the snapshot")
            finally:
                took = time.monotonic() - began
                print(f"snapshot of {SNAPSHOT_VALUES} x {VALUE} bytes: {took:.2f}s, {proxy.forwarded} bytes carried, "
                      f"{n2.counting.calls['install_snapshot']} chunks received")
            assert proxy.forwarded < 1.5 * SNAPSHOT_VALUES * VALUE, "the chunks were resent"
        finally:
            await proxy.close()


RESEND_MIN_RATE = 256 * 1024
"""``replication_min_rate`` of the resend test, bytes per second."""
RESEND_VALUE = 512 * 1024
"""The one value written: 2 s at ``RESEND_MIN_RATE``; its request's deadline is 2.5 s (the base
of 500 ms, ``ELECTION_TIMEOUT[0]``, plus that)."""
RESEND_RATE = int(RESEND_VALUE / 2.75)
"""The link of the resend test carries the value in 2.75 s, 0.25 s more than its request's
deadline. The resend's deadline is 4.5 s (the base, the given-up value's 2 s and its own 2 s),
and it needs 3 s: the rest of the first (0.25 s) and its own 2.75 s. Half of that to spare
for the event loop the proxy, both nodes and the test share: on a loaded 2-core machine the
link carried less than its rate and the answer came late, and with the value at 60% of a
rate of 512 KiB/s (a resend needing 1.83 s of a 2.5 s deadline) the resend timed out too
(a third copy crossed the link), in 3 of 17 runs under load."""
RESEND_BOUND = 20.0
"""Seconds the resend test's write may take to commit (about 5.5 s expected). Before the fix
it never did."""


async def test_a_resend_waits_for_the_bytes_of_the_request_that_timed_out() -> None:
    """The follower is reached through a link a little slower than ``replication_min_rate``:
    the request carrying a large value times out, as that rate allows, while its bytes are
    still crossing the link. Its resend counts them as ahead of it (they are: the follower
    reads them first) and is answered: the write commits, the value crossing the link
    twice. Before, the timed-out request's bytes no longer counted: every resend got the
    deadline of a request with nothing ahead, timed out behind the bytes of the one before,
    and the write never committed (measured: not within 10 s, about 3 MB carried for
    0.5 MB)."""
    async with leader_behind_a_slow_link(RESEND_MIN_RATE, RESEND_RATE) as (c, n1, proxy):
        assert n1.raft is not None
        term = n1.raft.metrics.current_term
        before = proxy.forwarded
        began = time.monotonic()
        write = asyncio.ensure_future(n1.raft.client_write(b"v" * RESEND_VALUE))
        done, _ = await asyncio.wait({write}, timeout=RESEND_BOUND)
        took = time.monotonic() - began
        carried = proxy.forwarded - before
        what = (f"a value of {RESEND_VALUE} bytes over a {RESEND_RATE} bytes/s link with replication_min_rate "
                f"{RESEND_MIN_RATE}: {took:.2f}s, {carried} bytes carried; {n1.raft.metrics.describe()}")
        if not done:
            write.cancel()
        assert done, f"not committed within {RESEND_BOUND}s: {what}"
        write.result()
        assert n1.raft.metrics.current_term == term, f"the leader lost its term: {what}"
        # Sent once, timed out, sent again once (the heartbeats carry a few hundred bytes).
        assert carried < 2.5 * RESEND_VALUE, f"the value was resent more than once: {what}"
        print(what)
        if carried < 1.5 * RESEND_VALUE:
            # The first request was answered before its deadline fired (a timer late on a
            # starved loop): no resend, so what this test is about did not happen.
            pytest.skip(f"the value was not resent, nothing to check: {what}")
