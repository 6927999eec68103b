"""The pure twins and the compiled kernels give the same outcome, result or exception type and
message, for the edge cases of their contracts: empty input, the ends of the ranges, refused
arguments. A table of calls, each made on both builds and compared (so these need the
compiled kernels: ``c_extension``). The other kernel tests check each build against the
expected values; this one catches a twin that drifts from the other where no test states a
value (an error message reworded in one, an edge answered differently)."""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.c_extension

Call = Callable[[Any], Any]


def _outcome(call: Call, suffix: str) -> tuple[Any, ...]:
    ns = {k: importlib.import_module(f"openraft_py._core._{k}_{suffix}") for k in ("codec", "kv", "logindex", "quorum")}
    try:
        return ("ok", call(ns))
    except Exception as exc:  # noqa: BLE001 (the exception is the outcome compared)
        return (type(exc).__name__, str(exc))


def _logindex(ns: Any, meth: str, *args: Any) -> tuple[Any, ...]:
    li = ns["logindex"].LogIndex(None, [(1, 0), (3, 4)], 9)
    result = getattr(li, meth)(*args)
    return result, repr(li), li.last(), li.purged(), li.key_log_ids(), li.first_index(), len(li)


def _cache(ns: Any, *ops: tuple[str, tuple[Any, ...]]) -> tuple[Any, ...]:
    c = ns["logindex"].EntryCache()
    results = [getattr(c, meth)(*args) for meth, args in ops]
    return results, len(c), repr(c)


