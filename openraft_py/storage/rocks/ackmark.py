"""The acknowledged mark: the end-to-end check that a reopened RocksDB lost no acknowledged
write (``AckMark``, the file ``OPENRAFT-ACKED``). See "Corruption" in
``docs/design/durability.md``."""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib

from rocksdict import Rdict

from ...errors import StorageError
from .damage import damaged
from .files import read_regular_file, replace_durably

__all__ = ["ACK_FILE", "ACK_TMP_FILE", "AckMark", "check_recovered"]

ACK_FILE = "OPENRAFT-ACKED"
"""The file (in the RocksDB directory) holding the acknowledged mark; see ``AckMark``."""

ACK_TMP_FILE = ACK_FILE + ".tmp"
"""The temporary file ``AckMark.create`` writes before renaming it to ``ACK_FILE``."""

_ACK_MAGIC = b"ORPYACK1"
_ACK_MAGIC_PREFIX = b"ORPYACK"  # + the format version, one ASCII digit
_ACK_SLOT = struct.Struct("<8sQQ")  # magic, generation, acknowledged sequence number; + crc32
_ACK_SLOT_SIZE = _ACK_SLOT.size + 4
_ACK_OFFSETS = (0, 512)  # two slots in different disk sectors: a torn write spoils one at most


def _ack_slot(generation: int, seqno: int) -> bytes:
    body = _ACK_SLOT.pack(_ACK_MAGIC, generation, seqno)
    return body + zlib.crc32(body).to_bytes(4, "little")


def _no_valid_slot(raw: bytes) -> str:
    """Why a mark file ``raw`` with no valid slot is refused: written in another format
    version (every slot's magic names the same version, not ours: a newer release's file,
    after a downgrade; a damaged magic leaves the other slot), or corrupted."""
    versions = {raw[off + len(_ACK_MAGIC_PREFIX):off + len(_ACK_MAGIC)] for off in _ACK_OFFSETS
                if raw[off:off + len(_ACK_MAGIC_PREFIX)] == _ACK_MAGIC_PREFIX}
    ours = _ACK_MAGIC[len(_ACK_MAGIC_PREFIX):]
    if len(versions) == 1 and (found := versions.pop()).isdigit() and found != ours:
        newer = found > ours
        return (f"{ACK_FILE} is of format version {found.decode()}, written by "
                f"{'a newer' if newer else 'an older'} version of openraft-py; this version reads format version "
                f"{ours.decode()} only" + (": run the newer version on it (a downgrade is refused)" if newer else ""))
    return f"{ACK_FILE} is corrupted (no valid slot): the acknowledged writes cannot be checked"


