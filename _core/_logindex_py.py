"""Log index kernel, the pure-Python reference twin of ``_logindex_c.pyx``.

Two structures over plain data:

- :class:`LogIndex`: the log's ids without payloads, as *key log ids* -- the
  ``(term, first_index)`` of each run of equal terms -- plus the purged log id and the
  last index. Answers ``term_at`` by binary search.
- :class:`EntryCache`: the in-memory tail of recent entry objects by index, which
  replication and apply read without touching storage.

Index conventions (see ``docs/design/log-pointers.md``): indexes are ints ``>= 0``,
``-1`` means "no index". The log holds the half-open-on-the-left range
``(purged_index, last_index]``; ``purged_index`` is ``-1`` when nothing was purged.

Every term, index and count given is an integer in int64 (``[-2**63, 2**63)``), as the
compiled twin stores them: an ``int`` or any object ``operator.index`` takes (an ``int``
subclass, ``bool``, an ``__index__`` object such as a numpy integer), stored as a plain
``int``; never a float (not even ``2.0``: the compiled twin's typed arguments once truncated
one, so ``truncate_after(1.5)`` kept index 1, while this twin stored ``1.5``). Anything else
raises ``operator.index``'s ``TypeError``; an integer outside int64, ``OverflowError``
("<argument> out of the int64 range [-2**63, 2**63)"). Each call converts its integers in
argument order (the pairs of a list in list order, term before index) before it checks or
changes anything, except that :meth:`LogIndex.append_many` and
:meth:`LogIndex.first_conflict` convert each pair when they reach it. A last index that
would pass the int64 ceiling (an append of ``count`` entries at ``2**63 - 2``) is refused
with ``OverflowError`` as well ("last index ... out of the int64 range"), the log
unchanged. Both twins raise the same exception, with the same message, for the same
arguments (``tests/kernels/test_twins_agree.py``).
"""

from __future__ import annotations

import operator
from bisect import bisect_right
from typing import Any

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _as_int64(value: Any, what: str) -> int:
    """``value`` as a plain ``int`` in int64: ``operator.index``'s ``TypeError`` for a
    non-integer, ``OverflowError`` naming ``what`` outside ``[-2**63, 2**63)``. Hot paths
    test ``type(x) is int`` and the range inline, and call this for the rest."""
    v = operator.index(value)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise OverflowError(f"{what} out of the int64 range [-2**63, 2**63)")
    return v


def _pair(pair: Any) -> tuple[Any, Any]:
    """``pair`` unpacked as ``(term, index)``, with Python's own errors for anything that is
    not a pair (the compiled twin calls this for all but an exact 2-tuple)."""
    term, index = pair
    return term, index


def _last_index_error(last: int) -> OverflowError:
    """The error for an append whose last index would be ``last``, past int64."""
    return OverflowError(f"last index {last} out of the int64 range [-2**63, 2**63)")


