"""What the last stop left, fixed (t97).

1. ``lincheck``'s history readers read any input to its end, a line whole before parsing
   it: ``--format jepsen /dev/zero`` (no newline ever) grew one line until memory ran out,
   and an endless input of lines was read for good. A file is now read up to ``max_bytes``
   (``MAX_HISTORY_BYTES``, 1 GiB; ``--max-bytes N``), a line up to ``MAX_LINE_CHARS``:
   past either, a ``HistoryParseError`` naming the line (exit 2).
2. ``openraft-py kv cas`` took its new value as ``--value`` only, a command-line argument,
   which Linux refuses over 128 KiB ("Argument list too long", exit 126), while ``kv put``
   has ``--value-file``: ``kv cas --value-file FILE`` (``-``: standard input) now, with
   put's semantics and errors (not with ``--value``; neither still deletes).
3. ``openraft-py cluster up -n 3`` over a ``--data-dir`` holding a one-node cluster is
   refused, naming n2 and n3 (no member would ever reach them), but left them in the
   directory: their ports in ``cluster.json``, their data directories and logs. A later
   ``cluster up`` started them on those recorded ports (not where a ``cluster add-learner``
   put them). What the refused run made for them is removed now (``forget_new``).
4. ``has_first_start_marker`` (``openraft_py/kv/node.py``) read the marker file whole, where
   only its kind matters: a large file there was read into memory at each start, a named
   pipe blocked the start for good, a link to ``/dev/zero`` read until memory ran out. It
   is looked at (``stat``) now; what is no regular file is refused, as a directory was.
5. ``AioFsync`` (``openraft_py/storage/rocks/aio.py``) lost the completions a call had taken
   from the kernel when an interrupt (Ctrl-C) came before it returned them: a ``wait``
   interrupted in its second round dropped those of its first (their writes never
   acknowledged), and one interrupted as ``io_getevents`` returned left them counted in
   flight, so a retried ``close`` waited for good for completions the kernel had handed
   over already. They are kept and returned by the next call now. And ``GroupWriter``'s
   close, interrupted while it finished the completions ``aio.close()`` had returned, left
   the rest unanswered for good (their appends' ``io_completed`` never called): a retried
   close now fails each write still waiting (its durability unknown).
6. The conformance suites leave a check (or a network call) that does not end when
   cancelled behind, after ``CANCEL_GRACE``, and return their report; but the end of
   ``asyncio.run`` (``asyncio.Runner.close``) cancels every task of its loop and waits for
   them all, and waited for good for such a task. An abandoned task is taken out of the
   loop's register of tasks now (``base.abandon``).
7. ``KvClient.close()`` awaited on another loop than the one its session's connections
   belong to touched that loop's transports from this thread (refused by asyncio's debug
   mode only, "Non-thread-safe operation ..."), and after that loop ended returned as if
   done, its connections left open. It closes them on their loop when that loop runs in
   another thread, and raises ``RuntimeError`` saying why otherwise, the client left open.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from event_loops import LOOPS

from openraft_py.kv import cli
from openraft_py.storage.rocks import aio
from openraft_py.testing.lincheck import MAX_LINE_CHARS, HistoryParseError, parse_edn_kv, parse_jepsen, parse_jsonl
from openraft_py.testing.proc_cluster import free_port

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).parents[2]


# -- 1. lincheck's readers are bounded ------------------------------------------------------------


def _lincheck(*args: str, memory: int = 2 << 30) -> subprocess.CompletedProcess[str]:
    """``python -m openraft_py.testing.lincheck ARGS``, its address space capped at
    ``memory`` bytes (an unbounded reader fails with a ``MemoryError`` there, not by taking
    the machine's memory) and its run at 60 s."""

    def cap() -> None:  # pragma: no cover - runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "openraft_py.testing.lincheck", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60, preexec_fn=cap)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="reads /dev/zero")
@pytest.mark.parametrize("fmt", ["jepsen", "edn-kv", "jsonl"])
def test_an_endless_line_is_refused_naming_it(fmt: str) -> None:
    res = _lincheck("--format", fmt, "/dev/zero")
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert f"lincheck: cannot read /dev/zero: /dev/zero:1: a line of more than {MAX_LINE_CHARS} characters" in res.stderr


def _jepsen_lines(n: int) -> str:
    return "".join(f"INFO  jepsen.util - {i % 5}\t:invoke\t:read\tnil\n"
                   f"INFO  jepsen.util - {i % 5}\t:ok\t:read\tnil\n" for i in range(n))


def test_a_history_past_max_bytes_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "h.log"
    text = _jepsen_lines(2000)
    path.write_text(text)
    assert len(parse_jepsen(path)) == 2000  # (the default bound: 1 GiB)
    assert len(parse_jepsen(path, max_bytes=len(text))) == 2000  # (exactly at the bound)
    with pytest.raises(HistoryParseError, match=r"h\.log:\d+: the file holds more than 10000 bytes") as e:
        parse_jepsen(path, max_bytes=10_000)
    assert 1 <= e.value.line <= 10_000 // 38, e.value.line  # (lines of 38 to 46 bytes; the file is read ahead)
    for parse in (parse_edn_kv, parse_jsonl):
        with pytest.raises(HistoryParseError, match="more than 100 bytes"):
            parse(path, max_bytes=100)
    res = _lincheck("--format", "jepsen", "--max-bytes", "10000", str(path))
    assert res.returncode == 2, res.stderr
    assert "the file holds more than 10000 bytes" in res.stderr
    res = _lincheck("--format", "jepsen", "--max-bytes", str(len(text)), str(path))
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="reads /dev/zero")
def test_an_endless_stream_of_lines_is_refused_at_max_bytes() -> None:
    """Lines that never end (a pipe from ``yes``: each one skipped as no operation) are read
    up to ``--max-bytes``, then refused."""
    feeder = subprocess.Popen(["yes", "INFO  other.logger - not an operation"], stdout=subprocess.PIPE)
    try:
        assert feeder.stdout is not None
        res = subprocess.run([sys.executable, "-m", "openraft_py.testing.lincheck", "--format", "jepsen",
                              "--max-bytes", "5000000", "/dev/stdin"], stdin=feeder.stdout, capture_output=True,
                             text=True, cwd=REPO, timeout=60)
    finally:
        feeder.kill()
        feeder.wait()
        if feeder.stdout is not None:
            feeder.stdout.close()
    assert res.returncode == 2, res.stderr
    assert "the file holds more than 5000000 bytes" in res.stderr