CASES: dict[str, Call] = {
    # LogIndex: the constructor's refusals and the edges of each method.
    "logindex-empty": lambda ns: repr(ns["logindex"].LogIndex()),
    "logindex-purged-only": lambda ns: repr(ns["logindex"].LogIndex((1, 5), [], 5)),
    "logindex-last-before-purged": lambda ns: ns["logindex"].LogIndex((1, 5), [], 4),
    "logindex-bad-purged": lambda ns: ns["logindex"].LogIndex((0, -1), [], -1),
    "logindex-keys-not-increasing": lambda ns: ns["logindex"].LogIndex(None, [(1, 0), (1, 3)], 5),
    "logindex-last-without-keys": lambda ns: ns["logindex"].LogIndex(None, [], 3),
    "logindex-last-before-key": lambda ns: ns["logindex"].LogIndex(None, [(2, 0), (3, 5)], 4),
    "term_at-before-first": lambda ns: _logindex(ns, "term_at", -1),
    "term_at-past-last": lambda ns: _logindex(ns, "term_at", 100),
    "term_first_index-absent": lambda ns: _logindex(ns, "term_first_index", 2),
    "term_first_index-past": lambda ns: _logindex(ns, "term_first_index", 99),
    "first_conflict-empty": lambda ns: _logindex(ns, "first_conflict", []),
    "first_conflict-past-last": lambda ns: _logindex(ns, "first_conflict", [(1, 0), (3, 4), (4, 100)]),
    "append_term-none": lambda ns: _logindex(ns, "append_term", 3, 10, 0),
    "append_term-negative": lambda ns: _logindex(ns, "append_term", 3, 10, -1),
    "append_term-gap": lambda ns: _logindex(ns, "append_term", 3, 11, 1),
    "append_term-lower-term": lambda ns: _logindex(ns, "append_term", 2, 10, 1),
    "append_many-empty": lambda ns: _logindex(ns, "append_many", []),
    "append_many-gap": lambda ns: _logindex(ns, "append_many", [(3, 11)]),
    "append_many-lower-term": lambda ns: _logindex(ns, "append_many", [(2, 10)]),
    "truncate_after-all": lambda ns: _logindex(ns, "truncate_after", -1),
    "truncate_after-below": lambda ns: _logindex(ns, "truncate_after", -2),
    "truncate_after-past-last": lambda ns: _logindex(ns, "truncate_after", 100),
    "purge-wrong-term": lambda ns: _logindex(ns, "purge", 1, 5),
    "purge-negative-term": lambda ns: _logindex(ns, "purge", -1, 5),
    "purge-past-last": lambda ns: _logindex(ns, "purge", 3, 20),
    "purge-past-last-lower-term": lambda ns: _logindex(ns, "purge", 2, 20),
    "purge-first": lambda ns: _logindex(ns, "purge", 1, 0),
    # EntryCache.
    "cache-empty": lambda ns: _cache(ns, ("get", (0, 10)), ("first_index", ()), ("last_index", ())),
    "cache-negative-index": lambda ns: _cache(ns, ("append", (-1, [1]))),
    "cache-append-nothing": lambda ns: _cache(ns, ("append", (5, [])), ("first_index", ()), ("last_index", ())),
    "cache-gap": lambda ns: _cache(ns, ("append", (5, [1])), ("append", (7, [2]))),
    "cache-get-reversed": lambda ns: _cache(ns, ("append", (5, [1, 2])), ("get", (6, 5))),
    "cache-get-wide": lambda ns: _cache(ns, ("append", (5, [1, 2])), ("get", (-10, 100))),
    "cache-truncate-all": lambda ns: _cache(ns, ("append", (5, [1, 2])), ("truncate_after", (-1,)), ("last_index", ())),
    "cache-evict-all": lambda ns: _cache(ns, ("append", (5, [1, 2])), ("evict_upto", (100,)), ("last_index", ())),
    "cache-truncate-then-append-before": lambda ns: _cache(
        ns, ("append", (5, [1, 2])), ("truncate_after", (4,)), ("append", (3, [9])), ("get", (0, 10))
    ),
    # Quorum.
    "majority-empty": lambda ns: ns["quorum"].majority_committed([]),
    "majority-unmatched": lambda ns: ns["quorum"].majority_committed([-1, -1]),
    "majority-wide": lambda ns: ns["quorum"].majority_committed(list(range(40))),
    "joint-none": lambda ns: ns["quorum"].joint_committed([]),
    "joint-empty-configs": lambda ns: ns["quorum"].joint_committed([[], []]),
    "joint-one-empty": lambda ns: ns["quorum"].joint_committed([[1, 2, 3], []]),
    "granted-no-configs": lambda ns: ns["quorum"].is_quorum_granted({1}, []),
    "granted-empty-config": lambda ns: ns["quorum"].is_quorum_granted(set(), [[]]),
    "granted-half": lambda ns: ns["quorum"].is_quorum_granted({1}, [[1, 2]]),
    "progress-no-configs": lambda ns: repr(ns["quorum"].ProgressTable([], [], 1)),
    "progress-duplicates": lambda ns: repr(ns["quorum"].ProgressTable([[1, 2], [2, 3]], [3, 4, 4], 9)),
    "progress-reset-unknown": lambda ns: ns["quorum"].ProgressTable([[1]], [], 1).reset(9, 1),
    "progress-matched-unknown": lambda ns: ns["quorum"].ProgressTable([[1]], [], 1).matched(9),
    "progress-update-unknown": lambda ns: ns["quorum"].ProgressTable([[1, 2]], [], 1).update(9, 5),
    # Codec.
    "decode_index_key-short": lambda ns: ns["codec"].decode_index_key(b"\0" * 7),
    "decode_index_key-top": lambda ns: ns["codec"].decode_index_key(b"\x80" + b"\0" * 7),
    "encode_index_key-negative": lambda ns: ns["codec"].encode_index_key(-1),
    "encode_index_key-top": lambda ns: ns["codec"].encode_index_key(2**63),
    "encode_entries-kind": lambda ns: ns["codec"].encode_entries([(0, 0, 3, b"")]),
    "encode_entries-term": lambda ns: ns["codec"].encode_entries([(2**63, 0, 0, b"")]),
    "decode_entries-short": lambda ns: ns["codec"].decode_entries([b"\0" * 16]),
    "decode_entries-kind": lambda ns: ns["codec"].decode_entries([struct.pack(">QQB", 1, 1, 5)]),
    "decode_entries-top": lambda ns: ns["codec"].decode_entries([struct.pack(">QQB", 2**63, 1, 0)]),
    "frame-reader-negative": lambda ns: ns["codec"].FrameReader(-1),
    "frame-reader-zero": lambda ns: ns["codec"].FrameReader(0).feed(b"\0\0\0\0\0\0\0\1x"),
    "frame-reader-over": lambda ns: ns["codec"].FrameReader(3).feed(b"\0\0\0\4"),
}




