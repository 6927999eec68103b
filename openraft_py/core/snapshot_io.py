"""Snapshot file operations for the runtime: in-memory files are used inline, real files
(``RaftStateMachine`` may hand out temporary files) in a worker thread, so the event loop
never waits on the disk."""

from __future__ import annotations

import asyncio
import inspect
import io
from collections.abc import Callable
from typing import Any, TypeVar

from ..types import LogId, Snapshot, SnapshotMeta

T = TypeVar("T")

STATE_MACHINE_REFUSED = "the state machine refused snapshot"
"""The words of the error a node answers the last chunk of a snapshot with when its state
machine refused the snapshot (``Snapshots.refused``). The leader tells that refusal, worth a
WARNING, from its other answers to a chunk by them: a transfer the node lost (it restarted
after the last chunk arrived, before it answered: "chunk at offset N but nothing received")
is an ordinary recovery, said at INFO."""


async def build_snapshot(state_machine: Any) -> Any:
    """What ``state_machine.get_snapshot_builder().build_snapshot()`` gives once awaited
    (unchecked: ``check_snapshot`` is the caller's). ``TypeError`` naming the method when
    the builder has no callable ``build_snapshot``, or that method returns something that
    cannot be awaited (a plain ``def build_snapshot``, which ``Raft.new`` cannot see: the
    builder is made at each build): they failed with "object NoneType can't be used in
    'await' expression" or an ``AttributeError``, naming no plug-in. A returned value that
    is not awaitable is closed when it is a file-like object with ``close``, or a
    ``Snapshot`` whose ``data`` has one (nothing else will)."""
    builder = state_machine.get_snapshot_builder()
    build = getattr(builder, "build_snapshot", None)
    if not callable(build):
        raise TypeError(
            f"RaftStateMachine.get_snapshot_builder returned {type(builder).__name__} {builder!r:.80}, "
            "expected an object with an async def build_snapshot()"
        )
    pending = build()
    if not inspect.isawaitable(pending):
        close_quietly(pending.data if isinstance(pending, Snapshot) else pending)
        raise TypeError(
            f"SnapshotBuilder.build_snapshot must be a coroutine function (async def): "
            f"{type(builder).__name__}.build_snapshot() returned {type(pending).__name__} {pending!r:.80}, "
            "which cannot be awaited"
        )
    return await pending


def check_snapshot(snap: Any, what: str, readable: bool = False) -> None:
    """``TypeError`` naming ``what`` (the state machine method) unless ``snap`` is a
    ``Snapshot`` whose ``meta`` is a ``SnapshotMeta`` and, with ``readable`` (a snapshot to
    send), whose ``data`` is a file (has ``read`` and ``seek``). A state machine that
    returned something else used to stop its node with ``Panicked`` and an
    ``AttributeError`` about ``.data``, ``.meta`` or ``.seek``."""
    if not isinstance(snap, Snapshot):
        raise TypeError(f"{what} returned {type(snap).__name__} {snap!r:.80}, expected a Snapshot")
    if not isinstance(snap.meta, SnapshotMeta):
        # (It is a Snapshot: say what its meta should be, not that it should be a Snapshot.)
        raise TypeError(
            f"{what} returned a Snapshot whose meta is {type(snap.meta).__name__} {snap.meta!r:.80}, "
            "expected a SnapshotMeta"
        )
    data = snap.data
    if readable and not (callable(getattr(data, "read", None)) and callable(getattr(data, "seek", None))):
        raise TypeError(f"{what} returned a Snapshot whose data is {type(data).__name__}, expected a binary file")


def check_receiving_file(f: Any, what: str) -> None:
    """``TypeError`` naming ``what`` (the state machine method) unless ``f`` is a file a
    received snapshot can be written into: open, not a text file, with callable ``write``,
    ``seek`` and ``truncate`` (``write_at``, ``finish``; its ``close``, when it has one, is
    called when done), what the contract names (``RaftStateMachine.begin_receiving_snapshot``):
    not ``read``, which the node never calls on it (a state machine's ``install_snapshot``
    may read what was written elsewhere; one that reads ``data`` fails there, naming it).
    ``None`` (a forgotten ``return``), a text file, a closed one or one opened read-only
    stopped the node at the first chunk with what the write hit ("'NoneType' object has no
    attribute 'seek'", "string argument expected, got 'bytes'", "I/O operation on closed
    file.", "UnsupportedOperation: write"), naming neither the method nor what it must
    return. Read-only is known only from a ``writable()`` that returns ``False`` (an ``io``
    file's): a duck-typed file without one, or whose ``writable()`` raises or is an
    ``async def`` (``_says_unwritable``), is taken.

    A refused file that is open is closed first (``close_quietly``: a failing ``close`` of
    the plug-in's neither hides the refusal nor replaces it): nothing else will (its node
    stops), and a text-mode temporary file kept its descriptor until the garbage collector
    found it."""
    if isinstance(f, io.TextIOBase):
        got = f"a text file ({type(f).__name__})"
    elif not all(callable(getattr(f, m, None)) for m in ("write", "seek", "truncate")):
        got = f"{type(f).__name__} {f!r:.80}"
    elif getattr(f, "closed", False) is True:
        raise TypeError(f"{what} returned a closed file ({type(f).__name__}), expected a writable binary file object")
    elif _says_unwritable(f):
        got = f"a read-only file ({type(f).__name__})"
    else:
        return
    close_quietly(f)
    raise TypeError(f"{what} returned {got}, expected a writable binary file object")


