"""A disk that fills up or fails under the RocksDB stores: what the caller is told.

Every error is injected (no mount, no root): an ``OSError`` as the kernel returns it, with
no file name (``write``, ``fsync`` and ``utime`` on a descriptor or path name none), or as
rocksdict raises it. The rule (docs/design/bad-input.md, "Storage"): the caller gets a
``StorageError`` (or an ``OSError``) that names the store and the file, never a bare
"[Errno 28] No space left on device" that leaves the operator to guess which disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from openraft_py.errors import StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.storage.rocks import db as rocks_db


def _made(tmp_path: Path) -> tuple[Path, Path]:
    """A log store and a state machine, created and closed."""
    log, sm = tmp_path / "log", tmp_path / "sm"
    RocksLogStore(log).close()
    RocksStateMachine(sm).close()
    return log, sm


class _ReadOnlyOpenFails:
    """``Rdict`` as rocksdict behaves on a read-only file system: the read-only open fails
    (rocksdict writes its config file first), with its own message."""

    def __init__(self, real: Any, err: OSError) -> None:
        self.real = real
        self.err = err

    def __call__(self, path: str, *args: Any, **kwargs: Any) -> Any:
        if "access_type" in kwargs:
            raise self.err
        return self.real(path, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _utime_fails(code: int) -> Any:
    def utime(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))  # as the kernel's: no file named

    return utime


def test_a_read_only_file_system_at_open_is_a_storage_error_naming_the_store(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A data directory on a file system mounted read-only (or remounted so by the kernel
    after an I/O error): the read-only open fails, and so does putting rocksdict's config
    file back. That second error replaced the first: ``serve`` said "the node could not
    start: OSError: [Errno 30] Read-only file system", naming no store and no file, and no
    ``StorageError``. Now the open's own error, as a ``StorageError`` naming the store."""
    log, sm = _made(tmp_path)
    monkeypatch.setattr(rocks_db, "Rdict", _ReadOnlyOpenFails(rocks_db.Rdict, OSError("Read-only file system (os error 30)")))
    monkeypatch.setattr(os, "utime", _utime_fails(errno.EROFS))
    for path, opener in ((log, RocksLogStore), (sm, RocksStateMachine)):
        with pytest.raises(StorageError, match="Read-only file system") as ei:
            opener(path)
        assert str(path) in str(ei.value)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EPERM, errno.EIO])
def test_putting_the_config_file_back_fails_with_a_storage_error_naming_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          code: int) -> None:
    """The read-only open went well but rocksdict's config file cannot be put back: a
    directory of another user's files (only the owner sets a file's times: ``EPERM``; a
    node started once as root, then as its service user), a read-only file system, a disk
    error. It was a bare ``OSError`` ("[Errno 1] Operation not permitted"), naming nothing."""
    log, sm = _made(tmp_path)
    monkeypatch.setattr(os, "utime", _utime_fails(code))
    for path, opener in ((log, RocksLogStore), (sm / "db", RocksStateMachine)):
        with pytest.raises(StorageError) as ei:
            opener(path.parent if opener is RocksStateMachine else path)
        msg = str(ei.value)
        assert str(path / "rocksdict-config.json") in msg and os.strerror(code) in msg, msg
        assert isinstance(ei.value.cause, OSError) and ei.value.cause.errno == code
    monkeypatch.undo()
    RocksLogStore(log).close()  # nothing was spoiled
    RocksStateMachine(sm).close()