class _Index:
    """An integer only through ``__index__`` (as numpy's integers are): both twins take it."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"_Index({self.value})"


class _IntSub(int):
    pass


# What the quorum and log index kernels' integers (indexes, terms, counts, node ids) may be
# given: integers in int64 are taken (an ``int`` subclass, ``bool``, an ``__index__`` object,
# the ends of the range); every other value is refused, with ``TypeError`` (never truncated,
# as the compiled twins' ``__int__`` conversion once did with a float) or ``OverflowError``
# outside int64.
INT_KINDS: dict[str, Any] = {
    "float": 1.5,
    "integral-float": 2.0,
    "str": "3",
    "none": None,
    "bytes": b"1",
    "complex": 1j,
    "bool": True,
    "int-subclass": _IntSub(4),
    "index-object": _Index(3),
    "int64-max": 2**63 - 1,
    "int64-min": -(2**63),
    "over-int64": 2**63,
    "under-int64": -(2**63) - 1,
}


def _table(ns: Any, *ops: tuple[str, tuple[Any, ...]]) -> tuple[Any, ...]:
    t = ns["quorum"].ProgressTable([[1, 2, 3]], [4], 1)
    results = [getattr(t, meth)(*args) for meth, args in ops]
    return results, t.as_dict(), t.committed(), repr(t)


def _quorum_int_cases(v: Any) -> dict[str, Call]:
    """Each place of the quorum kernel that takes an integer, given ``v``."""
    q = "quorum"
    return {
        "majority-first": lambda ns: ns[q].majority_committed([v, 1, 3]),
        "majority-middle": lambda ns: ns[q].majority_committed([1, v, 3]),
        "majority-alone": lambda ns: ns[q].majority_committed([v]),
        "majority-wide": lambda ns: ns[q].majority_committed([*range(19), v]),
        "majority-tuple": lambda ns: ns[q].majority_committed((1, v, 3)),
        "majority-after-overflow": lambda ns: ns[q].majority_committed([1, 2**64, v]),
        "majority-not-iterable": lambda ns: ns[q].majority_committed(v),
        "joint": lambda ns: ns[q].joint_committed([[1, 2, 3], [1, v, 3]]),
        "joint-not-iterable": lambda ns: ns[q].joint_committed([[1, 2, 3], v]),
        "granted-id": lambda ns: ns[q].is_quorum_granted({1, 2}, [[1, v, 3]]),
        "granted-config": lambda ns: ns[q].is_quorum_granted({1, 2}, [[1, 2], v]),
        "progress-voter": lambda ns: repr(ns[q].ProgressTable([[1, 2], [2, v]], [], 1)),
        "progress-learner": lambda ns: repr(ns[q].ProgressTable([[1, 2]], [v], 1)),
        "progress-self": lambda ns: repr(ns[q].ProgressTable([[1, 2]], [], v)),
        "progress-voter-then-learner": lambda ns: repr(ns[q].ProgressTable([[1, v]], ["x"], 1)),
        "update-id": lambda ns: _table(ns, ("update", (v, 5))),
        "update-index": lambda ns: _table(ns, ("update", (2, v)), ("update", (3, v))),
        "update-unknown-id": lambda ns: _table(ns, ("update", (9, v))),
        "update-lower-index": lambda ns: _table(ns, ("update", (2, 2**62)), ("update", (2, v))),
        "update-both": lambda ns: _table(ns, ("update", (v, v))),
        "update_many-id": lambda ns: _table(ns, ("update_many", ([(2, 5), (v, 6)],))),
        "update_many-index": lambda ns: _table(ns, ("update_many", ([(2, 5), (3, v)],))),
        "update_many-unknown-id": lambda ns: _table(ns, ("update_many", ([(9, v)],))),
        "reset-id": lambda ns: _table(ns, ("reset", (v, 5))),
        "reset-index": lambda ns: _table(ns, ("reset", (2, v))),
        "reset-unknown-id": lambda ns: _table(ns, ("reset", (9, v))),
        "matched": lambda ns: _table(ns, ("matched", (v,))),
    }


# ``joint_committed`` returns the element ``majority_committed`` returned (by type too: the
# comparison of outcomes above is by value), also where that element equals ``INF_INDEX``,
# the value of an empty config (the compiled twin returned its own ``INF_INDEX`` there).
for _kind, _value in {"int-subclass": _IntSub(2**63 - 1), "index-object": _Index(2**63 - 1)}.items():
    CASES[f"quorum-joint-at-int64-max-{_kind}"] = lambda ns, v=_value: repr(ns["quorum"].joint_committed([[v]]))
    CASES[f"quorum-joint-at-int64-max-with-empty-{_kind}"] = (
        lambda ns, v=_value: [repr(ns["quorum"].joint_committed(c)) for c in ([[v], []], [[], [v]])]
    )


for _kind, _value in INT_KINDS.items():
    for _place, _call in _quorum_int_cases(_value).items():
        CASES[f"quorum-int-{_place}-{_kind}"] = _call


def _log(ns: Any, *ops: tuple[str, tuple[Any, ...]], log: tuple[Any, ...] = (None, [(1, 0), (3, 4)], 9)) -> tuple[Any, ...]:
    """The results of ``ops`` on a ``LogIndex(*log)``, then everything it answers."""
    li = ns["logindex"].LogIndex(*log)
    results = [getattr(li, meth)(*args) for meth, args in ops]
    return results, _log_state(li)


def _log_state(li: Any) -> tuple[Any, ...]:
    try:
        n: Any = len(li)
    except OverflowError as exc:  # a log of 2**63 entries: both builds refuse its len()
        n = str(exc)
    return (repr(li), li.last(), li.purged(), li.key_log_ids(), li.first_index(), n, li.last_index(), li.last_term(),
            [li.term_at(i) for i in (-1, 0, 3, 4, 9, 10)])


def _cache_state(ns: Any, *ops: tuple[str, tuple[Any, ...]]) -> tuple[Any, ...]:
    c = ns["logindex"].EntryCache()
    results = [getattr(c, meth)(*args) for meth, args in ops]
    return results, len(c), repr(c), c.first_index(), c.last_index(), c.get(-(2**63), 2**63 - 1)


def _logindex_int_cases(v: Any) -> dict[str, Call]:
    """Each place of the log index kernel that takes an integer, given ``v``."""
    li = "logindex"
    return {
        "new-purged-term": lambda ns: _log_state(ns[li].LogIndex((v, 5), [], 5)),
        "new-purged-index": lambda ns: _log_state(ns[li].LogIndex((1, v), [], -1)),
        "new-purged-index-last": lambda ns: _log_state(ns[li].LogIndex((1, v), [], v)),
        "new-key-term": lambda ns: _log_state(ns[li].LogIndex(None, [(v, 0)], 9)),
        "new-key-index": lambda ns: _log_state(ns[li].LogIndex(None, [(1, v)], 9)),
        "new-second-key-term": lambda ns: _log_state(ns[li].LogIndex(None, [(1, 0), (v, 4)], 9)),
        "new-second-key-index": lambda ns: _log_state(ns[li].LogIndex(None, [(1, 0), (3, v)], 9)),
        "new-last": lambda ns: _log_state(ns[li].LogIndex(None, [(1, 0)], v)),
        "new-last-no-keys": lambda ns: _log_state(ns[li].LogIndex(None, [], v)),
        "new-last-purged": lambda ns: _log_state(ns[li].LogIndex((1, 5), [], v)),
        "new-bad-purged-then-key": lambda ns: _log_state(ns[li].LogIndex((-1, 5), [(v, 6)], 9)),
        "term_at": lambda ns: _log(ns, ("term_at", (v,))),
        "has_log_id-term": lambda ns: _log(ns, ("has_log_id", (v, 5))),
        "has_log_id-index": lambda ns: _log(ns, ("has_log_id", (3, v))),
        "has_log_id-both": lambda ns: _log(ns, ("has_log_id", (v, v))),
        "term_first_index": lambda ns: _log(ns, ("term_first_index", (v,))),
        "first_conflict-term": lambda ns: _log(ns, ("first_conflict", ([(1, 0), (v, 5)],))),
        "first_conflict-index": lambda ns: _log(ns, ("first_conflict", ([(1, 0), (3, v)],))),
        "first_conflict-after-conflict": lambda ns: _log(ns, ("first_conflict", ([(2, 1), (v, v)],))),
        "first_conflict-purged": lambda ns: _log(ns, ("first_conflict", ([(v, 2), (1, v)],)), log=((1, 3), [(1, 4)], 9)),
        "append_term-term": lambda ns: _log(ns, ("append_term", (v, 10, 1))),
        "append_term-first": lambda ns: _log(ns, ("append_term", (3, v, 1))),
        "append_term-count": lambda ns: _log(ns, ("append_term", (3, 10, v))),
        "append_term-all": lambda ns: _log(ns, ("append_term", (v, v, v))),
        "append_many-term": lambda ns: _log(ns, ("append_many", ([(3, 10), (v, 11)],))),
        "append_many-index": lambda ns: _log(ns, ("append_many", ([(3, 10), (4, v)],))),
        "append_many-after-gap": lambda ns: _log(ns, ("append_many", ([(3, 12), (v, v)],))),
        "append_many-tuple": lambda ns: _log(ns, ("append_many", (((3, 10), (3, v)),))),
        "truncate_after": lambda ns: _log(ns, ("truncate_after", (v,))),
        "purge-term": lambda ns: _log(ns, ("purge", (v, 5))),
        "purge-index": lambda ns: _log(ns, ("purge", (3, v))),
        "purge-both": lambda ns: _log(ns, ("purge", (v, v))),
        "cache-append": lambda ns: _cache_state(ns, ("append", (v, [1, 2]))),
        "cache-append-next": lambda ns: _cache_state(ns, ("append", (5, [1])), ("append", (v, [2]))),
        "cache-get-start": lambda ns: _cache_state(ns, ("append", (5, [1, 2])), ("get", (v, 7))),
        "cache-get-stop": lambda ns: _cache_state(ns, ("append", (5, [1, 2])), ("get", (5, v))),
        "cache-truncate_after": lambda ns: _cache_state(ns, ("append", (5, [1, 2])), ("truncate_after", (v,))),
        "cache-evict_upto": lambda ns: _cache_state(ns, ("append", (5, [1, 2])), ("evict_upto", (v,))),
        "cache-empty-truncate_after": lambda ns: _cache_state(ns, ("truncate_after", (v,))),
        "cache-empty-evict_upto": lambda ns: _cache_state(ns, ("evict_upto", (v,))),
        "cache-empty-get": lambda ns: _cache_state(ns, ("get", (v, 3))),
    }


for _kind, _value in INT_KINDS.items():
    for _place, _call in _logindex_int_cases(_value).items():
        CASES[f"logindex-int-{_place}-{_kind}"] = _call


_TOP = 2**63 - 1
# The log index kernel at the int64 ceiling, where a sum of two accepted integers does not fit
# (the compiled twin wrapped it around, or answered SystemError), and with pairs of the wrong
# shape.
CASES.update({
    "logindex-top-everything": lambda ns: _log(ns, log=(None, [(1, 0)], _TOP)),
    "logindex-top-purged": lambda ns: _log(ns, ("append_term", (1, _TOP, 1)), log=((1, _TOP), [], _TOP)),
    "logindex-top-append-next": lambda ns: _log(ns, ("append_term", (1, -(2**63), 1)), log=(None, [(1, 0)], _TOP)),
    "logindex-top-append_many-next": lambda ns: _log(ns, ("append_many", ([(1, -(2**63))],)), log=(None, [(1, 0)], _TOP)),
    "logindex-top-append-last": lambda ns: _log(ns, ("append_term", (3, 10, _TOP))),
    "logindex-top-append-to-top": lambda ns: _log(ns, ("append_term", (3, 10, _TOP - 9))),
    "logindex-top-append_many-to-top": lambda ns: _log(
        ns, ("purge", (3, _TOP - 2)), ("append_many", ([(3, _TOP - 1), (4, _TOP)],)), ("append_term", (4, 0, 0))
    ),
    "logindex-top-purge": lambda ns: _log(ns, ("purge", (5, _TOP)), ("truncate_after", (_TOP,))),
    "logindex-reinit": lambda ns: _log(ns, ("__init__", ())),
    "logindex-reinit-refused": lambda ns: _log(ns, ("__init__", ((1, 2), [(1, "x")], 5))),
    "logindex-key-short": lambda ns: _log_state(ns["logindex"].LogIndex(None, [(1,)], 5)),
    "logindex-key-long": lambda ns: _log_state(ns["logindex"].LogIndex(None, [(1, 0, 2)], 5)),
    "logindex-key-not-pair": lambda ns: _log_state(ns["logindex"].LogIndex(None, [5], 5)),
    "logindex-purged-short": lambda ns: _log_state(ns["logindex"].LogIndex((1,), [], 5)),
    "logindex-purged-short-list": lambda ns: _log_state(ns["logindex"].LogIndex([1], [], 5)),
    "logindex-purged-empty": lambda ns: _log_state(ns["logindex"].LogIndex((), [], 5)),
    "logindex-purged-not-sequence": lambda ns: _log_state(ns["logindex"].LogIndex(5, [], 5)),
    "logindex-key-list": lambda ns: _log_state(ns["logindex"].LogIndex([1, 2], [[3, 3], [4, 7]], 9)),
    "logindex-key-endless": lambda ns: _log_state(ns["logindex"].LogIndex(None, [iter(int, 1)], 9)),
    "logindex-append_many-short": lambda ns: _log(ns, ("append_many", ([(3, 10), (3,)],))),
    "logindex-append_many-not-pair": lambda ns: _log(ns, ("append_many", ([(3, 10), None],))),
    "logindex-first_conflict-short": lambda ns: _log(ns, ("first_conflict", ([(1, 0), (3,)],))),
    "logindex-first_conflict-not-iterable": lambda ns: _log(ns, ("first_conflict", (5,))),
    "logindex-append_many-long": lambda ns: _log(ns, ("append_many", ([(3, 10), (3, 11, 0)],))),
    "logindex-append_many-generator": lambda ns: _log(ns, ("append_many", ((p for p in [(3, 10), (4, 11)]),))),
    "logindex-append_many-large": lambda ns: _log(ns, ("append_many", ([(3 + i // 7, 10 + i) for i in range(200)],))),
    "logindex-append_many-large-refused": lambda ns: _log(
        ns, ("append_many", ([(3 + i // 7, 10 + i) for i in range(199)] + [(3, 209)],))
    ),
    "cache-top-append": lambda ns: _cache_state(ns, ("append", (_TOP - 1, [1, 2])), ("append", (_TOP, [3]))),
    "cache-top-append-past": lambda ns: _cache_state(ns, ("append", (_TOP - 1, [1, 2, 3]))),
    "cache-top-append-next-past": lambda ns: _cache_state(ns, ("append", (_TOP - 1, [1])), ("append", (_TOP, [2, 3]))),
    "cache-top-append-after-top": lambda ns: _cache_state(ns, ("append", (_TOP, [1])), ("append", (_TOP, [2]))),
    "cache-top-get": lambda ns: _cache_state(ns, ("append", (_TOP - 2, [1, 2, 3])), ("get", (_TOP - 1, _TOP)), ("get", (_TOP, _TOP))),
    "cache-top-evict": lambda ns: _cache_state(ns, ("append", (_TOP - 2, [1, 2, 3])), ("evict_upto", (_TOP - 1,))),
    "cache-top-truncate": lambda ns: _cache_state(ns, ("append", (_TOP - 2, [1, 2, 3])), ("truncate_after", (_TOP - 1,))),
    "cache-append-generator": lambda ns: _cache_state(ns, ("append", (5, [1])), ("append", (6, (x for x in [2, 3])))),
})


class _Slots:
    """An object with the given attributes (an entry, a log id, a payload for the codec)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class _Normal:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _entry(term: Any, index: Any, data: bytes = b"x") -> Any:
    return _Slots(log_id=_Slots(term=term, index=index), payload=_Normal(data))


