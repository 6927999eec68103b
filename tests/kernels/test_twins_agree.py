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
    ns = {k: importlib.import_module(f"openraft_py._core._{k}_{suffix}") for k in ("codec", "logindex", "quorum")}
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


# What the quorum kernel's integers (indexes and node ids) may be given: integers in int64 are
# taken (an ``int`` subclass, ``bool``, an ``__index__`` object, the ends of the range); every
# other value is refused, with ``TypeError`` (never truncated, as the compiled twin's ``__int__``
# conversion once did with a float) or ``OverflowError`` outside int64.
QUORUM_INTS: dict[str, Any] = {
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


for _kind, _value in QUORUM_INTS.items():
    for _place, _call in _quorum_int_cases(_value).items():
        CASES[f"quorum-int-{_place}-{_kind}"] = _call


@pytest.mark.parametrize("name", sorted(CASES))
def test_twins_agree(name: str) -> None:
    call = CASES[name]
    assert _outcome(call, "py") == _outcome(call, "c")
