"""The library under asyncio's debug mode with every warning an error: what an application
sees whose own test suite runs ``python -X dev`` (or ``PYTHONASYNCIODEBUG=1``) with
``-W error`` (pytest's ``filterwarnings = error``).

Each scenario runs on a fresh event loop in debug mode (asyncio's, and uvloop's), with
warnings raised as errors, and fails when the library leaks anything such a suite reports:
an error asyncio logs through the loop's exception handler ("Task exception was never
retrieved", "Future exception was never retrieved", "Task was destroyed but it is
pending!", an exception in a callback), an exception raised where nobody can catch it (a
``ResourceWarning`` for an unclosed socket, file or transport, a ``RuntimeWarning`` for a
coroutine never awaited, raised in a finalizer: ``sys.unraisablehook``), a warning raised
on the way (it fails the scenario), or a thread of the library still running once the
scenario closed what it started. Slow callbacks (debug mode's "Executing ... took 0.1
seconds" warnings) are not counted here: on a loaded test machine they come and go; the
scenarios' shapes were checked for them by hand (docs/guides/testing.md, "asyncio debug
mode and warnings as errors").

The scenarios: an in-process cluster (``Router``) written to, its leader shut down with
writes in flight, a learner added and made a voter, a cancelled write, all shut down; the
same nodes left running when their loop ends (``asyncio.run`` returning first); RocksDB
stores with a snapshot, a log purge and a learner that catches up by the snapshot; a TCP
cluster on loopback with a node killed (its server closed) and restarted, a cancelled
write, writes in flight at the shutdown; ``Raft.new`` refusing a config and a store after
the stores were opened; the key-value service's node started and stopped in process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from event_loops import LOOPS
from integration.checks import fast_config

from openraft_py import BasicNode, ConfigError, Raft, ServerState, StoreOwnerMismatch
from openraft_py.config import Config, SnapshotPolicy
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.storage.memory import KvSet, MemDisk, MemLogStore, MemStateMachine, encode_kv
from openraft_py.storage.rocks import RocksLogStore

pytestmark = pytest.mark.timeout(60)



class _AsyncioErrors(logging.Handler):
    """Records what asyncio's logger says at ERROR (what the default exception handler of a
    loop logs, also for a loop whose own handler was not reached)."""

    def __init__(self, found: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        self.found.append(f"asyncio logged: {record.getMessage()[:500]}")


@contextmanager
def leak_watch() -> Iterator[list[str]]:
    """Collects, into the list it yields, everything the block leaks (see the module
    docstring); warnings are errors inside it. The garbage is collected before it ends, so
    that finalizers run (and report) inside."""
    found: list[str] = []
    handler = _AsyncioErrors(found)
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    before = set(threading.enumerate())
    old_hook = sys.unraisablehook

    def unraisable(u: Any) -> None:
        found.append(f"unraisable: {u.exc_type.__name__}: {str(u.exc_value)[:300]} (in {u.object!r:.120})")

    sys.unraisablehook = unraisable
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield found
            gc.collect()
            gc.collect()
    finally:
        sys.unraisablehook = old_hook
        logger.removeHandler(handler)
    for t in threading.enumerate():
        if t not in before:
            t.join(5.0)  # (a thread ending on its own, e.g. the loop's executor's)
            if t.is_alive():
                found.append(f"thread left running: {t.name}")


def run_debug(loop_name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main()`` on a new ``loop_name`` loop in debug mode inside ``leak_watch``; fail
    naming what leaked. The loop's exception handler records too (as the default one would
    log)."""
    with leak_watch() as found:
        with asyncio.Runner(debug=True, loop_factory=LOOPS[loop_name]) as runner:
            loop = runner.get_loop()
            loop.set_exception_handler(lambda _loop, ctx: found.append(f"loop exception handler: {ctx.get('message')}: "
                                                                       f"{ctx.get('exception')!r:.300}"))
            runner.run(main())
    assert found == [], "\n".join(found)


# Election timeouts of 300-600 ms: the tests below need one leader while they write, and
# under debug mode a loaded machine stalled the shared loop longer than fast_config's
# 100 ms (node 1 lost its leadership during written_cluster's writes: ForwardToLeader).
FAST = fast_config(cluster_name="debug-mode", election_timeout_min=300, election_timeout_max=600)


async def router_nodes(router: Router, ids: tuple[int, ...], config: Config = FAST) -> dict[int, Raft]:
    nodes = {}
    for i in ids:
        nodes[i] = await Raft.new(i, config, router.factory(i), MemLogStore(), MemStateMachine())
        router.register(i, nodes[i])
    return nodes


