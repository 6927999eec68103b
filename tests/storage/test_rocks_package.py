"""The shape of the RocksDB storage: the compatibility names of ``openraft_py.storage.rocks``,
its layering (it does not import the key-value service), the one key-value apply shared by
both state machines, and the durable temp-file helper."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openraft_py.kv import rocks_snapshot, rocks_state_machine
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import rocks
from openraft_py.storage.memory import KvCas, KvCommand, KvDelete, KvGet, KvSet, MemStateMachine, encode_kv
from openraft_py.storage.rocks.ackmark import AckMark
from openraft_py.storage.rocks.files import durable_temp, replace_durably
from openraft_py.storage.rocks.group_writer import GroupWriter
from openraft_py.storage.rocks.log_format import encode_entry_records
from openraft_py.storage.rocks.wal import wal_numbers
from openraft_py.types import Entry, LogId, Membership, Normal

pytestmark = pytest.mark.timeout(60)


def test_old_names_still_import_from_storage_rocks() -> None:
    """Every name imported from the former module ``storage/rocks.py`` resolves to the object
    at its new home; an unknown name is an ``AttributeError``."""
    from openraft_py.storage.rocks import (  # noqa: F401 - the import is the check
        LOG_FORMAT,
        SM_FORMAT,
        SNAPSHOT_MAGIC,
        RocksLogReader,
        RocksLogStore,
    )

    assert rocks.RocksStateMachine is RocksStateMachine
    assert rocks.SM_FORMAT is rocks_state_machine.SM_FORMAT
    assert rocks.SNAPSHOT_MAGIC is rocks_snapshot.SNAPSHOT_MAGIC
    assert rocks._MAX_FRAME == rocks_snapshot._MAX_FRAME
    assert rocks._AckMark is AckMark
    assert rocks._GroupWriter is GroupWriter
    assert rocks._encode_entry_records is encode_entry_records
    assert rocks._wal_numbers is wal_numbers
    with pytest.raises(AttributeError, match="no_such_name"):
        rocks.no_such_name  # noqa: B018
    for name in rocks.__all__:
        assert getattr(rocks, name) is not None, name


def test_storage_rocks_does_not_import_the_kv_service() -> None:
    """Layering: the log store imports nothing of ``openraft_py.kv``, and the state machine
    imports no aiohttp (a fresh interpreter, so earlier imports do not hide it)."""
    code = (
        "import sys\n"
        "import openraft_py.storage.rocks\n"
        "assert not [m for m in sys.modules if m.startswith('openraft_py.kv')], 'kv imported'\n"
        "import openraft_py.kv.rocks_state_machine\n"
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _random_commands(rng: random.Random, n: int) -> list[KvCommand | bytes]:
    keys = [f"k{i}" for i in range(6)]
    values = [None, "a", "b", "c"]
    out: list[KvCommand | bytes] = []
    for _ in range(n):
        k = rng.choice(keys)
        r = rng.random()
        if r < 0.35:
            out.append(KvSet(k, rng.choice(values[1:])))
        elif r < 0.5:
            out.append(KvDelete(k))
        elif r < 0.75:
            out.append(KvCas(k, rng.choice(values), rng.choice(values[1:])))
        elif r < 0.95:
            out.append(KvGet(k))
        else:
            out.append(b"opaque")
    return out


def _random_batches(rng: random.Random, n: int) -> Iterator[list[Entry]]:
    """``n`` batches of consecutive entries from index 0: 1-12 random commands each (see
    ``_random_commands``), and now and then a membership entry after them."""
    index = 0
    for _ in range(n):
        batch: list[Entry] = []
        for cmd in _random_commands(rng, rng.randint(1, 12)):
            data = cmd if isinstance(cmd, bytes) else encode_kv(cmd)
            batch.append(Entry(LogId(1, index), Normal(data)))
            index += 1
        if rng.random() < 0.1:
            batch.append(Entry(LogId(1, index), Membership.new([{1, 2, 3}])))
            index += 1
        yield batch


async def test_rocks_and_memory_state_machines_answer_alike(tmp_path: Path) -> None:
    """Both state machines apply the key-value commands with the one ``apply_kv``: for the
    same batches (several commands on one key within a batch, memberships, opaque data) they
    give the same responses and end with the same data and applied state, also after the
    RocksDB one is reopened."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    mem = MemStateMachine()
    path = tmp_path / "sm"
    sm = RocksStateMachine(path)
    try:
        for batch in _random_batches(rng, 40):
            assert await sm.apply(batch) == await mem.apply(batch), f"seed={seed}"
        assert sm.data == mem.data, f"seed={seed}"
        assert await sm.applied_state() == await mem.applied_state()
    finally:
        sm.close()
    async with RocksStateMachine(path) as again:
        assert again.data == mem.data
        assert await again.applied_state() == await mem.applied_state()


