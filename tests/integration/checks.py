"""Invariant checks over the nodes' ``MemDisk``s, and the fast test config, shared by the
integration tests (``from integration.checks import ...``)."""

from __future__ import annotations

from openraft_py import Config, SnapshotPolicy
from openraft_py.storage.memory import MemDisk
from openraft_py.types import LogId, Normal


def fast_config(**kw: object) -> Config:
    """Short timeouts so elections take tens of milliseconds; snapshots off (the checks read
    whole logs)."""
    base: dict[str, object] = dict(
        election_timeout_min=50,
        election_timeout_max=100,
        heartbeat_interval=15,
        snapshot_policy=SnapshotPolicy.never(),
    )
    base.update(kw)
    return Config(**base)  # type: ignore[arg-type]


def log_of(disk: MemDisk) -> dict[int, object]:
    """``index -> entry`` of the entries held on ``disk``."""
    return {disk.offset + i: e for i, e in enumerate(disk.entries)}


def entry_at(disk: MemDisk, index: int) -> object | None:
    """The entry at ``index`` on ``disk`` or ``None`` (not held)."""
    i = index - disk.offset
    if 0 <= i < len(disk.entries):
        return disk.entries[i]
    return None


def holds(disk: MemDisk, log_id: LogId, data: bytes) -> bool:
    """Whether ``disk``'s log holds the Normal entry ``(log_id, data)``."""
    e = entry_at(disk, log_id.index)
    return e is not None and e.log_id == log_id and type(e.payload) is Normal and e.payload.data == data  # type: ignore[attr-defined]


def check_log_matching(disks: dict[int, MemDisk]) -> None:
    """Log matching: if two logs hold an entry with the same log id, every earlier entry both
    hold is identical."""
    ids = sorted(disks)
    for ai, a in enumerate(ids):
        for b in ids[ai + 1 :]:
            da, db = disks[a], disks[b]
            lo = max(da.offset, db.offset)
            hi = min(da.offset + len(da.entries), db.offset + len(db.entries))
            # the highest common index whose log ids agree
            top = -1
            for i in range(hi - 1, lo - 1, -1):
                if da.entries[i - da.offset].log_id == db.entries[i - db.offset].log_id:
                    top = i
                    break
            for i in range(lo, top + 1):
                ea, eb = da.entries[i - da.offset], db.entries[i - db.offset]
                assert ea == eb, (
                    f"log matching violated: n{a} and n{b} agree at index {top} "
                    f"({da.entries[top - da.offset].log_id!r}) but differ at {i}: {ea!r} vs {eb!r}"
                )


def check_applied_prefix(disks: dict[int, MemDisk]) -> None:
    """State machine safety: every node's ``applied_log`` is a prefix of the longest one."""
    ids = sorted(disks, key=lambda n: len(disks[n].applied_log), reverse=True)
    longest = disks[ids[0]].applied_log
    for n in ids[1:]:
        al = disks[n].applied_log
        if al != longest[: len(al)]:
            k = next(i for i, (x, y) in enumerate(zip(al, longest)) if x != y)
            raise AssertionError(
                f"state machine safety violated: n{n} applied {al[k]!r} at position {k}, "
                f"n{ids[0]} applied {longest[k]!r}"
            )
