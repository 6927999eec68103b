"""The one wording of a store whose files are damaged on disk, so that every such refusal at
open says the same thing and what to do about it."""

from __future__ import annotations

from ...errors import StorageError

__all__ = ["DAMAGED_ADVICE", "damaged", "damaged_read", "is_rocksdb_corruption"]

DAMAGED_ADVICE = (
    "keep a copy of the directory for inspection and do not delete files to make it open (a node that forgot "
    "what it acknowledged can lose committed writes): replace the node as one that lost its disk "
    "(docs/guides/storage.md, \"A damaged store\")"
)
"""What to do with a damaged store, ending the message of every ``damaged`` error."""


def damaged(path: str, what: str, why: str, cause: BaseException | None = None) -> StorageError:
    """The ``StorageError`` for the store ``what`` ("log store", "state machine") at ``path``
    whose files are damaged: ``why`` says how it was found, ``cause`` is the error that found
    it (RocksDB's names the file, when it names one). The message reads "opening <what> at
    <path>: the database is damaged (<why>); <DAMAGED_ADVICE>: <cause>"."""
    return StorageError(f"opening {what} at {path!r}: the database is damaged ({why}); {DAMAGED_ADVICE}", cause)


def damaged_read(subject: str, cause: BaseException) -> StorageError:
    """The ``StorageError`` for RocksDB's report ``cause`` of damaged data (``is_rocksdb_corruption``)
    met by a read of a store that opened: RocksDB checks at open only the blocks it reads
    then, so a damaged data block of a table file is found by the first read that reaches it.
    ``subject`` says what was read, and where ("reading 'k' from state machine at '<path>'").
    The message reads "<subject>: the database is damaged (...); <DAMAGED_ADVICE>: <cause>",
    as ``damaged``'s at open."""
    return StorageError(
        f"{subject}: the database is damaged (a read met a damaged or missing file, named below); {DAMAGED_ADVICE}",
        cause,
    )


def is_rocksdb_corruption(e: BaseException) -> bool:
    """Whether ``e`` is RocksDB's report of damaged data: a ``Status::Corruption`` (a
    checksum mismatch, a table file of the wrong size or missing, a bad WAL record), whose
    text rocksdict passes on as "Corruption: ..."; or an IO error on one of the database's
    files that is a directory (``_is_a_directory``)."""
    text = str(e)
    return text.startswith("Corruption") or ": Corruption: " in text or _is_a_directory(text)


def _is_a_directory(text: str) -> bool:
    """Whether ``text`` is RocksDB's IO error on a file of the database that is a directory
    (``EISDIR``: "IO error: While reading file sequentially: <db>/IDENTITY: Is a directory",
    "While pread offset ...: <db>/000011.sst: Is a directory"). A table file, ``IDENTITY``
    or a ``MANIFEST`` replaced by a directory (a restore gone wrong, a mistaken ``mkdir``)
    is damage to the database like a removed one, and gets the same advice: it was reported
    as the bare IO error. (The store's own path and its parts are checked to be directories
    before RocksDB sees them, so this names one of RocksDB's files.)"""
    return (text.startswith("IO error: ") or ": IO error: " in text) and text.endswith(": Is a directory")