def test_durable_temp_leaves_no_file_behind(tmp_path: Path) -> None:
    """A block that fails, or leaves without moving its file, leaves no temporary file;
    one that moves it leaves exactly the target."""
    with pytest.raises(RuntimeError), durable_temp(str(tmp_path), prefix="x-") as tmp:
        tmp.file.write(b"half")
        raise RuntimeError("the writer failed")
    assert os.listdir(tmp_path) == []
    with durable_temp(str(tmp_path)) as tmp:
        tmp.file.write(b"never placed")
    assert os.listdir(tmp_path) == []
    with durable_temp(str(tmp_path), name="fixed.tmp") as tmp:
        assert tmp.path == str(tmp_path / "fixed.tmp")
        tmp.file.write(b"whole")
        os.replace(tmp.sync(), tmp_path / "target")
    assert os.listdir(tmp_path) == ["target"]
    assert (tmp_path / "target").read_bytes() == b"whole"


def test_durable_temp_whose_disk_refuses_the_write_leaves_no_file_behind(tmp_path: Path) -> None:
    """A write refused by the file system (here EFBIG, a file size limit, as a full disk
    refuses with ENOSPC) inside the block: the buffered bytes it left make the file's close
    fail too. The block's own error is raised and the partial file is deleted (the close's
    error went past the delete: a snapshot build on a full disk left its partial
    ``build-*.tmp``, taking the space, until the next open)."""
    child = (
        "import os, resource, signal, sys\n"
        "from openraft_py.storage.rocks.files import durable_temp\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "try:\n"
        "    with durable_temp(sys.argv[1], prefix='build-') as tmp:\n"
        "        for _ in range(100):\n"
        "            tmp.file.write(b'x' * 3000)\n"
        "        tmp.sync()\n"
        "except OSError as e:\n"
        "    print(e.errno, os.listdir(sys.argv[1]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True, timeout=30, env=env, cwd=root
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["27", "[]"], out.stdout + out.stderr[-2000:]  # EFBIG, nothing left


def test_replace_durably_keeps_the_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``replace_durably`` swaps the whole content; when the rename fails the old content
    stays and no temporary file is left."""
    target = tmp_path / "current.meta"
    replace_durably(str(target), b"one")
    replace_durably(str(target), b"two")
    assert target.read_bytes() == b"two"

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("injected")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="injected"):
        replace_durably(str(target), b"three")
    assert os.listdir(tmp_path) == ["current.meta"]
    assert target.read_bytes() == b"two"


def test_bounded_iter_is_a_point_in_time_image_with_its_bound(tmp_path: Path) -> None:
    """A ``BoundedIter`` read from another thread, after the data changed and memory was
    churned, yields exactly the keys below its bound as of its creation (rocksdict's iterator
    alone does not keep its bound alive: that read came back empty); ``close()`` releases the
    iterator, so the database closes and its path opens again."""
    import gc
    import threading

    from rocksdict import Options, Rdict

    from openraft_py.storage.rocks.db import BoundedIter

    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    db = Rdict(str(tmp_path / "db"), opts)
    for i in range(300):
        db[i.to_bytes(8, "big")] = b"v%d" % i
    image = BoundedIter(db, (250).to_bytes(8, "big"))
    db.delete_range((0).to_bytes(8, "big"), (200).to_bytes(8, "big"))
    db[(100).to_bytes(8, "big")] = b"new"
    churn = [bytes(8) * (i % 7) for i in range(20_000)]
    gc.collect()
    got: list[list[bytes]] = []
    reader = threading.Thread(target=lambda: got.append(image.values((100).to_bytes(8, "big"))))
    reader.start()
    reader.join(30)
    assert got == [[b"v%d" % i for i in range(100, 250)]]
    pairs = list(image.scan((240).to_bytes(8, "big")))
    assert [int.from_bytes(k, "big") for k, _ in pairs] == list(range(240, 250))
    image.close()
    image.close()  # idempotent
    with pytest.raises(AttributeError):
        image.values(b"")
    del churn
    db.close()
    del db
    Rdict(str(tmp_path / "db"), opts).close()  # the lock was released


async def test_apply_without_responses_leaves_the_state_apply_leaves(tmp_path: Path) -> None:
    """``apply_without_responses`` (what a follower's worker calls) makes the same changes
    as ``apply`` on both key-value state machines, for the same random batches: same data
    and applied state (also after the RocksDB one reopens)."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    answered, quiet = MemStateMachine(), MemStateMachine()
    path = tmp_path / "sm"
    sm = RocksStateMachine(path)
    try:
        for batch in _random_batches(rng, 40):
            await answered.apply(batch)
            assert await quiet.apply_without_responses(batch) is None
            assert await sm.apply_without_responses(batch) is None
        assert quiet.data == answered.data == sm.data, f"seed={seed}"
        assert await quiet.applied_state() == await answered.applied_state() == await sm.applied_state()
    finally:
        sm.close()
    async with RocksStateMachine(path) as again:
        assert again.data == answered.data
        assert await again.applied_state() == await answered.applied_state()


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """Record the keys of every ``_BatchKv.read_ahead`` (the batch's multi-get) and of every
    ``_BatchKv.get`` (one key's read) from now on: ``(read_ahead keys, get keys)``."""
    ahead: list[str] = []
    gets: list[str] = []
    real_ahead = rocks_state_machine._BatchKv.read_ahead
    real_get = rocks_state_machine._BatchKv.get

    def counting_ahead(self: Any, keys: list[str], data_keys: list[bytes] | None = None) -> None:
        ahead.extend(keys)
        real_ahead(self, keys, data_keys)

    def counting_get(self: Any, key: str) -> str | None:
        gets.append(key)
        return real_get(self, key)

    monkeypatch.setattr(rocks_state_machine._BatchKv, "read_ahead", counting_ahead)
    monkeypatch.setattr(rocks_state_machine._BatchKv, "get", counting_get)
    return ahead, gets


async def test_apply_without_responses_reads_no_previous_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A set applied without responses writes without the read ``apply`` needs for the
    previous value it answers with."""
    ahead, gets = _count_reads(monkeypatch)
    async with RocksStateMachine(tmp_path / "sm") as sm:
        batch = [Entry(LogId(1, i), Normal(encode_kv(KvSet(f"k{i}", "v")))) for i in range(1, 6)]
        await sm.apply_without_responses(batch)
        assert ahead == gets == [] and sm.data == {f"k{i}": "v" for i in range(1, 6)}
        assert await sm.apply([Entry(LogId(1, 6), Normal(encode_kv(KvSet("k1", "w"))))]) == ["v"]
        assert ahead == ["k1"]


async def test_apply_answers_a_run_of_sets_from_one_multi_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``apply`` of a batch of sets (a leader's every apply under a key-value load) answers
    each key's first set with the value the key had before the batch from the batch's one
    multi-get, with no read of a single key (``_BatchKv.get``, a call per write before); a
    later set of the same key answers the batch's own earlier value."""
    async with RocksStateMachine(tmp_path / "sm") as sm:
        await sm.apply([Entry(LogId(1, 1), Normal(encode_kv(KvSet("old", "o")))),
                        Entry(LogId(1, 2), Normal(encode_kv(KvSet("older", "p"))))])
        ahead, gets = _count_reads(monkeypatch)
        sets = [("new", "a"), ("old", "b"), ("new", "c"), ("older", "d"), ("old", "e"), ("other", "f")]
        batch = [Entry(LogId(1, 3 + i), Normal(encode_kv(KvSet(k, v)))) for i, (k, v) in enumerate(sets)]
        assert await sm.apply(batch) == [None, "o", "a", "p", "b", None]
        assert gets == [] and sorted(ahead) == ["new", "old", "older", "other"]
        assert sm.data == {"new": "c", "old": "e", "older": "d", "other": "f"}


async def test_runs_of_sets_store_the_commands_bytes_and_answer_from_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel hands the apply each key's RocksDB key and value as bytes (no
    ``str.encode`` per key): non-ASCII keys and values, a key set twice in a run, and a second
    run after another command in the same batch (its multi-get builds its own keys) are
    stored, read back and answered as the general path (``MemStateMachine``) does."""
    from openraft_py.storage.memory import MemStateMachine

    multi_gets: list[list[bytes]] = []
    real_ahead = rocks_state_machine._BatchKv.read_ahead

    def spying(self: Any, keys: list[str], data_keys: list[bytes] | None = None) -> None:
        real_get = self._cf.get

        class Cf:
            def get(self, k: Any) -> Any:
                if isinstance(k, list):
                    multi_gets.append(list(k))
                return real_get(k)

        cf, self._cf = self._cf, Cf()
        try:
            real_ahead(self, keys, data_keys)
        finally:
            self._cf = cf

    monkeypatch.setattr(rocks_state_machine._BatchKv, "read_ahead", spying)
    first = [("ключ", "a"), ("k", "é")]
    batch = [("ключ", "д"), ("new", "x"), ("ключ", "в"), ("k", "z")]
    mem = MemStateMachine()
    async with RocksStateMachine(tmp_path / "sm") as sm:
        for start, cmds in ((1, first), (3, batch)):
            es = [Entry(LogId(1, i), Normal(encode_kv(KvSet(k, v)))) for i, (k, v) in enumerate(cmds, start)]
            assert await sm.apply(es) == await mem.apply(es)
        assert multi_gets[-1] == ["dключ".encode(), b"dnew", b"dk"]
        later = [Entry(LogId(1, 7), Normal(encode_kv(KvSet("k", "1")))),
                 Entry(LogId(1, 8), Normal(encode_kv(KvDelete("new")))),
                 Entry(LogId(1, 9), Normal(encode_kv(KvSet("ü", "2")))),
                 Entry(LogId(1, 10), Normal(encode_kv(KvSet("k", "3"))))]
        assert await sm.apply(later) == await mem.apply(later)
        assert sm.data == mem.data
        stored = {k: v for k, v in sm._cf.items(from_key=b"d") if k.startswith(b"d")}
        assert stored == {b"d" + k.encode(): v.encode() for k, v in mem.data.items()}
    async with RocksStateMachine(tmp_path / "sm") as again:
        assert again.data == mem.data


async def test_a_followers_run_of_sets_is_seen_by_the_commands_after_it(tmp_path: Path) -> None:
    """``apply_without_responses`` takes a run of sets from the kernel as bytes alone (no
    ``str``); commands later in the same batch still read the run's values (the overlay,
    decoded from those bytes only then), non-ASCII ones too, as ``MemStateMachine`` does."""
    from openraft_py.storage.memory import MemStateMachine

    cmds: list[KvCommand] = [KvSet("ключ", "a"), KvSet("k", "é"), KvSet("ключ", "д"), KvCas("ключ", "д", "в"),
                             KvCas("k", "x", "no"), KvSet("k2", "1"), KvDelete("k")]
    batch = [Entry(LogId(1, i), Normal(encode_kv(c))) for i, c in enumerate(cmds, 1)]
    tail = [Entry(LogId(1, 8), Normal(encode_kv(KvSet("ü", "ß"))))]
    mem = MemStateMachine()
    await mem.apply(batch)
    await mem.apply(tail)
    async with RocksStateMachine(tmp_path / "sm") as sm:
        await sm.apply_without_responses(batch)
        await sm.apply_without_responses(tail)  # a run to the end of its batch
        assert sm.data == mem.data == {"ключ": "в", "k2": "1", "ü": "ß"}
    async with RocksStateMachine(tmp_path / "sm") as again:
        assert again.data == mem.data


# -- closing: the handles are dropped, a full collection only when one is held elsewhere --------


@pytest.mark.parametrize("store", ["log", "state machine"])
@pytest.mark.parametrize("held_by_a_cycle", [False, True], ids=["nothing else holds a handle", "a cycle holds one"])
def test_close_frees_the_lock_and_collects_only_when_a_handle_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str, held_by_a_cycle: bool
) -> None:
    import gc

    from openraft_py.storage.rocks import RocksLogStore

    def open_store() -> Any:
        return RocksLogStore(tmp_path / "log") if store == "log" else RocksStateMachine(tmp_path / "sm")

    collects: list[int] = []
    real_collect = gc.collect

    def counting_collect(*args: Any) -> int:
        collects.append(1)
        return real_collect(*args)

    s = open_store()
    if held_by_a_cycle:
        # What a dead frame in a traceback cycle amounts to: garbage that only a collection frees.
        cycle: list[Any] = [s._entries if store == "log" else s._cf]
        cycle.append(cycle)
        del cycle
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection frees the cycle first
    monkeypatch.setattr(gc, "collect", counting_collect)
    try:
        s.close()
    finally:
        monkeypatch.undo()
        if was_enabled:
            gc.enable()
    assert len(collects) == (1 if held_by_a_cycle else 0)
    open_store().close()  # the lock was released: the same path opens again at once