class AckMark:
    """The end-to-end check that no acknowledged write was lost: the RocksDB sequence number
    of the last write acknowledged to a caller, kept in ``<db>/OPENRAFT-ACKED``.

    Every RocksDB write gets the next sequence number, and after a reopen
    ``latest_sequence_number()`` is the number of the last write recovered. The writer records
    the number of its group's last write after the group is durable and before it acknowledges
    it (one ``pwrite`` of 28 bytes per group, no fsync); the open checks that the database
    recovered at least that far. Whatever made RocksDB drop acknowledged writes (a corrupted
    record that looked like a cut-off tail, a lost WAL file), the recovered number is then
    smaller and the open raises ``StorageError`` instead of serving a shortened log.

    The file has two slots (offsets 0 and 512: different disk sectors), each ``magic,
    generation, seqno, crc32``, written alternately; the valid slot with the higher generation
    counts, so a write torn by a power loss leaves the previous mark. The mark is recorded only
    after the writes it covers are durable, so even a stale mark (not yet written back after a
    power loss) never claims more than the disk holds: it can only make the check weaker (down
    to the mark last written back; ``close()`` fsyncs it), never raise for writes that were not
    acknowledged. A file whose slots are both invalid is corruption (``StorageError``).
    """

    __slots__ = ("path", "_fd", "generation", "seqno", "_lock")

    def __init__(self, path: str, fd: int, generation: int, seqno: int) -> None:
        self.path = path
        self._fd = fd
        self.generation = generation
        self.seqno = seqno
        self._lock = threading.Lock()  # the state machine records from several threads

    @staticmethod
    def read(db_path: str, what: str) -> tuple[int, int] | None:
        """``(generation, seqno)`` of the mark in ``db_path``, ``None`` when there is no
        file; ``StorageError`` when it is present but unreadable or has no valid slot."""
        path = os.path.join(db_path, ACK_FILE)
        try:
            # (not ``open``: a named pipe there blocked the store's open for good)
            raw = read_regular_file(path, _ACK_OFFSETS[-1] + _ACK_SLOT_SIZE)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"opening {what} at {db_path!r}: reading {ACK_FILE}", e) from e
        best: tuple[int, int] | None = None
        for off in _ACK_OFFSETS:
            slot = raw[off:off + _ACK_SLOT_SIZE]
            if len(slot) != _ACK_SLOT_SIZE or zlib.crc32(slot[:-4]).to_bytes(4, "little") != slot[-4:]:
                continue
            magic, generation, seqno = _ACK_SLOT.unpack(slot[:-4])
            if magic == _ACK_MAGIC and (best is None or generation > best[0]):
                best = (generation, seqno)
        if best is None:
            why = _no_valid_slot(raw)
            if why.startswith(f"{ACK_FILE} is corrupted"):
                raise damaged(db_path, what, f"{ACK_FILE} has no valid slot", ValueError(why))
            raise StorageError(f"opening {what} at {db_path!r}", ValueError(why))  # (another format version)
        return best

    @classmethod
    def open(cls, db_path: str, generation: int, seqno: int) -> AckMark:
        """Open the existing file for recording (the mark read is ``generation, seqno``)."""
        path = os.path.join(db_path, ACK_FILE)
        return cls(path, os.open(path, os.O_RDWR), generation, seqno)

    @classmethod
    def create(cls, db_path: str, seqno: int) -> AckMark:
        """Write a new file holding ``seqno`` in both slots, durably (file and directory),
        and open it for recording. The temporary file is ``OPENRAFT-ACKED.tmp`` (a database
        directory holding only these two files is still a fresh one, see ``open_db``)."""
        data = bytearray(_ACK_OFFSETS[-1] + _ACK_SLOT_SIZE)
        for off in _ACK_OFFSETS:
            data[off:off + _ACK_SLOT_SIZE] = _ack_slot(0, seqno)
        replace_durably(os.path.join(db_path, ACK_FILE), bytes(data), tmp_name=ACK_TMP_FILE)
        return cls.open(db_path, 0, seqno)

    def record(self, seqno: int) -> None:
        """Every write up to ``seqno`` is durable (for the log store with ``sync=False``:
        written to the OS); record it, in the slot not holding the current mark. A ``seqno``
        not beyond the mark is a no-op (no system call).

        Raises ``FileNotFoundError`` naming the file when it was deleted while open (its
        link count is 0): the database directory was removed (``rm -rf``) under the running
        store, whose writes still succeed into files that no longer have a name, and the
        next start would find none of them. So the writes are not acknowledged."""
        if seqno <= self.seqno:
            return
        with self._lock:
            if seqno <= self.seqno:
                return
            if os.fstat(self._fd).st_nlink == 0:
                raise FileNotFoundError(
                    errno.ENOENT,
                    "the acknowledged mark was deleted while the store is open (the database directory was "
                    "removed?): what is written now would not be there at the next start",
                    self.path,
                )
            generation = self.generation + 1
            try:
                os.pwrite(self._fd, _ack_slot(generation, seqno), _ACK_OFFSETS[generation & 1])
            except OSError as e:
                raise OSError(e.errno, f"recording the acknowledged mark failed: {e.strerror or e}", self.path) from e
            self.generation = generation
            self.seqno = seqno

    def sync(self) -> None:
        """fsync the file (at a clean close, so the mark survives a power loss)."""
        with self._lock:
            try:
                os.fsync(self._fd)
            except OSError as e:
                raise OSError(e.errno, f"fsync of the acknowledged mark failed: {e.strerror or e}", self.path) from e

    def close(self) -> None:
        """Close the file descriptor; idempotent."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def check_recovered(db: Rdict, mark: tuple[int, int], path: str, what: str) -> None:
    """``StorageError`` when the database recovered fewer writes than were acknowledged."""
    recovered = db.latest_sequence_number()
    if recovered < mark[1]:
        raise damaged(
            path, what, "writes it acknowledged are missing",
            RuntimeError(
                f"acknowledged writes are missing: writes up to sequence number {mark[1]} were "
                f"acknowledged ({ACK_FILE}) but the database recovered only up to {recovered} "
                f"(a corrupted or lost write-ahead log; RocksDB dropped what it took for a torn tail)"
            ),
        )
