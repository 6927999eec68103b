"""A node started on an empty data directory votes only once it holds what the cluster
committed (``kv/rejoin.py``): a voter whose directory was wiped and that came back under the
same id made a candidate lacking a committed write the leader, and the write was lost."""

from __future__ import annotations

import asyncio
import json
import shutil
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from openraft_py.kv import rejoin
from openraft_py.kv.node import KvNode
from openraft_py.kv.rejoin import CATCHING_UP_FILE, CatchUpGuard, GuardedRaft
from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    LeaderId,
    LogId,
    ServerState,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)

from .kv_helpers import KvCluster, url
from .kv_helpers import until_true as _until

pytestmark = pytest.mark.timeout(90)

FAST = {"heartbeat_interval": 50, "election_timeout_min": 300, "election_timeout_max": 600}
"""Elections within a second: the scenario waits for a few of them."""


@pytest.fixture
async def cluster() -> AsyncIterator[KvCluster]:
    c = KvCluster()
    try:
        yield c
    finally:
        await c.close()


def _leader_among(c: KvCluster, ids: list[int]) -> int | None:
    for i in ids:
        n = c.nodes[i]
        if n.raft is not None and n.raft.metrics.state == ServerState.LEADER:
            return i
    return None


async def test_a_wiped_voter_does_not_vote_until_it_caught_up(cluster: KvCluster) -> None:
    """3 voters; W commits on {1, 2} while 3 is down; 1 and 2 stop, 2's directory is wiped;
    2 (empty) and 3 (without W) start: 3 asked 2 for its vote, got it, led, and W was gone.
    Now 2 refuses (no leader while 1 is down); once 1 is back, 1 leads, W is there, and 2
    catches up and votes again (its record removed)."""
    c = await cluster.start(3, raft_config=FAST)
    leader = await c.wait_leader()
    assert leader.id == 1
    await leader.put("before", "x")
    await c.nodes[3].stop()
    await leader.put("w", "acknowledged")
    opts = {i: c.nodes[i].opts for i in (1, 2, 3)}
    await c.nodes[1].stop()
    await c.nodes[2].stop()
    shutil.rmtree(opts[2].data_dir)  # the lost disk
    two = c.nodes[2] = KvNode(opts[2])
    await two.start()
    assert two.catch_up is not None and two.catch_up.active
    assert (Path(opts[2].data_dir) / CATCHING_UP_FILE).exists()
    three = c.nodes[3] = KvNode(opts[3])
    await three.start()
    guard = two.catch_up
    await _until("node 2 refused node 3's vote request, or a leader without W was elected",
                 lambda: guard._refused > 0 or _leader_among(c, [2, 3]) is not None)
    assert _leader_among(c, [2, 3]) is None, "node 3, which lacks W, was elected with the wiped node's vote"
    one = c.nodes[1] = KvNode(opts[1])
    await one.start()
    new = await c.wait_leader(timeout=20)
    assert new.id == 1, "only node 1 holds every committed entry"
    assert await new.read("w", "linearizable") == "acknowledged"
    await _until("node 2 caught up", lambda: not guard.active, timeout=20)
    assert not (Path(opts[2].data_dir) / CATCHING_UP_FILE).exists()
    assert two.sm is not None and two.sm.get("w") == "acknowledged"


async def test_new_nodes_of_a_cluster_being_initialized_vote_and_then_catch_up(cluster: KvCluster) -> None:
    """The first election of a new cluster needs the votes of new nodes: they grant a
    candidate whose log is the initial membership alone; the initialized node stops catching
    up at init, the others once the leader's first commit reached them."""
    c = await cluster.start(3, raft_config=FAST)
    await c.wait_leader()
    await _until("every node caught up",
                 lambda: all(n.catch_up is not None and not n.catch_up.active for n in c.nodes.values()))
    for n in c.nodes.values():
        assert not (Path(n.opts.data_dir) / CATCHING_UP_FILE).exists()


async def test_a_restart_while_catching_up_goes_on_catching_up(cluster: KvCluster) -> None:
    """The record outlives a restart: a node stopped before it caught up still refuses a
    candidate past the initial membership after its restart; the target it had learned is
    kept."""
    node = await cluster.start_node(1)
    opts = node.opts
    assert node.catch_up is not None and node.catch_up.active
    node.catch_up.target = 7
    await asyncio.to_thread(node.catch_up.save)
    await node.stop()
    again = cluster.nodes[1] = KvNode(opts)
    await again.start()
    assert again.catch_up is not None and again.catch_up.active and again.catch_up.target == 7
    req = VoteRequest(Vote(LeaderId(5, 2)), LogId(4, 9))
    assert not again.catch_up.may_vote_for(req)
    assert again.catch_up.may_vote_for(VoteRequest(Vote(LeaderId(1, 2)), LogId(0, 0)))


async def test_an_unreadable_record_is_refused(cluster: KvCluster) -> None:
    node = await cluster.start_node(1)
    opts = node.opts
    await node.stop()
    (Path(opts.data_dir) / CATCHING_UP_FILE).write_text('{"target": "x"}')
    with pytest.raises(ValueError, match=r"catching-up.json is not a readable record .* write \{\} into it"):
        await KvNode(opts).start()
    (Path(opts.data_dir) / CATCHING_UP_FILE).write_text("{}")
    again = cluster.nodes[1] = KvNode(opts)
    await again.start()
    assert again.catch_up is not None and again.catch_up.active and again.catch_up.target is None


def _record_a_directory(path: Path) -> None:
    path.mkdir()