class LogIndex:
    """Term of every log index, compressed to key log ids.

    Invariants:
    - ``_firsts`` (first index of each term run) and ``_terms`` are parallel lists,
      both strictly increasing; they describe exactly the present entries:
      ``_firsts[0] == purged_index + 1`` when the log is non-empty, and both are empty
      when it is empty.
    - ``purged_index <= _last``; the log is empty iff ``_last == purged_index``.
    - every term is ``>=`` the purged term.
    """

    __slots__ = ("_purged", "_terms", "_firsts", "_last")

    def __init__(
        self,
        purged: tuple[int, int] | None = None,
        key_log_ids: list[tuple[int, int]] | None = None,
        last_index: int = -1,
    ) -> None:
        """Build from storage state.

        ``key_log_ids`` must start at the first present index (``purged_index + 1``, or 0)
        and ``last_index`` must be ``>=`` the last key's index; with no keys the log is
        empty and ``last_index`` must be ``-1`` or the purged index. ``ValueError`` otherwise.
        """
        # Invariant: None or (term, index) of the last purged entry.
        self._purged: tuple[int, int] | None = None
        self._terms: list[int] = []
        self._firsts: list[int] = []
        self._last: int = -1
        # Every integer converted first, in argument order (module docstring).
        p_term, p_index = -1, -1
        if purged is not None:
            p_term = _as_int64(purged[0], "term")
            p_index = _as_int64(purged[1], "index")
        terms: list[int] = []
        firsts: list[int] = []
        for term, index in list(key_log_ids or ()):
            terms.append(_as_int64(term, "term"))
            firsts.append(_as_int64(index, "index"))
        last = _as_int64(last_index, "last_index")
        if purged is not None:
            if p_term < 0 or p_index < 0:
                raise ValueError(f"invalid purged log id {(p_term, p_index)!r}")
            self._purged = (p_term, p_index)
            self._last = p_index
        shown = self._purged
        if not terms:
            if last != -1 and last != p_index:
                raise ValueError(f"last_index {last} without key log ids (purged {shown!r})")
            return
        if firsts[0] != p_index + 1:
            raise ValueError(f"first key log id {(terms[0], firsts[0])!r} does not follow purged index {p_index}")
        prev_term, prev_index = p_term, p_index
        for i, (term, index) in enumerate(zip(terms, firsts)):
            if term < 0 or term < prev_term or (i > 0 and (term == prev_term or index <= prev_index)):
                raise ValueError(f"key log ids not strictly increasing at {(term, index)!r}")
            prev_term, prev_index = term, index
        if last < prev_index:
            raise ValueError(f"last_index {last} before last key log id {(terms[-1], firsts[-1])!r}")
        self._terms = terms
        self._firsts = firsts
        self._last = last

    # -- queries ------------------------------------------------------------------------

    def _purged_index(self) -> int:
        return -1 if self._purged is None else self._purged[1]

    def last(self) -> tuple[int, int] | None:
        """Return the last log id; the purged one if the log is empty; None if neither."""
        if self._terms:
            return (self._terms[-1], self._last)
        return self._purged

    def last_index(self) -> int:
        """Return the index of :meth:`last` (``-1`` if none)."""
        return self._last

    def last_term(self) -> int:
        """Return the term of :meth:`last` (``-1`` if none)."""
        if self._terms:
            return self._terms[-1]
        return -1 if self._purged is None else self._purged[0]

    def first_index(self) -> int:
        """Return the index of the first present entry: ``purged_index + 1`` (0 if none purged)."""
        return self._purged_index() + 1

    def purged(self) -> tuple[int, int] | None:
        """Return the purged log id, or None."""
        return self._purged

    def key_log_ids(self) -> list[tuple[int, int]]:
        """Return ``[(term, first_index), ...]`` of the present entries."""
        return list(zip(self._terms, self._firsts))

    def term_at(self, index: int) -> int:
        """Return the term of the entry at ``index`` (also of the purged log id); ``-1`` if absent."""
        if type(index) is not int or not _INT64_MIN <= index <= _INT64_MAX:
            index = _as_int64(index, "index")
        p = self._purged
        if p is not None and index == p[1]:
            return p[0]
        if index > self._last or not self._firsts or index < self._firsts[0]:
            return -1
        return self._terms[bisect_right(self._firsts, index) - 1]

    def has_log_id(self, term: int, index: int) -> bool:
        """Return whether ``(term, index)`` is present here (or is the purged log id)."""
        if type(term) is not int or type(index) is not int or not (
            _INT64_MIN <= term <= _INT64_MAX and _INT64_MIN <= index <= _INT64_MAX
        ):
            term = _as_int64(term, "term")
            index = _as_int64(index, "index")
        return term >= 0 and self.term_at(index) == term

    def term_first_index(self, term: int) -> int:
        """Return the smallest known index with ``term`` (purged log id included); ``-1`` if none."""
        term = _as_int64(term, "term")
        p = self._purged
        if p is not None and p[0] == term:
            return p[1]
        i = bisect_right(self._terms, term) - 1
        if i >= 0 and self._terms[i] == term:
            return self._firsts[i]
        return -1

    def first_conflict(self, entries: list[tuple[int, int]]) -> int:
        """Return the position of the first of ``entries`` that is not already in this log.

        ``entries`` are ``(term, index)`` in increasing index. An entry is already in the
        log if its index is ``<=`` the purged index (committed), or present with the same
        term. Returns ``len(entries)`` if all are. Each pair is converted when reached (term,
        then index): the pairs after the first conflict are not looked at.
        """
        p_index = self._purged_index()
        pos = 0
        for term, index in entries:
            if type(term) is not int or type(index) is not int or not (
                _INT64_MIN <= term <= _INT64_MAX and _INT64_MIN <= index <= _INT64_MAX
            ):
                term = _as_int64(term, "term")
                index = _as_int64(index, "index")
            if index > p_index and (index > self._last or self.term_at(index) != term):
                return pos
            pos += 1
        return pos

    def __len__(self) -> int:
        return self._last - self._purged_index()

    def __repr__(self) -> str:
        return (
            f"LogIndex(purged={self._purged!r}, key_log_ids={self.key_log_ids()!r}, "
            f"last_index={self._last})"
        )

    # -- mutations ----------------------------------------------------------------------

    def append_term(self, term: int, first_index: int, count: int) -> None:
        """Append ``count`` entries of ``term`` at ``first_index, first_index + 1, ...``.

        ``ValueError`` if ``first_index != last_index() + 1`` (a hole or an overlap), if
        ``term < last_term()``, or if ``count < 0``. ``count == 0`` only validates.
        ``OverflowError`` if the last index, ``first_index + count - 1``, would pass int64.
        """
        if (
            type(term) is not int or type(first_index) is not int or type(count) is not int
            or not (_INT64_MIN <= term <= _INT64_MAX and _INT64_MIN <= first_index <= _INT64_MAX
                    and _INT64_MIN <= count <= _INT64_MAX)
        ):
            term = _as_int64(term, "term")
            first_index = _as_int64(first_index, "first_index")
            count = _as_int64(count, "count")
        if count < 0:
            raise ValueError(f"negative count {count}")
        if first_index != self._last + 1:
            raise ValueError(f"append at {first_index}, expected {self._last + 1}")
        if term < 0 or term < self.last_term():
            raise ValueError(f"append term {term} below last term {self.last_term()}")
        if count == 0:
            return
        last = first_index + count - 1
        if last > _INT64_MAX:
            raise _last_index_error(last)
        if not self._terms or self._terms[-1] != term:
            self._terms.append(term)
            self._firsts.append(first_index)
        self._last = last

    def append_many(self, log_ids: list[tuple[int, int]]) -> None:
        """Append ``(term, index)`` pairs in order, all or nothing (same checks as append_term).

        Each pair is converted (term, then index) and checked in turn; the first refused
        raises, and nothing is appended.
        """
        last, last_term = self._last, self.last_term()
        checked: list[tuple[int, int]] = []
        for term, index in log_ids:
            if type(term) is not int or type(index) is not int or not (
                _INT64_MIN <= term <= _INT64_MAX and _INT64_MIN <= index <= _INT64_MAX
            ):
                term = _as_int64(term, "term")
                index = _as_int64(index, "index")
            if index != last + 1:
                raise ValueError(f"append at {index}, expected {last + 1}")
            if term < 0 or term < last_term:
                raise ValueError(f"append term {term} below last term {last_term}")
            checked.append((term, index))
            last, last_term = index, term
        for term, index in checked:
            if not self._terms or self._terms[-1] != term:
                self._terms.append(term)
                self._firsts.append(index)
        self._last = last

    def truncate_after(self, index: int) -> None:
        """Keep only entries ``<= index``. ``ValueError`` if ``index`` < the purged index."""
        if type(index) is not int or not _INT64_MIN <= index <= _INT64_MAX:
            index = _as_int64(index, "index")
        if index < self._purged_index():
            raise ValueError(f"truncate after {index}, below purged index {self._purged_index()}")
        if index >= self._last:
            return
        keep = bisect_right(self._firsts, index)
        del self._terms[keep:]
        del self._firsts[keep:]
        self._last = index

    def purge(self, term: int, index: int) -> None:
        """Drop entries ``<= index`` and remember ``(term, index)`` as the purged log id.

        A no-op if ``index <=`` the purged index. ``index`` may be beyond the last index
        (after installing a snapshot): the log becomes empty with ``last() == (term, index)``.
        ``ValueError`` if ``(term, index)`` contradicts a present entry, or if ``index`` is
        beyond the last index and ``term < last_term()``.
        """
        if type(term) is not int or type(index) is not int or not (
            _INT64_MIN <= term <= _INT64_MAX and _INT64_MIN <= index <= _INT64_MAX
        ):
            term = _as_int64(term, "term")
            index = _as_int64(index, "index")
        if index <= self._purged_index():
            return
        if term < 0:
            raise ValueError(f"invalid purge term {term}")
        if index <= self._last:
            if self.term_at(index) != term:
                raise ValueError(f"purge {(term, index)!r} but the term there is {self.term_at(index)}")
            i = bisect_right(self._firsts, index)
            if index < self._last and (i == len(self._firsts) or self._firsts[i] != index + 1):
                i -= 1
                self._firsts[i] = index + 1
            del self._terms[:i]
            del self._firsts[:i]
            if index == self._last:
                self._terms.clear()
                self._firsts.clear()
        else:
            if term < self.last_term():
                raise ValueError(f"purge term {term} below last term {self.last_term()}")
            self._terms.clear()
            self._firsts.clear()
            self._last = index
        self._purged = (term, index)


