"""Durable files next to a RocksDB: a directory fsync, and new files that appear whole or not
at all (``durable_temp`` / ``replace_durably``). Used by the acknowledged mark and by the
key-value state machine's snapshot files."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

__all__ = ["DurableTemp", "NotRegularFile", "durable_temp", "fsync_dir", "naming", "read_regular_file",
           "replace_durably", "special_file_kind"]


def fsync_dir(path: str) -> None:
    """fsync the directory ``path`` (makes its entries, e.g. a rename, durable). A failure
    raises ``OSError`` naming the directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        raise OSError(e.errno, f"fsync of the directory failed: {e.strerror or e}", path) from e
    finally:
        os.close(fd)


class DurableTemp:
    """A new temporary file being written (see ``durable_temp``).

    ``file`` is open for writing (binary) until ``sync()``; ``path`` is its name, in the
    directory it will be renamed within (a rename across directories is not atomic)."""

    __slots__ = ("file", "path")

    def __init__(self, file: BinaryIO, path: str) -> None:
        self.file = file
        self.path = path

    def sync(self) -> str:
        """Flush, fsync and close the file; return its path (ready to be renamed into place)."""
        f = self.file
        f.flush()
        os.fsync(f.fileno())
        f.close()
        return self.path


@contextmanager
def naming(path: str, doing: str) -> Iterator[None]:
    """Raise an ``OSError`` of the block that names no file again, naming ``path``:
    ``[Errno 28] <doing> failed: No space left on device: '<path>'`` (the same errno, so the
    same ``OSError`` subclass; the original chained); one naming a file goes on as it is.

    A read, a write or an fsync on an open file (a full disk's ``ENOSPC``, a bad sector's
    ``EIO``, ``EFBIG``) names none: a node said "storage error while building a snapshot:
    OSError: [Errno 28] No space left on device", leaving the operator to guess which disk
    was full."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:  # (named, or not the kernel's)
            raise
        raise OSError(e.errno, f"{doing} failed: {e.strerror or e}", path) from e


@contextmanager
def durable_temp(directory: str, *, prefix: str = "tmp-", name: str | None = None) -> Iterator[DurableTemp]:
    """A new temporary file in ``directory``: ``<prefix>*.tmp`` (unique), or exactly ``name``
    (created or truncated) when given.

    The block writes ``tmp.file``, calls ``tmp.sync()`` and moves ``tmp.path`` into place
    (``os.replace``). Contract: no temporary file outlives the block: when the block raises,
    or leaves without having moved it, the file is closed and deleted. The directory is not
    fsynced here (``replace_durably`` does it; the snapshot files rely on the ``current.meta``
    replacement that follows)."""
    if name is None:
        fd, path = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    else:
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        f = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    failed = True
    try:
        yield DurableTemp(f, path)
        failed = False
    finally:
        try:
            f.close()  # (closed already after sync())
        except OSError:
            # The bytes a failed write left in the buffer cannot be written either (the
            # disk is full, EFBIG, EIO): the block's own error goes on. This close raised
            # past the unlink below, and the partial file stayed (until the next open).
            if not failed:
                raise
        finally:
            _unlink_quietly(path)  # moved into place already: nothing there


def replace_durably(path: str, data: bytes, *, tmp_name: str | None = None) -> None:
    """Make ``path`` hold ``data``, atomically (a crash leaves the old file or the new one)
    and durably (temporary file fsynced, renamed over ``path``, directory fsynced).
    ``tmp_name``: the temporary file's exact name (default: a unique ``tmp-*.tmp``). A
    failure raises ``OSError``; one that names no file (a full disk's ``ENOSPC`` on the
    write) names ``path`` (``naming``)."""
    directory = os.path.dirname(path) or "."
    with naming(path, f"writing {os.path.basename(path)}"):
        with durable_temp(directory, name=tmp_name) as tmp:
            tmp.file.write(data)
            os.replace(tmp.sync(), path)
    fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def special_file_kind(mode: int) -> str | None:
    """What a file of ``mode`` (``st_mode``) is when reading it could block or reads no file's
    bytes: ``"a named pipe"``, ``"a socket"``, ``"a character device"``, ``"a block device"``;
    ``None`` for a regular file, a directory or a symbolic link."""
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return None


class NotRegularFile(OSError):
    """``read_regular_file`` found no regular file at ``filename``; ``strerror`` says what is
    there instead (``"it is a named pipe"``)."""


def read_regular_file(path: str | os.PathLike[str], max_bytes: int = -1) -> bytes:
    """The bytes of the regular file at ``path`` (at most ``max_bytes``; ``-1``: all). What is
    no regular file is never read: a named pipe is opened without waiting for a writer
    (``O_NONBLOCK``) and refused, as a socket or a device is, with ``NotRegularFile``; a
    directory with ``IsADirectoryError``. A named pipe where a node's record or a store's
    file belongs (a mistaken ``mkfifo``, a restore gone wrong) blocked its reader, and the
    start of the node with it, for good: SIGTERM did not end it. Other ``OSError``s as
    ``open`` raises them (``FileNotFoundError`` ...). Blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENXIO:  # (a socket: open refuses it)
            raise NotRegularFile(errno.ENXIO, "it is a socket", os.fspath(path)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"it is {special_file_kind(mode) or 'not a regular file'}",
                                 os.fspath(path))
    except BaseException:
        os.close(fd)
        raise
    with open(fd, "rb") as f:
        return f.read(max_bytes)