def _record_a_link_to_itself(path: Path) -> None:
    path.symlink_to(path.name)


def _record_a_link_to_nothing(path: Path) -> None:
    path.symlink_to(path.parent / "gone" / CATCHING_UP_FILE)


@pytest.mark.parametrize(("make", "why"), [
    (_record_a_directory, "it is a directory"),
    (_record_a_link_to_itself, "it is a symbolic link that never reaches a file: Too many levels of symbolic links"),
    (_record_a_link_to_nothing, "it is a symbolic link to '.*gone/catching-up.json', which does not exist"),
])
async def test_a_record_that_is_no_file_is_refused_not_taken_for_none(
        cluster: KvCluster, make: Any, why: str) -> None:
    """``catching-up.json`` a directory, a symbolic link to itself, or a link whose target is
    gone (the record kept on a mount that is not there): a link to nothing was taken for no
    record, so the node, still catching up, voted at once (the lost-write case the record is
    for), and the other two failed the start with Python's bare ``IsADirectoryError`` and
    ``OSError``, saying nothing of the record. Each is refused as a record that cannot be
    read, before the stores open, and left as it is."""
    node = await cluster.start_node(1)
    opts = node.opts
    assert node.catch_up is not None and node.catch_up.active
    await node.stop()
    path = Path(opts.data_dir) / CATCHING_UP_FILE
    path.unlink()
    make(path)
    again = KvNode(opts)
    with pytest.raises(ValueError, match=rf"catching-up.json is not a readable record \({why}\): it says node 1 "
                                         r"started on an empty data directory .* write \{\} into it"):
        await again.start()
    assert again.raft is None and again.log_store is None, "it opened the stores"
    assert path.is_symlink() or path.is_dir(), "the record was replaced"


async def test_a_directory_that_held_data_does_not_catch_up(cluster: KvCluster) -> None:
    """Only an empty directory: a node restarted on its data votes at once, as before."""
    c = await cluster.start(1, raft_config=FAST)
    await c.wait_leader()
    one = c.nodes[1]
    assert one.catch_up is not None and not one.catch_up.active  # init ended it
    opts = one.opts
    await one.stop()
    again = c.nodes[1] = KvNode(opts)
    await again.start()
    assert again.catch_up is not None and not again.catch_up.active
    assert json.loads((Path(opts.data_dir) / "node.json").read_text())["node_id"] == 1
    assert c.session is not None
    async with c.session.get(url(again, "/cluster/status")) as r:
        assert r.status == 200


def test_the_guard_grants_only_the_first_election_while_catching_up(tmp_path: Path) -> None:
    g = CatchUpGuard.load(tmp_path, 2, new=True)
    assert g.active and (tmp_path / CATCHING_UP_FILE).read_bytes() == b'{"target":null}\n'
    assert g.may_vote_for(VoteRequest(Vote(LeaderId(1, 1)), LogId(0, 0)))
    assert g.may_vote_for(VoteRequest(Vote(LeaderId(1, 1)), None))
    assert not g.may_vote_for(VoteRequest(Vote(LeaderId(3, 3)), LogId(1, 2)))
    assert not g.may_vote_for(VoteRequest(Vote(LeaderId(3, 3)), LogId(1, 2), pre_vote=True))
    assert g.campaign_refusal() is not None
    g.remove()
    assert not (tmp_path / CATCHING_UP_FILE).exists()
    assert not CatchUpGuard.load(tmp_path, 2, new=False).active


async def test_a_catching_up_node_sends_no_vote_request() -> None:
    """Its own candidacy would count its vote: a candidate whose log lacks a committed write
    (it caught up part of the way) could win with the vote of another node lacking it."""
    from openraft_py.errors import Unreachable
    from openraft_py.kv.nodes import KvNetworkFactory, node_of
    from openraft_py.network.tcp import TcpNetworkFactory

    reason: list[str | None] = ["node 2 does not campaign: catching up"]
    factory = KvNetworkFactory(TcpNetworkFactory(2, "kv-test"), campaign_gate=lambda: reason[0])
    try:
        client = factory.new_client(3, node_of("127.0.0.1:1", "127.0.0.1:2"))
        with pytest.raises(Unreachable, match=r"vote 2 -> 3 not sent: node 2 does not campaign: catching up"):
            await client.vote(VoteRequest(Vote(LeaderId(4, 2)), LogId(1, 3)))
    finally:
        await factory.close()


class _Served:
    """A stand-in for the node's ``Raft`` behind a ``GuardedRaft``: records the notices it
    is handed and answers AppendEntries with ``answer``."""

    def __init__(self, answer: AppendEntriesResponse) -> None:
        self.answer = answer
        self.notices: list[TransferLeaderRequest] = []

    @property
    def metrics(self) -> Any:
        return types.SimpleNamespace(committed=None, vote=Vote(LeaderId(1, 1)))

    async def append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        return self.answer

    async def handle_transfer_leader(self, req: TransferLeaderRequest) -> None:
        self.notices.append(req)


async def test_a_catching_up_node_ignores_a_transfer_notice(tmp_path: Path) -> None:
    """It could not win (its vote requests are not sent), and the election it started
    raised its term, which deposed the leader once it heard of it (a transfer right after a
    cluster started: the leader stepped down, and a new election followed)."""
    notice = TransferLeaderRequest(Vote(LeaderId(1, 1), True), 2, LogId(1, 1))
    raft = _Served(AppendEntriesResponse(Vote(LeaderId(1, 1), True), True, LogId(1, 1)))
    guarded = GuardedRaft(raft, CatchUpGuard.load(tmp_path, 2, new=True))  # type: ignore[arg-type]
    await guarded.handle_transfer_leader(notice)
    assert raft.notices == []
    guarded.guard.active = False
    await guarded.handle_transfer_leader(notice)
    assert raft.notices == [notice]