@pytest.mark.parametrize("bad", ["0", "-1", "1e6", "ten", "١٢"])
def test_cli_refuses_a_bad_max_bytes(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "h.log"
    path.write_text(_jepsen_lines(1))
    res = _lincheck("--format", "jepsen", f"--max-bytes={bad}", str(path))
    assert res.returncode == 2
    assert "argument --max-bytes: must be a whole number of bytes >= 1" in res.stderr


def test_readers_refuse_a_bad_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "h.log"
    path.write_text(_jepsen_lines(1))
    with pytest.raises(ValueError, match="at least 1"):
        parse_jepsen(path, max_bytes=0)
    with pytest.raises(TypeError, match="max_bytes must be an int or None"):
        parse_jsonl(path, max_bytes=True)  # type: ignore[arg-type]
    assert len(parse_jepsen(path, max_bytes=None)) == 1


# -- 2. kv cas --value-file ------------------------------------------------------------------------


async def _serve(routes: list[Any]) -> Any:
    """An aiohttp app of ``routes`` on a loopback port; ``(runner, endpoint)``."""
    from aiohttp import web

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"127.0.0.1:{port}"


async def _cas_node(bodies: list[dict[str, Any]]) -> Any:
    """A fake node answering ``POST /kv/{key}/cas`` as applied and recording its JSON bodies;
    ``(runner, endpoint)``."""
    from aiohttp import web

    async def cas(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.json_response({"ok": True, "current": bodies[-1]["value"]})

    return await _serve([web.post("/kv/{key}/cas", cas)])


async def test_kv_cas_takes_its_new_value_from_a_file_or_standard_input(tmp_path: Path) -> None:
    value = "0123456789abcdef" * 20_000 + "\n"  # 320,001 bytes: over MAX_ARG_STRLEN
    path = tmp_path / "value.txt"
    path.write_text(value, encoding="utf-8")
    bodies: list[dict[str, Any]] = []
    runner, ep = await _cas_node(bodies)
    try:
        common = ["--endpoints", ep, "--timeout", "5"]
        code = await asyncio.to_thread(cli.main, ["kv", "cas", "big", "--expected", "old", "--value-file", str(path),
                                                  *common])
        assert code == 0
        stdin = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "openraft_py.kv", "kv", "cas", "small", "--value-file", "-",
                             *common], input=b"caf\xc3\xa9\n", capture_output=True, timeout=30)
        assert stdin.returncode == 0, stdin
        code = await asyncio.to_thread(cli.main, ["kv", "cas", "gone", "--expected", "x", *common])  # (deletes)
        assert code == 0
    finally:
        await runner.cleanup()
    assert bodies == [{"expected": "old", "value": value}, {"expected": None, "value": "café\n"},
                      {"expected": "x", "value": None}]
    assert json.loads(stdin.stdout) == {"ok": True, "current": "café\n"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--value", "v", "--value-file", "{file}"], "argument --value-file: not allowed with argument --value"),
    (["--value-file", "{file}", "--value", "v"], "argument --value: not allowed with argument --value-file"),
    (["--value-file", "{missing}"], "argument --value-file: cannot read '{missing}': No such file or directory"),
    (["--value-file", "{binary}"],
     "argument --value-file: '{binary}' is not valid UTF-8 (from byte 1 on): the service stores text"),
    (["--value-file", "{file}", "--value-file", "{file}"], "argument --value-file: given twice: give it once"),
    (["--value", "a", "--value", "b"], "argument --value: given twice: give it once"),
], ids=["both", "both-other-order", "missing", "not-utf8", "file-twice", "value-twice"])
def test_kv_cas_value_file_mistakes_are_usage_errors(argv: list[str], message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """As ``kv put``'s: one usage line, exit 2, nothing sent (the endpoint is closed)."""
    names = {"file": tmp_path / "v.txt", "missing": tmp_path / "absent.txt", "binary": tmp_path / "v.bin"}
    names["file"].write_text("x")
    names["binary"].write_bytes(b"a\xff")
    argv = [a.format(**{k: str(v) for k, v in names.items()}) for a in argv]
    message = message.format(**{k: str(v) for k, v in names.items()})
    code = cli.main(["kv", "cas", "k", *argv, "--endpoints", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, (code, err)


def test_kv_cas_help_names_value_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kv", "cas", "--help"]) == 0
    assert "--value-file FILE" in capsys.readouterr().out


# -- 4. the first start's marker is looked at, not read ---------------------------------------------


_MARKER_CHECK = ("import sys; from pathlib import Path; from openraft_py.kv.node import has_first_start_marker as h\n"
                 "try:\n    print(h(Path(sys.argv[1])))\nexcept Exception as e:\n"
                 "    print(type(e).__name__, e)")


def _marker_check(data: Path, memory: int = 1 << 30) -> str:
    """``has_first_start_marker(data)`` in a child process whose address space is capped at
    ``memory`` bytes and whose run at 60 s: what it printed (its answer, or the error)."""

    def cap() -> None:  # pragma: no cover - runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    res = subprocess.run([sys.executable, "-c", _MARKER_CHECK, str(data)], capture_output=True, text=True,
                         cwd=REPO, timeout=60, preexec_fn=cap)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip()


def test_a_huge_marker_is_a_marker_not_read(tmp_path: Path) -> None:
    from openraft_py.kv.node import FIRST_START_FILE

    with open(tmp_path / FIRST_START_FILE, "wb") as f:
        f.truncate(64 << 30)  # (sparse: 64 GiB that take no room)
    assert _marker_check(tmp_path) == "True"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="links to /dev/zero")
def test_a_marker_that_is_a_device_is_refused(tmp_path: Path) -> None:
    from openraft_py.kv.node import FIRST_START_FILE

    (tmp_path / FIRST_START_FILE).symlink_to("/dev/zero")
    out = _marker_check(tmp_path)
    assert out.startswith("DataDirMismatch ") and "is not a readable file (it is a character device)" in out, out


def test_a_marker_that_is_a_named_pipe_is_refused_at_once(tmp_path: Path) -> None:
    from openraft_py.kv.identity import DataDirMismatch
    from openraft_py.kv.node import FIRST_START_FILE, has_first_start_marker

    fifo = tmp_path / FIRST_START_FILE
    os.mkfifo(fifo)
    out: list[BaseException | bool] = []

    def look() -> None:
        try:
            out.append(has_first_start_marker(tmp_path))
        except BaseException as e:  # noqa: BLE001 - reported below
            out.append(e)

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # (blocked opening the pipe: a writer lets it go on)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("has_first_start_marker blocked on a named pipe")
    assert isinstance(out[0], DataDirMismatch) and "(it is a named pipe)" in str(out[0]), out
    # A link to nothing is refused as before; a regular file, empty or not, is a marker.
    fifo.unlink()
    fifo.symlink_to(tmp_path / "gone")
    with pytest.raises(DataDirMismatch, match="which does not exist"):
        has_first_start_marker(tmp_path)
    fifo.unlink()
    assert not has_first_start_marker(tmp_path)
    fifo.write_bytes(b"x")
    assert has_first_start_marker(tmp_path)


# -- 5. AioFsync keeps what an interrupted call took ---------------------------------------------


class _InterruptedGetevents:
    """The C library of an ``AioFsync``, with a Ctrl-C raised in one ``io_getevents``:
    ``after_return`` (the first call that hands over completions: raised as it returns,
    where Python raises it once the call is back) or, else, the second call (raised as it
    begins; the first is made to hand over one completion only)."""

    def __init__(self, real: Any, io_getevents: int, after_return: bool) -> None:
        self._real = real
        self._nr = io_getevents
        self._after_return = after_return
        self.calls = 0
        self.raised = False

    def syscall(self, nr: int, *args: Any) -> int:
        if nr != self._nr or self.raised:
            return int(self._real.syscall(nr, *args))
        self.calls += 1
        if self._after_return:
            got = int(self._real.syscall(nr, *args))
            if got > 0:
                self.raised = True
                raise KeyboardInterrupt
            return got
        if self.calls == 1:
            ctx, _, _, events, timeout = args
            return int(self._real.syscall(nr, ctx, _c_long(1), _c_long(1), events, timeout))
        self.raised = True
        raise KeyboardInterrupt


def _c_long(n: int) -> Any:
    import ctypes

    return ctypes.c_long(n)


def _close_within(fsync: aio.AioFsync, seconds: float) -> list[tuple[int, OSError | None]] | None:
    """``fsync.close()`` in a thread; its answer, or ``None`` if it did not return within
    ``seconds`` (the thread is left blocked in the kernel: a daemon)."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fsync.close()), daemon=True)
    t.start()
    t.join(seconds)
    return out[0] if out else None


@pytest.mark.parametrize("after_return", [True, False], ids=["interrupted-as-it-returned", "interrupted-later"])
def test_an_interrupted_wait_loses_no_completion(after_return: bool) -> None:
    try:
        fsync = aio.AioFsync()
    except OSError as e:
        pytest.skip(f"Linux native AIO is not available here: {e}")
    with tempfile.TemporaryFile() as f:
        f.write(b"x")
        f.flush()
        assert fsync.submit(f.fileno(), 1) and fsync.submit(f.fileno(), 2)
        libc = _InterruptedGetevents(fsync._libc, fsync._sys[1], after_return)
        fsync._libc = libc  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            fsync.wait(2)
        assert libc.raised
        assert fsync.inflight == 2, "the completions taken before the interrupt are still to be returned"
        rest = _close_within(fsync, 10.0)
    assert rest is not None, "the retried close waited for completions the kernel had handed over already"
    assert sorted(token for token, _ in rest) == [1, 2]
    assert all(err is None for _, err in rest)
    assert fsync.inflight == 0
    assert fsync.close() == []


def test_reap_after_an_interrupted_wait_returns_what_it_took() -> None:
    try:
        fsync = aio.AioFsync()
    except OSError as e:
        pytest.skip(f"Linux native AIO is not available here: {e}")
    try:
        with tempfile.TemporaryFile() as f:
            f.write(b"x")
            f.flush()
            assert fsync.submit(f.fileno(), 7)
            real = fsync._libc
            fsync._libc = _InterruptedGetevents(real, fsync._sys[1], True)  # type: ignore[assignment]
            with pytest.raises(KeyboardInterrupt):
                fsync.wait(1)
            fsync._libc = real
            assert [token for token, _ in fsync.reap()] == [7]
            assert fsync.reap() == []
            assert fsync.inflight == 0
    finally:
        assert fsync.close() == []


def _aio_available() -> bool:
    try:
        aio.AioFsync(1).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _aio_available(), reason="needs Linux native AIO")
async def test_a_store_close_interrupted_while_finishing_fast_writes_answers_them_when_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.test_rocks_fast_path import append

    from openraft_py.errors import StorageError
    from openraft_py.storage.rocks import RocksLogStore
    from openraft_py.storage.rocks.group_writer import GroupWriter

    store = RocksLogStore(tmp_path / "log")
    writer = store._writer
    for i in range(3):  # (the first writes take the thread's path)
        assert await asyncio.wait_for(await append(store, i), 10) is None
    monkeypatch.setattr(aio.AioFsync, "reap", lambda self: [])  # (the completions wait for the close)
    first = await append(store, 3)
    for _ in range(500):
        if writer._aio is not None and writer._aio.inflight == 1:
            break
        await asyncio.sleep(0.01)
    assert writer._aio is not None and writer._aio.inflight == 1, "its fast-path fsync in flight"
    real = GroupWriter._finish_fast
    calls: list[int] = []

    def interrupted(self: GroupWriter, token: int, err: BaseException | None) -> None:
        calls.append(token)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real(self, token, err)

    monkeypatch.setattr(GroupWriter, "_finish_fast", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.close()
    try:
        store.close()  # (retried, as after a Ctrl-C)
    except StorageError:
        pass  # (the store failed: the writes' durability is unknown)
    done, _ = await asyncio.wait({first}, timeout=10)
    assert done, "the write was left unanswered"
    err = first.result()
    assert isinstance(err, StorageError) and "lost to an interrupted close" in str(err), err


# -- 7. KvClient.close() from another loop ----------------------------------------------------------


class _LoopThread:
    """An event loop running in a thread of its own, in debug mode (which checks that its
    transports are used from its thread only)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_debug(True)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _status_node(keep_alive: bool) -> Any:
    """A fake node answering ``GET /cluster/status`` (with ``Connection: close`` unless
    ``keep_alive``); ``(runner, endpoint)``."""
    from aiohttp import web

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"id": 1}, headers={} if keep_alive else {"Connection": "close"})

    return await _serve([web.get("/cluster/status", status)])


