"""Building a large snapshot does not stall writes. The leader's state machine holds enough
data that its snapshot is serialized in many pieces; a writer keeps writing while
``trigger.snapshot()`` builds, and writes keep being acknowledged between the build's first
and last piece (``MemStateMachine`` freezes its data copy-on-write and serializes it in
pieces, yielding to the event loop in between). The assertions are on the order of events
(pieces and acknowledgements in one log), not on durations: the write latency during a
build is measured by ``bench/snapshot_stall.py``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from openraft_py.storage import memory
from openraft_py.storage.memory import KvSet, encode_kv
from openraft_py.testing.cluster import Cluster

from .helpers import snap_config

pytestmark = pytest.mark.timeout(60)

N_KEYS = 600_000
# With one-shot serialization (the regression) no write completes during the build; with
# the piecewise build a write finishes every few pieces (tens of writes over the ~150
# pieces of this state). The bound does not depend on the machine's speed: both the pieces
# and the writes advance one event-loop iteration at a time (the in-process router has no
# delays here).
MIN_ACKS_DURING_BUILD = 10


async def test_large_snapshot_build_does_not_stall_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    # One ordered log of what happened: ("piece", i) as the builder serializes piece i,
    # ("ack", n) when write n is acknowledged.
    events: list[tuple[str, int]] = []
    real_pieces = memory._snapshot_pieces

    def recorded_pieces(*args: Any, **kw: Any) -> Iterator[bytes]:
        for i, part in enumerate(real_pieces(*args, **kw)):
            events.append(("piece", i))
            yield part

    monkeypatch.setattr(memory, "_snapshot_pieces", recorded_pieces)
    big = {f"key{i:08d}": "v" * 40 for i in range(N_KEYS)}
    # Generous election timeouts: this test is about the build, and a loaded machine must not
    # turn the leader over while the data is loaded.
    cfg = snap_config(
        max_in_snapshot_log_to_keep=100_000, election_timeout_min=1000, election_timeout_max=2000, heartbeat_interval=100
    )
    c = Cluster(cfg, seed=6)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await raft.client_write(encode_kv(KvSet("warm", "up")))
        # Pre-existing data on the leader (only the leader builds; followers never need it),
        # put in in slices so the leader keeps heartbeating.
        disk = c.disks[leader]
        items = list(big.items())
        for lo in range(0, len(items), 20_000):
            disk.kv.update(items[lo : lo + 20_000])
            await asyncio.sleep(0.001)
        del items, big
        assert c.leader() == leader

        acked = 0
        stop = asyncio.Event()

        async def writer() -> None:
            nonlocal acked
            while not stop.is_set() and acked < 100_000:
                await raft.client_write(encode_kv(KvSet(f"w{acked}", str(acked))))
                events.append(("ack", acked))
                acked += 1

        w = asyncio.ensure_future(writer())
        while acked < 20 and not w.done():  # the writer is going
            await asyncio.sleep(0.001)
        assert not w.done(), w
        applied = raft.metrics.last_applied
        assert applied is not None
        await raft.trigger.snapshot()
        m = await raft.wait(30).snapshot(applied.index, "leader built its snapshot")
        stop.set()
        await asyncio.wait_for(w, 10)

        assert m.snapshot is not None
        snap = await raft.get_current_snapshot()
        assert snap is not None
        assert snap.meta.last_log_id == m.snapshot
        snap.data.close()

        # The order of events: the build's pieces, and the acknowledgements among them.
        pieces = [k for k, (kind, _) in enumerate(events) if kind == "piece"]
        assert len(pieces) >= 100, f"the state was serialized in only {len(pieces)} pieces"
        first, last = pieces[0], pieces[-1]
        during = [n for kind, n in events[first:last] if kind == "ack"]
        # Acknowledgements spread over the build, not bunched at one point: each quarter
        # of the pieces sees writes acknowledged.
        quarters = [pieces[q * len(pieces) // 4] for q in range(4)] + [last]
        per_quarter = [
            sum(1 for kind, _ in events[a:b] if kind == "ack") for a, b in itertools.pairwise(quarters)
        ]
        print(f"\nsnapshot of {N_KEYS} keys in {len(pieces)} pieces: {len(during)} writes acknowledged "
              f"during the build (per quarter: {per_quarter}), {acked} in all")
        assert len(during) >= MIN_ACKS_DURING_BUILD, (
            f"only {len(during)} writes were acknowledged during a build of {len(pieces)} pieces"
        )
        assert all(n > 0 for n in per_quarter), f"writes stalled during part of the build: {per_quarter}"
        # Acknowledged in order, none lost: every write landed in the data, including those
        # applied during the build.
        acks = [n for kind, n in events if kind == "ack"]
        assert acks == list(range(acked))
        data = c.state_machines[leader].data
        assert data["key00000000"] == "v" * 40 and all(f"w{n}" in data for n in range(acked))
    finally:
        await c.shutdown()