async def test_the_request_that_teaches_the_target_ends_the_catching_up_when_it_shows_it(tmp_path: Path) -> None:
    """The answer to an AppendEntries whose leader committed in its term, matching up to its
    commit, shows the node holds the target: catching up ends with that request, not at a
    later one (a transfer right after a cluster started found its target catching up)."""
    leader = Vote(LeaderId(2, 1), True)
    raft = _Served(AppendEntriesResponse(leader, True, LogId(2, 1)))
    guarded = GuardedRaft(raft, CatchUpGuard.load(tmp_path, 2, new=True))  # type: ignore[arg-type]
    await guarded.append_entries(AppendEntriesRequest(leader, LogId(2, 1), [], LogId(2, 1)))
    assert not guarded.guard.active and not (tmp_path / CATCHING_UP_FILE).exists()
    # An answer that does not match that far leaves it catching up, with the target kept.
    raft.answer = AppendEntriesResponse(leader, True, LogId(0, 0))
    guarded = GuardedRaft(raft, CatchUpGuard.load(tmp_path, 3, new=True))  # type: ignore[arg-type]
    await guarded.append_entries(AppendEntriesRequest(leader, LogId(0, 0), [], LogId(2, 1)))
    assert guarded.guard.active and guarded.guard.target == 1
    assert json.loads((tmp_path / CATCHING_UP_FILE).read_bytes()) == {"target": 1}


async def test_the_first_leaders_requests_end_the_catching_up_at_once(tmp_path: Path) -> None:
    """A new cluster's leader of term 1 lost before it committed an entry of its term: its
    nodes, all new, refused every later candidate (its log past the initial membership) and
    none could campaign, so the cluster elected no leader again (a fresh-clone test run on a
    busy machine). The first term's leader had no predecessor, so its committed index, none
    yet, is the target: the first request it sends ends the catching up. A later term's
    leader that has not committed in its term teaches nothing."""
    first = Vote(LeaderId(1, 1), True)
    raft = _Served(AppendEntriesResponse(first, True, LogId(1, 1)))
    guarded = GuardedRaft(raft, CatchUpGuard.load(tmp_path, 2, new=True))  # type: ignore[arg-type]
    await guarded.append_entries(AppendEntriesRequest(first, LogId(0, 0), [], None))
    assert not guarded.guard.active and not (tmp_path / CATCHING_UP_FILE).exists()
    later = Vote(LeaderId(2, 1), True)
    raft.answer = AppendEntriesResponse(later, True, LogId(1, 1))
    guarded = GuardedRaft(raft, CatchUpGuard.load(tmp_path, 3, new=True))  # type: ignore[arg-type]
    await guarded.append_entries(AppendEntriesRequest(later, LogId(1, 1), [], LogId(1, 1)))
    assert guarded.guard.active and guarded.guard.target is None


async def test_the_initialized_node_wins_the_first_election_at_once(cluster: KvCluster) -> None:
    """``init`` ends the catching up before ``initialize``: the election it starts at once
    sends this node's vote requests then (they were held back, and the first term was lost)."""
    c = await cluster.start(3, init=False, raft_config=FAST)
    from openraft_py.kv.nodes import NodeAddrs

    await c.nodes[1].init({n.id: NodeAddrs(n.opts.raft_addr, n.opts.http_addr) for n in c.nodes.values()})
    leader = await c.wait_leader(timeout=20)
    assert leader.id == 1 and leader.raft is not None and leader.raft.metrics.current_term == 1
    assert not (Path(leader.opts.data_dir) / CATCHING_UP_FILE).exists()