def _plain(ns: Any, entries: list[Any], next_index: Any, min_term: Any, max_term: Any) -> int:
    from openraft_py.types import Blank, Entry, LogId, Normal

    return ns["codec"].plain_entries_prefix(entries, next_index, min_term, max_term, Entry, LogId, Normal, Blank)


def _codec_int_cases(v: Any) -> dict[str, Call]:
    """Each place of the codec and kv kernels that takes an integer, given ``v``."""
    from openraft_py.types import Blank, Entry, LogId

    c = "codec"
    plain = [Entry(LogId(1, 5), Blank()), Entry(LogId(1, 6), Blank())]
    return {
        "encode_entries-term": lambda ns: ns[c].encode_entries([(1, 1, 1, b"x"), (v, 2, 1, b"y")]),
        "encode_entries-index": lambda ns: ns[c].encode_entries([(1, v, 1, b"x")]),
        "encode_entries-kind": lambda ns: ns[c].encode_entries([(1, 1, v, b"x")]),
        "encode_entries-all": lambda ns: ns[c].encode_entries([(v, v, v, None)]),
        "encode_entry_batch-term": lambda ns: ns[c].encode_entry_batch([_entry(v, 1)], _Normal, int, bytes),
        "encode_entry_batch-index": lambda ns: ns[c].encode_entry_batch([_entry(1, v)], _Normal, int, bytes),
        "encode_index_key": lambda ns: ns[c].encode_index_key(v),
        "frame_reader": lambda ns: (lambda r: (r.feed(b"\0\0\0\1x\0\0\0\5ab"), r.buffered()))(ns[c].FrameReader(v)),
        "plain-next_index": lambda ns: _plain(ns, plain, v, 0, 5),
        "plain-min_term": lambda ns: _plain(ns, plain, 5, v, 5),
        "plain-max_term": lambda ns: _plain(ns, plain, 5, 0, v),
        "find_payload-start": lambda ns: ns[c].find_payload([_entry(1, 1)] * 3, _Normal, v),
        "kv-start": lambda ns: ns["kv"].apply_kv_sets({}, [], v, _Normal, None, None),
    }


