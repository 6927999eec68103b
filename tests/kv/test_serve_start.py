"""A node that cannot start on its flags says which flag: a data directory that is a file, a
port another process listens on, one port for both addresses. And a stop whose caller is
cancelled goes on to its end."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openraft_py.kv.node import KvNode, ServeOptions
from openraft_py.testing.proc_cluster import free_port

from .kv_helpers import node_options

pytestmark = pytest.mark.timeout(60)


async def test_a_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    opts = node_options(1, str(tmp_path))
    Path(opts.data_dir).write_text("not a directory")
    node = KvNode(opts)
    with pytest.raises(NotADirectoryError, match=r"--data-dir '.*n1': it is a file, not a directory"):
        await node.start()
    opts.data_dir = str(Path(opts.data_dir) / "below")  # a directory below the file
    with pytest.raises(NotADirectoryError, match=r"--data-dir '.*below': Not a directory"):
        await KvNode(opts).start()
    assert node.raft is None and node.log_store is None


async def test_a_data_dir_that_is_a_link_to_nothing_is_named(tmp_path: Path) -> None:
    """``--data-dir`` a symbolic link whose target is missing (a disk not mounted at the
    mount point it names), or links in a loop: the start failed with "[Errno 17] --data-dir
    '...': File exists", what mkdir says of the link. Now it says what the link leads to,
    and nothing is created at its target (which would put the node's data on the disk that
    holds the mount point)."""
    opts = node_options(1, str(tmp_path))
    target = tmp_path / "not-mounted" / "openraft"
    Path(opts.data_dir).symlink_to(target)
    node = KvNode(opts)
    with pytest.raises(FileNotFoundError, match=rf"--data-dir '.*n1': a symbolic link to '{target}', which leads to "
                                                r"no directory \(is its disk mounted\?\)"):
        await node.start()
    assert not (tmp_path / "not-mounted").exists()
    assert node.raft is None and node.log_store is None
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    opts.data_dir = str(loop)
    with pytest.raises(FileNotFoundError, match=r"--data-dir '.*loop': a symbolic link to '.*loop', which leads"):
        await KvNode(opts).start()


async def test_a_data_dir_no_file_can_be_made_in_is_named(tmp_path: Path) -> None:
    """``--data-dir /proc/self``: a directory that exists but takes no file. The start
    failed with "FileNotFoundError: ... '/proc/self/tmp-xxx.tmp'" from the first record
    written, naming neither the flag nor the directory. Now a file is tried first, and the
    error names the flag; nothing is opened."""
    opts = node_options(1, str(tmp_path))
    opts.data_dir = "/proc/self"
    node = KvNode(opts)
    with pytest.raises(FileNotFoundError, match=r"^\[Errno 2\] --data-dir '/proc/self': no file can be made in it: "
                                                r"No such file or directory$"):
        await node.start()


async def test_a_data_dir_below_a_link_to_nothing_is_named(tmp_path: Path) -> None:
    """``--data-dir /var/lib/openraft-py/n1`` where ``/var/lib/openraft-py`` is the link
    that leads nowhere (its disk not mounted): the start said "[Errno 17] --data-dir
    '.../n1': File exists" (what mkdir says of the link, met on the way). Now it names the
    link and where it leads, and nothing is created at its target."""
    opts = node_options(1, str(tmp_path))
    link = tmp_path / "openraft-py"
    target = tmp_path / "not-mounted" / "openraft"
    link.symlink_to(target)
    opts.data_dir = str(link / "cluster" / "n1")
    node = KvNode(opts)
    with pytest.raises(FileNotFoundError, match=rf"^\[Errno 2\] --data-dir '{opts.data_dir}': '{link}' is a symbolic "
                                                rf"link to '{target}', which leads to no directory \(is its disk "
                                                r"mounted\?\): create the directory it names, or give another --data-dir$"):
        await node.start()
    assert not (tmp_path / "not-mounted").exists()
    assert node.raft is None and node.log_store is None


@pytest.mark.parametrize("flag", ["--raft-addr", "--http-addr"])
async def test_a_port_in_use_is_named_with_its_flag(tmp_path: Path, flag: str) -> None:
    opts = node_options(1, str(tmp_path))
    busy = opts.raft_addr if flag == "--raft-addr" else opts.http_addr
    host, port = busy.rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        node = KvNode(opts)
        with pytest.raises(OSError, match=rf"^\[Errno \d+\] {flag} {busy}: cannot listen there: .*in use"):
            await node.start()
    assert node.stopped.is_set() and node.tcp_server is None  # what was started is stopped again
    # and the same options start once the port is free
    node = KvNode(opts)
    await node.start()
    await node.stop()


@pytest.mark.parametrize("flag", ["--raft-addr", "--http-addr"])
async def test_a_first_start_that_loses_a_port_after_its_check_removes_what_it_made(
        tmp_path: Path, flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A port taken by another process between ``check_can_listen`` and the server's own bind
    (the race the check cannot close; here the check is skipped) failed a first start after
    it had made the data directory, its missing parents, the stores and ``node.json``: the
    corrected command line was then refused as another node's data. Now the failed first
    start removes what it made (the directory and the parents it created; an empty directory
    given is emptied again, and stays), no peer having been answered. A failed start on a
    directory that held a node's data leaves every file as it was."""
    from openraft_py.kv import node as node_module

    monkeypatch.setattr(node_module, "check_can_listen", lambda flag, addr: None)
    opts = node_options(1, str(tmp_path))
    busy = opts.raft_addr if flag == "--raft-addr" else opts.http_addr
    host, port = busy.rsplit(":", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "old").mkdir()
    opts.data_dir = str(tmp_path / "old")
    running = KvNode(opts)  # a node's data, made by a start that worked
    await running.start()
    await running.stop()
    before = sorted(p.name for p in (tmp_path / "old").iterdir())  # (the stores' own files change as they open)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        for where in (tmp_path / "a" / "b" / "n1", tmp_path / "empty", tmp_path / "old"):
            opts.data_dir = str(where)
            with pytest.raises(OSError, match=rf"^\[Errno \d+\] {flag} {busy}: cannot listen there: .*in use"):
                await KvNode(opts).start()
    assert not (tmp_path / "a").exists()
    assert list((tmp_path / "empty").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == before and "node.json" in before
    opts.data_dir = str(tmp_path / "a" / "b" / "n1")  # and the start works once the port is free
    node = KvNode(opts)
    await node.start()
    await node.stop()


@pytest.mark.parametrize("flag", ["--raft-addr", "--http-addr"])
async def test_a_first_start_on_a_port_in_use_leaves_no_data_directory(tmp_path: Path, flag: str) -> None:
    """A first start that fails on a port in use makes nothing in ``--data-dir``: node 1's
    command line copied for node 2 (``--data-dir n2`` changed, its ports not) recorded
    ``n2`` as node 1's, with a log, a state machine and the catching-up record, and the
    corrected ``serve --id 2 --data-dir n2`` was then refused ("holds the data of node 1,
    not node 2 ... a node must never take over another node's log and vote"), though node 1
    never ran there. An empty directory given stays empty."""
    first = node_options(1, str(tmp_path))
    busy = first.raft_addr if flag == "--raft-addr" else first.http_addr
    host, port = busy.rsplit(":", 1)
    data = tmp_path / "n2"
    first.data_dir = str(data)
    (tmp_path / "empty").mkdir()
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        for where in (data, tmp_path / "empty"):
            first.data_dir = str(where)
            with pytest.raises(OSError, match=rf"^\[Errno \d+\] {flag} {busy}: cannot listen there: .*in use"):
                await KvNode(first).start()
    assert not data.exists()
    assert list((tmp_path / "empty").iterdir()) == []
    second = node_options(2, str(tmp_path))  # (data under tmp_path/n2: the directory the failed start named)
    node = KvNode(second)
    await node.start()
    await node.stop()

@pytest.mark.parametrize("flag", ["--raft-addr", "--http-addr"])
async def test_a_host_that_does_not_resolve_is_named_with_its_flag(tmp_path: Path, flag: str) -> None:
    opts = node_options(1, str(tmp_path))
    if flag == "--raft-addr":
        opts.raft_addr = "nosuchhost.invalid:21999"
    else:
        opts.http_addr = "nosuchhost.invalid:28999"
    with pytest.raises(OSError, match=rf"{flag} nosuchhost\.invalid:2\d+: cannot listen there: the host name does "
                                      "not resolve$"):
        await asyncio.wait_for(KvNode(opts).start(), 30)


@pytest.mark.parametrize("raft,http", [("127.0.0.1:21001", "127.0.0.1:21001"), ("0.0.0.0:21001", "127.0.0.1:21001"),
                                       ("[::1]:21001", "[::]:21001")])
def test_one_port_for_both_addresses_is_refused(raft: str, http: str) -> None:
    opts = ServeOptions(id=1, raft_addr=raft, http_addr=http, data_dir="d")
    with pytest.raises(ValueError, match="are the same port"):
        opts.check()
    ServeOptions(id=1, raft_addr="10.0.0.1:21001", http_addr="10.0.0.2:21001", data_dir="d").check()


@pytest.mark.parametrize("raft,http", [("0.0.0.0", "[::1]"), ("[::]", "127.0.0.1"), ("[::1]", "0.0.0.0")])
async def test_one_port_in_each_address_family_is_two_ports(tmp_path: Path, raft: str, http: str) -> None:
    """The servers bind an IPv6 socket for IPv6 alone (``IPV6_V6ONLY``, as asyncio does), so
    ``0.0.0.0:P`` and ``[::1]:P`` are two listeners that do not meet: the node starts on
    them. ``ServeOptions.check`` refused them as "the same port", a wildcard of one family
    taken for one of both; so it still does a wildcard and an address of its own family."""
    port = free_port()
    opts = node_options(1, str(tmp_path))
    opts.raft_addr, opts.http_addr = f"{raft}:{port}", f"{http}:{port}"
    opts.check()
    node = KvNode(opts)
    await asyncio.wait_for(node.start(), 30)
    try:
        assert node.http_port == port
    finally:
        await node.stop()


@pytest.mark.parametrize("value, error, message", [
    (float("inf"), ValueError, "learner_timeout must be finite"),
    (1e300, ValueError, "learner_timeout must be above 0 and at most 86400 seconds (a day), got 1e+300"),
    (86400.5, ValueError, "learner_timeout must be above 0 and at most 86400 seconds (a day)"),
    (0, ValueError, "learner_timeout must be above 0"),
    ("60", TypeError, "learner_timeout must be a number"),
])
def test_an_unbounded_learner_timeout_is_refused(value: object, error: type[Exception], message: str) -> None:
    """``learner_timeout`` (how long ``POST /cluster/learners`` waits for the learner) is
    bounded as the command line's ``--timeout`` is: ``inf`` and ``1e300`` were taken and such
    a request waited for good on a learner that never caught up; a string failed with
    "'>' not supported between instances of 'str' and 'int'"."""
    opts = ServeOptions(id=1, raft_addr="127.0.0.1:21001", http_addr="127.0.0.1:28001", data_dir="d",
                        learner_timeout=value)  # type: ignore[arg-type]
    with pytest.raises(error) as info:
        opts.check()
    assert message in str(info.value)
    ServeOptions(id=1, raft_addr="127.0.0.1:21001", http_addr="127.0.0.1:28001", data_dir="d",
                 learner_timeout=86400).check()


@pytest.mark.parametrize("name,why", [("x" * 257, "at most 256 characters"), ("a\udcffb", "not valid UTF-8"),
                                      ("", "non-empty")])
def test_an_unusable_cluster_name_is_a_usage_error_before_anything_is_written(tmp_path: Path, name: str, why: str) -> None:
    """The name is recorded in the data directory at the first start. A name over the
    handshake's limit used to be refused by the transport only after that (exit 1), and
    the directory then refused the corrected flag as another cluster's."""
    from openraft_py.kv import cli

    data = tmp_path / "n1"
    argv = ["serve", "--id", "1", "--raft-addr", "127.0.0.1:21001", "--http-addr", "127.0.0.1:28001",
            "--data-dir", str(data), "--cluster-name", name]
    assert cli.main(argv) == 2
    assert not data.exists()
    with pytest.raises(ValueError, match=why):
        ServeOptions(id=1, raft_addr="127.0.0.1:21001", http_addr="127.0.0.1:28001", data_dir=str(data),
                     cluster_name=name).check()
    ServeOptions(id=1, raft_addr="127.0.0.1:21001", http_addr="127.0.0.1:28001", data_dir=str(data),
                 cluster_name="x" * 256).check()


async def test_a_cancelled_stop_goes_on_and_a_later_stop_returns_once_it_ended(tmp_path: Path) -> None:
    """A caller of ``stop()`` cancelled at its first await (a timeout around a cleanup,
    Ctrl-C) leaves the stop going on: a later ``stop()`` returns once the node is stopped,
    its stores closed (the same directory starts again), and no step is left unawaited."""
    opts = node_options(1, str(tmp_path))
    node = KvNode(opts)
    await node.start()
    first = asyncio.ensure_future(node.stop())
    await asyncio.sleep(0)  # the stop has begun: the HTTP port is closing
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(node.stop(), 30)
    assert node.stopped.is_set() and node.raft is not None and not node.raft.metrics.running
    again = KvNode(opts)
    await asyncio.wait_for(again.start(), 30)  # the directory's lock and the stores were released
    await asyncio.wait_for(again.stop(), 30)


async def test_start_on_a_running_node_is_refused_and_leaves_it_running(tmp_path: Path) -> None:
    # It failed on the data directory's lock ("another process uses it ... another serve with
    # the same --data-dir?"), and its clean-up on failure stopped the running node.
    node = KvNode(node_options(1, str(tmp_path)))
    await node.start()
    try:
        with pytest.raises(RuntimeError, match=r"node 1 is running already: a KvNode starts once"):
            await node.start()
        assert node.accepting and not node.stopped.is_set()
        assert node.raft is not None and node.raft.metrics.running
    finally:
        await node.stop()


@pytest.mark.parametrize("started", [True, False])
async def test_start_after_stop_is_refused(tmp_path: Path, started: bool) -> None:
    # It started the stores, Raft and both ports again, but answered every request 503 "the
    # node is stopping", and a stop() after it returned at once (its stop had run): the
    # stores, the ports, the threads and RocksDB's lock stayed held for the process's life.
    opts = node_options(1, str(tmp_path))
    node = KvNode(opts)
    if started:
        await node.start()
    await node.stop()
    with pytest.raises(RuntimeError, match=r"node 1 was stopped: a KvNode starts once; start a new KvNode\(opts\)"):
        await node.start()
    assert node.tcp_server is None and node.log_store is None
    again = KvNode(opts)  # what the error says to do: the directory and the ports are free
    await again.start()
    await again.stop()


async def test_a_stop_while_the_node_reads_its_log_at_start_ends_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM (``serve``'s stop event) while ``Raft.new`` reads the node's log (6.5-12 s
    for 5,000,000 entries; here a read that never ends) cancels the start: ``serve`` returns
    0 at once, having closed what the start opened (the same directory starts again). The
    signal was taken only after the start: the node read its whole log, opened its ports
    and served, then stopped (13 s after the SIGTERM on 5,000,000 entries)."""
    from openraft_py.core import restore
    from openraft_py.kv.server import serve

    reading = asyncio.Event()
    real_scan = restore._scan_log

    async def endless_scan(*args: object) -> object:
        reading.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    monkeypatch.setattr(restore, "_scan_log", endless_scan)
    opts = node_options(1, str(tmp_path))
    stop = asyncio.Event()
    served = asyncio.ensure_future(serve(opts, stop))
    try:
        await asyncio.wait_for(reading.wait(), 30)
        stop.set()
        with caplog.at_level("INFO", logger="openraft_py.kv.server"):
            assert await asyncio.wait_for(asyncio.shield(served), 10) == 0
        assert "stopped while starting (signal)" in caplog.text
    finally:
        if not served.done():
            served.cancel()
            await asyncio.wait({served})
    monkeypatch.setattr(restore, "_scan_log", real_scan)
    node = KvNode(opts)  # the data directory's lock released, the stores closed
    await asyncio.wait_for(node.start(), 30)
    await node.stop()


async def fails_on_a_taken_raft_port(opts: ServeOptions) -> None:
    """Start a node of ``opts`` while another socket listens on its ``--raft-addr``, which
    ``check_can_listen`` (monkeypatched away by the caller) would have seen: the start fails
    at its bind, after it made its data directory."""
    host, port = opts.raft_addr.rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        with pytest.raises(OSError, match="cannot listen there"):
            await KvNode(opts).start()


async def test_a_failed_first_start_never_removes_a_directory_reached_through_dot_dot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--data-dir x/../kept/n1``, ``x`` missing and ``kept`` an empty directory that was
    there before: a start that failed after making its stores (a port taken after its
    check) removed ``kept`` too, having counted ``x/../kept`` as missing (``x`` was) and so
    as its own. A directory that existed before the start is never removed."""
    from openraft_py.kv import node as node_module

    monkeypatch.setattr(node_module, "check_can_listen", lambda flag, addr: None)
    (tmp_path / "kept").mkdir()
    opts = node_options(1, str(tmp_path))
    opts.data_dir = str(tmp_path / "x" / ".." / "kept" / "n1")
    await fails_on_a_taken_raft_port(opts)
    assert (tmp_path / "kept").is_dir()


async def test_a_start_finding_data_once_it_holds_the_lock_removes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a start is a first start was decided before the directory's lock was taken:
    another ``serve`` on the same new directory could make, use (vote, acknowledge entries)
    and leave the node's data in between; a failure of this start (a port taken) then
    removed that data. It is decided again under the lock: data found there is kept."""
    from openraft_py.kv import node as node_module

    data = tmp_path / "n1"
    opts = node_options(1, str(tmp_path))
    opts.data_dir = str(data)
    real_check_writable = node_module.check_writable

    def other_serve_meanwhile(d: Path) -> None:  # (stands for a whole start and stop of another serve)
        real_check_writable(d)
        (d / "votes-and-entries").write_text("another serve's data")

    monkeypatch.setattr(node_module, "check_can_listen", lambda flag, addr: None)
    monkeypatch.setattr(node_module, "check_writable", other_serve_meanwhile)
    await fails_on_a_taken_raft_port(opts)
    assert (data / "votes-and-entries").read_text() == "another serve's data"


async def test_a_failed_first_start_keeps_a_parent_another_process_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--data-dir srv/n1`` with ``srv`` missing when the start looked, but made by another
    process (another node's ``serve --data-dir srv/n2``) before this start's ``mkdir``: a
    failure of this start removed ``srv`` (empty at that moment) as if it had made it, and
    the other start's ``mkdir srv/n2`` then failed. Only the directories this start's own
    ``mkdir`` created are its to remove."""
    from openraft_py.kv import node as node_module

    real_first_start_dirs = node_module.first_start_dirs

    def parent_made_meanwhile(data: Path) -> list[Path] | None:
        made = real_first_start_dirs(data)
        (tmp_path / "srv").mkdir()  # (by the other process, just after this start looked)
        return made

    monkeypatch.setattr(node_module, "check_can_listen", lambda flag, addr: None)
    monkeypatch.setattr(node_module, "first_start_dirs", parent_made_meanwhile)
    opts = node_options(1, str(tmp_path))
    opts.data_dir = str(tmp_path / "srv" / "n1")
    await fails_on_a_taken_raft_port(opts)
    assert (tmp_path / "srv").is_dir() and not (tmp_path / "srv" / "n1").exists()


async def test_a_failed_first_start_removes_in_the_directory_it_made_when_the_cwd_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative ``--data-dir n1`` and a working directory changed during the start (by
    the program embedding ``KvNode``): the removal took ``n1`` again, relative to the new
    working directory, and removed another node's data there. It removes in the directory
    the start made."""
    from openraft_py.kv import node as node_module

    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "n1").mkdir(parents=True)
    (tmp_path / "b" / "n1" / "precious").write_text("another node's data")
    real_record_identity = node_module.record_identity

    def cwd_changed_meanwhile(data: Path, node_id: int, cluster_name: str) -> None:
        real_record_identity(data, node_id, cluster_name)
        monkeypatch.chdir(tmp_path / "b")

    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.setattr(node_module, "check_can_listen", lambda flag, addr: None)
    monkeypatch.setattr(node_module, "record_identity", cwd_changed_meanwhile)
    opts = node_options(1, str(tmp_path))
    opts.data_dir = "n1"
    await fails_on_a_taken_raft_port(opts)
    assert (tmp_path / "b" / "n1" / "precious").read_text() == "another node's data"
    assert not (tmp_path / "a" / "n1").exists()


async def test_a_first_start_cancelled_while_recording_leaves_no_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (``serve`` cancels the start) while ``node.json`` was being written: a thread
    cannot be stopped, the start undid itself at once, and the record, written after the
    removal, stayed in the (emptied) directory: the corrected command line was refused as
    another node's data. The start's steps in threads end before it undoes itself."""
    import threading

    from openraft_py.kv import node as node_module

    real_record_identity = node_module.record_identity
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow_record_identity(data: Path, node_id: int, cluster_name: str) -> None:
        entered.set()
        try:
            release.wait(10)
            real_record_identity(data, node_id, cluster_name)
        finally:
            finished.set()

    monkeypatch.setattr(node_module, "record_identity", slow_record_identity)
    (tmp_path / "given").mkdir()
    opts = node_options(1, str(tmp_path))
    opts.data_dir = str(tmp_path / "given")
    starting = asyncio.ensure_future(KvNode(opts).start())
    assert await asyncio.to_thread(entered.wait, 10)
    starting.cancel()
    await asyncio.wait({starting}, timeout=0.5)  # (the unfixed start undid itself meanwhile)
    release.set()
    await asyncio.wait_for(asyncio.wait({starting}), 10)
    assert starting.cancelled()
    assert await asyncio.to_thread(finished.wait, 10)
    assert list((tmp_path / "given").iterdir()) == []


async def test_a_failed_first_start_holds_its_lock_until_it_has_undone_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failed first start released the directory's lock (``stop``) and took it again to
    remove what it made: another ``serve`` given the same directory could take it in
    between, start on the node's data, serve (vote, acknowledge entries), and leave, and the
    removal then took its data. The lock is held from the start to the end of the removal."""
    from openraft_py.kv import node as node_module
    from openraft_py.kv.identity import lock_data_dir

    data = tmp_path / "n1"
    real_stop = KvNode.stop
    other: list[str] = []

    async def stop_then_other_serve(self: KvNode) -> None:
        await real_stop(self)
        try:
            fd = lock_data_dir(data)
        except Exception as e:  # noqa: BLE001 - the lock is still held: what the test wants
            other.append(f"refused: {e}")
            return
        (data / "another-serve").write_text("its votes and entries")
        os.close(fd)
        other.append("took it")

    monkeypatch.setattr(node_module, "check_can_listen", lambda flag, addr: None)
    monkeypatch.setattr(KvNode, "stop", stop_then_other_serve)
    opts = node_options(1, str(tmp_path))
    opts.data_dir = str(data)
    await fails_on_a_taken_raft_port(opts)
    assert other and other[0].startswith("refused: "), other
    assert not data.exists()


class _Killed(BaseException):
    """Stands for a SIGKILL: raised inside ``remove_first_start``, it ends the clean-up where
    it is (nothing of it after that point runs; ``OSError`` alone is caught there)."""


@pytest.mark.parametrize("removed", [0, 1, 2, 3, 4])
async def test_a_first_start_killed_while_undoing_itself_is_cleared_by_the_next_start(
        tmp_path: Path, removed: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A first start that failed after making its stores (its HTTP port taken after the
    check) removes what it made; killed (SIGKILL) in the middle of that removal, it left some
    of the node's files: without ``catching-up.json`` the next start came up as a node that
    had voted before (no catch-up before it votes: a voter whose data was lost could vote
    twice in a term), without ``node.json`` the data was adopted, and a store half removed
    failed as an unreadable database. The directory's first-start marker, made before
    anything else and removed last, tells the next start what the leftover is: files of a
    node that never served. It refused them, saying to remove the directory (under systemd's
    ``Restart=on-failure``, a crash loop until someone did); now, all of them being what a
    first start makes, it removes them itself, saying so in a WARNING, and starts as a first
    start."""
    import shutil

    from openraft_py.kv import node as node_module

    monkeypatch.setattr(node_module, "check_can_listen", lambda flag, addr: None)
    opts = node_options(1, str(tmp_path))
    opts.data_dir = str(tmp_path / "n1")
    host, port = opts.http_addr.rsplit(":", 1)
    done: list[str] = []
    real_rmtree, real_unlink = shutil.rmtree, Path.unlink

    def counted(remove: Callable[..., None]) -> Callable[..., None]:
        def run(path: Any, *a: Any, **k: Any) -> None:
            if Path(path).parent == tmp_path / "n1" and Path(path).name != node_module.FIRST_START_FILE:
                if len(done) == removed:
                    raise _Killed
                done.append(Path(path).name)
            remove(path, *a, **k)
        return run

    monkeypatch.setattr(shutil, "rmtree", counted(real_rmtree))
    monkeypatch.setattr(Path, "unlink", counted(real_unlink))
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        with pytest.raises(BaseException) as e:
            await KvNode(opts).start()
        assert isinstance(e.value, _Killed if removed < 4 else OSError), e.value
    monkeypatch.undo()
    monkeypatch.setattr(node_module, "check_can_listen", lambda flag, addr: None)
    if removed < 4:
        left = sorted(p.name for p in (tmp_path / "n1").iterdir())
        assert node_module.FIRST_START_FILE in left and len(left) > 1, f"not the case under test: {left}"
    else:
        assert not (tmp_path / "n1").exists()
    caplog.set_level(logging.WARNING, logger="openraft_py.kv.node")
    node = KvNode(opts)
    await node.start()  # (the leftover: no longer DataDirMismatch "... remove everything in it")
    assert node.catch_up is not None and node.catch_up.active, "a first start that does not catch up first"
    await node.stop()
    assert node_module.FIRST_START_FILE not in os.listdir(tmp_path / "n1")
    cleared = [r.getMessage() for r in caplog.records if "what a first start left" in r.getMessage()]
    if removed < 4:
        assert len(cleared) == 1 and cleared[0].startswith(f"{tmp_path / 'n1'} held what a first start left"), cleared
    else:
        assert cleared == [], cleared


async def test_a_first_start_killed_with_only_its_marker_left_starts_as_a_first_start(tmp_path: Path) -> None:
    """Killed after removing everything else, a first start's clean-up left its marker alone:
    the next start takes the directory as empty (a first start, catching up before it votes)."""
    from openraft_py.kv import node as node_module

    opts = node_options(1, str(tmp_path))
    opts.data_dir = str(tmp_path / "n1")
    (tmp_path / "n1").mkdir()
    (tmp_path / "n1" / node_module.FIRST_START_FILE).touch()
    node = KvNode(opts)
    await node.start()
    assert node.catch_up is not None and node.catch_up.active
    await node.stop()
    assert node_module.FIRST_START_FILE not in os.listdir(tmp_path / "n1")


async def test_a_first_start_s_leftover_found_under_the_lock_is_not_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ``serve`` given one new directory: this one found it empty (a first start), then
    waited for nothing while the other took the lock, made its files and was killed (SIGKILL)
    before it had them all, leaving its marker, beside a file of someone else's (so not
    removed as the killed start's own: ``check_first_start_leftover``). This start then
    takes the lock and refuses (``DataDirMismatch``: "remove everything in it"), and the
    refusal must change nothing, as it says: it removed everything there, which this start
    never made (the decision "not a first start: nothing is removed" came after the leftover
    check)."""
    from openraft_py.kv import node as node_module

    opts = node_options(1, str(tmp_path))
    data = tmp_path / "n1"
    opts.data_dir = str(data)
    data.mkdir()  # empty: this start is a first start when it looks
    real_lock = node_module.lock_data_dir

    def the_other_serve_was_first(d: Path) -> int:
        # (what the other serve made before it was killed: its marker first, then stores)
        (d / node_module.FIRST_START_FILE).touch()
        (d / "log").mkdir()
        (d / "log" / "CURRENT").write_text("MANIFEST-000001\n")
        (d / "node.json").write_text('{"node_id":1,"cluster_name":"openraft-py"}\n')
        (d / "notes.txt").write_text("an operator's")
        return real_lock(d)

    monkeypatch.setattr(node_module, "lock_data_dir", the_other_serve_was_first)
    left = ["first-start-unfinished", "log", "node.json", "notes.txt"]
    from openraft_py.kv.identity import DataDirMismatch

    with pytest.raises(DataDirMismatch, match="holds the marker of a first start stopped part way"):
        await KvNode(opts).start()
    assert sorted(p.name for p in data.iterdir()) == left, "the refusal removed what it did not make"
    assert (data / "log" / "CURRENT").exists()


async def test_a_first_start_s_leftover_found_under_the_lock_is_cleared_when_all_of_it_is_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, the other ``serve`` killed with only its own files made: this start clears
    them (it holds the lock: the other one is gone) and goes on as a first start."""
    from openraft_py.kv import node as node_module

    opts = node_options(1, str(tmp_path))
    data = tmp_path / "n1"
    opts.data_dir = str(data)
    data.mkdir()
    real_lock = node_module.lock_data_dir

    def the_other_serve_was_first(d: Path) -> int:
        (d / node_module.FIRST_START_FILE).touch()
        (d / "log").mkdir()
        (d / "log" / "CURRENT").write_text("MANIFEST-000001\n")
        (d / "node.json").write_text('{"node_id":2,"cluster_name":"openraft-py"}\n')
        return real_lock(d)

    monkeypatch.setattr(node_module, "lock_data_dir", the_other_serve_was_first)
    node = KvNode(opts)
    await node.start()
    assert node.catch_up is not None and node.catch_up.active
    await node.stop()
    assert node_module.FIRST_START_FILE not in os.listdir(data)


def test_the_first_start_marker_is_fsynced_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The marker must be durable before anything else is made: its directory entry and the
    file itself (its inode), as every record of the node is written (``replace_durably``)."""
    from openraft_py.kv import node as node_module

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    node_module.mark_first_start(tmp_path)
    assert str(tmp_path / node_module.FIRST_START_FILE) in synced, synced
    assert str(tmp_path) in synced, synced
    assert synced.index(str(tmp_path / node_module.FIRST_START_FILE)) < synced.index(str(tmp_path)), synced


def test_a_first_start_s_removal_is_durable_before_its_marker_goes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean-up (a failed first start's, or the next start's of a killed one's leftover)
    removes the marker last: the directory must be fsynced with the marker alone in it before
    the marker goes, or a power loss could keep some removed entries and lose the marker
    (whose own removal was fsynced with them), and the next start would take them for a
    node's. It fsynced only after the marker's removal."""
    from openraft_py.kv import node as node_module
    from openraft_py.kv.identity import lock_data_dir

    data = tmp_path / "n1"
    data.mkdir()
    (data / "log").mkdir()
    (data / "log" / "CURRENT").write_text("MANIFEST-000001\n")
    (data / "catching-up.json").write_text("{}\n")
    node_module.mark_first_start(data)
    synced: list[list[str]] = []
    real_fsync_dir = node_module.fsync_dir

    def fsync_dir(path: str) -> None:
        if Path(path) == data:
            synced.append(sorted(os.listdir(path)))
        real_fsync_dir(path)

    monkeypatch.setattr(node_module, "fsync_dir", fsync_dir)
    lock = lock_data_dir(data)
    try:
        node_module.remove_first_start(data, [], lock)
    finally:
        os.close(lock)
    assert os.listdir(data) == []
    assert [node_module.FIRST_START_FILE] in synced, synced
    assert synced[-1] == [], synced