class EntryCache:
    """The in-memory tail of recent entries (opaque objects), addressed by log index.

    Invariants:
    - the cached entries are ``_items[_offset:]`` and have the consecutive indexes
      ``_first, _first + 1, ...``; ``len(self) == len(_items) - _offset``.
    - ``_offset`` is the amortization of :meth:`evict_upto`: the dead prefix is compacted
      once it is larger than the live part.
    """

    __slots__ = ("_items", "_offset", "_first")

    _COMPACT_MIN = 64

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._offset: int = 0
        self._first: int = -1

    def __len__(self) -> int:
        return len(self._items) - self._offset

    def first_index(self) -> int:
        """Return the index of the first cached entry, ``-1`` when empty."""
        return self._first if len(self._items) > self._offset else -1

    def last_index(self) -> int:
        """Return the index of the last cached entry, ``-1`` when empty."""
        n = len(self._items) - self._offset
        return self._first + n - 1 if n else -1

    def append(self, first_index: int, items: list[Any]) -> None:
        """Append ``items`` at ``first_index, first_index + 1, ...``.

        ``first_index`` must be ``last_index() + 1`` unless the cache is empty (then any
        index ``>= 0`` starts it); ``ValueError`` otherwise. ``OverflowError`` if the last
        index, ``first_index + len(items) - 1``, would pass int64 (nothing is appended).
        """
        if type(first_index) is not int or not 0 <= first_index <= _INT64_MAX:
            first_index = _as_int64(first_index, "first_index")
        if first_index < 0:
            raise ValueError(f"negative index {first_index}")
        n = len(self._items) - self._offset
        if n == 0:
            if not items:
                return
            new = list(items)
            if first_index + len(new) - 1 > _INT64_MAX:
                raise _last_index_error(first_index + len(new) - 1)
            self._items = new
            self._offset = 0
            self._first = first_index
            return
        if first_index != self._first + n:
            raise ValueError(f"append at {first_index}, expected {self._first + n}")
        if type(items) is not list:
            items = list(items)
        if first_index + len(items) - 1 > _INT64_MAX:
            raise _last_index_error(first_index + len(items) - 1)
        self._items.extend(items)

    def get(self, start: int, stop: int) -> list[Any]:
        """Return the entries with indexes in ``[start, stop)``, clipped at the last cached one.

        ``[]`` if ``start`` is not cached or ``stop <= start``.
        """
        if type(start) is not int or type(stop) is not int or not (
            _INT64_MIN <= start <= _INT64_MAX and _INT64_MIN <= stop <= _INT64_MAX
        ):
            start = _as_int64(start, "start")
            stop = _as_int64(stop, "stop")
        n = len(self._items) - self._offset
        if n == 0 or start < self._first or start >= self._first + n or stop <= start:
            return []
        base = self._offset - self._first
        end = min(stop, self._first + n)
        return self._items[base + start : base + end]

    def truncate_after(self, index: int) -> None:
        """Drop the cached entries with index ``> index``."""
        if type(index) is not int or not _INT64_MIN <= index <= _INT64_MAX:
            index = _as_int64(index, "index")
        n = len(self._items) - self._offset
        if n == 0 or index >= self._first + n - 1:
            return
        if index < self._first:
            self.clear()
            return
        del self._items[self._offset + index - self._first + 1 :]

    def evict_upto(self, index: int) -> None:
        """Drop the cached entries with index ``<= index`` (amortized O(1) per entry)."""
        if type(index) is not int or not _INT64_MIN <= index <= _INT64_MAX:
            index = _as_int64(index, "index")
        n = len(self._items) - self._offset
        if n == 0 or index < self._first:
            return
        if index >= self._first + n - 1:
            self.clear()
            return
        self._offset += index - self._first + 1
        self._first = index + 1
        if self._offset > self._COMPACT_MIN and self._offset > len(self._items) - self._offset:
            del self._items[: self._offset]
            self._offset = 0

    def clear(self) -> None:
        """Drop everything."""
        self._items = []
        self._offset = 0
        self._first = -1

    def __repr__(self) -> str:
        return f"EntryCache([{self.first_index()}, {self.last_index()}], len={len(self)})"
