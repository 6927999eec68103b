"""``openraft-py cluster force-recover`` (``kv/recover.py``, the library's
``recovery.force_sole_voter``): a stopped survivor of a cluster that lost a majority of its
voters for good becomes the sole voter of a new cluster, keeping its data; and each of its
refusals, which change nothing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from openraft_py.kv.cli import main
from openraft_py.kv.commands import KvStateMachine
from openraft_py.kv.identity import IDENTITY_FILE, DataDirMismatch, read_identity
from openraft_py.kv.node import KvNode
from openraft_py.kv.recover import CONFIRM_FLAG
from openraft_py.kv.rejoin import CATCHING_UP_FILE
from openraft_py.recovery import force_sole_voter, replace_owners
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import LogState, Vote

from .kv_helpers import KvCluster
from .kv_helpers import until_true as _until
from .serve_procs import ServeProc, init_cluster, put, status, until

pytestmark = pytest.mark.timeout(90)

FAST = {"heartbeat_interval": 50, "election_timeout_min": 300, "election_timeout_max": 600}


@pytest.fixture
async def cluster() -> AsyncIterator[KvCluster]:
    c = KvCluster()
    try:
        yield c
    finally:
        await c.close()




def _recover(data_dir: str, *extra: str, name: str = "kv-test-2") -> int:
    """``cluster force-recover`` of ``data_dir`` in a thread of its own (the verb runs its
    own event loop), with ``--new-cluster-name name`` and ``extra``; the exit code."""
    return main(["cluster", "force-recover", "--data-dir", data_dir, "--new-cluster-name", name, "--timeout", "1",
                 *extra])


async def _recover_async(data_dir: str, *extra: str, name: str = "kv-test-2") -> int:
    return await asyncio.to_thread(_recover, data_dir, *extra, name=name)


async def _three_stopped(c: KvCluster, keep_running: tuple[int, ...] = ()) -> dict[int, str]:
    """Three voters, writes k0..k9 acknowledged, then every node but ``keep_running``
    stopped; their data directories."""
    await c.start(3, raft_config=FAST)
    leader = await c.wait_leader()
    for i in range(10):
        await leader.put(f"k{i}", f"v{i}")
    for i in (1, 2, 3):
        if i not in keep_running:
            await c.nodes[i].stop()
    return {i: c.nodes[i].opts.data_dir for i in (1, 2, 3)}


async def _snapshot_of(data_dir: str) -> tuple[bytes, Vote | None, LogState]:
    """``node.json``, the vote and the log's bounds: what a refusal must not change."""
    d = Path(data_dir)
    async with await RocksLogStore.open(d / "log") as log:
        return (d / IDENTITY_FILE).read_bytes(), await log.read_vote(), await log.get_log_state()


# -- the verb --------------------------------------------------------------------------------------------