def _says_unwritable(f: Any) -> bool:
    """Whether the open file ``f`` says it cannot be written (its ``writable()`` returns
    ``False``: an ``io`` file opened for reading only). ``False`` when it has no
    ``writable``, or looking it up or calling it raises (a property that cannot answer
    included: it raised out of ``getattr``, and the node stopped on a file the contract
    takes): a duck-typed file the contract does not ask it of. A ``writable`` that is an
    ``async def`` cannot answer either (a file's calls are synchronous): its coroutine is
    closed, unawaited (left alone, it warned "coroutine ... was never awaited" at every
    transfer)."""
    try:
        writable = getattr(f, "writable", None)
        if not callable(writable):
            return False
        answer = writable()
    except Exception:  # noqa: BLE001 - it cannot tell: taken, as one without the method
        return False
    if inspect.iscoroutine(answer):
        answer.close()
        return False
    return answer is False


def check_built_meta(meta: SnapshotMeta, state: Any, what: str, installing: SnapshotMeta | None = None) -> None:
    """``ValueError`` naming ``what`` (the state machine method) unless the last log id of a
    snapshot the node's own state machine built is one the node has applied or is applying:
    ``None``, or a ``LogId`` the log holds (or at or before its purged id) at an index at
    most ``committed``, or the last log id of ``installing`` (the engine's
    ``snapshot_installing``, the leader's snapshot being installed). (``state`` is the
    engine's ``RaftState``.) The index may be past ``applied``: the builder saw an apply
    whose report has not arrived yet, or an install that returned whose report has not:
    the engine moves its log and ``committed`` to an installed snapshot only then (a build
    runs concurrently with an install too, and stopped the node for a correct state). A builder that
    wrote its meta from the wrong numbers (the current term for the entry's, an index past
    the log) was taken at its word: the node recorded a snapshot of ``0-21`` beside an applied
    ``1-21`` (``snapshot <= applied`` broken), and would hand it to followers as a state its
    log does not continue."""
    last = meta.last_log_id
    if last is None:
        return
    if type(last) is not LogId:
        raise TypeError(f"{what} returned a snapshot whose last log id is {type(last).__name__} {last!r:.80}, expected a LogId or None")
    if last.index <= state.committed_index() and state.has_log_id(last):
        return
    if installing is not None and last == installing.last_log_id:
        return
    held = state.log_id_at(last.index) if last.index <= state.last_index() else None
    raise ValueError(
        f"{what} returned a snapshot of last log id {last!r}, which this node has not applied: its log "
        f"holds {'nothing' if held is None else held} at index {last.index}, committed up to {state.committed!r}, "
        "applied up to "
        f"{state.applied!r} (a snapshot's meta names the last entry its data includes, with that entry's term)"
    )


def chunk_bytes(buf: Any) -> bytes:
    """What a snapshot file's ``read`` returned, as ``bytes`` (a ``bytearray`` or
    ``memoryview`` is copied); ``TypeError`` for anything else: a file opened in text mode
    reads ``str``, which every follower would refuse, at every resend."""
    if isinstance(buf, (bytearray, memoryview)):
        return bytes(buf)
    raise TypeError(f"the snapshot file's read returned {type(buf).__name__}, expected bytes (a file opened in binary mode)")


def size(f: Any) -> int:
    """The length of ``f`` in bytes; leaves it positioned at 0."""
    f.seek(0, io.SEEK_END)
    n: int = f.tell()
    f.seek(0)
    return n


def read_at(f: Any, offset: int, n: int) -> bytes:
    """Up to ``n`` bytes of ``f`` from ``offset``. Raises ``EOFError`` when ``n > 0`` and
    nothing is left there: the file is shorter than when its ``size`` was taken (changed
    while it was being sent). A sender reading on used to send empty chunks for good."""
    f.seek(offset)
    data: bytes = f.read(n)
    if n > 0 and not data:
        raise EOFError(f"the snapshot file ends at byte {offset}: it became shorter while it was being sent")
    return data


def named(f: Any) -> str:
    """`` 'path'`` for a file whose ``name`` is a path (a real file), else ``""``: for the
    subject of a ``StorageError``, since a failed read or write of an open file names none
    (a full disk's ``ENOSPC``, a bad sector's ``EIO``: the node said only "OSError: [Errno
    28] No space left on device")."""
    name = getattr(f, "name", None)
    return f" {name!r}" if isinstance(name, str) else ""


def write_at(f: Any, offset: int, data: bytes) -> None:
    """Write ``data`` into ``f`` at ``offset``."""
    f.seek(offset)
    f.write(data)


def finish(f: Any, length: int) -> None:
    """Cut ``f`` to ``length`` bytes and rewind it for reading."""
    f.truncate(length)
    f.seek(0)


async def call(f: Any, fn: Callable[..., T], *args: Any) -> T:
    """``fn(f, *args)``: inline for an ``io.BytesIO``, in a worker thread otherwise."""
    if isinstance(f, io.BytesIO):
        return fn(f, *args)
    return await asyncio.to_thread(fn, f, *args)


def close_quietly(f: Any) -> None:
    """Close ``f`` (a file we are done with), ignoring errors: also one raised by looking
    ``close`` up (a snapshot's ``data`` is the state machine's object)."""
    try:
        close = getattr(f, "close", None)
        if close is not None:
            close()
    except Exception:  # noqa: BLE001 - nothing to do about a failed close
        pass
