"""The WAL syncer: makes RocksDB's write-ahead log durable with ``os.fsync`` of its files,
outside rocksdict (which keeps the GIL for a ``sync=True`` write's fsync; ``os.fsync``
releases it). Why that is equivalent to RocksDB's own sync, and the assumptions checked
before it is used: "The durability step" in ``docs/design/durability.md``."""

from __future__ import annotations

import os
import sys

from .dirwatch import DirWatch
from .files import fsync_dir

__all__ = ["WalSyncer", "read_db_options", "wal_fsync_error", "wal_numbers", "wal_syncer_for"]


def read_db_options(path: str) -> dict[str, str]:
    """``key=value`` lines of the newest ``OPTIONS-<n>`` file RocksDB wrote in ``path`` (the
    options in effect), or ``{}`` when there is none."""
    best = -1
    name = None
    for n in os.listdir(path):
        if n.startswith("OPTIONS-") and n[8:].isdigit() and int(n[8:]) > best:
            best, name = int(n[8:]), n
    if name is None:
        return {}
    out: dict[str, str] = {}
    with open(os.path.join(path, name), encoding="utf-8", errors="replace") as f:
        for line in f:
            k, sep, v = line.strip().partition("=")
            if sep and k not in out:  # the DBOptions section comes first
                out[k] = v
    return out


def wal_fsync_error(e: OSError, path: str) -> OSError:
    """The failed fsync ``e`` of the WAL file ``path``, as an ``OSError`` of the same errno
    naming the file (``os.fsync`` and the kernel's AIO completion name none)."""
    return OSError(e.errno, f"fsync of the write-ahead log failed: {e.strerror or e}", path)


def wal_numbers(wal_dir: str) -> list[int]:
    """The numbers of the WAL files ``<n>.log`` in ``wal_dir``, ascending."""
    return sorted(int(n[:-4]) for n in os.listdir(wal_dir) if n.endswith(".log") and n[:-4].isdigit())


class WalSyncer:
    """Makes the WAL writes of a RocksDB durable with ``os.fsync`` (which releases the GIL;
    rocksdict's ``sync=True`` write does not). See ``docs/design/durability.md``.

    ``sync()`` must be called by the (one) writing thread after its writes returned. It fsyncs
    every WAL file numbered at least the newest one the previous call fsynced (RocksDB never
    writes to a WAL again once a newer one exists, so older ones are complete and synced), skips
    those deleted meanwhile, and fsyncs the directory when a WAL newer than any seen before
    appeared (its directory entry). Returns ``False`` when no WAL file is found (the caller
    then syncs through RocksDB).

    The cheap path: the newest WAL's file descriptor stays open, and while the directory watch
    (``DirWatch``, made before the first listing) reports no new entry since the last listing,
    no WAL newer than it can exist, so ``sync()`` is one ``os.fsync`` of that descriptor: no
    directory listing, no ``open``/``close``. Any new entry in the directory (a WAL, or any
    other file RocksDB creates) makes the next ``sync()`` list the directory again.
    A failed fsync raises ``OSError`` naming the WAL file (``wal_fsync_error``).

    ``close()`` closes the descriptors."""

    __slots__ = ("wal_dir", "_from", "_dir_synced", "_fd", "_fd_num", "_watch", "fsyncs", "listings", "fd_path")

    def __init__(self, wal_dir: str) -> None:
        self.wal_dir = wal_dir
        # Made before the first listing: every entry created after a listing is reported.
        self._watch = DirWatch(wal_dir)
        self._from = -1  # the newest WAL number fsynced by the last sync()
        self._dir_synced = -1  # the newest WAL number whose directory entry is known durable
        # Invariant: ``_fd`` is an open descriptor of WAL number ``_fd_num`` == ``_from``, or
        # both are -1 (then the next sync() lists the directory).
        self._fd = -1
        self._fd_num = -1
        self.fd_path = ""  # the path of the WAL file ``_fd`` is open on ("": none)
        self.fsyncs = 0
        self.listings = 0  # syncs that listed the directory (for tests and benchmarks)

    def sync(self) -> bool:
        """fsync the WAL files (and the directory) as the class docstring says; ``False``
        when there is no WAL file."""
        # Drain the watch first: an entry created after this point is reported next time.
        changed = self._watch.changed()
        if self._fd >= 0 and not changed:
            self._fsync(self._fd, self.fd_path)
            self.fsyncs += 1
            return True
        return self._sync_listed()

    def _sync_listed(self) -> bool:
        self.listings += 1
        nums = [n for n in wal_numbers(self.wal_dir) if n >= self._from]
        if not nums:
            self._close_fd()
            return False
        newest = nums[-1]
        for n in nums:
            if n == self._fd_num:
                # Still open from an earlier sync (fsyncing it is harmless if RocksDB has
                # deleted the file since).
                self._fsync(self._fd, self.fd_path)
            else:
                path = os.path.join(self.wal_dir, f"{n:06d}.log")
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    # RocksDB deletes a WAL only once every memtable it holds was flushed to SST
                    # files that are synced and recorded in the synced MANIFEST: nothing to do.
                    continue
                try:
                    self._fsync(fd, path)
                except BaseException:
                    os.close(fd)
                    raise
                if n == newest:
                    self._close_fd()
                    self._fd, self._fd_num, self.fd_path = fd, n, path
                else:
                    os.close(fd)
            self.fsyncs += 1
        if self._fd_num != newest:
            self._close_fd()  # only the newest WAL is kept open (none if it was deleted)
        if newest > self._dir_synced:
            fsync_dir(self.wal_dir)
            self._dir_synced = newest
        self._from = newest
        return True

    @property
    def ready(self) -> bool:
        """Whether a descriptor of the newest WAL (as of the last listing) is open."""
        return self._fd >= 0

    def current_fd(self) -> int:
        """The open descriptor of the newest WAL, or -1: for the loop's fast path, called
        after its write returned, while it has the syncer to itself (the writer thread idle).
        It drains the watch: if no entry appeared in the directory since the last listing, the
        write went to that WAL and an fsync of the descriptor covers every write so far; if one
        may have (e.g. the write started a new WAL), the descriptor is dropped, -1 is returned,
        and the next ``sync()`` lists the directory."""
        if self._watch.changed():
            self._close_fd()
        return self._fd

    @staticmethod
    def _fsync(fd: int, path: str) -> None:
        try:
            os.fsync(fd)
        except OSError as e:
            raise wal_fsync_error(e, path) from e

    def _close_fd(self) -> None:
        fd, self._fd, self._fd_num, self.fd_path = self._fd, -1, -1, ""
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """Close the open WAL descriptor and the directory watch; idempotent. A later
        ``sync()`` lists the directory every time."""
        self._close_fd()
        self._watch.close()


def wal_syncer_for(path: str) -> WalSyncer | None:
    """A ``WalSyncer`` for the open database at ``path``, or ``None`` when its assumptions do
    not hold (then the store syncs through RocksDB): Linux, the options RocksDB runs with (its
    newest ``OPTIONS`` file) say the WAL is written to the OS on every write
    (``manual_wal_flush=false``) into fresh files (``recycle_log_file_num=0``), and a WAL
    file is present."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        opts = read_db_options(path)
        if opts.get("manual_wal_flush") != "false" or opts.get("recycle_log_file_num") != "0":
            return None
        wal_dir = opts.get("wal_dir", "").strip().strip('"') or os.path.abspath(path)
        if not os.path.isabs(wal_dir):
            return None
        if not wal_numbers(wal_dir):
            return None
    except OSError:
        return None
    return WalSyncer(wal_dir)