async def test_a_node_killed_right_after_its_init_leads_the_new_cluster_once_restarted(
        cluster: KvCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node killed between ``initialize`` (its first membership written) and the removal
    of its catching-up record came back initialized and catching up: it never campaigned,
    the other nodes (nothing had reached them: no membership) never do, and ``init`` again
    was refused ("only allowed on a pristine node"): no leader, for good (seen with three
    ``serve`` processes, ``kill -9`` of the first 2 ms after ``POST /cluster/init``). The
    record now goes before ``initialize``: the kill, modelled here as a stop while
    ``initialize`` has returned and nothing after it ran, leaves the node free to campaign."""
    from openraft_py.kv.nodes import NodeAddrs
    from openraft_py.raft import Raft

    from .kv_helpers import node_options

    one = await cluster.start_node(1, raft_config=FAST)
    assert one.catch_up is not None and one.catch_up.active
    later = {nid: node_options(nid, cluster.root, raft_config=FAST) for nid in (2, 3)}
    members = {1: NodeAddrs(one.opts.raft_addr, one.opts.http_addr)}
    members.update({nid: NodeAddrs(o.raft_addr, o.http_addr) for nid, o in later.items()})
    original = Raft.initialize

    async def killed_after(self: Raft, nodes: Any) -> None:
        await original(self, nodes)
        await asyncio.Event().wait()  # the process is gone: nothing after initialize runs

    monkeypatch.setattr(Raft, "initialize", killed_after)
    init = asyncio.ensure_future(one.init(members))
    assert one.raft is not None
    await one.raft.wait(10).log_index_at_least(0, "node 1 holds its first membership")
    await one.stop()
    init.cancel()
    await asyncio.gather(init, return_exceptions=True)
    monkeypatch.undo()
    again = cluster.nodes[1] = KvNode(one.opts)
    await again.start()
    for nid, o in later.items():
        cluster.nodes[nid] = KvNode(o)
        await cluster.nodes[nid].start()
    leader = await cluster.wait_leader(timeout=20)
    assert leader.id == 1, leader.id  # (the only node holding the membership)
    assert leader.catch_up is not None and not leader.catch_up.active
    assert not (Path(leader.opts.data_dir) / CATCHING_UP_FILE).exists()


async def test_an_init_refused_leaves_the_node_catching_up_with_its_record(cluster: KvCluster) -> None:
    """The record goes before ``initialize`` (above); an ``initialize`` that refuses, having
    written nothing (this node not among the members), puts it back: the node goes on
    catching up, also after a restart."""
    from openraft_py.errors import NotInMembers
    from openraft_py.kv.nodes import NodeAddrs

    one = await cluster.start_node(1, raft_config=FAST)
    with pytest.raises(NotInMembers):
        await one.init({2: NodeAddrs("127.0.0.1:1", "127.0.0.1:2")})
    assert one.catch_up is not None and one.catch_up.active
    assert (Path(one.opts.data_dir) / CATCHING_UP_FILE).exists()


async def test_an_init_on_a_stopped_raft_leaves_the_node_catching_up_with_its_record(cluster: KvCluster) -> None:
    """An init that reaches a node whose Raft has stopped (a stop under way, a storage failure)
    writes nothing: its ``initialize`` fails at once. The record stays (it was removed first,
    and a ``Fatal`` kept it gone), so the node still catches up when it starts again."""
    from openraft_py.errors import Fatal
    from openraft_py.kv.nodes import NodeAddrs

    one = await cluster.start_node(1, raft_config=FAST)
    assert one.raft is not None
    await one.raft.shutdown()
    with pytest.raises(Fatal):
        await one.init({1: NodeAddrs(one.opts.raft_addr, one.opts.http_addr)})
    assert one.catch_up is not None and one.catch_up.active
    assert (Path(one.opts.data_dir) / CATCHING_UP_FILE).exists()


async def test_an_init_whose_raft_stops_while_the_record_is_removed_puts_it_back(
        cluster: KvCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Raft stops (a storage failure, say) while the init removes the catching-up record,
    in a worker thread, after it found the Raft running: ``initialize`` then fails at once
    with ``Fatal``, writing nothing. The record is put back, as for a Raft stopped before
    (it stayed gone: the node no longer caught up once started again)."""
    from openraft_py.errors import Fatal
    from openraft_py.kv.nodes import NodeAddrs

    one = await cluster.start_node(1, raft_config=FAST)
    raft = one.raft
    assert raft is not None and one.catch_up is not None and one.catch_up.active
    loop = asyncio.get_running_loop()
    remove = CatchUpGuard.remove

    def stopped_then_removed(guard: CatchUpGuard) -> None:
        asyncio.run_coroutine_threadsafe(raft.shutdown(), loop).result(10)
        remove(guard)

    monkeypatch.setattr(CatchUpGuard, "remove", stopped_then_removed)
    with pytest.raises(Fatal):
        await asyncio.wait_for(one.init({1: NodeAddrs(one.opts.raft_addr, one.opts.http_addr)}), 20)
    assert one.catch_up.active
    assert (Path(one.opts.data_dir) / CATCHING_UP_FILE).exists()


async def test_the_operator_ends_the_catching_up_by_removing_its_record(cluster: KvCluster,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Two voters, both stopped, 2 wiped: 1 holds every committed write (each needed both),
    but 2 cannot know that and refuses 1's vote requests; no leader, and 2's WARNING says
    how to end it. Removing the record (2 stopped) does; 1 leads with its writes."""
    c = await cluster.start(2, raft_config=FAST)
    assert (await c.wait_leader()).id == 1
    await c.nodes[1].put("w", "kept")
    opts = {i: c.nodes[i].opts for i in (1, 2)}
    for i in (1, 2):
        await c.nodes[i].stop()
    shutil.rmtree(opts[2].data_dir)
    record = Path(opts[2].data_dir) / CATCHING_UP_FILE
    # Only this start's warnings: on a loaded machine the first node 2 could refuse a vote
    # request while the cluster came up (the fixture's second election, before 2 had ended
    # its first catching up), which is its own streak, logged too.
    caplog.clear()
    with caplog.at_level("WARNING", logger="openraft_py.kv"):
        for i in (2, 1):
            c.nodes[i] = KvNode(opts[i])
            await c.nodes[i].start()
        guard = c.nodes[2].catch_up
        assert guard is not None
        await _until("node 2 refused node 1's vote request", lambda: guard._refused > 0)
    assert _leader_among(c, [1, 2]) is None
    warned = [r.getMessage() for r in caplog.records if "refused the" in r.getMessage()]
    assert len(warned) == 1 and f"stop this node, remove {record} and start it again" in warned[0], warned
    await c.nodes[2].stop()
    record.unlink()
    c.nodes[2] = KvNode(opts[2])
    await c.nodes[2].start()
    leader = await c.wait_leader(timeout=20)
    assert leader.id == 1 and await leader.read("w", "linearizable") == "kept"


async def test_a_majority_that_lost_its_disks_comes_back_from_the_survivor(cluster: KvCluster) -> None:
    """The guide's way back from losing a majority's disks: three voters stop, 2 and 3 lose
    their data directories and start again empty under their ids, refusing 1's vote
    requests (no leader: they cannot know 1 holds every committed write); stopped, their
    records removed and started again, they vote for 1, which leads with its writes, and
    they catch up from it."""
    c = await cluster.start(3, raft_config=FAST)
    assert (await c.wait_leader()).id == 1
    await c.nodes[1].put("w", "kept")
    opts = {i: c.nodes[i].opts for i in (1, 2, 3)}
    for i in (1, 2, 3):
        await c.nodes[i].stop()
    for i in (2, 3):
        shutil.rmtree(opts[i].data_dir)
    for i in (2, 3, 1):
        c.nodes[i] = KvNode(opts[i])
        await c.nodes[i].start()
    guards = [c.nodes[i].catch_up for i in (2, 3)]
    await _until("nodes 2 and 3 refused a vote request", lambda: all(g is not None and g._refused > 0 for g in guards))
    assert _leader_among(c, [1, 2, 3]) is None
    for i in (2, 3):
        await c.nodes[i].stop()
        (Path(opts[i].data_dir) / CATCHING_UP_FILE).unlink()
        c.nodes[i] = KvNode(opts[i])
        await c.nodes[i].start()
    leader = await c.wait_leader(timeout=20)
    assert leader.id == 1 and await leader.read("w", "linearizable") == "kept"
    assert leader.raft is not None
    await c.wait_applied(leader.raft.metrics.last_log_index, timeout=10)
    for i in (2, 3):
        sm = c.nodes[i].sm
        assert sm is not None and sm.get("w") == "kept"


class _Voter(_Served):
    """A stand-in that answers vote requests with ``granted``."""

    def __init__(self, granted: bool) -> None:
        super().__init__(AppendEntriesResponse(Vote(LeaderId(1, 1), True), True, None))
        self.granted = granted

    async def vote(self, req: VoteRequest) -> VoteResponse:
        return VoteResponse(req.vote if self.granted else Vote(LeaderId(0, 0)), self.granted, None, req.pre_vote)


@pytest.mark.parametrize(("req", "granted", "ends"), [
    (VoteRequest(Vote(LeaderId(1, 1)), LogId(0, 0)), True, True),
    (VoteRequest(Vote(LeaderId(1, 1)), None), True, True),
    (VoteRequest(Vote(LeaderId(1, 1)), LogId(0, 0)), False, False),  # not granted: nothing changed
    (VoteRequest(Vote(LeaderId(1, 1)), LogId(0, 0), pre_vote=True), True, False),  # a pre-vote binds nothing
    (VoteRequest(Vote(LeaderId(2, 1)), LogId(0, 0)), True, False),  # a later term may follow a leader
], ids=["first-term", "no-log", "refused", "pre-vote", "second-term"])
async def test_a_vote_granted_in_the_first_election_ends_the_catching_up(
        tmp_path: Path, req: VoteRequest, granted: bool, ends: bool) -> None:
    """A node that grants its vote in a cluster's first term, to a candidate holding only the
    initial membership, is a new node of a new cluster: nothing was committed, and from
    then on it remembers what it did. It stops catching up before its answer leaves (the
    first leader lost before its first AppendEntries reached anyone was refused by every
    other node, all catching up, and the cluster elected no leader again)."""
    guarded = GuardedRaft(_Voter(granted), CatchUpGuard.load(tmp_path, 2, new=True))  # type: ignore[arg-type]
    resp = await guarded.vote(req)
    assert resp.vote_granted is granted
    assert guarded.guard.active is not ends
    assert (tmp_path / CATCHING_UP_FILE).exists() is not ends


async def _init_through_node_1(c: KvCluster) -> KvNode:
    """Initialize ``c``'s nodes as one cluster through node 1 (``POST /cluster/init``'s
    call); node 1."""
    from openraft_py.kv.nodes import NodeAddrs

    one = c.nodes[1]
    await one.init({n.id: NodeAddrs(n.opts.raft_addr, n.opts.http_addr) for n in c.nodes.values()})
    return one


async def _settles(c: KvCluster) -> None:
    """A leader is elected, a write commits, and no node is catching up any more."""
    leader = await c.wait_leader(timeout=20)
    await leader.put("k", "v")
    await c.wait_caught_up(timeout=20)


class _LostRequests:
    """Switches the tests below turn off to let requests through again, patched into every
    node's ``GuardedRaft`` (``install``): while ``first_votes`` is on, vote requests of term 1
    (not pre-votes) are lost; while ``appends`` is on, AppendEntries are lost except those to
    the nodes ``reached`` (their answers come back)."""

    def __init__(self, first_votes: bool, reached: tuple[int, ...] = ()) -> None:
        self.first_votes = first_votes
        self.appends = True
        self.reached = reached

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        passed_vote = rejoin.GuardedRaft.vote
        passed_append = rejoin.GuardedRaft.append_entries
        lost = self

        async def maybe_lost_vote(self: GuardedRaft, req: VoteRequest) -> VoteResponse:
            if lost.first_votes and req.vote.term == 1 and not req.pre_vote:
                raise RuntimeError("this test lost the request")
            return await passed_vote(self, req)

        def maybe_lost(self: GuardedRaft, req: AppendEntriesRequest) -> Any:
            if lost.appends and self.guard.node_id not in lost.reached:
                raise RuntimeError("this test lost the request")
            return passed_append(self, req)

        monkeypatch.setattr(rejoin.GuardedRaft, "vote", maybe_lost_vote)
        monkeypatch.setattr(rejoin.GuardedRaft, "append_entries", maybe_lost)


async def _guards_after_first_election(c: KvCluster, n: int, term_one_lost: bool) -> None:
    """Nodes 2 to ``n`` after node 1 won its first election: still catching up if its term-1
    vote requests were lost (``term_one_lost``), otherwise each ended its catching up with
    its term-1 vote. Those of the majority that elected node 1 did before their answers
    left (it leads: they have ended now); the others' vote requests may still be on their
    way on a loaded machine (node 1 did not wait for them), so they are waited for."""
    guards: dict[int, CatchUpGuard] = {}
    for i in range(2, n + 1):
        guard = c.nodes[i].catch_up
        assert guard is not None
        guards[i] = guard
    if term_one_lost:
        assert all(g.active for g in guards.values())
        return
    ended = [i for i, g in guards.items() if not g.active]
    assert len(ended) >= n // 2, f"node 1 leads term 1, but only nodes {ended} ended their catching up"
    await _until("every node's term-1 vote ended its catching up", lambda: not any(g.active for g in guards.values()))


async def test_a_first_leader_lost_before_its_first_append_entries_is_followed(
        cluster: KvCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node 1 is initialized and wins term 1 with a new node's vote; none of its
    AppendEntries reaches the others before it loses its leadership (here: it campaigns
    again). Its log now holds the first term's entry, past the initial membership: nodes 2
    and 3, catching up, refused it for good, and could not campaign themselves (a fresh
    clone's test run saw no leader again). A node that voted in the first election has
    ended catching up and grants it."""
    lost = _LostRequests(first_votes=False)
    lost.install(monkeypatch)
    c = await cluster.start(3, init=False, raft_config=FAST)
    one = await _init_through_node_1(c)
    await _until("node 1 leads term 1", lambda: one.raft is not None and one.raft.metrics.state == ServerState.LEADER)
    assert one.raft is not None and one.raft.metrics.current_term == 1
    await one.raft.trigger.elect()
    await _until("node 1 campaigns past term 1", lambda: one.raft is not None and one.raft.metrics.current_term > 1)
    lost.appends = False
    await _settles(c)


async def test_a_first_leader_of_a_later_term_lost_before_its_first_append_entries_is_followed(
        cluster: KvCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, but node 1's first election (term 1) fails (its vote requests, not its
    pre-votes, are lost) and
    it wins term 2 with the other nodes' votes (its log still the initial membership alone):
    the first leader is of term 2, which ``learn_first_vote`` does not take. Lost before its
    first AppendEntries reached anyone, it was refused by nodes 2 and 3 for good (its log
    holds 2-1); a node keeps granting the candidate it voted for while catching up, whose
    log holds nothing past the term of that vote."""
    lost = _LostRequests(first_votes=True)
    lost.install(monkeypatch)
    c = await cluster.start(3, init=False, raft_config=FAST)
    one = await _init_through_node_1(c)
    await _until("node 1 leads", lambda: one.raft is not None and one.raft.metrics.state == ServerState.LEADER)
    assert one.raft is not None and one.raft.metrics.current_term >= 2
    first = one.raft.metrics.current_term
    for i in (2, 3):
        guard = c.nodes[i].catch_up
        assert guard is not None and guard.active  # the first leader is not of term 1
    lost.first_votes = False
    await one.raft.trigger.elect()
    await _until("node 1 campaigns past its first term",
                 lambda: one.raft is not None and one.raft.metrics.current_term > first)
    lost.appends = False
    await _settles(c)


async def test_a_first_leader_of_a_later_term_lost_before_it_committed_is_followed(
        cluster: KvCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, but node 1 wins term 2 with node 2's vote alone (node 3's is lost), and its
    blank entry reaches node 2, whose answer is lost: node 1 commits nothing and campaigns
    again. Node 2 follows it (its vote is node 1's leadership, its log holds 2-1) and node 3
    never voted for it: both refused it for good. Node 2 grants the candidate it elected,
    whose log holds nothing since but its blank entry."""
    votes_lost = [True]
    passed_vote = rejoin.GuardedRaft.vote
    passed_append = rejoin.GuardedRaft.append_entries

    async def maybe_lost_vote(self: GuardedRaft, req: VoteRequest) -> VoteResponse:
        if votes_lost[0] and not req.pre_vote and (req.vote.term == 1 or self.guard.node_id == 3):
            raise RuntimeError("this test lost the request")
        return await passed_vote(self, req)

    async def answer_lost(self: GuardedRaft, req: AppendEntriesRequest) -> AppendEntriesResponse:
        if not votes_lost[0]:
            return await passed_append(self, req)
        if self.guard.node_id == 2:
            resp = await passed_append(self, req)
            if resp.matching is None or resp.matching.index < 1:
                return resp  # the leader's probes: it finds where node 2's log ends
        raise RuntimeError("this test lost the answer")

    monkeypatch.setattr(rejoin.GuardedRaft, "vote", maybe_lost_vote)
    monkeypatch.setattr(rejoin.GuardedRaft, "append_entries", answer_lost)
    c = await cluster.start(3, init=False, raft_config=FAST)
    from openraft_py.kv.nodes import NodeAddrs

    one, two = c.nodes[1], c.nodes[2]
    await one.init({n.id: NodeAddrs(n.opts.raft_addr, n.opts.http_addr) for n in c.nodes.values()})
    await _until("node 1 leads", lambda: one.raft is not None and one.raft.metrics.state == ServerState.LEADER)
    assert one.raft is not None and one.raft.metrics.current_term >= 2
    first = one.raft.metrics.current_term
    await _until("node 2 holds node 1's blank entry",
                 lambda: two.raft is not None and two.raft.metrics.last_log_index == 1)
    assert two.raft is not None and two.raft.metrics.vote == Vote(LeaderId(first, 1), True)
    for i in (2, 3):
        guard = c.nodes[i].catch_up
        assert guard is not None and guard.active and guard.target is None
    await one.raft.trigger.elect()
    await _until("node 1 campaigns past its first term",
                 lambda: one.raft is not None and one.raft.metrics.current_term > first)
    votes_lost[0] = False
    await _settles(c)


_GRANT = VoteRequest(Vote(LeaderId(2, 1)), LogId(0, 0))  # node 1's election of term 2, its log the membership


@pytest.mark.parametrize(("req", "vote", "passes"), [
    (VoteRequest(Vote(LeaderId(3, 1)), LogId(2, 1)), Vote(LeaderId(2, 1)), True),  # its blank entry, answer lost
    (VoteRequest(Vote(LeaderId(3, 1)), LogId(2, 1)), Vote(LeaderId(2, 1), True), True),  # it was heard leading
    (VoteRequest(Vote(LeaderId(3, 1)), LogId(2, 1), pre_vote=True), Vote(LeaderId(2, 1)), True),
    (VoteRequest(Vote(LeaderId(3, 1)), LogId(2, 2)), Vote(LeaderId(2, 1)), True),  # and a write it took
    (VoteRequest(Vote(LeaderId(3, 1)), LogId(2, 40)), Vote(LeaderId(2, 1), True), True),  # many writes
    (VoteRequest(Vote(LeaderId(4, 1)), LogId(3, 1)), Vote(LeaderId(2, 1)), False),  # a later term's entry
    (VoteRequest(Vote(LeaderId(4, 1)), LogId(3, 2)), Vote(LeaderId(2, 1)), False),  # and a later write
    (VoteRequest(Vote(LeaderId(3, 1)), LogId(1, 2)), Vote(LeaderId(2, 1)), False),  # an earlier term's entries
    (VoteRequest(Vote(LeaderId(3, 3)), LogId(2, 1)), Vote(LeaderId(2, 1)), False),  # another candidate
    (VoteRequest(Vote(LeaderId(3, 1)), LogId(2, 1)), Vote(LeaderId(3, 2)), False),  # the vote moved on
    (VoteRequest(Vote(LeaderId(3, 1)), LogId(2, 1)), Vote(LeaderId(2, 3), True), False),  # another's leadership
    (VoteRequest(Vote(LeaderId(1, 1)), LogId(2, 1)), Vote(LeaderId(2, 1)), False),  # an older term's request
], ids=["blank", "heard-leading", "pre-vote", "a-write", "many-writes", "later-term", "later-write",
        "earlier-term", "other-candidate", "vote-moved", "other-leader", "older-request"])
async def test_a_node_catching_up_grants_the_candidate_it_elected_lost_before_it_committed(
        tmp_path: Path, req: VoteRequest, vote: Vote, passes: bool) -> None:
    """The candidate a catching-up node granted (its log the initial membership, or this
    rule's) is granted again while its log holds, past what it had then, entries of the
    vote's term alone (a leader elected with it appends its blank entry, then the writes it
    takes); the grant is recorded before the answer leaves and kept across a restart."""
    guarded = GuardedRaft(_Voter(True), CatchUpGuard.load(tmp_path, 2, new=True))  # type: ignore[arg-type]
    await guarded.vote(_GRANT)
    g = guarded.guard
    assert g.active  # term 2: not the first election, it goes on catching up
    assert json.loads((tmp_path / CATCHING_UP_FILE).read_text()) == {"target": None, "granted": [2, 1, [0, 0]]}
    again = CatchUpGuard.load(tmp_path, 2, new=False)
    for guard in (g, again):
        assert guard.may_vote_for(req, vote) is passes
    assert not g.may_vote_for(req, None)
    (tmp_path / "other").mkdir()
    assert not CatchUpGuard.load(tmp_path / "other", 2, new=True).may_vote_for(req, vote)  # nothing granted


def test_a_grant_through_continues_is_continued_from_the_log_it_granted(tmp_path: Path) -> None:
    """A grant made through ``continues`` (node 1's term-3 candidacy, its log 2-2: its term-2
    blank entry and a write) is the one continued next: entries of term 3 past 2-2 pass, an
    entry of term 3 at or below index 2 (another leader's of term 3) and the log of term 2
    it had before do not."""
    g = CatchUpGuard.load(tmp_path, 2, new=True)
    assert g.learn_grant(_GRANT, VoteResponse(_GRANT.vote, True, None))
    again = VoteRequest(Vote(LeaderId(3, 1)), LogId(2, 2))
    assert g.may_vote_for(again, Vote(LeaderId(2, 1)))
    assert g.learn_grant(again, VoteResponse(again.vote, True, None))
    assert g.active and g.granted == rejoin.GrantedVote(3, 1, LogId(2, 2))
    voted = Vote(LeaderId(3, 1))
    assert g.may_vote_for(VoteRequest(Vote(LeaderId(4, 1)), LogId(3, 3)), voted)
    assert g.may_vote_for(VoteRequest(Vote(LeaderId(4, 1)), LogId(3, 9)), voted)
    assert g.may_vote_for(VoteRequest(Vote(LeaderId(4, 1)), LogId(2, 2)), voted)  # the log it granted
    assert not g.may_vote_for(VoteRequest(Vote(LeaderId(4, 1)), LogId(3, 2)), voted)
    assert not g.may_vote_for(VoteRequest(Vote(LeaderId(4, 1)), LogId(2, 3)), voted)
    assert not g.may_vote_for(VoteRequest(Vote(LeaderId(4, 1)), LogId(3, 3)), Vote(LeaderId(2, 1)))


async def test_a_grant_in_the_first_election_is_recorded_before_the_record_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node stopped between its vote in the first election and the record's removal
    grants the candidate again once it starts (its leader lost before it committed)."""
    guarded = GuardedRaft(_Voter(True), CatchUpGuard.load(tmp_path, 2, new=True))  # type: ignore[arg-type]

    def stopped() -> None:
        raise OSError("the node stopped here")

    monkeypatch.setattr(guarded.guard, "remove", stopped)
    with pytest.raises(OSError):
        await guarded.vote(VoteRequest(Vote(LeaderId(1, 1)), LogId(0, 0)))
    again = CatchUpGuard.load(tmp_path, 2, new=False)
    assert again.active and again.target == -1
    assert again.may_vote_for(VoteRequest(Vote(LeaderId(2, 1)), LogId(1, 1)), Vote(LeaderId(1, 1)))



@pytest.mark.parametrize(("n", "term_one_lost", "reached", "restart", "pre_vote"), [
    (3, True, (), False, True),
    (3, True, (), False, False),
    (3, True, (), True, True),
    (5, True, (2,), False, True),
    (5, True, (2,), True, False),
    (3, False, (), False, True),
], ids=["campaigns-again", "campaigns-again-no-pre-vote", "restarted-with-its-data",
        "five-voters-one-follower-reached", "five-voters-restarted-no-pre-vote", "term-1"])
async def test_a_first_leader_lost_after_it_took_a_write_is_followed(
        cluster: KvCluster, monkeypatch: pytest.MonkeyPatch, n: int, term_one_lost: bool,
        reached: tuple[int, ...], restart: bool, pre_vote: bool) -> None:
    """Node 1's first election (term 1) fails (``term_one_lost``: its vote requests, not its
    pre-votes, are lost) and it wins term 2 with the log of the initial membership alone;
    its AppendEntries reach no one (or only the nodes ``reached``, whose answers come back:
    too few to commit). It takes a client write after its blank entry, then loses its
    leadership (it campaigns again, or is stopped and started again on its data). Its log
    holds two entries of its term past what the other nodes granted it: they refused it for
    good and do not campaign: no leader ever, every node up. A node catching up grants the
    candidate it elected again while that candidate's log holds, past what it had then,
    entries of the vote's term alone. In term 1 (``term_one_lost`` false) the first vote
    already ended the catching up. With pre-votes or without."""
    lost = _LostRequests(first_votes=term_one_lost, reached=reached)
    lost.install(monkeypatch)
    c = await cluster.start(n, init=False, raft_config={**FAST, "enable_pre_vote": pre_vote})
    one = await _init_through_node_1(c)
    await _until("node 1 leads", lambda: one.raft is not None and one.raft.metrics.state == ServerState.LEADER)
    assert one.raft is not None
    first = one.raft.metrics.current_term
    assert first >= 2 if term_one_lost else first == 1
    write = asyncio.create_task(one.put("w", "taken"))
    try:
        await _until("node 1 appended the write after its blank entry",
                     lambda: one.raft is not None and one.raft.metrics.last_log_index == 2)
        for i in reached:
            await _until(f"node {i} holds node 1's write", lambda i=i: c.nodes[i].raft is not None
                         and c.nodes[i].raft.metrics.last_log_index == 2)  # type: ignore[union-attr]
        assert one.raft.metrics.committed is None or one.raft.metrics.committed.index < 1
        await _guards_after_first_election(c, n, term_one_lost)
        lost.first_votes = False
        if restart:
            opts = one.opts
            await one.stop()
            one = c.nodes[1] = KvNode(opts)
            await one.start()
        else:
            await one.raft.trigger.elect()
        await _until("node 1 campaigns past its first term",
                     lambda: one.raft is not None and one.raft.metrics.current_term > first)
        lost.appends = False
        await _settles(c)
        leader = await c.wait_leader(timeout=20)
        assert leader.id == 1, "only node 1 holds its write"
        assert await leader.read("w", "linearizable") == "taken"
    finally:
        write.cancel()
        await asyncio.gather(write, return_exceptions=True)


async def test_the_status_says_whether_the_node_is_catching_up(cluster: KvCluster) -> None:
    """``GET /cluster/status`` says ``catching_up`` while a node started on an empty data
    directory has not caught up (it votes for no candidate past the initial membership), and
    ``cluster status`` adds "(catching up)" to its role: it showed nowhere but in
    ``catching-up.json`` and the node's log, and a cluster that elected no leader because of
    it looked like one whose voters were all there."""
    from openraft_py.kv import cli

    new = await cluster.start_node(1)
    assert new.status()["catching_up"] is True
    await new.stop()
    other = KvCluster()
    try:
        c = await other.start(3, raft_config=FAST)  # (returns once none is catching up)
        statuses = {i: n.status() for i, n in c.nodes.items()}
        assert {i: st["catching_up"] for i, st in statuses.items()} == {1: False, 2: False, 3: False}
        statuses[3] = dict(statuses[3], catching_up=True)
        table = cli.status_table(dict(statuses), [1, 2, 3], []).splitlines()
        assert table[3].split()[:4] == ["3", "Follower", "voter", "(catching"] and "up)" in table[3], table
        assert "catching" not in table[1] + table[2], table
    finally:
        await other.close()