def _fsync_of_files_fails(code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.fsync`` of a regular file fails with ``code`` as the kernel's does (no file
    named); a directory's goes through."""
    import stat

    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_record_the_disk_refuses_names_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """``replace_durably`` (the key-value service's ``node.json`` and ``catching-up.json``, a
    state machine's ``current.meta``, a store's new ``OPENRAFT-ACKED``) on a full disk: the
    ``OSError`` names the file it was writing, keeps its errno, and no temporary file is left;
    the old file is untouched. ``serve`` on a full disk said "the node could not start:
    OSError: [Errno 28] No space left on device", naming no file."""
    from openraft_py.kv.rejoin import CATCHING_UP_FILE, CatchUpGuard
    from openraft_py.storage.rocks.files import replace_durably

    target = tmp_path / "record.json"
    target.write_bytes(b"old\n")
    _fsync_of_files_fails(code, monkeypatch)
    with pytest.raises(OSError) as ei:
        replace_durably(str(target), b"new\n")
    assert ei.value.errno == code and ei.value.filename == str(target), repr(ei.value)
    assert os.strerror(code) in str(ei.value) and "writing record.json failed" in str(ei.value), str(ei.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"] and target.read_bytes() == b"old\n"

    data = tmp_path / "n1"
    data.mkdir()
    with pytest.raises(OSError) as ei:
        CatchUpGuard.load(data, 1, True)  # a new node's first record
    assert ei.value.errno == code and ei.value.filename == str(data / CATCHING_UP_FILE), repr(ei.value)
    assert list(data.iterdir()) == []


@pytest.mark.parametrize("where", ["write", "fsync"])
async def test_a_snapshot_build_on_a_full_disk_names_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              where: str) -> None:
    """A snapshot build whose file the disk refuses (its frames' writes, or its fsync): the
    ``OSError`` names the file in ``snapshots/`` (the node stops with "storage error while
    building a snapshot: OSError: [Errno 28] writing the snapshot failed: No space left on
    device: '.../snapshots/build-....tmp'"; it said "OSError: [Errno 28] No space left on
    device" alone), and the partial file is gone; the state machine's current snapshot is
    still the one before."""
    from openraft_py.kv import rocks_state_machine as rsm
    from openraft_py.storage import KvSet, encode_kv
    from openraft_py.types import Entry, LogId, Normal

    sm = await RocksStateMachine.open(tmp_path / "sm")
    try:
        await sm.apply([Entry(LogId(1, i), Normal(encode_kv(KvSet(f"k{i}", "v" * 100)))) for i in range(1, 50)])
        before = await sm.get_snapshot_builder().build_snapshot()
        before.data.close()
        if where == "write":
            real_write = rsm.write_snapshot

            def write_snapshot(f: Any, *args: Any) -> None:
                real_write(f, *args)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # its last frame

            monkeypatch.setattr(rsm, "write_snapshot", write_snapshot)
        else:
            _fsync_of_files_fails(errno.ENOSPC, monkeypatch)
        with pytest.raises(OSError) as ei:
            await sm.get_snapshot_builder().build_snapshot()
        e = ei.value
        assert e.errno == errno.ENOSPC and "No space left on device" in str(e), repr(e)
        assert isinstance(e.filename, str) and os.path.dirname(e.filename) == str(tmp_path / "sm" / "snapshots"), repr(e)
        assert os.path.basename(e.filename).startswith("build-")
        monkeypatch.undo()
        assert not os.path.exists(e.filename)
        cur = await sm.get_current_snapshot()
        assert cur is not None and cur.meta == before.meta
        cur.data.close()
    finally:
        monkeypatch.undo()
        await sm.aclose()


async def test_a_current_snapshot_that_cannot_be_read_names_its_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The current snapshot's file fails to read (a bad sector's ``EIO``) when a leader
    checks it before handing it out: the ``OSError`` names the file (the leader stops with
    "storage error while reading the current snapshot: OSError: [Errno 5] reading the
    snapshot failed: Input/output error: '.../snapshots/<id>.snap'"; it named none)."""
    from openraft_py.kv import rocks_state_machine as rsm
    from openraft_py.storage import KvSet, encode_kv
    from openraft_py.types import Entry, LogId, Normal

    sm = await RocksStateMachine.open(tmp_path / "sm")
    try:
        await sm.apply([Entry(LogId(1, i), Normal(encode_kv(KvSet(f"k{i}", "v")))) for i in range(1, 10)])
        (await sm.get_snapshot_builder().build_snapshot()).data.close()

        def check_snapshot(f: Any, *args: Any) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(rsm, "check_snapshot", check_snapshot)
        with pytest.raises(OSError) as ei:
            await sm.get_current_snapshot()
        e = ei.value
        assert e.errno == errno.EIO and "Input/output error" in str(e), repr(e)
        assert isinstance(e.filename, str) and e.filename.endswith(".snap"), repr(e)
        assert os.path.dirname(e.filename) == str(tmp_path / "sm" / "snapshots"), repr(e)
    finally:
        monkeypatch.undo()
        await sm.aclose()
