"""Builders for engine unit tests: ``make_engine`` and short constructors.

``make_engine`` builds ``RaftState`` + ``Engine`` directly, the way ``openraft_py.raft``
``core.restore.restore_state`` does from storage, so a test can start from any state without running
the protocol to get there::

    eng = make_engine(id=1, voters={1, 2, 3}, log=[(0, 0), (1, 1)], vote=(1, 2, True))
    eng.handle_vote_req(VoteRequest(vote(2, 3), lid(1, 1)), "tx", now=0.0)
    assert eng.take_commands() == [SaveVote(vote(2, 3), 1), Respond("tx", ..., when=1)]

Conventions:

- ``log`` lists the ``(term, index)`` of every entry, from index 0. The entry at ``(0, 0)``
  is the membership entry ``Raft.initialize`` writes; when the log holds it, the committed
  ``StoredMembership`` is recorded at ``LogId(0, 0)`` (else at ``None``).
- Storage writes emitted by a handler are durable only after ``eng.handle_io_flushed(io)``;
  ``flush(eng)`` marks every submitted write flushed.
- ``make_leader`` leaves each target's first probe in flight (no ``Replicate`` goes out to
  it until a result frees the slot); ``make_idle_leader`` answers them, so the next request
  to every target shows in the commands.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from openraft_py._core import LogIndex
from openraft_py.config import Config
from openraft_py.engine import (
    Command,
    Engine,
    Matched,
    MembershipState,
    RaftState,
    Replicate,
)
from openraft_py.types import (
    EMPTY_STORED_MEMBERSHIP,
    BasicNode,
    Entry,
    EntryPayload,
    LogId,
    Membership,
    Normal,
    StoredMembership,
    Vote,
    VoteResponse,
)

TX = "tx"
"""The opaque responder tests pass to handlers; ``Respond.tx`` carries it back."""


def lid(term: int, index: int) -> LogId:
    """``LogId(term, index)``."""
    return LogId(term, index)


def vote(term: int, node: int, committed: bool = False) -> Vote:
    """``Vote(LeaderId(term, node), committed)``."""
    return Vote.new(term, node, committed)


def ent(term: int, index: int, payload: bytes | EntryPayload = b"x") -> Entry:
    """An entry at ``(term, index)``; ``bytes`` become a ``Normal`` payload."""
    p = Normal(payload) if isinstance(payload, bytes) else payload
    return Entry(LogId(term, index), p)


def ents(*log_ids: tuple[int, int]) -> list[Entry]:
    """``[ent(t, i) for (t, i) in log_ids]``."""
    return [ent(t, i) for t, i in log_ids]


def membership(voters: set[int] | Sequence[set[int]] = (1, 2, 3), learners: Iterable[int] = ()) -> Membership:
    """A uniform membership from a set of voters, or a joint one from a list of sets."""
    if isinstance(voters, (set, frozenset)):
        configs = [set(voters)] if voters else []
    else:
        configs = [set(c) for c in voters]
    nodes = {n: BasicNode() for c in configs for n in c}
    nodes.update({n: BasicNode() for n in learners})
    return Membership.new(configs, nodes)


def _as_vote(v: Vote | tuple[int, ...]) -> Vote:
    if isinstance(v, Vote):
        return v
    term, node, *rest = v
    return Vote.new(term, node, bool(rest[0]) if rest else False)


def make_log_index(log: Sequence[tuple[int, int]]) -> LogIndex:
    """The ``LogIndex`` of consecutive ``(term, index)`` ids starting at index 0."""
    keys: list[tuple[int, int]] = []
    for i, (term, index) in enumerate(log):
        assert index == i, f"log ids must be consecutive from index 0, got {list(log)!r}"
        if not keys or keys[-1][0] != term:
            keys.append((term, index))
    return LogIndex(None, keys, len(log) - 1)


def make_engine(
    id: int = 1,
    voters: set[int] | Sequence[set[int]] = frozenset({1, 2, 3}),
    learners: Iterable[int] = (),
    log: Sequence[tuple[int, int]] = ((0, 0),),
    vote: Vote | tuple[int, ...] = (0, 0, False),
    committed: LogId | tuple[int, int] | None = None,
    now: float = 0.0,
    seed: int = 0,
    config: Config | None = None,
) -> Engine:
    """Build a follower (or learner) engine with the given persisted state.

    ``voters`` is a set (uniform config) or a list of sets (joint config); empty means the
    pristine node's empty membership. ``vote`` is a ``Vote`` or ``(term, node[,
    committed])``. The engine's IO counters start at 0 with everything flushed.
    """
    m = membership(voters, learners)
    has_membership_entry = bool(log) and tuple(log[0]) == (0, 0)
    if not m.configs and not m.nodes:
        sm = EMPTY_STORED_MEMBERSHIP
    else:
        sm = StoredMembership(LogId(0, 0) if has_membership_entry else None, m)
    if isinstance(committed, tuple):
        committed = LogId(*committed)
    state = RaftState(id, _as_vote(vote), make_log_index(log), committed, MembershipState(sm))
    return Engine(config or Config(), state, random.Random(seed), now)


def flush(eng: Engine) -> None:
    """Mark every storage write submitted so far as durable."""
    eng.handle_io_flushed(eng.state.io.submitted)


def make_leader(
    id: int = 1,
    voters: set[int] | Sequence[set[int]] = frozenset({1, 2, 3}),
    log: Sequence[tuple[int, int]] = ((0, 0),),
    vote: Vote | tuple[int, ...] = (0, 0, False),
    now: float = 0.0,
    **kw: Any,
) -> Engine:
    """An engine that won an election at ``now`` (term ``vote.term + 1``) with the grants of
    the fewest other voters needed, its blank entry appended and everything flushed; the
    commands emitted on the way are discarded. Each target's first probe (the blank entry)
    is in flight, unanswered: its window is full until a result frees it."""
    return _elect(id, voters, log, vote, now, **kw)[0]


def make_idle_leader(
    id: int = 1,
    voters: set[int] | Sequence[set[int]] = frozenset({1, 2, 3}),
    log: Sequence[tuple[int, int]] = ((0, 0),),
    vote: Vote | tuple[int, ...] = (0, 0, False),
    now: float = 0.0,
    **kw: Any,
) -> Engine:
    """``make_leader`` whose targets all answered their probe at ``now`` holding the leader's
    whole log: the blank entry is committed, nothing is in flight and every target is
    pipelining, so the next request to each shows in the commands. Commands discarded."""
    eng, cmds = _elect(id, voters, log, vote, now, **kw)
    session = eng.state.vote
    for c in cmds:
        if isinstance(c, Replicate):
            matching = eng.state.log_id_at(c.end - 1)
            eng.handle_replication_result(Matched(c.target, session, c.gen, matching, now))
    flush(eng)
    eng.take_commands()
    assert eng.state.committed == eng.state.last_log_id(), "make_idle_leader: blank entry not committed"
    return eng


def _elect(
    id: int,
    voters: set[int] | Sequence[set[int]],
    log: Sequence[tuple[int, int]],
    vote: Vote | tuple[int, ...],
    now: float,
    **kw: Any,
) -> tuple[Engine, list[Command]]:
    """The leader of ``make_leader`` and the commands it emitted after its election."""
    eng = make_engine(id=id, voters=voters, log=log, vote=vote, now=now, **kw)
    eng.elect(now)
    flush(eng)
    v = eng.state.vote
    for peer in sorted(eng.state.effective_membership().voter_ids() - {id}):
        if eng.leader is not None:
            break
        eng.handle_vote_resp(peer, VoteResponse(v, True, None), now)
    assert eng.leader is not None, "make_leader: election not won"
    flush(eng)
    return eng, eng.take_commands()
