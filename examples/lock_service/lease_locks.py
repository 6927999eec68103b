"""The replicated state of a lock service: leases with fencing tokens, as a Raft state machine.

Commands (``Acquire``, ``Renew``, ``Release``) are msgpack-encoded with ``encode_command`` and
written to the Raft log by the leader. Each carries ``now_ms``, the leader's clock when it
proposed the command: every decision about expiry is made from times recorded in the log,
so every node applying the log reaches the same decision, whatever its own clock says.

- The **fencing token** of a lease is the log index of the entry that granted it. Log indexes
  only grow, so a later grant always has a larger token, on every node and across leader
  changes.
- The state machine's clock (``LockStateMachine.clock_ms``) is the largest ``now_ms`` applied
  so far: a new leader whose clock lags the old one's cannot move time backwards and revive
  an expired lease.
- A lease is live while ``clock < expires_ms``. ``Acquire`` by another holder succeeds only once
  the current lease expired (or was released). Acquiring a lease one already holds extends it
  and keeps its token.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

import msgspec

from openraft_py import Entry, LogId, Membership, Normal, Snapshot, SnapshotMeta, StoredMembership
from openraft_py.storage import EMPTY_STORED_MEMBERSHIP

__all__ = [
    "Acquire",
    "Command",
    "Denied",
    "Granted",
    "Lease",
    "LockStateMachine",
    "Release",
    "Renew",
    "encode_command",
]


class Acquire(msgspec.Struct, frozen=True, tag="acquire"):
    """Take ``lock`` for ``holder`` for ``ttl_ms`` from ``now_ms``. Answer: ``Granted`` or
    ``Denied``."""

    lock: str
    holder: str
    ttl_ms: int
    now_ms: float


class Renew(msgspec.Struct, frozen=True, tag="renew"):
    """Extend ``holder``'s live lease ``token`` on ``lock`` to ``now_ms + ttl_ms``. Answer:
    ``Granted`` (same token) or ``Denied`` (the lease expired or changed hands)."""

    lock: str
    holder: str
    token: int
    ttl_ms: int
    now_ms: float


class Release(msgspec.Struct, frozen=True, tag="release"):
    """Give up lease ``token`` on ``lock``. Answer: ``True`` if that lease was live and is now
    gone, ``False`` otherwise."""

    lock: str
    holder: str
    token: int
    now_ms: float


Command = Acquire | Renew | Release
"""Any lock command."""


class Lease(msgspec.Struct, frozen=True):
    """Who holds a lock, with which fencing token, until when (the log's clock, ms)."""

    holder: str
    token: int
    expires_ms: float


class Granted(msgspec.Struct, frozen=True):
    """The answer to a successful ``Acquire`` or ``Renew``."""

    token: int
    expires_ms: float


class Denied(msgspec.Struct, frozen=True):
    """The answer to a refused ``Acquire`` or ``Renew``: the live lease in the way (``None``
    when there is none, e.g. renewing a lease that expired)."""

    reason: str
    current: Lease | None


class _State(msgspec.Struct):
    """What a snapshot holds."""

    locks: dict[str, Lease]
    clock_ms: float


_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(Command)
_state_decoder = msgspec.msgpack.Decoder(_State)
_SNAPSHOT_MAGIC = b"lease-locks/1\n"

EMPTY_MEMBERSHIP = EMPTY_STORED_MEMBERSHIP
"""The stored membership of a fresh state machine."""


def encode_command(cmd: Command) -> bytes:
    """The log entry data for ``cmd``."""
    return _encoder.encode(cmd)


class _Builder:
    """Builds one snapshot (the whole state, encoded at once: one consistent point)."""

    def __init__(self, sm: LockStateMachine) -> None:
        self._sm = sm

    async def build_snapshot(self) -> Snapshot:
        """Encode the state as of the last applied entry and make it current."""
        return self._sm._build()


class LockStateMachine:
    """The lock table as a ``RaftStateMachine`` (in memory; snapshots in memory too).

    Invariants: ``locks`` holds the leases granted and not released, live or expired (an
    expired lease is replaced by the next ``Acquire``); every ``Lease.token`` is the log index
    that granted it; ``clock_ms`` never decreases.
    """

    def __init__(self) -> None:
        self.locks: dict[str, Lease] = {}
        self.clock_ms: float = 0.0
        self._last_applied: LogId | None = None
        self._membership = EMPTY_MEMBERSHIP
        self._snapshot: tuple[SnapshotMeta, bytes] | None = None
        self._snapshot_seq = 0

    def live_lease(self, lock: str, now_ms: float) -> Lease | None:
        """``lock``'s lease if it is live at ``max(now_ms, clock_ms)``, else ``None``. Local
        state: linearizable only after ``Raft.ensure_linearizable`` on the leader."""
        lease = self.locks.get(lock)
        if lease is None or lease.expires_ms <= max(now_ms, self.clock_ms):
            return None
        return lease

    def _apply_command(self, index: int, cmd: Command) -> Granted | Denied | bool:
        now = self.clock_ms = max(self.clock_ms, cmd.now_ms)
        live = self.live_lease(cmd.lock, now)
        if isinstance(cmd, Acquire):
            if live is not None and live.holder != cmd.holder:
                return Denied(f"held by {live.holder}", live)
            token = live.token if live is not None else index
            lease = self.locks[cmd.lock] = Lease(cmd.holder, token, now + cmd.ttl_ms)
            return Granted(lease.token, lease.expires_ms)
        if isinstance(cmd, Renew):
            if live is None or live.holder != cmd.holder or live.token != cmd.token:
                return Denied("lease lost", live)
            lease = self.locks[cmd.lock] = Lease(cmd.holder, cmd.token, now + cmd.ttl_ms)
            return Granted(lease.token, lease.expires_ms)
        if live is not None and live.holder == cmd.holder and live.token == cmd.token:
            del self.locks[cmd.lock]
            return True
        return False

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)``."""
        return self._last_applied, self._membership

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Apply ``entries``; a lock command answers ``Granted``, ``Denied`` or a bool, other
        entries (and data that is not a command) ``None``."""
        out: list[Any] = []
        for entry in entries:
            payload = entry.payload
            if isinstance(payload, Normal):
                try:
                    cmd = _command_decoder.decode(payload.data)
                except msgspec.DecodeError:
                    out.append(None)  # a committed entry cannot be refused: a no-op
                    continue
                out.append(self._apply_command(entry.log_id.index, cmd))
            else:
                if isinstance(payload, Membership):
                    self._membership = StoredMembership(entry.log_id, payload)
                out.append(None)
        if entries:
            self._last_applied = entries[-1].log_id
        return out

    def _build(self) -> Snapshot:
        data = _SNAPSHOT_MAGIC + _encoder.encode(_State(dict(self.locks), self.clock_ms))
        self._snapshot_seq += 1
        last = self._last_applied
        where = "none" if last is None else f"{last.term}-{last.index}"
        meta = SnapshotMeta(last, self._membership, f"{where}-{self._snapshot_seq}")
        self._snapshot = (meta, data)
        return Snapshot(meta, io.BytesIO(data))

    def get_snapshot_builder(self) -> _Builder:
        """A builder of a snapshot of the current state."""
        return _Builder(self)

    async def begin_receiving_snapshot(self) -> BinaryIO:
        """A new empty in-memory file."""
        return io.BytesIO()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Replace the state with the snapshot's; ``ValueError`` (state kept) if ``data`` is
        not a lock-table snapshot."""
        data.seek(0)
        raw = data.read()
        if not raw.startswith(_SNAPSHOT_MAGIC):
            raise ValueError("not a lock-table snapshot")
        try:
            state = _state_decoder.decode(raw[len(_SNAPSHOT_MAGIC) :])
        except msgspec.DecodeError as e:
            raise ValueError(f"corrupt lock-table snapshot: {e}") from e
        self.locks, self.clock_ms = state.locks, state.clock_ms
        self._last_applied, self._membership = meta.last_log_id, meta.last_membership
        self._snapshot = (meta, raw)

    async def get_current_snapshot(self) -> Snapshot | None:
        """The last snapshot built or installed, or ``None``."""
        if self._snapshot is None:
            return None
        meta, data = self._snapshot
        return Snapshot(meta, io.BytesIO(data))