for _kind, _value in INT_KINDS.items():
    for _place, _call in _codec_int_cases(_value).items():
        CASES[f"codec-int-{_place}-{_kind}"] = _call


def _plain_top(ns: Any, *indexes: int) -> int:
    from openraft_py.types import Blank, Entry, LogId

    return _plain(ns, [Entry(LogId(1, i), Blank()) for i in indexes], _TOP - 1, 0, 5)


CASES.update({
    # After the entry at 2**63 - 1 no entry follows (the compiled kernel's next index wrapped
    # around to -2**63; the pure twin took an index of 2**63).
    "codec-plain-top": lambda ns: _plain_top(ns, _TOP - 1, _TOP),
    "codec-plain-past-top": lambda ns: _plain_top(ns, _TOP - 1, _TOP, 2**63),
    "codec-plain-wrapped": lambda ns: _plain_top(ns, _TOP - 1, _TOP, -(2**63)),
    # Records that are not 4 values: Python's own errors on both builds (Cython's unpacking
    # said "need more than 3 values to unpack" and "'NoneType' object is not iterable").
    "codec-record-short": lambda ns: ns["codec"].encode_entries([(1, 1, 1, b""), (1, 2, 1)]),
    "codec-record-long": lambda ns: ns["codec"].encode_entries([(1, 2, 1, b"", 5)]),
    "codec-record-none": lambda ns: ns["codec"].encode_entries([None]),
    "codec-record-list": lambda ns: ns["codec"].encode_entries([[1, 2, 1, b"x"]]),
    "codec-record-endless": lambda ns: ns["codec"].encode_entries([iter(int, 1)]),
})