async def test_the_survivor_leads_a_new_cluster_with_its_data(cluster: KvCluster,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Nodes 2 and 3 lost (their directories removed): without the confirmation flag the
    plan is printed and nothing changes; with it node 1 is the only voter of the new
    cluster, says what it did and what may be lost, starts under the new name (refused
    under the old one), leads alone and holds every write; a second run is refused."""
    dirs = await _three_stopped(cluster)
    for i in (2, 3):
        shutil.rmtree(dirs[i])
    before = await _snapshot_of(dirs[1])
    assert await _recover_async(dirs[1]) == 1
    out, err = capsys.readouterr()
    assert "what it would do (nothing was changed)" in out and "no longer members: 2, 3" in out
    assert f"give {CONFIRM_FLAG} to do it" in err
    assert await _snapshot_of(dirs[1]) == before
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "done:" in out and "membership entry" in out and "possibly lost: every write the old cluster" in out
    assert "start node 1 with --cluster-name kv-test-2" in out and "never start nodes 2, 3" in out
    record = read_identity(Path(dirs[1]))
    assert (record.cluster_name, record.recovered_from, record.recovering_to) == ("kv-test-2", "kv-test", None)
    opts = cluster.nodes[1].opts
    with pytest.raises(DataDirMismatch, match=r"a forced recovery .* start it with --cluster-name kv-test-2"):
        await KvNode(opts).start()
    node = cluster.nodes[1] = KvNode(type(opts)(**{**{f: getattr(opts, f) for f in opts.__struct_fields__},
                                                   "cluster_name": "kv-test-2"}))
    await node.start()
    await _until("node 1 leads", lambda: node.is_leader())
    for i in range(10):
        assert await node.read(f"k{i}", "linearizable") == f"v{i}"
    await node.put("after", "yes")
    assert node.status()["voters"] == [1] and node.status()["learners"] == []
    await node.stop()
    assert await _recover_async(dirs[1], CONFIRM_FLAG, name="kv-test-3") == 1
    assert "already the only voter" in capsys.readouterr().err
    assert await _recover_async(dirs[1], CONFIRM_FLAG, name="kv-test") == 1
    assert "'kv-test' was this node's cluster name before an earlier forced recovery" in capsys.readouterr().err


async def test_a_learner_that_survived_alone_can_be_recovered(cluster: KvCluster,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Every voter lost, learner 4 survived: it becomes the only voter (the output warns
    that a learner's log may be behind), starts under the new name and leads with the
    writes it holds."""
    await cluster.start(3, raft_config=FAST)
    leader = await cluster.wait_leader()
    learner = await cluster.start_node(4, raft_config=FAST)
    await leader.add_learner(4, learner.opts.raft_addr, learner.opts.http_addr)
    await leader.put("k", "v")
    assert leader.raft is not None
    await cluster.wait_applied(leader.raft.metrics.last_log_index)
    for n in cluster.nodes.values():
        await n.stop()
    assert await _recover_async(learner.opts.data_dir, CONFIRM_FLAG) == 0
    out = capsys.readouterr().out
    assert "node 4 was a learner: its log may be behind the voters'" in out and "no longer members: 1, 2, 3" in out
    opts = learner.opts
    node = cluster.nodes[4] = KvNode(type(opts)(**{**{f: getattr(opts, f) for f in opts.__struct_fields__},
                                                   "cluster_name": "kv-test-2"}))
    await node.start()
    await _until("node 4 leads", lambda: node.is_leader())
    assert await node.read("k", "linearizable") == "v" and node.status()["voters"] == [4]


async def test_refused_while_the_node_runs(cluster: KvCluster, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = await _three_stopped(cluster, keep_running=(1,))
    node = cluster.nodes[1]
    assert node.raft is not None
    record, last = (Path(dirs[1]) / IDENTITY_FILE).read_bytes(), node.raft.metrics.last_log_index
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 1
    assert "in use by another process (the node is running? stop it first)" in capsys.readouterr().err
    assert (Path(dirs[1]) / IDENTITY_FILE).read_bytes() == record and node.raft.metrics.running
    await node.stop()
    assert (await _snapshot_of(dirs[1]))[2].last_log_id.index == last  # type: ignore[union-attr]


async def test_refused_while_another_voter_answers(cluster: KvCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """Node 2 still runs: a majority may be reachable, and it must be stopped first."""
    dirs = await _three_stopped(cluster, keep_running=(2,))
    before = await _snapshot_of(dirs[1])
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 1
    err = capsys.readouterr().err
    assert "other voters of node 1's membership answer: node 2 at" in err and "The cluster is not lost" in err
    assert await _snapshot_of(dirs[1]) == before


async def test_a_new_node_at_a_lost_voters_address_does_not_count(cluster: KvCluster,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The lost node 2's machine was replaced first: a new node 2 runs at its addresses on
    an empty data directory. It answers GET /cluster/status but holds no log: it is not the
    voter that was lost, and the recovery goes ahead, saying so."""
    dirs = await _three_stopped(cluster)
    shutil.rmtree(dirs[2])
    fresh = cluster.nodes[2] = KvNode(cluster.nodes[2].opts)
    await fresh.start()
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 0
    out = capsys.readouterr().out
    assert f"node 2 at {fresh.opts.http_addr} answers but holds no log (a new node): not counted" in out


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2, one line: an empty --data-dir (an unset variable: the current directory), an
    empty or over-long new name (the raft handshake carries at most 256 characters)."""
    assert _recover("", CONFIRM_FLAG) == 2
    assert "--data-dir: an empty path: give the stopped node's data directory" in capsys.readouterr().err
    assert _recover("d", CONFIRM_FLAG, name="") == 2
    assert "--new-cluster-name: a cluster name is a non-empty string" in capsys.readouterr().err
    assert _recover("d", CONFIRM_FLAG, name="n" * 257) == 2
    assert "a cluster name is at most 256 characters" in capsys.readouterr().err


def test_refused_for_a_directory_that_is_not_a_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _recover(str(tmp_path / "missing"), CONFIRM_FLAG) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert _recover(str(tmp_path), CONFIRM_FLAG) == 1
    assert f"is not a node's data directory (it holds no {IDENTITY_FILE})" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


async def test_refused_for_the_same_cluster_name_a_catching_up_node_or_one_never_initialized(
        cluster: KvCluster, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = await _three_stopped(cluster)
    before = await _snapshot_of(dirs[1])
    assert await _recover_async(dirs[1], CONFIRM_FLAG, name="kv-test") == 1
    assert "the new cluster name must differ from the node's, 'kv-test'" in capsys.readouterr().err
    (Path(dirs[1]) / CATCHING_UP_FILE).write_text("{}\n")
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 1
    assert "node 1 is catching up" in capsys.readouterr().err
    # A record that is a symbolic link to nothing (kept on a mount not there now) is there
    # all the same (``serve`` refuses it): it was taken for none, and the node recovered.
    (Path(dirs[1]) / CATCHING_UP_FILE).unlink()
    (Path(dirs[1]) / CATCHING_UP_FILE).symlink_to(Path(dirs[1]) / "gone" / CATCHING_UP_FILE)
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 1
    assert "node 1 is catching up" in capsys.readouterr().err
    assert await _snapshot_of(dirs[1]) == before
    fresh = await cluster.start_node(7)
    await fresh.stop()
    (Path(fresh.opts.data_dir) / CATCHING_UP_FILE).unlink()
    assert await _recover_async(fresh.opts.data_dir, CONFIRM_FLAG) == 1
    assert "never initialized" in capsys.readouterr().err


async def test_a_damaged_store_is_refused_in_one_error_line(cluster: KvCluster,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A table file of the log store cut short: RocksDB's report is two lines, and the
    verb's error line ended after the first (the last line on stderr was "  The file
    .../MANIFEST-000005 may be corrupted.", naming another file); now one line."""
    dirs = await _three_stopped(cluster)
    tables = sorted((Path(dirs[1]) / "log").glob("*.sst"))
    assert tables
    tables[0].write_bytes(b"")
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"Sst file size mismatch: {tables[0]}" in err and "may be corrupted" in err, err


async def test_refused_for_a_store_of_another_node_whose_record_it_would_overwrite(
        cluster: KvCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """``log/`` (or ``sm/``) of node 2 in node 1's directory (swapped in, a copied image),
    which ``serve`` refuses by the store's owner record: force-recover made node 1 the sole
    voter on node 2's vote and log and then overwrote the record with node 1's (after which
    nothing could tell); now it is refused as ``serve`` words it, nothing changed."""
    dirs = await _three_stopped(cluster)
    d1, d2 = Path(dirs[1]), Path(dirs[2])
    own = d1.with_name("n1-own")
    shutil.copytree(d1, own)
    for sub, holds in (("log", "the log and vote"), ("sm", "the state machine")):
        shutil.rmtree(d1)
        shutil.copytree(own, d1)
        shutil.rmtree(d1 / sub)
        shutil.copytree(d2 / sub, d1 / sub)
        before = await _snapshot_of(dirs[1])
        assert await _recover_async(dirs[1], CONFIRM_FLAG) == 1
        err = capsys.readouterr().err
        assert f"{d1 / sub} holds {holds} of node 2, not node 1 (its own record says so)" in err, err
        assert await _snapshot_of(dirs[1]) == before
        async with await RocksLogStore.open(d1 / "log") as log, await KvStateMachine.open(d1 / "sm") as sm:
            assert {log.owner, sm.owner} <= {(1, "kv-test"), (2, "kv-test")}


async def test_a_recovery_interrupted_after_the_owner_records_is_finished(cluster: KvCluster) -> None:
    """Killed after the stores' owner records got the new name and before ``node.json`` did:
    the records name the cluster the recovery was going to, which the check of the records
    takes, and the same command again finishes it."""
    dirs = await _three_stopped(cluster)
    d = Path(dirs[1])
    async with await RocksLogStore.open(d / "log") as log, await KvStateMachine.open(d / "sm") as sm:
        await force_sole_voter(1, log, sm)
        await replace_owners(1, "kv-test-2", log, sm)
    (d / IDENTITY_FILE).write_text(json.dumps({"node_id": 1, "cluster_name": "kv-test", "recovering_to": "kv-test-2"}))
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 0
    assert read_identity(d).cluster_name == "kv-test-2"

async def test_an_interrupted_recovery_is_refused_by_serve_and_finished_by_a_second_run(
        cluster: KvCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """``node.json`` says a recovery is under way (the process was killed during it, here
    before the entry was written): ``serve`` refuses the directory, another name is
    refused, and the same command again finishes the recovery."""
    dirs = await _three_stopped(cluster)
    path = Path(dirs[1]) / IDENTITY_FILE
    path.write_text(json.dumps({"node_id": 1, "cluster_name": "kv-test", "recovering_to": "kv-test-2"}))
    with pytest.raises(DataDirMismatch, match=r"in the middle of a forced recovery .* run 'openraft-py cluster "
                       r"force-recover"):
        await KvNode(cluster.nodes[1].opts).start()
    assert await _recover_async(dirs[1], CONFIRM_FLAG, name="other") == 1
    assert "an unfinished forced recovery to cluster 'kv-test-2'" in capsys.readouterr().err
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 0
    record = read_identity(Path(dirs[1]))
    assert (record.cluster_name, record.recovered_from, record.recovering_to) == ("kv-test-2", "kv-test", None)


async def test_a_recovery_interrupted_after_its_entry_renames_the_stores_owner(cluster: KvCluster) -> None:
    """Killed after the vote and the entry were written (the stores' owner records and
    ``node.json`` still name the old cluster): the same command again records the new name
    in both stores and in ``node.json``, and the node starts and leads under it (the owner
    records refused it: ``StoreOwnerMismatch``)."""
    dirs = await _three_stopped(cluster)
    d = Path(dirs[1])
    async with await RocksLogStore.open(d / "log") as log, await KvStateMachine.open(d / "sm") as sm:
        await force_sole_voter(1, log, sm)
        assert log.owner == (1, "kv-test") and sm.owner == (1, "kv-test")
    (d / IDENTITY_FILE).write_text(json.dumps({"node_id": 1, "cluster_name": "kv-test", "recovering_to": "kv-test-2"}))
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 0
    async with await RocksLogStore.open(d / "log") as log, await KvStateMachine.open(d / "sm") as sm:
        assert log.owner == (1, "kv-test-2") and sm.owner == (1, "kv-test-2")
    opts = cluster.nodes[1].opts
    node = cluster.nodes[1] = KvNode(type(opts)(**{**{f: getattr(opts, f) for f in opts.__struct_fields__},
                                                   "cluster_name": "kv-test-2"}))
    await node.start()
    await _until("node 1 leads", lambda: node.is_leader())
    assert await node.read("k9", "linearizable") == "v9"


async def test_a_recovery_interrupted_before_its_entry_is_given_up_with_abort(
        cluster: KvCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """Killed after ``node.json`` recorded the recovery and the vote of the new term was
    saved, before the membership entry; then the old voters came back. ``serve`` refuses the
    directory (it says how to give the recovery up), the recovery refuses (the voters
    answer): ``--abort`` gives it up and the node rejoins its old cluster with its data. Once
    the entry is written, ``--abort`` is refused (the node could lead alone in its old
    cluster). Without ``--abort`` the directory was stuck: only editing ``node.json`` by
    hand got it out."""
    dirs = await _three_stopped(cluster, keep_running=(2, 3))
    d = Path(dirs[1])
    async with await RocksLogStore.open(d / "log") as log:
        before = await log.get_log_state()
        vote = await log.read_vote()
        assert vote is not None
        await log.save_vote(Vote.new(vote.term + 1, 1, committed=True))  # as the run does first
    (d / IDENTITY_FILE).write_text(json.dumps({"node_id": 1, "cluster_name": "kv-test", "recovering_to": "kv-test-2"}))
    with pytest.raises(DataDirMismatch, match="with --abort instead of the last flag to give it up"):
        await KvNode(cluster.nodes[1].opts).start()
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 1
    assert "other voters of node 1's membership answer" in capsys.readouterr().err
    assert await _recover_async(dirs[1], "--abort", name="kv-test-3") == 1
    assert "is to cluster 'kv-test-2', not 'kv-test-3'" in capsys.readouterr().err
    assert await _recover_async(dirs[1], "--abort") == 0
    assert "aborted: node 1 is a node of cluster 'kv-test' again" in capsys.readouterr().out
    record = read_identity(d)
    assert (record.cluster_name, record.recovering_to) == ("kv-test", None)
    async with await RocksLogStore.open(d / "log") as log:
        assert await log.get_log_state() == before  # no entry was written
        # The run's vote, a leader's, made a candidate's: the leader nodes 2 and 3 elected in
        # that term is greater (with it committed, node 1 refused that leader's requests).
        assert await log.read_vote() == Vote.new(vote.term + 1, 1, committed=False)
    assert await _recover_async(dirs[1], "--abort") == 1  # nothing under way any more
    assert "no forced recovery under way" in capsys.readouterr().err
    node1 = cluster.nodes[1] = KvNode(cluster.nodes[1].opts)
    await node1.start()
    leader = await cluster.wait_leader()
    index = await leader.put("back", "yes")
    await _until("node 1 applied the new write", lambda: node1.raft is not None and node1.raft.metrics.last_applied
                 is not None and node1.raft.metrics.last_applied.index >= index)
    assert await node1.read("k9", "local") == "v9" and await node1.read("back", "local") == "yes"


async def test_abort_is_refused_once_the_recovery_wrote_its_entry(cluster: KvCluster,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    dirs = await _three_stopped(cluster)
    d = Path(dirs[1])
    async with await RocksLogStore.open(d / "log") as log, await KvStateMachine.open(d / "sm") as sm:
        await force_sole_voter(1, log, sm)
    (d / IDENTITY_FILE).write_text(json.dumps({"node_id": 1, "cluster_name": "kv-test", "recovering_to": "kv-test-2"}))
    assert await _recover_async(dirs[1], "--abort") == 1
    assert "already wrote its membership entry" in capsys.readouterr().err
    assert read_identity(d).recovering_to == "kv-test-2"
    assert await _recover_async(dirs[1], "--abort", CONFIRM_FLAG) == 2  # one or the other


async def test_a_lost_voter_that_comes_back_is_refused_by_the_new_cluster(cluster: KvCluster) -> None:
    """Node 2 was thought lost but comes back with its data: under the new cluster name its
    record refuses it; under the old one, the recovered node 1 refuses it at the handshake,
    and it does not receive the new entries."""
    dirs = await _three_stopped(cluster)
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 0
    o1, o2 = cluster.nodes[1].opts, cluster.nodes[2].opts
    fields = {f: getattr(o1, f) for f in o1.__struct_fields__}
    node1 = cluster.nodes[1] = KvNode(type(o1)(**{**fields, "cluster_name": "kv-test-2"}))
    await node1.start()
    await _until("node 1 leads", lambda: node1.is_leader())
    index = await node1.put("new", "write")
    # Started under the new name (the new cluster's flags copied to its machine), its data
    # directory's record refuses it: it holds node 2 of the old cluster.
    with pytest.raises(DataDirMismatch, match="holds the data of node 2 of cluster 'kv-test', not of cluster 'kv-test-2'"):
        await KvNode(type(o2)(**{**{f: getattr(o2, f) for f in o2.__struct_fields__}, "cluster_name": "kv-test-2"})).start()
    node2 = cluster.nodes[2] = KvNode(o2)
    await node2.start()
    assert node2.raft is not None and node1.raft is not None
    # Node 2 campaigns in its old cluster: its requests to node 1 are refused at the handshake.
    await _until("node 1 refused node 2", lambda: "wrong cluster name 'kv-test'" in node2.last_rpc_error.get(1, ""))
    assert node2.raft.metrics.last_log_index < index and node2.raft.metrics.current_leader is None
    assert node1.is_leader() and node1.status()["voters"] == [1]


# -- end to end, with serve processes ---------------------------------------------------------------------


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m openraft_py.kv ARGS`` (the ``openraft-py`` command), output captured."""
    return subprocess.run([sys.executable, "-m", "openraft_py.kv", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


async def test_three_serve_processes_lose_two_and_come_back_from_the_survivor() -> None:
    """Three voters take writes; two are killed (SIGKILL) and their data directories removed;
    the survivor is killed too, force-recovered, started under the new cluster name; two new
    nodes are added as learners and made voters with the command line; writes resume, and
    every write acknowledged before the loss is on every node of the new cluster."""
    root = tempfile.mkdtemp(prefix="kv-force-", dir=os.environ.get("KEEP_ROOT"))
    procs = {i: ServeProc(i, root, "old") for i in (1, 2, 3)}
    acked: dict[str, str] = {}
    try:
        for p in procs.values():
            p.start()
        async with aiohttp.ClientSession() as s:
            await init_cluster(s, list(procs.values()))
            await until(lambda: _agreed_leader(s, list(procs.values())), 30.0, "a leader")
            last_acked = 0
            for i in range(40):
                # A write that timed out is sent again (an election under load can take one):
                # the test is about the writes acknowledged, and every one of them must be.
                key = f"k{i}"
                index = await until(lambda i=i, key=key: put(s, procs[1 + i % 3], key, f"v{i}", timeout=5), 30.0,
                                    f"write {key} acknowledged")
                acked[key] = f"v{i}"
                last_acked = max(last_acked, index)
            # The survivor holds every acknowledged write once it applied the last one's index
            # (the leader may have changed on the way: the index, not a leader's status, says).
            await until(lambda: _applied(s, procs[1], {"committed_index": last_acked}), 30.0,
                        "node 1 applied every write")
            for i in (2, 3):
                procs[i].kill()
                await asyncio.to_thread(procs[i].wait)
                shutil.rmtree(procs[i].data_dir)
            procs[1].kill()  # the survivor crashed too (it could not have been stopped gracefully)
            await asyncio.to_thread(procs[1].wait)

            plan = await asyncio.to_thread(_cli, "cluster", "force-recover", "--data-dir", procs[1].data_dir,
                                           "--new-cluster-name", "new")
            assert plan.returncode == 1 and "nothing was changed" in plan.stderr, plan.stderr
            done = await asyncio.to_thread(_cli, "cluster", "force-recover", "--data-dir", procs[1].data_dir,
                                           "--new-cluster-name", "new", CONFIRM_FLAG)
            assert done.returncode == 0, done.stderr
            assert "no longer members: 2, 3" in done.stdout and "--cluster-name new" in done.stdout

            procs[1].cluster_name = "new"
            procs[1].start()
            await until(lambda: _leads(s, procs[1]), 30.0, "node 1 leads the new cluster")
            await until(lambda: put(s, procs[1], "after-recovery", "yes", timeout=5), 30.0, "a write after the recovery")
            acked["after-recovery"] = "yes"
            for i in (4, 5):
                procs[i] = ServeProc(i, root, "new")
                procs[i].start()
                await until(lambda i=i: status(s, procs[i]), 30.0, f"node {i} serving")
                added = await asyncio.to_thread(
                    _cli, "cluster", "add-learner", "--endpoints", procs[1].http_addr, "--id", str(i),
                    "--raft-addr", procs[i].raft_addr, "--http-addr", procs[i].http_addr, "--timeout", "30")
                assert added.returncode == 0, added.stderr
            voters = await asyncio.to_thread(_cli, "cluster", "members", "--endpoints", procs[1].http_addr,
                                             "--voters", "1,4,5", "--timeout", "30")
            # (Node 1 may step down on adopting the joint membership, before 4 and 5 acknowledged
            # it as voters; the next leader finishes the change, and the verb reads that.)
            assert voters.returncode == 0, voters.stderr
            new = [procs[i] for i in (1, 4, 5)]
            await until(lambda: _voters_are(s, new, [1, 4, 5]), 30.0, "the voters 1, 4, 5")
            for i in range(10):
                await until(lambda i=i: put(s, procs[4 + i % 2], f"new{i}", f"n{i}", timeout=5), 30.0, f"write new{i}")
                acked[f"new{i}"] = f"n{i}"
            st = await until(lambda: _voters_are(s, new, [1, 4, 5]), 30.0, "the voters 1, 4, 5")
            target = st["committed_index"]
            for i in (1, 4, 5):
                await until(lambda i=i: _applied(s, procs[i], {"committed_index": target}), 30.0, f"node {i} applied {target}")
                for key, value in acked.items():
                    async with s.get(f"http://{procs[i].http_addr}/kv/{key}?consistency=local") as r:
                        assert r.status == 200 and await r.text() == value, (i, key, r.status)
        for i in (1, 4, 5):
            procs[i].kill(signal.SIGTERM)
        for i in (1, 4, 5):
            assert await asyncio.to_thread(procs[i].wait) == 0
    finally:
        for p in procs.values():
            p.kill()
            if p.proc is not None:
                try:
                    p.proc.wait(10)
                except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not hang
                    pass
        if not os.environ.get("KEEP_ROOT"):
            shutil.rmtree(root, ignore_errors=True)


async def _applied(s: aiohttp.ClientSession, p: ServeProc, of: dict[str, Any]) -> bool:
    """Whether ``p`` applied ``of``'s committed index."""
    st = await status(s, p)
    return bool(st and st["applied_index"] is not None and st["applied_index"] >= of["committed_index"])


async def _leads(s: aiohttp.ClientSession, p: ServeProc) -> bool:
    st = await status(s, p)
    return bool(st and st["state"] == "Leader" and st["voters"] == [p.id])


async def _agreed_leader(s: aiohttp.ClientSession, ps: list[ServeProc]) -> int | None:
    """The leader every one of ``ps`` names, if they agree on one."""
    sts = [await status(s, p) for p in ps]
    leaders = {st["leader_id"] for st in sts if st}
    if len(leaders) == 1 and None not in leaders and all(sts):
        return leaders.pop()  # type: ignore[no-any-return]
    return None


async def _voters_are(s: aiohttp.ClientSession, ps: list[ServeProc], voters: list[int]) -> dict[str, Any] | None:
    """The status of the one of ``ps`` that leads with ``voters`` and has committed its whole
    log (that membership included), if any."""
    for p in ps:
        st = await status(s, p)
        if st and st["state"] == "Leader" and st["voters"] == voters and st["committed_index"] == st["last_log_index"]:
            return st
    return None


async def test_a_record_that_is_a_link_to_nothing_is_named_so(cluster: KvCluster,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``node.json`` a symbolic link whose target is gone (kept on a mount not there now): the
    refusal said the directory "holds no node.json", sending the operator to look for another
    directory; it says what the record is (``serve`` refuses it the same way)."""
    dirs = await _three_stopped(cluster)
    record = Path(dirs[1]) / IDENTITY_FILE
    record.unlink()
    record.symlink_to(Path(dirs[1]) / "gone" / IDENTITY_FILE)
    assert await _recover_async(dirs[1], CONFIRM_FLAG) == 1
    err = capsys.readouterr().err
    assert "holds no" not in err and "which does not exist" in err, err
