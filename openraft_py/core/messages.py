"""What flows into ``RaftCore``: ``RaftMsg`` (API calls) and notifications (IO done, RPC
replies, ticks). Plain ``__slots__`` classes, and msgspec Structs for the one made per client
write: they are made on the hot path, so they stay as cheap as a tuple; most live for one loop
iteration (a ``ClientWrite`` lives on as its own ``Responder`` until it is answered)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from ..types import AppendEntriesRequest, EntryPayload, LogId, NodeId, Vote, VoteResponse

log = logging.getLogger("openraft_py.core")

# -- RaftMsg: calls from the Raft handle ----------------------------------------------------------


class Responder(msgspec.Struct, eq=False):
    """Clients waiting for the entries ``[first, first + count)``, written in ``term``.

    ``tx`` is a future; it gets one ``ClientWriteResponse`` (``single``) or the list of them.
    A msgspec Struct (one is made per write: its construction is about half a ``__slots__``
    class's ``__init__``) compared and hashed by identity (``eq=False``).
    """

    first: int
    count: int
    term: int
    tx: asyncio.Future[Any]
    single: bool

    def fail(self, err: BaseException) -> None:
        """Answer with ``err`` (unless the caller gave up)."""
        if not self.tx.done():
            self.tx.set_exception(err)


class ClientWrite(Responder):
    """Append ``payloads`` (one entry each); ``tx`` gets the list of responses (or an error)
    once applied. ``single`` means the caller wants the one response, not a list.

    A write is its own ``Responder``: made with ``first`` and ``term`` 0 and ``count`` =
    ``len(payloads)``; once the engine logged its payloads, the core sets ``first`` and
    ``term``, and the same object waits in the apply feed, then the worker (one object per
    write, not two)."""

    payloads: list[EntryPayload]


class ClientWriteOne(Responder):
    """``Raft.client_write``'s message: ``ClientWrite`` for the one ``payload`` (``count``
    1), without a list to hold it (one is made per write). The caller wants the response
    itself (``single``)."""

    payload: EntryPayload


class WriteRun(Responder):
    """The ``ClientWriteOne``s ``writes`` that one pass logged together, at the consecutive
    indexes ``[first, first + count)`` of ``term`` (``count == len(writes)``), waiting as one
    ``Responder``: nothing is stored on each write when it is logged. ``writes[k]``'s entry is
    ``first + k``, and it gets its own ``ClientWriteResponse`` (``tx`` and ``single`` are
    unused: ``tx`` is ``None``; every use of a responder's ``tx`` goes through ``futures`` or
    handles a run by itself).

    A run is cut, never answered whole, where its range is cut: the apply feed hands over
    its head up to a commit index (``split_after``: its first writers do not wait for its
    last entry's commit), a truncation fails its tail (``cut_after``), a snapshot its head
    (``cut_upto``). Invariant: ``count == len(writes) >= 1``.
    """

    writes: list[ClientWriteOne]

    def fail(self, err: BaseException) -> None:
        """Answer every write of the run with ``err`` (unless its caller gave up)."""
        for w in self.writes:
            tx = w.tx
            if not tx.done():
                tx.set_exception(err)

    def futures(self) -> list[Any]:
        """The futures of the run's writers."""
        return [w.tx for w in self.writes]

    def split_after(self, index: int) -> WriteRun:
        """Keep the writes up to ``index`` (``first <= index < first + count - 1``) and
        return a run of the others."""
        k = index + 1 - self.first
        writes = self.writes
        tail = WriteRun(index + 1, self.count - k, self.term, None, False, writes[k:])  # type: ignore[arg-type]
        # (A new list: ``writes`` may be the caller's.)
        self.writes = writes[:k]
        self.count = k
        return tail

    def cut_after(self, index: int, err: BaseException) -> bool:
        """Fail the writes after ``index`` with ``err`` and drop them; whether any is left."""
        if index < self.first:
            self.fail(err)
            return False
        if index < self.first + self.count - 1:
            self.split_after(index).fail(err)
        return True

    def cut_upto(self, index: int, err: BaseException) -> bool:
        """Fail the writes up to ``index`` with ``err`` and drop them; whether any is left."""
        last = self.first + self.count - 1
        if index >= last:
            self.fail(err)
            return False
        if index >= self.first:
            k = index + 1 - self.first
            head = self.writes[:k]
            self.writes = self.writes[k:]
            self.first = index + 1
            self.count -= k
            for w in head:
                w.fail(err)
        return True


def new_run(first: int, term: int, writes: list[ClientWriteOne]) -> WriteRun:
    """The run of ``writes`` logged from ``first`` in ``term`` (at least one)."""
    return WriteRun(first, len(writes), term, None, False, writes)  # type: ignore[arg-type]


def responder_futures(r: Responder) -> list[Any]:
    """The futures of the writers ``r`` answers (one, or a run's)."""
    if type(r) is WriteRun:
        return r.futures()
    return [r.tx]


class EngineCall:
    """Run ``fn(engine, tx, now)`` inside the core (vote/append RPCs, reads, initialize,
    triggers). ``fn`` may raise an ``ApiError``: it is sent to ``tx``."""

    __slots__ = ("fn", "tx")

    def __init__(self, fn: Callable[..., Any], tx: Any) -> None:
        self.fn = fn
        self.tx = tx


class AppendEntriesCall:
    """An AppendEntries RPC from a leader (``Raft.append_entries``, the request already
    validated): the core hands ``req`` to ``Engine.handle_append_entries``, which answers
    ``tx``. A follower gets one per replication request, so it has a message of its own
    instead of an ``EngineCall`` with a closure."""

    __slots__ = ("req", "tx")

    def __init__(self, req: AppendEntriesRequest, tx: asyncio.Future[Any] | Reply) -> None:
        self.req = req
        self.tx = tx


def _answered_already(value: Any) -> None:
    """What a ``Reply`` holds in place of its ``fn`` once answered or cancelled (never
    called: ``_done`` is set)."""


class Reply:
    """A caller's answer slot that calls ``fn`` instead of resolving a future: ``fn(value)``
    with the result, or ``fn(error)`` with the exception, exactly once (``Raft.submit_append_entries``).

    It offers what the core uses of a future (``done``, ``set_result``, ``set_exception``),
    so it goes wherever a caller's future goes. ``fn`` runs where the answer is given: inside
    the core's pass, before the commands after the answer (a transport writes the response
    there, ahead of the state machine's apply of the same pass). ``cancel()`` is the caller
    giving up: ``fn`` is then never called. An exception from ``fn`` is logged and dropped:
    the caller's mistake must not stop the node.

    ``map_error``, if given, is consulted only when an exception is set: ``fn`` then gets
    ``map_error(error)`` (the router's fast mode maps a stopped target's ``Fatal`` to
    ``Unreachable`` there, as ``append_entries`` does), so that the success path calls
    ``fn`` with nothing in between. A ``map_error`` that raises is logged and ``fn`` gets
    the original error."""

    __slots__ = ("fn", "_done", "map_error")

    def __init__(
        self, fn: Callable[[Any], None], map_error: Callable[[BaseException], BaseException] | None = None
    ) -> None:
        self.fn = fn
        self._done = False
        # Long-lived (one per router client), so keeping it after the answer holds nothing
        # the caller would want freed.
        self.map_error = map_error

    def done(self) -> bool:
        """Whether it was answered or cancelled."""
        return self._done

    def cancel(self) -> bool:
        """Give up: ``fn`` will not be called. ``False`` if it was answered already."""
        if self._done:
            return False
        self._done = True
        self.fn = _answered_already
        return True

    def set_result(self, value: Any) -> None:
        """Answer with ``value`` (once; later answers are ignored)."""
        self._call(value)

    def set_exception(self, err: BaseException) -> None:
        """Answer with the error ``err`` (once; later answers are ignored), mapped by
        ``map_error`` if there is one."""
        if self._done:
            return
        map_error = self.map_error
        if map_error is not None:
            try:
                err = map_error(err)
            except Exception:  # a mapper's bug: logged, the caller gets the original error
                log.exception("the reply's error mapper %r failed", map_error)
        self._call(err)

    def _call(self, value: Any) -> None:
        if self._done:
            return
        self._done = True
        # ``fn`` is let go once it has run (or the caller gave up): the node keeps the
        # answered slot among its callers' until it next compacts that set
        # (``RaftCore._track``), and ``fn`` (typically a bound method or a ``partial``
        # holding the caller's state) would live as long, surviving the garbage
        # collector's young generations and making each of its passes longer.
        fn = self.fn
        self.fn = _answered_already
        try:
            fn(value)
        except Exception:  # a caller's bug: logged, the node goes on
            log.exception("the reply callback %r failed", fn)


# -- notifications ---------------------------------------------------------------------------------


class IOCompleted:
    """Storage write ``io`` finished (``error`` set if it failed)."""

    __slots__ = ("io", "error")

    def __init__(self, io: int, error: BaseException | None) -> None:
        self.io = io
        self.error = error


class VoteReply:
    """``target`` answered our vote request."""

    __slots__ = ("target", "resp")

    def __init__(self, target: NodeId, resp: VoteResponse) -> None:
        self.target = target
        self.resp = resp


class Progress:
    """Replication to ``target`` for leader ``session``: an ack of a request sent at
    ``sent_at`` (a snapshot chunk's; the outcomes of ``Replicate`` and ``SendSnapshot`` are
    the engine's ``ReplicationResult`` notes); ``matching`` is set when the follower's log
    matches up to it."""

    __slots__ = ("target", "session", "matching", "sent_at", "has_matching")

    def __init__(self, target: NodeId, session: Vote, matching: LogId | None, sent_at: float, has_matching: bool) -> None:
        self.target = target
        self.session = session
        self.matching = matching
        self.sent_at = sent_at
        self.has_matching = has_matching


class Applied:
    """The state machine applied every entry up to ``log_id``."""

    __slots__ = ("log_id",)

    def __init__(self, log_id: LogId | None) -> None:
        self.log_id = log_id


class SnapshotBuilt:
    """A background snapshot build finished (``meta`` ``None`` if it built nothing)."""

    __slots__ = ("meta",)

    def __init__(self, meta: Any) -> None:
        self.meta = meta


class SnapshotInstalled:
    """The state machine installed the received snapshot ``meta``; ``tx`` awaits the
    answer to the leader."""

    __slots__ = ("meta", "tx")

    def __init__(self, meta: Any, tx: Any) -> None:
        self.meta = meta
        self.tx = tx


class SnapshotRefused:
    """The state machine did not install the received snapshot ``meta`` (``error`` is what
    it raised); ``tx`` awaits the answer to the leader; ``before`` is the last index handed
    to apply before the install was queued."""

    __slots__ = ("meta", "tx", "before", "error")

    def __init__(self, meta: Any, tx: Any, before: int, error: BaseException) -> None:
        self.meta = meta
        self.tx = tx
        self.before = before
        self.error = error


class Tick:
    """The timer fired."""

    __slots__ = ()


class Failed:
    """A task of this node failed fatally (storage error, bug): stop the node."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


TICK = Tick()


def answer(tx: Any, value: Any) -> None:
    """Resolve a caller's future ``tx`` with ``value`` (an exception is raised to it),
    unless the caller gave up (``tx`` is done: cancelled or timed out)."""
    if not tx.done():
        if isinstance(value, BaseException):
            tx.set_exception(value)
        else:
            tx.set_result(value)