def test_kv_client_closed_from_another_thread_loop_is_closed_on_its_own() -> None:
    """The client is used on a loop running in another thread; ``close()`` awaited on the
    main thread's loop closes its session there (it touched that loop's transports from
    this thread: asyncio's debug mode refused it, "Non-thread-safe operation")."""
    from openraft_py.kv.client import KvClient

    other = _LoopThread()
    try:
        runner, ep = other.run(_status_node(keep_alive=True))
        c = KvClient([ep])
        try:
            assert other.run(c.status(ep)) == {"id": 1}
            session = c._session
            assert session is not None
            asyncio.run(c.close())
            assert session.closed
            with pytest.raises(RuntimeError, match="closed"):
                other.run(c.status(ep))
        finally:
            other.run(c.close())  # (idempotent; closes it if the close above failed)
            other.run(runner.cleanup())
    finally:
        other.close()


def test_kv_client_closed_from_another_loop_after_its_own_stopped_says_so() -> None:
    """Its loop is not running (then closed): ``close()`` from another loop raises a
    ``RuntimeError`` saying why, and leaves the client open, to be closed on its own loop
    while it can (it returned as if done, the connections left open)."""
    from openraft_py.kv.client import KvClient

    other = _LoopThread()
    try:
        runner, ep = other.run(_status_node(keep_alive=False))
        c = KvClient([ep])
        own = asyncio.new_event_loop()
        try:
            assert own.run_until_complete(c.status(ep)) == {"id": 1}
            with pytest.raises(RuntimeError, match="which is not running: they cannot be closed from another loop"):
                asyncio.run(c.close())
            own.run_until_complete(c.close())  # (on its own loop: closed)
            assert c._session is None
            d = KvClient([ep])
            assert own.run_until_complete(d.status(ep)) == {"id": 1}
        finally:
            own.close()
        session = d._session
        assert session is not None
        with pytest.raises(RuntimeError, match=r"which is closed \(a second asyncio.run\?\)"):
            asyncio.run(d.close())
        assert not session.closed, "nothing closed it"
        session.detach()  # (no connection kept: Connection: close; nothing left to warn about)
        other.run(runner.cleanup())
    finally:
        other.close()


