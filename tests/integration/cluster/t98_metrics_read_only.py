"""A leader's ``RaftMetrics.replication`` refuses changes when run, as the membership's
``nodes`` does.

Every reader of a node's current metrics gets the same object (``raft.metrics``, what a
``raft.wait(...)`` condition returns, a watcher of the key-value service's Prometheus
registry). ``replication`` was a plain ``dict`` when run (a read-only ``Mapping`` to type
checkers only), so a program that took the leader out of it in place
(``m.replication.pop(m.id)``, to keep the followers) changed what every other reader saw of
the node until its next change: a later ``raft.metrics`` had no entry for the leader.
"""

from __future__ import annotations

import copy
import pickle

import msgspec
import pytest

from openraft_py import LeaderId, LogId, Membership, RaftMetrics, ServerState, StoredMembership, Vote
from openraft_py.metrics import ReadOnlyReplication
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)


async def test_a_leaders_replication_refuses_changes_and_every_reader_keeps_seeing_it(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=5.0)
    raft = cluster.nodes[leader]
    log_id = (await raft.client_write(b"x")).log_id
    m = await raft.wait(5.0).metrics(
        lambda m: m.replication is not None and min(m.replication.values()) >= log_id.index,
        "every node matched the write",
    )
    assert m.replication is not None
    shared = raft.metrics
    assert shared.replication == m.replication
    want = dict(m.replication)

    with pytest.raises(TypeError, match=r"RaftMetrics.replication is read-only .* dict\(m.replication\)"):
        m.replication.pop(leader)  # type: ignore[attr-defined]
    for change in (
        lambda r: r.__setitem__(leader, -1),
        lambda r: r.__delitem__(leader),
        lambda r: r.clear(),
        lambda r: r.popitem(),
        lambda r: r.setdefault(9, 0),
        lambda r: r.update({9: 0}),
        lambda r: r.__ior__({9: 0}),
    ):
        with pytest.raises(TypeError, match="read-only"):
            change(m.replication)
    assert m.replication == want
    assert shared.replication == want
    assert raft.metrics.replication == want

    # A dict of one's own is a plain dict.
    followers = dict(m.replication)
    followers.pop(leader)
    assert set(followers) == {1, 2, 3} - {leader}
    assert m.replication == want


def _leader_metrics() -> RaftMetrics:
    members = StoredMembership(LogId(1, 0), Membership.new([{1, 2, 3}]))
    return RaftMetrics(
        id=1, state=ServerState.LEADER, current_term=1, vote=Vote(LeaderId(1, 1), True), last_log_index=5,
        last_applied=LogId(1, 5), committed=LogId(1, 5), current_leader=1, membership_config=members,
        replication=ReadOnlyReplication({1: 5, 2: 5, 3: -1}),
    )


def test_a_read_only_replication_reads_compares_copies_and_encodes_as_a_dict() -> None:
    m = _leader_metrics()
    r = m.replication
    assert isinstance(r, ReadOnlyReplication) and isinstance(r, dict)
    assert r == {1: 5, 2: 5, 3: -1} and {1: 5, 2: 5, 3: -1} == r
    assert r[3] == -1 and r.get(9) is None and sorted(r.items()) == [(1, 5), (2, 5), (3, -1)]
    for mine in (dict(r), r.copy(), r | {4: 0}):
        assert type(mine) is dict
        mine[4] = 1  # a dict of one's own changes
    assert r == {1: 5, 2: 5, 3: -1}

    for back in (pickle.loads(pickle.dumps(m)), copy.copy(m), copy.deepcopy(m)):
        assert back == m and type(back.replication) is ReadOnlyReplication
    assert type(pickle.loads(pickle.dumps(r))) is ReadOnlyReplication

    as_json = msgspec.json.encode(m)
    assert b'"replication":{"1":5,"2":5,"3":-1}' in as_json
    assert msgspec.json.decode(as_json, type=RaftMetrics) == m
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(m), type=RaftMetrics) == m