def _update_many(ns: Any, pairs: Any) -> tuple[Any, ...]:
    """``update_many(pairs)`` on a table whose node 1 matched 9, then the table, also after an
    error (what an item before the refused one left)."""
    t = ns["quorum"].ProgressTable([[1, 2, 3]], [4], 1)
    t.update(1, 9)
    try:
        outcome: tuple[Any, ...] = ("ok", t.update_many(pairs))
    except Exception as exc:  # noqa: BLE001 (the exception is the outcome compared)
        outcome = (type(exc).__name__, str(exc))
    return outcome, t.as_dict(), t.committed(), repr(t)


def _raises_midway() -> Any:
    yield 2
    raise KeyError("an item's own error")


# ``update_many``'s items that are not exact ``(node_id, index)`` tuples: Python's own
# unpacking (and its errors) on both builds (Cython's said "need more than 1 value to
# unpack" and "'int' object is not iterable"); the items before a refused one stay applied,
# as by ``update``, on both. Each made anew per build (iterators are used up by the first).
_MALFORMED_PAIRS: dict[str, Callable[[], Any]] = {
    "short": lambda: [(2, 9), (1,)],
    "empty": lambda: [()],
    "long": lambda: [(2, 9, 0)],
    "int": lambda: [1],
    "none": lambda: [(2, 9), None],
    "dict": lambda: [{2: 9}],
    "two-key-dict": lambda: [{2: 0, 3: 0}],
    "list": lambda: [[2, 9]],
    "str": lambda: ["ab"],
    "bytes": lambda: [b"\x02\x09"],
    "iterator": lambda: [iter((2, 9))],
    "endless": lambda: [iter(int, 1)],
    "item-raises": lambda: [_raises_midway()],
    "pairs-none": lambda: None,
    "pairs-int": lambda: 5,
    "pairs-generator": lambda: (p for p in [(2, 9), (3,)]),
}
for _kind, _make in _MALFORMED_PAIRS.items():
    CASES[f"quorum-update_many-malformed-{_kind}"] = lambda ns, make=_make: _update_many(ns, make())


@pytest.mark.parametrize("name", sorted(CASES))
def test_twins_agree(name: str) -> None:
    call = CASES[name]
    assert _outcome(call, "py") == _outcome(call, "c")