async def test_local_cluster_aclose_stops_the_nodes_when_a_client_close_raises(tmp_path: Path) -> None:
    """``LocalCluster.aclose`` closed its clients, then stopped the nodes: a client close
    that raised (from another loop) left the nodes running and the root locked."""
    from openraft_py.kv.client import KvClient
    from openraft_py.kv.local_cluster import LocalCluster

    class _Refuses(KvClient):
        async def close(self) -> None:
            raise RuntimeError("refused")

    cluster = LocalCluster(1)  # (nothing started: the temporary root is what close() removes)
    root = cluster.root
    cluster._client = _Refuses(cluster.endpoints())
    with pytest.raises(RuntimeError, match="refused"):
        await cluster.aclose()
    assert not root.exists(), "close() did not run"


# -- 6. an abandoned check does not hold the end of asyncio.run ------------------------------------

_STUBBORN = """
import asyncio, sys, time
from openraft_py.storage.memory import MemLogStore, MemStateMachine
from openraft_py.testing.suite import LogStoreSuite


class Stubborn(MemLogStore):
    async def get_log_state(self):
        while True:  # (catches every cancellation)
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue


async def builder():
    return Stubborn(), MemStateMachine()


async def main():
    out = await LogStoreSuite.run_one(builder, "initial_log_state_empty", timeout=0.2)
    print("report:", out.ok, out.error, flush=True)


if sys.argv[1] == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
else:
    factory = asyncio.new_event_loop
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main())
print("ended", flush=True)
"""


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_a_check_left_behind_does_not_hold_the_end_of_asyncio_run(loop_name: str) -> None:
    try:
        res = subprocess.run([sys.executable, "-c", _STUBBORN, loop_name], capture_output=True, text=True, cwd=REPO,
                             timeout=30)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the runner did not end: {e.stdout!r}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "report: False [initial_log_state_empty] timed out after 0.2s and did not end when cancelled" in res.stdout
    assert res.stdout.endswith("ended\n"), res.stdout
    assert "Task was destroyed" not in res.stderr, res.stderr


