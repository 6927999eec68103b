"""The local log and its storage writes: IO numbering, append, truncate, purge, commit.

Every storage write gets the next IO number (``next_io``) and an entry in
``IOState.pending``; ``mark_flushed`` retires them when the runtime reports them durable.
Committed entries are never truncated; memberships take effect when appended and are
dropped when truncated (``docs/design/log-pointers.md``, ``docs/design/io-ordering.md``).
"""

from __future__ import annotations

from ..._core import find_payload
from ...errors import Panicked
from ...types import Entry, LogId, Membership, StoredMembership, _entry_log_id, _log_id_index, _log_id_term
from ..command import AppendEntries, PurgeLog, SaveCommittedAndApply, TruncateLog
from .base import Handler


class LogHandler(Handler):
    """Log writes and IO bookkeeping, for every role."""

    __slots__ = ()

    def next_io(self) -> int:
        """Allocate the next storage-write sequence number."""
        io = self.state.io
        io.submitted += 1
        return io.submitted

    def append(self, entries: list[Entry]) -> None:
        """Append ``entries`` (which continue the log) to the log: index, memberships, and an
        ``AppendEntries`` write."""
        st = self.state
        first = _entry_log_id(entries[0])
        last = _entry_log_id(entries[-1])
        term = _log_id_term(first)
        if term == _log_id_term(last):
            st.log_ids.append_term(term, _log_id_index(first), len(entries))
        else:
            st.log_ids.append_many([(e.log_id.term, e.log_id.index) for e in entries])
        # Memberships are rare: one kernel call finds that a batch has none.
        k = find_payload(entries, Membership)
        membership_changed = k >= 0
        while k >= 0:
            e = entries[k]
            st.membership.append(StoredMembership(e.log_id, e.payload))  # type: ignore[arg-type]
            k = find_payload(entries, Membership, k + 1)
        io = self.next_io()
        st.io.pending.append((io, last, None))
        self.output.append(AppendEntries(entries, io))
        if membership_changed:
            self.membership_changed()

    def truncate(self, after_index: int) -> None:
        """Delete every entry after ``after_index``. Committed entries are never deleted."""
        st = self.state
        if after_index < st.committed_index():
            raise Panicked(
                f"node {st.id}: refusing to truncate committed entries: after={after_index} "
                f"committed={st.committed!r}"
            )
        after = st.log_id_at(after_index)
        st.log_ids.truncate_after(after_index)
        before = st.membership.effective
        st.membership.truncate(after_index)
        io = self.next_io()
        st.io.pending.append((io, after, None))
        self.output.append(TruncateLog(after, io))
        if st.membership.effective is not before:
            self.membership_changed()

    def purge(self, upto: LogId) -> None:
        """Delete the entries up to ``upto`` (which a snapshot covers, or which lie beyond the
        log after installing a snapshot) and emit ``PurgeLog``."""
        st = self.state
        st.log_ids.purge(upto.term, upto.index)
        io = self.next_io()
        st.io.pending.append((io, st.last_log_id(), None))
        self.output.append(PurgeLog(upto, io))

    def commit_to(self, index: int, when: int | None = None) -> LogId | None:
        """Advance ``committed`` to ``index`` when that is higher and held in the log:
        promote the memberships it covers and emit ``SaveCommittedAndApply`` waiting on IO
        ``when``. Returns the new committed log id, or ``None`` when nothing changed."""
        st = self.state
        if index <= st.committed_index():
            return None
        committed = st.log_id_at(index)
        if committed is None:
            return None
        st.committed = committed
        before = st.membership.committed
        st.membership.commit(index)
        self.output.append(SaveCommittedAndApply(committed, when=when))
        leader = self.eng.leader
        if st.membership.committed is not before and leader is not None:
            # Nodes removed by the now committed membership get no more entries.
            self.eng.replication_handler(leader).refresh()
        return committed

    def membership_changed(self) -> None:
        """The effective membership changed (appended, truncated or installed): a leader
        re-targets replication and re-counts its quorum; the server state is re-derived."""
        eng = self.eng
        leader = eng.leader
        if leader is not None:
            rh = eng.replication_handler(leader)
            rh.refresh()
            rh.try_commit()
        eng.vote_handler().set_server_state()

    def mark_flushed(self, io: int) -> bool:
        """Every storage write numbered ``<= io`` (``> IOState.flushed``) is durable: retire
        them from ``pending``, advancing ``flushed_log_id`` / ``flushed_vote``. Returns whether
        a vote write was among them."""
        ios = self.state.io
        vote_flushed = False
        pending = ios.pending
        while pending and pending[0][0] <= io:
            _, log_id, vote = pending.popleft()
            if vote is not None:
                ios.flushed_vote = vote
                vote_flushed = True
            else:
                ios.flushed_log_id = log_id
        ios.flushed = io
        return vote_flushed
