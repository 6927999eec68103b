"""The follower side of replication: ``append_entries`` (thesis 3.5, §5.3).

1. Reject a request whose vote is not ``>=`` ours (a stale leader); otherwise adopt it.
2. Consistency check on ``prev_log_id``; on a mismatch reply with a hint for fast back-off.
3. Skip entries already held, truncate at the first conflicting one, append the rest. A
   conflicting entry at or below the committed index is refused (``InvalidRequest``): no
   correct leader sends one, and the log keeps its committed entries.
4. Commit up to ``min(leader_commit, last entry of this request)``.
5. Reply once every write so far (vote and entries) is durable; a heartbeat (no entries)
   is answered once the vote is durable, with the part of its ``prev_log_id`` that is
   durable here (``durable_match``): a follower flushing a multi-megabyte entry still
   answers its leader's heartbeats within the election timeout.
"""

from __future__ import annotations

from typing import Any

from ...errors import InvalidRequest
from ...types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    LogId,
    Vote,
    _append_entries_entries,
    _append_entries_leader_commit,
    _append_entries_prev_log_id,
    _append_entries_vote,
    _entry_log_id,
    _log_id_index,
)
from ..command import Respond
from ..faults import EngineFault
from .base import Handler
from .transfer import announced_handover


class FollowingHandler(Handler):
    """Handlers of requests from a leader, for every role (a leader or candidate that gets
    one from a leader of a vote ``>=`` its own follows it)."""

    __slots__ = ()

    def append_entries(self, req: AppendEntriesRequest, tx: Any, now: float) -> None:
        """Handle an AppendEntries (or heartbeat) from a leader; reply via ``Respond(tx)``."""
        st = self.state
        if not self.accept_leader(_append_entries_vote(req), now):
            self.output.append(Respond(tx, AppendEntriesResponse(st.vote, False)))
            return

        prev = _append_entries_prev_log_id(req)
        if prev is not None and not st.has_log_id(prev):
            last_index = st.last_index()
            prev_index = _log_id_index(prev)
            if prev_index > last_index:
                hint = last_index + 1
            else:
                # Skip the whole conflicting term at once (thesis 5.3 optimization), but never
                # before what is committed: committed entries always match.
                term = st.log_ids.term_at(prev_index)
                hint = max(st.log_ids.term_first_index(term), st.committed_index() + 1)
                hint = min(hint, prev_index)
            self.output.append(
                Respond(tx, AppendEntriesResponse(st.vote, False, conflict_hint=hint), when=st.io.vote_io)
            )
            return

        entries = _append_entries_entries(req)
        if not entries:
            # A heartbeat writes nothing: it is answered at once (once the vote is durable),
            # with the part of ``prev`` held durably here. Waiting for every write under way
            # (a multi-megabyte flush) kept the leader's check-quorum from hearing from us.
            self.output.append(
                Respond(tx, AppendEntriesResponse(st.vote, True, matching=self.durable_match(prev)), when=st.io.vote_io)
            )
            self.commit(_append_entries_leader_commit(req), prev)
            return
        if _log_id_index(_entry_log_id(entries[0])) > st.last_index():
            # The common case, a leader sending what follows our log: nothing overlaps
            # (and the purged index is never past the last), so all are new.
            pos = 0
        else:
            pos = st.log_ids.first_conflict([(e.log_id.term, e.log_id.index) for e in entries])
        if pos < len(entries):
            log = self.eng.log_handler()
            first_new = _log_id_index(_entry_log_id(entries[pos]))
            if first_new <= st.committed_index():
                # An entry that contradicts a committed one: no leader sends it (committed
                # entries are on every later leader), so the sender is broken or not who it
                # claims. Refused and the log kept: truncating would panic
                # (``LogHandler.truncate``), a node stopped by someone else's input.
                self.output.append(Respond(tx, InvalidRequest(
                    "append_entries",
                    f"entry {entries[pos].log_id!r} contradicts committed entry {st.log_id_at(first_new)!r} "
                    f"(node {st.id} committed up to {st.committed!r}): refused, nothing written")))
                return
            if first_new <= st.last_index():
                log.truncate(first_new - 1)
            log.append(entries[pos:] if pos else entries)
        matching = _entry_log_id(entries[-1])  # req.last_log_id(): entries is not empty
        # The answer first: both wait on the same write, and the one emitted first runs first
        # once it is durable; the leader's commit waits on the answer, the apply on nothing.
        self.output.append(
            Respond(tx, AppendEntriesResponse(st.vote, True, matching=matching), when=st.io.submitted)
        )
        self.commit(_append_entries_leader_commit(req), matching)

    def durable_match(self, prev: LogId | None) -> LogId | None:
        """The longest prefix of the leader's log up to ``prev`` (which this log holds: the
        consistency check passed) that is durable here: ``prev`` itself when its entries are
        flushed, else the log id at the last index that is both flushed and not removed by a
        write still under way (a pending truncation), ``None`` when there is none (or it is
        purged). Every entry up to ``prev`` is the leader's (log matching), so the answer
        never makes the leader count an entry that is not durable here; it may be below what
        the leader knows we match, which the leader ignores (``matched`` only grows)."""
        if prev is None:
            return None
        st = self.state
        ios = st.io
        flushed = ios.flushed_log_id
        index = -1 if flushed is None else _log_id_index(flushed)
        for _, log_id, vote in ios.pending:
            if vote is None:  # a log write: what it leaves of the log
                after = -1 if log_id is None else _log_id_index(log_id)
                if after < index:
                    index = after
        if index >= _log_id_index(prev):
            return prev
        return st.log_id_at(index)

    def accept_leader(self, vote: Vote, now: float) -> bool:
        """A request from leader ``vote`` (AppendEntries or a snapshot chunk): refuse it
        (``False``) if ``vote`` is not ``>=`` ours; otherwise adopt the vote, follow that
        leader, note it as seen (unless it announced a handover that has not expired yet,
        ``transfer.py``; named as the leader in any case, ``Engine.current_leader``) and
        restart the election timer."""
        st = self.state
        eng = self.eng
        if vote == st.vote and now - eng.leader_heard_at >= eng.config.election_timeout_max:
            # The first request of the leader we follow after a long silence: what comes
            # next may have waited as long (``Engine.silence_ended_at``).
            eng.silence_ended_at = now
        eng.leader_heard_at = now
        if vote != st.vote:
            if not vote.is_ge(st.vote):
                return False
            eng.vote_handler().update_vote(vote)
        if eng.leader is not None or eng.candidate is not None:
            # A leader of our own vote cannot send us requests; a candidate yields.
            eng.vote_handler().become_following(now)
        if not announced_handover(eng, vote) or eng.transfer_handler().notice_expired(now):
            eng.leader_seen_at = now
        eng.pre_candidate = None  # a live leader: late pre-vote grants must not start an election
        eng.leader_lost = False  # named again (current_leader)
        eng.reset_election_timer(now)
        return True

    def commit(self, leader_commit: LogId | None, matching: LogId | None) -> None:
        """Commit what the leader committed, but only within the part of our log this request
        proved to match the leader's."""
        if matching is None:
            return
        st = self.state
        faults = self.eng.injected_faults
        if faults and EngineFault.APPLY_BEFORE_COMMIT in faults:
            index = matching.index  # the injected bug: apply whatever the leader sent
        elif leader_commit is None:
            return
        else:
            index = min(_log_id_index(leader_commit), _log_id_index(matching))
        # Apply only entries that are durable here: after every write submitted so far (a
        # follower's flushed log id may still name entries a pending truncation removes).
        log = self.eng.log_handler()
        log.commit_to(index, when=st.io.submitted)