async def written_cluster(router: Router) -> dict[int, Raft]:
    """Nodes 1, 2 and 3 on ``router``, node 1 leading, after 30 writes."""
    nodes = await router_nodes(router, (1, 2, 3))
    await nodes[1].initialize({i: BasicNode(f"n{i}") for i in nodes})
    await nodes[1].wait(5).state(ServerState.LEADER)
    for k in range(30):
        await nodes[1].client_write(encode_kv(KvSet(f"k{k}", "v")))
    return nodes


async def leader_of(nodes: dict[int, Raft], among: tuple[int, ...]) -> Raft:
    """The node of ``among`` that leads, once one does (within 10 s)."""
    async with asyncio.timeout(10):
        while True:
            for i in among:
                if nodes[i].is_leader():
                    return nodes[i]
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_an_in_process_cluster_through_leader_loss_and_a_membership_change(loop_name: str) -> None:
    async def main() -> None:
        router = Router()
        nodes = await written_cluster(router)
        in_flight = [asyncio.ensure_future(nodes[1].client_write(b"x")) for _ in range(20)]
        await asyncio.sleep(0)
        await nodes[1].shutdown()
        router.unregister(1)
        await asyncio.gather(*in_flight, return_exceptions=True)
        leader = await leader_of(nodes, (2, 3))
        nodes.update(await router_nodes(router, (4,)))
        await leader.add_learner(4, BasicNode("n4"))
        await leader.change_membership({2, 3, 4})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(leader.client_write(b"cancelled"), 0)
        for node in nodes.values():
            await node.shutdown()

    run_debug(loop_name, main)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_nodes_left_running_when_their_loop_ends(loop_name: str) -> None:
    """``asyncio.run`` (here its ``Runner``) cancels the tasks still running when the main
    coroutine returns: nodes never shut down stop with them, writes and replication in
    flight. Their heartbeats' answers were left unread ("coroutine '_answer' was never
    awaited", "Future exception was never retrieved")."""

    async def main() -> None:
        router = Router()
        nodes = await written_cluster(router)
        writes = [asyncio.ensure_future(nodes[1].client_write(b"x")) for _ in range(10)]
        await asyncio.sleep(0)  # the writes are queued; the loop ends as the leader sends them
        del writes  # (left running: the loop's end cancels them)

    run_debug(loop_name, main)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_rocksdb_stores_with_a_snapshot_a_purge_and_a_learner_catching_up_by_it(loop_name: str) -> None:
    async def main() -> None:
        tmp = tempfile.mkdtemp(prefix="debug-mode-")
        # Election timeouts of 2-4 s: node 1 must lead throughout (it is the one purged, so
        # that the learner catches up by its snapshot), and under debug mode, with RocksDB, a
        # loaded machine stalled the shared loop longer than 100 ms (a follower took over and
        # add_learner failed with ForwardToLeader), then, at load 15 on 2 cores, for 0.69 s
        # and 1.06 s, past 300-600 ms too (a write to node 1 failed the same way). Node 1
        # campaigns at once on initialize, so this costs the test no time.
        config = fast_config(cluster_name="debug-mode", snapshot_policy=SnapshotPolicy.logs_since_last(100),
                             max_in_snapshot_log_to_keep=10, election_timeout_min=2000, election_timeout_max=4000)
        router = Router()
        nodes: dict[int, Raft] = {}
        stores: list[RocksLogStore | RocksStateMachine] = []
        try:
            for i in (1, 2, 3, 4):
                log_store = await RocksLogStore.open(f"{tmp}/n{i}/log")
                sm = await RocksStateMachine.open(f"{tmp}/n{i}/sm")
                stores += [log_store, sm]
                nodes[i] = await Raft.new(i, config, router.factory(i), log_store, sm)
                router.register(i, nodes[i])
            await nodes[1].initialize({i: BasicNode(f"n{i}") for i in (1, 2, 3)})
            await nodes[1].wait(5).state(ServerState.LEADER)
            for k in range(300):
                await nodes[1].client_write(encode_kv(KvSet(f"k{k}", "v" * 100)))
            await nodes[1].trigger.snapshot()
            await nodes[1].wait(10).snapshot(300)
            await nodes[1].trigger.purge_log(290)
            await nodes[1].wait(10).purged(290)
            snap = await nodes[1].get_current_snapshot()
            assert snap is not None
            snap.data.close()  # (the caller's to close)
            await nodes[1].add_learner(4, BasicNode("n4"))
            assert nodes[4].metrics.snapshot is not None  # caught up by the snapshot
            in_flight = [asyncio.ensure_future(nodes[1].client_write(b"x")) for _ in range(20)]
            await asyncio.sleep(0)
        finally:
            for node in nodes.values():
                await node.shutdown()
            for store in stores:
                await store.aclose()
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        await asyncio.gather(*in_flight, return_exceptions=True)

    run_debug(loop_name, main)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_tcp_cluster_with_a_node_killed_and_restarted(loop_name: str) -> None:
    async def main() -> None:
        name = "debug-mode-tcp"
        disks = {i: MemDisk() for i in (1, 2, 3)}

        async def start(i: int, port: int = 0) -> tuple[Raft, TcpServer, TcpNetworkFactory]:
            factory = TcpNetworkFactory(node_id=i, cluster_name=name)
            raft = await Raft.new(i, fast_config(cluster_name=name, election_timeout_min=300, election_timeout_max=600,
                                                 heartbeat_interval=50),
                                  factory, MemLogStore(disks[i]), MemStateMachine(disks[i]))
            server = await TcpServer.start(raft, "127.0.0.1", port, cluster_name=name)
            return raft, server, factory

        async def kill(node: tuple[Raft, TcpServer, TcpNetworkFactory]) -> None:
            raft, server, factory = node
            await server.close()
            await raft.shutdown()
            await factory.close()

        started = {i: await start(i) for i in (1, 2, 3)}
        try:
            ports = {i: server.port for i, (_, server, _) in started.items()}
            leader = started[1][0]
            await leader.initialize({i: BasicNode(f"127.0.0.1:{port}") for i, port in ports.items()})
            await leader.wait(10).state(ServerState.LEADER)
            writes = [asyncio.ensure_future(leader.client_write(b"w" * 1000)) for _ in range(100)]
            await asyncio.sleep(0.005)
            await kill(started.pop(2))
            started[2] = await start(2, ports[2])
            await asyncio.gather(*writes)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(leader.client_write(b"cancelled"), 0)
            writes = [asyncio.ensure_future(leader.client_write(b"w")) for _ in range(50)]
            await asyncio.sleep(0)
        finally:
            for node in started.values():
                await kill(node)
        await asyncio.gather(*writes, return_exceptions=True)

    run_debug(loop_name, main)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_raft_new_refusing_a_config_and_a_store_after_the_stores_were_opened(loop_name: str) -> None:
    async def main() -> None:
        tmp = Path(tempfile.mkdtemp(prefix="debug-mode-"))
        log_store = await RocksLogStore.open(tmp / "log")
        sm = await RocksStateMachine.open(tmp / "sm")
        try:
            bad = Config(cluster_name="debug-mode", heartbeat_interval=5000)
            with pytest.raises(ConfigError):
                await Raft.new(1, bad, Router().factory(1), log_store, sm)
            raft = await Raft.new(1, FAST, Router().factory(1), log_store, sm)
            await raft.shutdown()
            with pytest.raises(StoreOwnerMismatch):
                await Raft.new(2, FAST, Router().factory(2), log_store, sm)
        finally:
            await log_store.aclose()
            await sm.aclose()
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    run_debug(loop_name, main)


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_the_key_value_service_started_and_stopped_in_process(loop_name: str) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from openraft_py.kv.node import KvNode, ServeOptions
    from openraft_py.testing.proc_cluster import free_port

    async def main() -> None:
        tmp = tempfile.mkdtemp(prefix="debug-mode-")
        opts = ServeOptions(id=1, raft_addr=f"127.0.0.1:{free_port()}", http_addr=f"127.0.0.1:{free_port()}",
                            data_dir=f"{tmp}/n1", cluster_name="debug-mode")
        node = KvNode(opts)
        try:
            await node.start()
            base = f"http://{opts.http_addr}"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                members = {"1": {"raft_addr": opts.raft_addr, "http_addr": opts.http_addr}}
                async with session.post(f"{base}/cluster/init", json={"members": members}) as r:
                    assert r.status == 200, await r.text()
                assert node.raft is not None
                await node.raft.wait(10).state(ServerState.LEADER)
                for k in range(5):
                    async with session.put(f"{base}/kv/k{k}", json={"value": "v"}) as r:
                        assert r.status == 200, await r.text()
        finally:
            await node.stop()
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    run_debug(loop_name, main)
