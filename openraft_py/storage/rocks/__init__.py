"""Durable storage on RocksDB (via ``rocksdict``): ``RocksLogStore``, the log store.

One store owns one directory; open one path with one store object at a time (RocksDB holds a
lock on it until ``close()``)::

    log = RocksLogStore("/var/lib/app/n1/log")
    sm = RocksStateMachine("/var/lib/app/n1/sm")     # openraft_py.kv.rocks_state_machine
    raft = await Raft.new(1, config, network, log, sm)
    ...
    await raft.shutdown()
    await log.aclose(); await sm.aclose()

Modules, one job each:

- ``log_store``: ``RocksLogStore`` / ``RocksLogReader`` (the ``RaftLogStorage``);
- ``log_format``: the log store's on-disk format (column families, keys, entry records);
- ``group_writer``: the group-commit writer thread; ``wal``: the WAL syncer it uses;
- ``db``: opening a database of ours (options, versioned format marker, foreign and damaged
  databases refused) and the handle hygiene that always releases the RocksDB lock;
- ``ackmark``: the acknowledged mark (``OPENRAFT-ACKED``); ``files``: durable file writes;
- ``damage``: the wording of a damaged store's refusal (``DAMAGED_ADVICE``: what to do);
- ``owner``: the stores' owner record (``check_owner``: whose node and cluster a store is).

The design (group commit, the fsync modes, what a crash leaves, corruption and foreign
databases, closing, event-loop latency): ``docs/design/durability.md``.

``RocksStateMachine`` (the key-value example's state machine) lives in
``openraft_py.kv.rocks_state_machine``; importing it from here still works, for compatibility.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .ackmark import ACK_FILE
from .damage import DAMAGED_ADVICE
from .log_format import LOG_FORMAT
from .log_store import (
    FSYNC_MODES,
    INLINE_READ_MAX,
    INLINE_READ_MAX_BYTES,
    READ_PIECE_MAX_BYTES,
    RocksLogReader,
    RocksLogStore,
)

if TYPE_CHECKING:
    from ...kv.rocks_snapshot import SNAPSHOT_CHUNK_BYTES, SNAPSHOT_MAGIC
    from ...kv.rocks_state_machine import SM_FORMAT, RocksStateMachine

__all__ = [
    "ACK_FILE",
    "DAMAGED_ADVICE",
    "FSYNC_MODES",
    "INLINE_READ_MAX",
    "INLINE_READ_MAX_BYTES",
    "LOG_FORMAT",
    "READ_PIECE_MAX_BYTES",
    "RocksLogReader",
    "RocksLogStore",
    "RocksStateMachine",
    "SM_FORMAT",
    "SNAPSHOT_CHUNK_BYTES",
    "SNAPSHOT_MAGIC",
]

# Names that lived in the former single module ``storage/rocks.py``: old name -> (module, name).
# Resolved on first use, so this package never imports the ``kv`` package on its own.
_MOVED: dict[str, tuple[str, str]] = {
    "RocksStateMachine": ("openraft_py.kv.rocks_state_machine", "RocksStateMachine"),
    "SM_FORMAT": ("openraft_py.kv.rocks_state_machine", "SM_FORMAT"),
    "SNAPSHOT_MAGIC": ("openraft_py.kv.rocks_snapshot", "SNAPSHOT_MAGIC"),
    "SNAPSHOT_CHUNK_BYTES": ("openraft_py.kv.rocks_snapshot", "SNAPSHOT_CHUNK_BYTES"),
    "_MAX_FRAME": ("openraft_py.kv.rocks_snapshot", "_MAX_FRAME"),
    "_dec_any": ("openraft_py.kv.rocks_snapshot", "_dec_any"),
    "_AckMark": ("openraft_py.storage.rocks.ackmark", "AckMark"),
    "_encode_entry_records": ("openraft_py.storage.rocks.log_format", "encode_entry_records"),
    "_GroupWriter": ("openraft_py.storage.rocks.group_writer", "GroupWriter"),
    "_WalSyncer": ("openraft_py.storage.rocks.wal", "WalSyncer"),
    "_wal_numbers": ("openraft_py.storage.rocks.wal", "wal_numbers"),
}


if not TYPE_CHECKING:
    # Hidden from type checkers, which take a module's ``__getattr__`` as declaring every
    # name: a misspelt import (``from openraft_py.storage.rocks import RocksLogStor``) was
    # ``Any`` to ``mypy --strict`` and failed only when run. They see the moved public names
    # imported above.

    def __getattr__(name: str) -> Any:
        """The compatibility names of ``_MOVED`` (PEP 562)."""
        try:
            module, attr = _MOVED[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(module), attr)
