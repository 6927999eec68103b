"""A first start killed part way (SIGKILL, a power loss, the OOM killer) leaves its marker,
``first-start-unfinished``, beside what it made. The next ``serve`` on the directory refused
it for good (exit 1, "remove everything in it ... and start the node again"), so under
systemd's ``Restart=on-failure`` a node that provably never served crash-looped until someone
emptied the directory. Now, when every entry beside the marker is one a first start makes
(its names, each of its kind), the next start removes them (marker last), logs a WARNING
naming them, and goes on as a first start; anything else keeps the refusal, changing nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from openraft_py.kv import node as node_module
from openraft_py.kv.identity import IDENTITY_FILE, LOG_DIR, SM_DIR, DataDirMismatch, check_identity
from openraft_py.kv.node import FIRST_START_FILE, KvNode
from openraft_py.kv.rejoin import CATCHING_UP_FILE
from openraft_py.storage import IOFlushed
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import BLANK, Entry, LogId, ServerState, Vote

from .kv_helpers import STABLE_TIMEOUTS, members_of, node_options, url
from .serve_procs import ServeProc, init_cluster, put, status, until

pytestmark = pytest.mark.timeout(90)

REFUSAL = (r"holds the marker of a first start stopped part way \(first-start-unfinished\) beside .*: not provably "
           r"that start's, so nothing was removed\. If it is a node's data you put there \(a backup restored\), remove "
           r"first-start-unfinished and start the node again; if not, remove everything in it \(or the directory\) "
           r"and start the node again")


@pytest.fixture
def whole(tmp_path: Path) -> Iterator[Path]:
    """The data directory of a first start that made everything and stopped just before it
    removed its marker: node 7's (another ``--id`` than the tests' next start, as after a
    corrected command line), made by a real start, stopped, and marked again."""
    opts = node_options(7, str(tmp_path / "whole"))

    async def first_start() -> None:
        node = KvNode(opts)
        await node.start()
        await node.stop()

    asyncio.run(first_start())
    data = Path(opts.data_dir)
    node_module.mark_first_start(data)
    # (what ``made_by_a_first_start`` knows: a new entry a first start makes must be named there)
    assert sorted(os.listdir(data)) == sorted([FIRST_START_FILE, *node_module.FIRST_START_ENTRIES])
    assert sorted(node_module.FIRST_START_ENTRIES) == sorted([CATCHING_UP_FILE, IDENTITY_FILE, LOG_DIR, SM_DIR])
    yield data


def _copy(src: Path, dst: Path, *names: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name)
        else:
            shutil.copy2(src / name, dst / name)


def _marker_and_a_write_check(src: Path, dst: Path) -> None:
    """A start on the leftover killed in ``check_writable`` (before it looked at the marker)."""
    _copy(src, dst, FIRST_START_FILE)
    (dst / ".write-check-k3j_x9q1.tmp").touch()


def _catch_up_record(src: Path, dst: Path) -> None:
    """Killed after the catch-up record, before the log store."""
    _copy(src, dst, FIRST_START_FILE, CATCHING_UP_FILE)


def _catch_up_record_being_written(src: Path, dst: Path) -> None:
    """Killed while the catch-up record was written (``replace_durably``'s temporary file)."""
    _copy(src, dst, FIRST_START_FILE)
    (dst / "tmp-2f9ah_0c.tmp").write_bytes(b'{"tar')


def _log_store_half_made(src: Path, dst: Path) -> None:
    """Killed while RocksDB made the log store: a database that does not open."""
    _copy(src, dst, FIRST_START_FILE, CATCHING_UP_FILE)
    (dst / LOG_DIR).mkdir()
    (dst / LOG_DIR / "CURRENT").write_text("MANIFEST-000042\n")  # names a manifest that is not there


def _stores_no_record(src: Path, dst: Path) -> None:
    """Killed after both stores, before ``node.json`` (its temporary file left)."""
    _copy(src, dst, FIRST_START_FILE, CATCHING_UP_FILE, LOG_DIR, SM_DIR)
    (dst / "tmp-zz81ab_c.tmp").write_bytes(b'{"node_id":7,')


def _everything(src: Path, dst: Path) -> None:
    """Killed just before the marker's removal."""
    _copy(src, dst, *os.listdir(src))


@pytest.mark.parametrize("leave", [_marker_and_a_write_check, _catch_up_record, _catch_up_record_being_written,
                                   _log_store_half_made, _stores_no_record, _everything])
async def test_a_first_start_killed_part_way_is_cleared_by_the_next_start(
        tmp_path: Path, whole: Path, leave: Callable[[Path, Path], None], caplog: pytest.LogCaptureFixture) -> None:
    opts = node_options(1, str(tmp_path))
    data = Path(opts.data_dir)
    leave(whole, data)
    left = sorted(os.listdir(data))
    caplog.set_level(logging.WARNING, logger="openraft_py.kv.node")
    node = KvNode(opts)
    await node.start()
    try:
        assert node.catch_up is not None and node.catch_up.active, "not a first start: no catch-up before it votes"
        async with aiohttp.ClientSession() as s, s.get(url(node, "/cluster/status")) as r:
            assert r.status == 200, await r.text()
        assert FIRST_START_FILE not in os.listdir(data)
        assert check_identity(data, 1, "kv-test") == "checked"
        removed = [rec.getMessage() for rec in caplog.records if "first start left" in rec.getMessage()]
        assert len(removed) == 1, [rec.getMessage() for rec in caplog.records]
        shown = ", ".join(name for name in left if name != FIRST_START_FILE)
        assert f"({shown}, and its marker {FIRST_START_FILE})" in removed[0], removed[0]
        assert "never served" in removed[0] and "removed" in removed[0], removed[0]
    finally:
        await node.stop()


def _tree(d: Path) -> dict[str, str]:
    """Every path under ``d`` (links not followed) with its kind and a file's content."""
    out: dict[str, str] = {}
    for top, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(top) / name
            rel = str(p.relative_to(d))
            if p.is_symlink():
                out[rel] = f"link to {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes().hex()
    return out


def _an_unknown_file(src: Path, dst: Path) -> None:
    _everything(src, dst)
    (dst / "restore-notes.txt").write_text("copied in by an operator")


def _an_unknown_directory(src: Path, dst: Path) -> None:
    _copy(src, dst, FIRST_START_FILE, CATCHING_UP_FILE)
    (dst / "backup").mkdir()


def _a_log_that_is_a_file(src: Path, dst: Path) -> None:
    _copy(src, dst, FIRST_START_FILE)
    (dst / LOG_DIR).write_text("not a store")


def _a_record_that_is_a_directory(src: Path, dst: Path) -> None:
    _copy(src, dst, FIRST_START_FILE, LOG_DIR)
    (dst / IDENTITY_FILE).mkdir()


def _a_store_that_is_a_link(src: Path, dst: Path) -> None:
    _copy(src, dst, FIRST_START_FILE, LOG_DIR)
    (dst / SM_DIR).symlink_to(src / SM_DIR)  # (its target must not be emptied)


def _a_temporary_name_that_is_a_directory(src: Path, dst: Path) -> None:
    _copy(src, dst, FIRST_START_FILE, CATCHING_UP_FILE)
    (dst / "tmp-abcdefgh.tmp").mkdir()


@pytest.mark.parametrize("leave", [_an_unknown_file, _an_unknown_directory, _a_log_that_is_a_file,
                                   _a_record_that_is_a_directory, _a_store_that_is_a_link,
                                   _a_temporary_name_that_is_a_directory])
async def test_a_leftover_with_anything_a_first_start_does_not_make_is_refused_unchanged(
        tmp_path: Path, whole: Path, leave: Callable[[Path, Path], None]) -> None:
    """Something a first start does not make (a name it never uses, or one of its names of
    another kind) means the directory is not provably only the killed start's: refused as
    before, with the same message, and nothing in it (or behind a link in it) changes."""
    opts = node_options(1, str(tmp_path))
    data = Path(opts.data_dir)
    leave(whole, data)
    before, source = _tree(data), _tree(whole)
    with pytest.raises(DataDirMismatch, match=REFUSAL):
        await KvNode(opts).start()
    assert _tree(data) == before, "the refusal changed the directory"
    assert _tree(whole) == source, "the refusal changed what a link in the directory leads to"


_HELD_CHILD = """
import asyncio, sys, time
from openraft_py.kv import node, server

def held(*args, **kwargs):
    print("held", flush=True)
    time.sleep(3600)

async def held_async(*args, **kwargs):
    held()

where = sys.argv[1]
if where == "log store":  # after the marker and the catch-up record
    node.RocksLogStore.open = held_async
else:  # "record" (after both stores) or "unmark" (the whole node made)
    setattr(node, {"record": "record_identity", "unmark": "unmark_first_start"}[where], held)
sys.exit(server.serve_main(sys.argv[2:]))
"""
"""A ``serve`` (``python -c``) whose first start is held in one of its steps (the step's
function replaced by one that says ``held`` and sleeps) until it is SIGKILLed."""


@pytest.mark.parametrize(("where", "left"), [
    ("log store", [CATCHING_UP_FILE]),
    ("record", [CATCHING_UP_FILE, LOG_DIR, SM_DIR]),
    ("unmark", [CATCHING_UP_FILE, LOG_DIR, IDENTITY_FILE, SM_DIR]),
])
async def test_a_serve_sigkilled_during_its_first_start_starts_again_by_itself(
        root: Path, where: str, left: list[str]) -> None:
    """A real ``serve`` SIGKILLed in its first start (held in a step), then the same node
    started again as a supervisor would: it used to exit 1 at every restart; now it clears
    the leftover, says so in one WARNING, and serves (a write acknowledged)."""
    p = ServeProc(1, str(root))
    args = ["--id", "1", "--raft-addr", p.raft_addr, "--http-addr", p.http_addr, "--data-dir", p.data_dir,
            "--cluster-name", p.cluster_name, "--log-format", "json"]
    with open(p.log_path, "ab") as log:
        first = subprocess.Popen([sys.executable, "-c", _HELD_CHILD, where, *args], stdout=subprocess.PIPE,
                                 stderr=log, stdin=subprocess.DEVNULL)
    try:
        assert first.stdout is not None
        said = await asyncio.wait_for(asyncio.to_thread(first.stdout.readline), 30)
        assert said == b"held\n", (said, Path(p.log_path).read_text())
        first.kill()
        assert first.wait(20) == -signal.SIGKILL
        assert sorted(os.listdir(p.data_dir)) == sorted([FIRST_START_FILE, *left])
        p.start()
        async with aiohttp.ClientSession() as s:

            async def serving() -> object:
                assert p.proc is not None and p.proc.poll() is None, Path(p.log_path).read_text()[-1500:]
                return await status(s, p)

            await until(serving, 30, "node 1 serving")
            await init_cluster(s, [p])
            assert await until(lambda: put(s, p, "k", "v"), 30, "a write acknowledged") is not None
        warned = [r["msg"] for r in p.logs() if r["level"] == "WARNING" and "first start left" in r["msg"]]
        assert len(warned) == 1, p.logs()
        assert ", ".join(left) in warned[0], warned[0]
        assert FIRST_START_FILE not in os.listdir(p.data_dir)
    finally:
        first.kill()
        first.wait(20)
        if first.stdout is not None:
            first.stdout.close()
        p.kill(signal.SIGKILL)
        if p.proc is not None:
            p.wait()


def test_a_leftover_in_a_directory_other_than_the_locked_one_is_refused_unchanged(tmp_path: Path, whole: Path) -> None:
    """The path no longer leads to the directory the start locked (a link changed, or a
    relative path after a change of the working directory): nothing there is provably the
    killed start's, and nothing is removed."""
    from openraft_py.kv.identity import lock_data_dir

    data = tmp_path / "n1"
    _catch_up_record(whole, data)
    (tmp_path / "locked").mkdir()
    before = _tree(data)
    lock = lock_data_dir(tmp_path / "locked")
    try:
        with pytest.raises(DataDirMismatch, match=REFUSAL):
            node_module.check_first_start_leftover(data, lock)
    finally:
        os.close(lock)
    assert _tree(data) == before


@pytest.fixture
def used(tmp_path: Path) -> Path:
    """The data directory of a node that served: node 9's, initialized as a cluster of one,
    elected, a write applied and a snapshot built, then stopped. Its log holds a vote, entries
    and a committed log id; its state machine the applied key, its applied log id and
    membership, and the snapshot."""
    opts = node_options(9, str(tmp_path / "used"), raft_config=STABLE_TIMEOUTS)

    async def serve() -> None:
        node = KvNode(opts)
        await node.start()
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(url(node, "/cluster/init"), json={"members": members_of([node])}) as r:
                    assert r.status == 200, await r.text()
                assert node.raft is not None
                await node.raft.trigger.elect()
                await node.raft.wait(10).state(ServerState.LEADER, "node 9 leads")
                async with s.put(url(node, "/kv/k"), data="v") as r:
                    assert r.status == 200, await r.text()
                    index = int((await r.json())["index"])
            await node.raft.wait(10).applied_index_at_least(index, "the write applied")
            await node.raft.trigger.snapshot()
            await node.raft.wait(10).snapshot(LogId(node.raft.metrics.current_term, index), "a snapshot")
        finally:
            await node.stop()

    asyncio.run(serve())
    return Path(opts.data_dir)


def _a_used_log(whole: Path, used: Path, dst: Path) -> None:
    """The log store of a node that served (a vote, entries, a committed log id) beside a
    first start's other entries."""
    _copy(whole, dst, FIRST_START_FILE, CATCHING_UP_FILE, IDENTITY_FILE, SM_DIR)
    _copy(used, dst, LOG_DIR)


def _a_used_state_machine(whole: Path, used: Path, dst: Path) -> None:
    """The state machine of a node that served (applied data, its snapshot)."""
    _copy(whole, dst, FIRST_START_FILE, CATCHING_UP_FILE, LOG_DIR)
    _copy(used, dst, SM_DIR)


def _a_whole_node_restored(whole: Path, used: Path, dst: Path) -> None:
    """A backup of a whole node (its stores and record) restored beside the marker: the case
    that was cleared, the names being all a first start's."""
    _copy(whole, dst, FIRST_START_FILE)
    _copy(used, dst, LOG_DIR, SM_DIR, IDENTITY_FILE)


def _a_log_with_a_vote_only(whole: Path, used: Path, dst: Path) -> None:
    """A first start's log store in which a vote was saved since (nothing else)."""
    _copy(whole, dst, FIRST_START_FILE, CATCHING_UP_FILE, LOG_DIR)

    async def vote() -> None:
        store = await RocksLogStore.open(dst / LOG_DIR)
        try:
            await store.save_vote(Vote.new(3, 2))
        finally:
            await store.aclose()

    asyncio.run(vote())


def _a_log_with_an_entry_only(whole: Path, used: Path, dst: Path) -> None:
    """A first start's log store in which an entry was appended since (no vote)."""
    _copy(whole, dst, FIRST_START_FILE, LOG_DIR)

    async def append() -> None:
        store = await RocksLogStore.open(dst / LOG_DIR)
        try:
            loop = asyncio.get_running_loop()
            flushed: asyncio.Future[BaseException | None] = loop.create_future()
            await store.append([Entry(LogId(1, 0), BLANK)], IOFlushed(flushed.set_result, loop))
            assert await flushed is None
        finally:
            await store.aclose()

    asyncio.run(append())


def _a_snapshot_only(whole: Path, used: Path, dst: Path) -> None:
    """A first start's state machine beside a node's snapshot files (``sm/snapshots``)."""
    _copy(whole, dst, FIRST_START_FILE, CATCHING_UP_FILE, LOG_DIR)
    _copy(whole / SM_DIR, dst / SM_DIR, "db")
    _copy(used / SM_DIR, dst / SM_DIR, "snapshots")


def _a_state_machine_database_as_the_log(whole: Path, used: Path, dst: Path) -> None:
    """A database that is not a log store's (a state machine's, with data) at ``log/``."""
    _copy(whole, dst, FIRST_START_FILE, CATCHING_UP_FILE)
    shutil.copytree(used / SM_DIR / "db", dst / LOG_DIR)


def _a_log_that_does_not_open_but_holds_writes(whole: Path, used: Path, dst: Path) -> None:
    """A served node's log store that does not open (its ``CURRENT`` lost) but holds table
    files and write-ahead logs: not what RocksDB leaves when killed while it makes a database
    (``_log_store_half_made``), which writes nothing before it has made it whole."""
    _copy(whole, dst, FIRST_START_FILE, CATCHING_UP_FILE)
    _copy(used, dst, LOG_DIR)
    (dst / LOG_DIR / "CURRENT").unlink()


@pytest.mark.parametrize("leave", [_a_used_log, _a_used_state_machine, _a_whole_node_restored,
                                   _a_log_with_a_vote_only, _a_log_with_an_entry_only, _a_snapshot_only,
                                   _a_state_machine_database_as_the_log, _a_log_that_does_not_open_but_holds_writes])
async def test_a_leftover_whose_stores_were_used_is_refused_unchanged(
        tmp_path: Path, whole: Path, used: Path, leave: Callable[[Path, Path, Path], None],
        caplog: pytest.LogCaptureFixture) -> None:
    """The names and kinds of a first start's entries do not make them its own: a real node's
    data copied in beside the marker (an operator restoring a backup into a directory a killed
    first start left) was removed, and a voter's log holds its vote and the entries it
    acknowledged (losing them can lose committed writes). No first start saves a vote or an
    entry, applies anything or makes a snapshot (its marker goes before its raft port opens):
    stores holding any of that are refused as before, with the same message, unchanged."""
    opts = node_options(1, str(tmp_path))
    data = Path(opts.data_dir)
    await asyncio.to_thread(leave, whole, used, data)
    before = _tree(data)
    caplog.set_level(logging.WARNING, logger="openraft_py.kv.node")
    with pytest.raises(DataDirMismatch, match=REFUSAL):
        await KvNode(opts).start()
    assert _tree(data) == before, "the refusal changed the directory"
    said = [r.getMessage() for r in caplog.records if "no first start writes" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]


MARKER_NO_FILE = (r"first-start-unfinished, the marker of a first start stopped part way, is not a readable file "
                  r"\(it is a symbolic link to '.*gone.*', which does not exist\): nothing was removed\. If the "
                  r"directory holds a node's data you put there \(a backup restored\), remove first-start-unfinished "
                  r"and start the node again; if not, remove everything in it \(or the directory\) and start the node "
                  r"again")


def _a_marker_that_is_a_link_to_nothing(src: Path, dst: Path) -> None:
    """A first start killed after its catch-up record, its marker a link whose target is
    gone (copied with links kept from a mount that is not there now)."""
    _copy(src, dst, CATCHING_UP_FILE, LOG_DIR)
    (dst / FIRST_START_FILE).symlink_to(dst.parent / "gone" / FIRST_START_FILE)


async def test_a_marker_that_is_a_link_to_nothing_is_refused_unchanged(tmp_path: Path, whole: Path) -> None:
    """A marker that is a symbolic link to nothing is a marker that cannot be read, as a
    record that is one is (``read_record_file``): it was taken for no marker, so the
    unfinished first start was forgotten (its leftover started on as a node's data, the
    link kept for good). Refused, naming it, and nothing in the directory changes (nor is
    the link's target made)."""
    opts = node_options(1, str(tmp_path / "n1"))
    data = Path(opts.data_dir)
    _a_marker_that_is_a_link_to_nothing(whole, data)
    before = _tree(data)
    with pytest.raises(DataDirMismatch, match=MARKER_NO_FILE):
        await KvNode(opts).start()
    assert _tree(data) == before, "the refusal changed the directory"
    assert not (tmp_path / "gone").exists()
