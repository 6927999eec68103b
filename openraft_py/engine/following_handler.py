"""The follower side of replication: ``handle_append_entries`` (thesis 3.5, §5.3).

1. Reject a request whose vote is not ``>=`` ours (a stale leader); otherwise adopt it.
2. Consistency check on ``prev_log_id``; on a mismatch reply with a hint for fast back-off.
3. Skip entries already held, truncate at the first conflicting one, append the rest.
4. Commit up to ``min(leader_commit, last entry of this request)``.
5. Reply once every write so far (vote and entries) is durable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..types import AppendEntriesRequest, AppendEntriesResponse, LogId, Vote
from .command import Respond
from .faults import EngineFault

if TYPE_CHECKING:
    from .engine import Engine


class FollowingHandler:
    """Follower handlers, mixed into ``Engine``."""

    def handle_append_entries(self: Engine, req: AppendEntriesRequest, tx: Any, now: float) -> None:
        """Handle an AppendEntries (or heartbeat) from a leader; reply via ``Respond(tx)``."""
        st = self.state
        self.now = now
        if not self.accept_leader(req.vote, now):
            self.output.append(Respond(tx, AppendEntriesResponse(st.vote, False)))
            return

        prev = req.prev_log_id
        if prev is not None and not st.has_log_id(prev):
            last_index = st.last_index()
            if prev.index > last_index:
                hint = last_index + 1
            else:
                # Skip the whole conflicting term at once (thesis 5.3 optimization), but never
                # before what is committed: committed entries always match.
                term = st.log_ids.term_at(prev.index)
                hint = max(st.log_ids.term_first_index(term), st.committed_index() + 1)
                hint = min(hint, prev.index)
            self.output.append(
                Respond(tx, AppendEntriesResponse(st.vote, False, conflict_hint=hint), when=st.io.vote_io)
            )
            return

        entries = req.entries
        if entries:
            pos = st.log_ids.first_conflict([(e.log_id.term, e.log_id.index) for e in entries])
            if pos < len(entries):
                first_new = entries[pos].log_id.index
                if first_new <= st.last_index():
                    self.truncate_local(first_new - 1)
                self.append_local(entries[pos:] if pos else entries)
        matching = req.last_log_id()
        self.follower_commit(req.leader_commit, matching)
        self.output.append(
            Respond(tx, AppendEntriesResponse(st.vote, True, matching=matching), when=st.io.submitted)
        )

    def accept_leader(self: Engine, vote: Vote, now: float) -> bool:
        """A request from leader ``vote`` (AppendEntries or a snapshot chunk): refuse it
        (``False``) if ``vote`` is not ``>=`` ours; otherwise adopt the vote, follow that
        leader, note it as seen (unless it is handing over) and restart the election timer."""
        st = self.state
        if vote != st.vote:
            if not vote.is_ge(st.vote):
                return False
            self.update_vote(vote)
        if self.leader is not None or self.candidate is not None:
            # A leader of our own vote cannot send us requests; a candidate yields.
            self.become_following(now)
        if self.transfer_from is None or self.transfer_from != vote:
            self.leader_seen_at = now
        self.pre_candidate = None  # a live leader: late pre-vote grants must not start an election
        self.reset_election_timer(now)
        return True

    def follower_commit(self: Engine, leader_commit: LogId | None, matching: LogId | None) -> None:
        """Commit what the leader committed, but only within the part of our log this request
        proved to match the leader's."""
        if matching is None:
            return
        st = self.state
        if self.injected_faults and EngineFault.APPLY_BEFORE_COMMIT in self.injected_faults:
            index = matching.index  # the injected bug: apply whatever the leader sent
        elif leader_commit is None:
            return
        else:
            index = min(leader_commit.index, matching.index)
        # Apply only entries that are durable here: after every write submitted so far (a
        # follower's flushed log id may still name entries a pending truncation removes).
        self.commit_to(index, when=st.io.submitted)