async def test_an_abandoned_task_leaves_the_register_of_tasks_and_is_still_read_when_it_ends() -> None:
    from openraft_py.testing.suite import base

    release = asyncio.Event()

    async def stubborn() -> str:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue
        raise ValueError("ended")

    task = asyncio.ensure_future(stubborn())
    try:
        await asyncio.sleep(0)
        task.cancel()
        base.abandon(task)
        assert task not in asyncio.all_tasks()
        assert task in base._ABANDONED
    finally:
        release.set()  # (so that it ends whatever failed above: the loop's end would wait for it)
        await asyncio.wait({task}, timeout=5)
    assert task.done() and task not in base._ABANDONED
    assert isinstance(task.exception(), ValueError)


# -- 3. cluster up -n over a smaller cluster leaves the directory as it was ------------------------


def test_more_nodes_than_the_data_dir_held_leaves_it_as_it_was(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from kv.test_cluster_up import _up_in

    with _up_in(tmp_path, 1, "--timeout", "30") as (proc, members):
        pass  # (started, then stopped with Ctrl-C)
    record = json.loads((tmp_path / "cluster.json").read_text())
    assert sorted(record["nodes"]) == ["1"]
    entries = sorted(os.listdir(tmp_path))
    assert cli.main(["cluster", "up", "-n", "3", "--data-dir", str(tmp_path), "--timeout", "30"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path} holds a cluster of nodes [1], initialized before; n2, n3 are not in it: run with -n 1" in err, err
    assert json.loads((tmp_path / "cluster.json").read_text()) == record, "n2, n3 were left recorded"
    assert sorted(os.listdir(tmp_path)) == entries, "what the run made for n2, n3 was left"
    with _up_in(tmp_path, 1, "--timeout", "30") as (proc, again):
        assert again[1].http == members[1].http
