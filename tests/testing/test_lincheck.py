"""The linearizability checker: hand-made histories, the shared Jepsen/EDN histories with
known verdicts, the command line, and random histories against a sequential oracle."""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openraft_py.testing.lincheck import (
    HistoryParseError,
    Model,
    Operation,
    check,
    kv,
    kv_register,
    parse_edn_kv,
    parse_jepsen,
    parse_jsonl,
    register,
    write_jsonl,
)

INF = math.inf
REPO = Path(__file__).parents[2]
HISTORIES = REPO.parent / "shared" / "histories"


def w(client, value, call, ret, ok=True, key=None):
    return Operation(client, "write", key, value, None, call, ret, ok)


def r(client, output, call, ret, ok=True, key=None):
    return Operation(client, "read", key, None, output, call, ret, ok)


def cas(client, old, new, applied, call, ret, ok=True, key=None):
    return Operation(client, "cas", key, (old, new), applied, call, ret, ok)


# --- hand-made histories -------------------------------------------------------------------


def test_empty_history_is_linearizable():
    assert check([], register).ok is True


def test_sequential_ok():
    h = [w(0, 1, 0, 1), r(0, 1, 2, 3), cas(0, 1, 2, True, 4, 5), r(0, 2, 6, 7)]
    assert check(h, register).ok is True


def test_initial_value_is_none():
    assert check([r(0, None, 0, 1)], register).ok is True
    assert check([r(0, 0, 0, 1)], register).ok is False


def test_concurrent_ok_in_either_order():
    # Two overlapping writes; readers after both see the one that went last.
    h = [w(0, 1, 0, 10), w(1, 2, 1, 9), r(2, 1, 11, 12), r(3, 1, 13, 14)]
    assert check(h, register).ok is True
    h = [w(0, 1, 0, 10), w(1, 2, 1, 9), r(2, 2, 11, 12)]
    assert check(h, register).ok is True


def test_stale_read_is_not_linearizable():
    h = [w(0, 1, 0, 1), w(0, 2, 2, 3), r(1, 1, 4, 5)]
    res = check(h, register)
    assert res.ok is False
    assert "NOT linearizable" in res.explain()


def test_read_overlapping_a_write_may_see_either_value():
    h = [w(0, 1, 0, 1), w(0, 2, 2, 6), r(1, 1, 3, 4), r(2, 2, 3, 5)]
    assert check(h, register).ok is True
    # ...but not the old value after another reader saw the new one (both finished in order)
    h = [w(0, 1, 0, 1), w(0, 2, 2, 10), r(1, 2, 3, 4), r(2, 1, 5, 6)]
    assert check(h, register).ok is False


def test_timed_out_write_that_later_appears():
    h = [w(0, 1, 0, 1), w(1, 2, 2, INF, ok=None), r(2, 1, 3, 4), r(2, 2, 50, 51)]
    assert check(h, register).ok is True


def test_timed_out_write_that_never_appears():
    h = [w(0, 1, 0, 1), w(1, 2, 2, INF, ok=None), r(2, 1, 3, 4), r(2, 1, 50, 51)]
    assert check(h, register).ok is True


def test_timed_out_write_cannot_appear_before_its_call():
    h = [w(0, 1, 0, 1), r(2, 2, 3, 4), w(1, 2, 5, INF, ok=None)]
    assert check(h, register).ok is False


def test_timed_out_write_cannot_flicker():
    # Once a reader has seen it and another later sees the old value, it must have happened
    # twice: not linearizable.
    h = [w(0, 1, 0, 1), w(1, 2, 2, INF, ok=None), r(2, 2, 3, 4), r(2, 1, 5, 6)]
    assert check(h, register).ok is False


def test_failed_cas_is_dropped():
    # Jepsen :fail: the cas did not take effect, whatever its arguments.
    h = [w(0, 1, 0, 1), cas(1, 1, 5, None, 2, 3, ok=False), r(2, 1, 4, 5)]
    assert check(h, register).ok is True


def test_failed_operations_of_any_kind_are_dropped():
    h = [w(0, 1, 0, 1), w(1, 9, 2, 3, ok=False), r(2, 9, 4, 5, ok=False), r(2, 1, 6, 7)]
    assert check(h, register).ok is True


def test_cas_not_applied_constrains_the_state():
    # cas(1 -> 2) returned "not applied" strictly after write(1) and before any other write:
    # the value was 1, so it must have applied.
    h = [w(0, 1, 0, 1), cas(1, 1, 2, False, 2, 3)]
    assert check(h, register).ok is False
    # With a concurrent write of 3 it can have observed 3.
    h = [w(0, 1, 0, 1), w(2, 3, 2, 5), cas(1, 1, 2, False, 2, 3)]
    assert check(h, register).ok is True


def test_cas_applied_requires_the_expected_value():
    h = [w(0, 1, 0, 1), cas(1, 7, 2, True, 2, 3)]
    assert check(h, register).ok is False


def test_cas_of_unknown_outcome_may_or_may_not_apply():
    base = [w(0, 1, 0, 1), cas(1, 1, 2, None, 2, INF, ok=None)]
    assert check(base + [r(2, 2, 5, 6)], register).ok is True
    assert check(base + [r(2, 1, 5, 6)], register).ok is True
    assert check(base + [r(2, 3, 5, 6)], register).ok is False


def test_p_compositionality_across_keys():
    # Each key on its own is fine; together they share no state.
    h = [
        w(0, 1, 0, 1, key="a"),
        w(1, 1, 0, 1, key="b"),
        r(2, 1, 2, 3, key="a"),
        r(2, None, 4, 5, key="c"),
        w(1, 2, 6, 7, key="b"),
        r(0, 1, 8, 9, key="a"),
    ]
    res = check(h, register)
    assert res.ok is True and res.partitions == 3
    # A stale read on one key is found and reported with that key.
    res = check(h + [r(3, 1, 10, 11, key="b")], register)
    assert res.ok is False and res.key == "b"
    assert all(op.key == "b" for op in res.longest_prefix + res.unplaced)


def test_longest_prefix_and_unplaced_report():
    h = [w(0, 1, 0, 1), w(0, 2, 2, 3), r(1, 2, 4, 5), r(1, 1, 6, 7), w(0, 3, 8, 9)]
    res = check(h, register)
    assert res.ok is False
    assert res.longest_prefix == h[:3]
    assert res.unplaced == [h[3]]
    text = res.explain()
    assert "longest linearizable prefix (3 operations)" in text
    assert "read() -> 1" in text


def test_kv_model_get_put_append():
    def op(c, name, key, value, out, call, ret):
        return Operation(c, name, key, value, out, call, ret)

    h = [
        op(0, "get", "k", None, "", 0, 1),
        op(0, "append", "k", "a", None, 2, 3),
        op(1, "append", "k", "b", None, 2, 5),
        op(2, "get", "k", "ba", None, 6, 7),
    ]
    h[3] = op(2, "get", "k", None, "ba", 6, 7)
    assert check(h, kv).ok is True
    h[3] = op(2, "get", "k", None, "b", 6, 7)
    assert check(h, kv).ok is False
    h += [op(0, "put", "k", "z", None, 8, 9), op(1, "get", "k", None, "z", 10, 11)]
    h[3] = op(2, "get", "k", None, "ab", 6, 7)
    assert check(h, kv).ok is True


def test_kv_register_model_delete_and_absent_cas():
    def op(c, name, value, out, call, ret, ok=True):
        return Operation(c, name, "k", value, out, call, ret, ok)

    h = [
        op(0, "cas", (None, "a"), True, 0, 1),  # create if absent
        op(0, "get", None, "a", 2, 3),
        op(1, "delete", None, None, 4, 5),
        op(1, "get", None, None, 6, 7),
        op(2, "cas", ("a", "b"), False, 8, 9),
    ]
    assert check(h, kv_register).ok is True
    h.append(op(2, "cas", (None, "c"), False, 10, 11))
    assert check(h, kv_register).ok is False


def test_pluggable_model_counter():
    def step(state, op):
        if op.op == "incr":
            return True, state + 1
        return (op.ok is None or op.output == state), state

    counter = Model("counter", init=lambda: 0, step=step, partition=None)
    h = [
        Operation(0, "incr", call=0, ret=2),
        Operation(1, "incr", call=1, ret=3),
        Operation(2, "get", output=1, call=1, ret=2),
        Operation(2, "get", output=2, call=4, ret=5),
    ]
    assert check(h, counter).ok is True
    h.append(Operation(3, "get", output=1, call=6, ret=7))
    assert check(h, counter).ok is False


def test_a_model_state_that_is_not_hashable_is_named():
    """A model whose states were lists died with a bare "unhashable type: 'list'" from deep
    inside the search; now a TypeError names the model, what gave the state and the fix."""
    add = Operation(1, "add", value=1, call=0, ret=1)
    listy = Model("bag", init=lambda: [], step=lambda s, op: (True, [*s, op.value]), partition=None)
    with pytest.raises(TypeError, match=r"lincheck model 'bag': its states must be hashable .* "
                       r"init\(\) gave list \[\] \(unhashable type: 'list'\)"):
        check([add], listy)
    nested = Model("bag", init=lambda: (), step=lambda s, op: (True, (*s, [op.value])), partition=None)
    with pytest.raises(TypeError, match=r"model 'bag'.* step\(state, client 1: add\(1\)  \[0, 1\]\) gave tuple"):
        check([add], nested)
    # The built-in models keep the operations' values as their state.
    with pytest.raises(TypeError, match=r"model 'register'.* step\(state, client 1: write\(\[1\]\)"):
        check([w(1, [1], 0, 1)], register)


@pytest.mark.parametrize(("model", "op", "error", "message"), [
    (register, Operation(1, "cas", None, 5, True, 0, 1), ValueError,
     r"lincheck model 'register' cannot take client 1: cas\(5\) -> True  \[0, 1\]: a cas's value must be the pair "
     r"\(expected, new\), not 5"),
    (kv_register, Operation(1, "cas", "k", ("a", "b", "c"), True, 0, 1), ValueError,
     r"model 'kv_register' cannot take client 1: cas\('k', \('a', 'b', 'c'\)\).*must be the pair"),
    (kv, Operation(1, "append", "k", 5, None, 0, 1), TypeError,
     r"model 'kv' cannot take client 1: append\('k', 5\)  \[0, 1\]: can only concatenate str"),
    # A step that does not return (legal, new_state).
    (Model("bad", init=lambda: 0, step=lambda s, op: None, partition=None), Operation(1, "x", call=0, ret=1),
     TypeError, r"model 'bad' cannot take client 1: x\(None\)  \[0, 1\]: cannot unpack non-iterable NoneType"),
    (register, Operation(1, "write", None, 1, None, 0, 1, "yes"), ValueError,
     r"operation's ok must be True, False or None, not 'yes'"),
])
def test_an_operation_the_model_cannot_take_is_named(model, op, error, message):
    """A cas whose value was not a pair, or an append of a number to the kv model's string,
    died with a bare "cannot unpack non-iterable int object" or "can only concatenate str"
    from inside the search; an ok of "yes" was taken for True."""
    with pytest.raises(error, match=message):
        check([op], model)


def test_check_refuses_arguments_of_the_wrong_type():
    """The model's name for the model failed with "must be str, not list" (str.partition
    was called), a timeout of "5" with a bare comparison error, a dict for an operation with
    "'dict' object has no attribute 'call'"."""
    h = [w(1, 1, 0, 1)]
    with pytest.raises(TypeError, match=r"model must be a lincheck Model .*, not str 'register'"):
        check(h, "register")
    for bad in ("5", True):
        with pytest.raises(TypeError, match=r"timeout must be a number of seconds or None, not "):
            check(h, timeout=bad)
    with pytest.raises(TypeError, match=r"a history is a sequence of lincheck Operations; item 1 is dict"):
        check([*h, {"op": "write"}])
    assert check(h, timeout=2).ok is True


def test_a_key_that_is_not_hashable_is_named():
    with pytest.raises(TypeError, match=r"an operation's key must be hashable, not list .*key=\['k'\]"):
        check([w(1, 1, 0, 1, key=["k"])], register)
    # A model that does not partition takes any key, also in its report of a failure.
    one = Model("one", init=lambda: 0, step=lambda s, op: (op.value == 1, s), partition=None)
    res = check([Operation(1, "x", key=["k"], value=2, call=0, ret=1)], one)
    assert res.ok is False and res.key == ["k"]


def test_a_long_sequential_history_is_checked_in_linear_time():
    # The search copied its whole stack at every placement to remember the longest prefix:
    # a 40,000-operation history of one register took minutes (quadratic); it takes well
    # under a second now.
    n = 40_000
    ops = []
    for i in range(n // 2):
        ops.append(w(i % 5, i, 4 * i, 4 * i + 1))
        ops.append(r(i % 5, i, 4 * i + 2, 4 * i + 3))
    t0 = time.monotonic()
    res = check(ops, register, timeout=10.0)
    assert res.ok is True, res.explain()
    assert time.monotonic() - t0 < 10.0
    # The report of a violation at the end still shows the longest prefix.
    bad = [*ops, r(9, -1, 4 * n, 4 * n + 1)]
    res = check(bad, register, timeout=10.0)
    assert res.ok is False
    assert len(res.longest_prefix) == n and res.unplaced == [bad[-1]]


def _long_sequential_history(n: int) -> list:
    return [w(i % 5, i, 2 * i, 2 * i + 1) for i in range(n)]


def _long_history_after_an_unplaced_cas(n: int) -> list:
    # (the cas expects a value never written: it can never be placed)
    return [cas(0, -1, 1, None, 0, INF, ok=None)] + [w(1 + i % 5, i, 2 * i + 1, 2 * i + 2) for i in range(n)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("history", [_long_sequential_history, _long_history_after_an_unplaced_cas],
                         ids=["sequential", "after-an-operation-of-unknown-outcome"])
def test_a_long_history_is_checked_in_linear_memory(history):
    """The search remembered every (linearized set, state) it explored with the set as a
    bitset of the whole history: the k-th placement kept a k-bit int, so a sequential history
    of n operations on one key held n*n/16 bytes (100,000 operations: 760 MB, 200,000: 3 GB),
    which a time budget does not bound. The operations every linearization so far holds (a
    prefix of the history) are now kept as a count. An operation of unknown outcome that is
    never placed (a timed-out cas that could not apply) stopped that count for good, and the
    history after it held n*n/16 bytes again (30,000 operations: 76 MB); it no longer does."""
    import tracemalloc

    n = 30_000
    ops = history(n)
    tracemalloc.start()
    try:
        res = check(ops, register, timeout=30.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.ok is True, res.explain()
    # The bitsets alone were n*n/16 bytes (56 MB); a few entries per operation is ~10 MB.
    assert peak < 20_000_000, f"peak {peak / 1e6:.1f} MB for {n} operations"


def test_timeout_gives_an_unknown_verdict():
    # 18 overlapping writes of distinct values, then reads that see each value in turn: not
    # linearizable, but proving it takes exploring every subset of the writes.
    n = 18
    h = [w(i, i, 0, 100) for i in range(n)] + [
        r(n + i, i, 101 + 2 * i, 102 + 2 * i) for i in range(n)
    ]
    start = time.monotonic()
    res = check(h, register, timeout=0.2)
    assert time.monotonic() - start < 2
    assert res.ok is None
    assert res.explain().startswith("unknown")
    assert check(h, register, timeout=0.0).ok is None


def test_timeout_with_many_indeterminate_writes_returns_promptly():
    rng = random.Random(7)
    h = [w(i, rng.randrange(3), 0, 1000, ok=None) for i in range(40)]
    h += [cas(100 + i, rng.randrange(3), rng.randrange(3), True, 1 + i, 2 + i) for i in range(60)]
    h.append(r(999, 99, 2000, 2001))
    start = time.monotonic()
    res = check(h, register, timeout=0.5)
    assert time.monotonic() - start < 3
    assert res.ok is None


# --- parsers -------------------------------------------------------------------------------


def test_parse_jepsen_shapes(tmp_path):
    log = tmp_path / "h.log"
    log.write_text(
        "INFO  jepsen.core - some other line\n"
        "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 1   :invoke :cas    [1 2]\n"
        "INFO  jepsen.util - 2\t:invoke\t:write\t3\n"
        "INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n"
        "INFO  jepsen.util - 0\t:ok\t:read\t3\n"
        "INFO  jepsen.util - 1   :fail   :cas    [1 2]\n"
        "INFO  jepsen.util - 2\t:info\t:write\t:timed-out\n"
        "INFO  jepsen.util - 3\t:invoke\t:cas\t[3 4]\n"
        "INFO  jepsen.util - 3\t:ok\t:cas\t[3 4]\n"
        "INFO  jepsen.util - 4\t:invoke\t:write\t0\n"
        "\n"
    )
    ops = parse_jepsen(log)
    assert [(o.client, o.op, o.value, o.output, o.ok) for o in ops] == [
        (0, "read", None, 3, True),
        (1, "cas", (1, 2), None, False),
        (2, "write", 3, None, None),
        (3, "cas", (3, 4), True, True),
        (4, "write", 0, None, None),
    ]
    assert ops[0].call == 2 and ops[0].ret == 6
    assert ops[2].ret == INF and ops[4].ret == INF
    assert check(ops, register).ok is True


def test_parse_jepsen_rejects_unmatched_completion(tmp_path):
    log = tmp_path / "h.log"
    log.write_text("INFO  jepsen.util - 0\t:ok\t:read\tnil\n")
    with pytest.raises(ValueError, match="without a matching :invoke"):
        parse_jepsen(log)


def test_parse_edn_kv(tmp_path):
    path = tmp_path / "h.txt"
    path.write_text(
        '{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}\n'
        '{:process 1, :type :invoke, :f :get, :key "0", :value nil}\n'
        '{:process 0, :type :ok, :f :append, :key "0", :value "x 0 0 y"}\n'
        '{:process 1, :type :ok, :f :get, :key "0", :value "x 0 0 y"}\n'
        '{:process 2, :type :invoke, :f :put, :key "1", :value "a \\"q\\""}\n'
        '{:process 2, :type :info, :f :put, :key "1", :value "a \\"q\\""}\n'
    )
    ops = parse_edn_kv(path)
    assert [(o.client, o.op, o.key, o.value, o.output, o.ok) for o in ops] == [
        (0, "append", "0", "x 0 0 y", None, True),
        (1, "get", "0", None, "x 0 0 y", True),
        (2, "put", "1", 'a "q"', None, None),
    ]
    assert check(ops, kv).ok is True


def test_jsonl_round_trip_and_semantics(tmp_path):
    path = tmp_path / "h.jsonl"
    lines = [
        {"client": 0, "op": "put", "key": "k", "value": "a", "ok": True, "call": 0, "ret": 1},
        {"client": 1, "op": "cas", "key": "k", "expected": "b", "value": "c", "ok": False,
         "call": 2, "ret": 3},
        {"client": 2, "op": "put", "key": "k", "value": "z", "ok": None, "call": 2, "ret": None},
        {"client": 0, "op": "get", "key": "k", "result": "a", "ok": True, "call": 4, "ret": 5},
        {"client": 0, "op": "delete", "key": "k", "ok": True, "call": 6, "ret": 7},
        {"client": 0, "op": "get", "key": "k", "result": None, "ok": True, "call": 8, "ret": 9},
        {"client": 3, "op": "put", "key": "j", "value": [1, 2], "ok": False, "call": 0, "ret": 1},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    ops = parse_jsonl(path)
    assert ops[1].ok is True and ops[1].output is False and ops[1].value == ("b", "c")
    assert ops[2].ok is None and ops[2].ret == INF
    assert ops[6].ok is False and ops[6].value == (1, 2)
    assert check(ops, kv_register).ok is True
    out = tmp_path / "out.jsonl"
    write_jsonl(ops, out)
    assert parse_jsonl(out) == ops
    # cas "not applied" while the value was exactly the expected one: a violation
    lines[1]["expected"] = "a"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert check(parse_jsonl(path), kv_register).ok is False


def test_write_jsonl_keeps_the_verdict_of_a_failed_cas(tmp_path):
    """A cas that failed (``ok=False``: refused, no effect) was written as ``ok: false``,
    which ``parse_jsonl`` reads as "completed, not applied": a linearizable history came back
    NOT linearizable (the value was the expected one). It is left out of the file now, as the
    Jepsen runner's history does: a failed operation constrains nothing."""
    ops = [
        Operation(0, "put", "k", "a", None, 0, 1),
        Operation(1, "cas", "k", ("a", "b"), None, 2, 3, ok=False),
        Operation(0, "get", "k", None, "a", 4, 5),
    ]
    assert check(ops, kv_register).ok is True
    out = tmp_path / "h.jsonl"
    write_jsonl(ops, out)
    back = parse_jsonl(out)
    assert check(back, kv_register).ok is True
    assert back == [ops[0], ops[2]]


@pytest.mark.parametrize(("op", "error", "message"), [
    (Operation(1, "write", None, 5, None, 0, 1), ValueError,
     r"operation 2: parse_jsonl reads the ops put, get, cas and delete \(model kv_register\), not 'write'"),
    (Operation(1, "put", "k", b"raw", None, 0, 1), TypeError, r"operation 2: .*not JSON serializable"),
    (Operation(1, "put", "k", "v", None, math.nan, 1), ValueError, r"operation 2: .*call time must be finite"),
    (Operation(1, "put", "k", "v", None, 2, 1), ValueError, r"operation 2: .*returns before it is called"),
])
def test_write_jsonl_refuses_what_parse_jsonl_cannot_read(tmp_path, op, error, message):
    """``write_jsonl`` wrote what its reader refuses: register operations (``write`` without
    its value, ``read``), NaN times (as ``NaN``, not JSON); bytes raised the ``json`` module's
    TypeError half way, leaving half a file. Each is refused before the file is touched,
    naming the operation."""
    out = tmp_path / "h.jsonl"
    out.write_text("before\n")
    with pytest.raises(error, match=message):
        write_jsonl([Operation(0, "put", "k", "a", None, 0, 1), op], out)
    assert out.read_text() == "before\n"


@pytest.mark.parametrize("ok", [True, False])
def test_write_jsonl_refuses_a_known_outcome_without_its_return_time(tmp_path, ok):
    """An operation whose outcome is known (``ok`` true or false) with ``ret`` inf was written
    with ``ret: null``, which ``parse_jsonl`` reads as an unknown outcome: a completed get
    that read a value never written was dropped, a failed put could have been applied, and
    a history NOT linearizable came back linearizable. It is refused, the file untouched."""
    if ok:
        bad = Operation(1, "get", "k", None, "b", 2, INF, ok=True)
    else:
        bad = Operation(1, "put", "k", "b", None, 2, INF, ok=False)
    ops = [Operation(0, "put", "k", "a", None, 0, 1), bad, Operation(0, "get", "k", None, "a", 4, 5)]
    if ok:
        assert check(ops, kv_register).ok is False
    out = tmp_path / "h.jsonl"
    out.write_text("before\n")
    with pytest.raises(ValueError, match=r"^operation 2: its outcome is known \(ok=" + str(ok) + r"\) but its ret is "
                                         r"inf: parse_jsonl would read it back as of unknown outcome"):
        write_jsonl(ops, out)
    assert out.read_text() == "before\n"


def test_a_huge_value_is_shortened_in_the_explanation(tmp_path):
    """The explanation of a verdict printed every value whole: a put of 5 MB printed 5 MB
    (per operation shown, up to a dozen). Long values are cut in the middle, with their
    length, and the two ends that tell them apart are kept."""
    from openraft_py.testing.lincheck import describe_op

    big = "a" * 2_500_000 + "b" * 2_500_000
    op = Operation(1, "put", "k", big, None, 0, 1)
    line = describe_op(op)
    assert len(line) < 300, len(line)
    assert line.startswith("client 1: put('k', 'aaaa") and "bbbb'" in line and "5000002 characters" in line
    assert describe_op(Operation(1, "put", "k", "short", None, 0, 1)) == "client 1: put('k', 'short')  [0, 1]"
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({**_JSONL_OK, "op": "put", "value": big}) + "\n"
                    + json.dumps({**_JSONL_OK, "op": "get", "result": "y", "call": 5, "ret": 6}) + "\n")
    res = _cli("--format", "jsonl", path)
    assert res.returncode == 1 and "NOT linearizable" in res.stdout
    assert len(res.stdout) < 2000, len(res.stdout)


# --- the shared histories ------------------------------------------------------------------


def _shared_cases():
    cases = []
    for sub, fmt in (("jepsen", "jepsen"), ("kv", "edn-kv")):
        tsv = HISTORIES / sub / "expected.tsv"
        if not tsv.exists():
            continue
        with open(tsv, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                cases.append(pytest.param(sub, fmt, row["file"], row["linearizable"] == "true",
                                          id=f"{sub}/{row['file']}"))
    if not cases:
        cases.append(pytest.param(None, None, None, None, id="no-shared-histories",
                                  marks=pytest.mark.skip(
                                      reason=f"shared histories not found at {HISTORIES}")))
    return cases


@pytest.mark.parametrize(("sub", "fmt", "name", "expected"), _shared_cases())
def test_shared_history(sub, fmt, name, expected):
    path = HISTORIES / sub / name
    parse, model = (parse_jepsen, register) if fmt == "jepsen" else (parse_edn_kv, kv)
    start = time.monotonic()
    res = check(parse(path), model, timeout=30)
    elapsed = time.monotonic() - start
    assert res.ok is expected, res.explain()
    assert elapsed < 10, f"{name} took {elapsed:.1f} s"


# --- command line --------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "openraft_py.testing.lincheck", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )


def _jsonl(tmp_path, name, stale):
    path = tmp_path / name
    recs = [
        {"client": 0, "op": "put", "key": "k", "value": 1, "ok": True, "call": 0, "ret": 1},
        {"client": 0, "op": "put", "key": "k", "value": 2, "ok": True, "call": 2, "ret": 3},
        {"client": 1, "op": "get", "key": "k", "result": 1 if stale else 2, "ok": True,
         "call": 4, "ret": 5},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in recs))
    return path


def test_cli_exit_codes(tmp_path):
    good = _jsonl(tmp_path, "good.jsonl", stale=False)
    bad = _jsonl(tmp_path, "bad.jsonl", stale=True)
    res = _cli("--format", "jsonl", good)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"{good} linearizable"
    res = _cli("--format", "jsonl", "--timeout", "5", good, bad)
    assert res.returncode == 1
    assert f"{bad} NOT linearizable" in res.stdout
    assert "    longest linearizable prefix" in res.stdout
    res = _cli("--format", "jsonl", good, tmp_path / "missing.jsonl")
    assert res.returncode == 2
    assert "missing.jsonl" in res.stderr
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n")
    res = _cli("--format", "jsonl", garbage)
    assert res.returncode == 2
    assert "garbage.jsonl:1" in res.stderr


def test_cli_refuses_a_file_without_operations(tmp_path):
    """A file with no client operation is exit 2 naming it and the format, never
    "linearizable": an empty file, or a history given with the wrong --format (the Jepsen
    reader skips lines that are not operations, so a JSON lines history read as Jepsen was
    an empty history, reported linearizable with exit 0)."""
    good = _jsonl(tmp_path, "good.jsonl", stale=True)
    empty = tmp_path / "empty.log"
    empty.write_text("")
    for fmt, path in (("jepsen", good), ("jepsen", empty), ("jsonl", empty), ("edn-kv", empty)):
        res = _cli("--format", fmt, path)
        assert res.returncode == 2, (fmt, path, res.stdout, res.stderr)
        assert res.stdout == ""
        assert f"{path}: no client operations found (is --format {fmt} right?)" in res.stderr


@pytest.mark.parametrize(("times", "message"), [
    ('"call": 5, "ret": 1', "ret 1 is before call 5"),
    ('"call": NaN, "ret": 1', "call must be a finite number, not nan"),
    ('"call": Infinity, "ret": null', "call must be a finite number, not inf"),
    ('"call": 0, "ret": NaN', "ret must be a finite number or null, not nan"),
])
def test_jsonl_times_out_of_order_are_a_parse_error(tmp_path, times, message):
    """A JSON lines record whose ``ret`` is before its ``call``, or whose times are not finite,
    is a parse error naming the line (ret before call was a ValueError traceback from the
    command line; a NaN call was accepted and the history reported linearizable)."""
    path = tmp_path / "times.jsonl"
    path.write_text('{"client": 0, "op": "put", "key": "k", "value": 1, "ok": true, ' + times + "}\n")
    with pytest.raises(HistoryParseError, match=f"times.jsonl:1: {re.escape(message)}$"):
        parse_jsonl(path)
    res = _cli("--format", "jsonl", path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert f"times.jsonl:1: {message}" in res.stderr
def test_check_refuses_bad_times_and_timeouts():
    # A return before the call, a NaN or infinite call, a NaN return: ValueError naming the
    # operation (NaN compared false everywhere and the verdict was "linearizable").
    for op in (w(0, 1, 5, 2), w(0, 1, math.nan, 2), w(0, 1, INF, INF), w(0, 1, 1, math.nan),
               r(0, None, math.nan, INF, ok=None)):
        with pytest.raises(ValueError, match="operation"):
            check([w(1, 0, 0, 1), op], register)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="timeout"):
            check([w(1, 0, 0, 1)], register, timeout=bad)
    assert check([w(1, 0, 0, 1), w(0, 1, 2, INF, ok=None)], register, timeout=0.0).ok in (True, None)


_JSONL_OK = {"client": 1, "op": "put", "key": "k", "value": "a", "ok": True, "call": 1, "ret": 2}


@pytest.mark.parametrize(("change", "message"), [
    ({"call": 5, "ret": 2}, "ret 2 is before call 5"),
    ({"call": "nan"}, "call must be a finite number"),
    ({"call": "1"}, "call must be a finite number"),
    ({"ret": float("inf")}, "ret must be a finite number"),
    ({"client": 1.7}, "client must be an integer"),
    ({"client": True}, "client must be an integer"),
])
def test_parse_jsonl_refuses_bad_times_and_clients(tmp_path, change, message):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(_JSONL_OK) + "\n" + json.dumps({**_JSONL_OK, **change}) + "\n")
    with pytest.raises(HistoryParseError, match=f"h.jsonl:2: {message}"):
        parse_jsonl(path)


@pytest.mark.parametrize(("record", "message"), [
    ({"client": 1, "op": "get", "key": "k", "output": "a", "ok": True, "call": 1, "ret": 2},
     "missing field 'result'"),
    ({"client": 1, "op": "put", "key": "k", "ok": True, "call": 1, "ret": 2}, "missing field 'value'"),
    ({"client": 1, "op": "cas", "key": "k", "value": "b", "ok": None, "call": 1, "ret": None},
     "missing field 'expected'"),
    ({"client": 1, "op": "cas", "key": "k", "expected": "a", "ok": False, "call": 1, "ret": 2},
     "missing field 'value'"),
    ({"client": 1, "value": "a", "ok": True, "call": 1, "ret": 2}, "missing field 'op'"),
    ({"client": 1, "op": "put", "value": "a", "ok": True, "call": 1, "ret": 2}, "missing field 'key'"),
])
def test_parse_jsonl_refuses_a_record_without_a_field_its_op_needs(tmp_path, record, message):
    """A read whose value is written under another name (``output`` for ``result``), a write
    without its value, a cas without its expected value, a record without its key: a parse
    error naming the line and the field. (They were read as a read of an absent key or a write
    of ``null``, and the history judged on that: a misspelt field turned a linearizable history
    into a violation.) A read that failed or is in doubt needs no ``result``."""
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(_JSONL_OK) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(HistoryParseError, match=f"h.jsonl:2: {re.escape(message)}$"):
        parse_jsonl(path)
    for ok, ret in ((False, 2), (None, None)):
        path.write_text(json.dumps({"client": 1, "op": "get", "key": "k", "ok": ok, "call": 1, "ret": ret}) + "\n")
        assert [o.ok for o in parse_jsonl(path)] == [ok]


@pytest.mark.parametrize("depth", [900, 100_000], ids=["deeper-than-the-recursion-limit", "json-too-deep"])
def test_parse_jsonl_refuses_a_value_nested_too_deeply(tmp_path, depth):
    """A value of lists nested past Python's recursion limit is a parse error naming the line:
    it was a ``RecursionError`` traceback (from ``json.loads``, or from making the value
    hashable) and the command line exited 1, the code of a history that is NOT
    linearizable."""
    path = tmp_path / "deep.jsonl"
    record = json.dumps({**_JSONL_OK, "value": None}).replace("null", "[" * depth + "]" * depth)
    path.write_text(json.dumps(_JSONL_OK) + "\n" + record + "\n")
    with pytest.raises(HistoryParseError, match=r"deep\.jsonl:2: a value is nested too deeply"):
        parse_jsonl(path)
    res = _cli("--format", "jsonl", path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "deep.jsonl:2: a value is nested too deeply" in res.stderr


_J = "INFO  jepsen.util - "


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", ["jepsen", "edn-kv"])
def test_edn_values_nested_too_deeply_are_a_parse_error_not_a_crash(tmp_path, fmt):
    """An EDN value of vectors nested a million deep (one line of a history file) crashed the
    interpreter (a segmentation fault: hashing nested tuples recurses in C, unchecked); one
    nested past what Python can compare gave the checker a value it could not hold. Both are
    a parse error naming the line, as for JSON lines."""
    def text(depth: int) -> str:
        nested = "[" * depth + "1" + "]" * depth
        if fmt == "jepsen":
            return f"{_J}0\t:invoke\t:read\tnil\n{_J}0\t:ok\t:read\t{nested}\n"
        return f'{{:process 0, :type :invoke, :f :put, :key "k", :value "v"}}\n' \
               f'{{:process 0, :type :invoke, :f :get, :key {nested}}}\n'
    parse = {"jepsen": parse_jepsen, "edn-kv": parse_edn_kv}[fmt]
    path = tmp_path / "deep.txt"
    path.write_text(text(600))
    with pytest.raises(HistoryParseError, match=r"deep\.txt:2: .*nested too deeply"):
        parse(path)
    path.write_text(text(1_000_000))
    res = _cli("--format", fmt, path)
    assert res.returncode == 2, (res.returncode, res.stderr[-500:])
    assert "Traceback" not in res.stderr and "deep.txt:2:" in res.stderr and "nested too deeply" in res.stderr
    assert len(res.stderr) < 1000, f"the error echoes the whole value: {len(res.stderr)} characters"
    path.write_text(text(100))  # nesting a history may hold is read
    assert len(parse(path)) == (1 if fmt == "jepsen" else 2)


@pytest.mark.parametrize(("fmt", "text", "message"), [
    ("jepsen", f"{_J}0\t:invoke\t:write\t{{:a 1}}\n{_J}0\t:ok\t:write\t{{:a 1}}\n",
     "1: value .* is not supported"),
    ("jepsen", f"{_J}0\t:invoke\t:read\tnil\n{_J}0\t:ok\t:read\t[1 {{:a 1}}]\n",
     "2: value .* is not supported"),
    ("edn-kv", '{:process {:a 1}, :type :invoke, :f :get, :key "0"}\n', "1: :process must be an integer"),
    ("edn-kv", '{:process "p", :type :invoke, :f :get, :key "0"}\n', "1: :process must be an integer"),
    ("edn-kv", '{:process 0, :type :invoke, :f :put, :key {:a 1}, :value "x"}\n', "1: :key .* is not supported"),
    ("edn-kv", '{:process 0, :type :invoke, :f :append, :key "k", :value 5}\n', "1: the :value of a :append must be a string"),
    ("edn-kv", '{:process 0, :type :invoke, :f :put, :key "k", :value {:a 1}}\n', "1: the :value of a :put must be a string"),
    ("edn-kv", '{:process 0, :type :invoke, :f :get, :key "k"}\n{:process 0, :type :ok, :f :get, :key "k", :value 5}\n',
     "2: the :value of a :get must be a string"),
])
def test_parsers_refuse_values_the_checker_cannot_hold(tmp_path, fmt, text, message):
    # Maps, non-integer processes and non-string kv values were read, and the checker then
    # died with a bare TypeError (unhashable dict, str + int) or gave a verdict on nonsense.
    path = tmp_path / "h.txt"
    path.write_text(text)
    parse = {"jepsen": parse_jepsen, "edn-kv": parse_edn_kv}[fmt]
    with pytest.raises(HistoryParseError, match=f"h.txt:{message}"):
        parse(path)
    res = _cli("--format", fmt, path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "lincheck: cannot read" in res.stderr


def test_cli_refuses_a_bad_timeout_and_reports_a_history_check_cannot_take(tmp_path):
    good = _jsonl(tmp_path, "good.jsonl", stale=False)
    for bad in ("-1", "nan", "soon"):
        res = _cli("--format", "jsonl", "--timeout", bad, good)
        assert res.returncode == 2
        assert "argument --timeout" in res.stderr and "Traceback" not in res.stderr
    backwards = tmp_path / "backwards.jsonl"
    backwards.write_text(json.dumps({**_JSONL_OK, "call": 5, "ret": 2}) + "\n")
    res = _cli("--format", "jsonl", backwards, good)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "backwards.jsonl:1: ret 2 is before call 5" in res.stderr
    assert f"{good} linearizable" in res.stdout


@pytest.mark.timeout(60)
def test_cli_ctrl_c_exits_130_with_one_line(tmp_path):
    """Ctrl-C during a long check printed a KeyboardInterrupt traceback from inside the
    search; now one line naming the file, exit 130, the verdicts printed before it kept."""
    quick = _jsonl(tmp_path, "quick.jsonl", stale=False)
    # 24 overlapping puts, then gets seeing each value in turn: not linearizable, and proving
    # it explores every subset of the puts (no --timeout: it would run for a very long time).
    n = 24
    slow = tmp_path / "slow.jsonl"
    write_jsonl([Operation(i, "put", "k", str(i), None, 0, 100) for i in range(n)]
                + [Operation(n + i, "get", "k", None, str(i), 101 + 2 * i, 102 + 2 * i) for i in range(n)], slow)
    # Python ignores SIGINT in a child started with it ignored (a background job): restore it.
    code = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execv(sys.executable, [sys.executable, '-m', 'openraft_py.testing.lincheck'] + sys.argv[1:])")
    p = subprocess.Popen([sys.executable, "-c", code, "--format", "jsonl", str(quick), str(slow)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdout is not None
        first = p.stdout.readline()  # the quick file's verdict: the slow one is being checked
        assert first == f"{quick} linearizable\n"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    # (The signal may land as the loop moves from the quick file to the slow one.)
    assert err in (f"lincheck: interrupted while checking {slow}\n", f"lincheck: interrupted while checking {quick}\n")
    assert out == ""


@pytest.mark.skipif(not (HISTORIES / "jepsen").exists(), reason="shared histories not found")
def test_cli_on_shared_histories():
    res = _cli("--format", "jepsen", HISTORIES / "jepsen" / "etcd_002.log",
               HISTORIES / "jepsen" / "etcd_000.log")
    assert res.returncode == 1
    assert "etcd_002.log linearizable" in res.stdout
    assert "etcd_000.log NOT linearizable" in res.stdout


# --- random histories against a sequential oracle -------------------------------------------


def _random_sequential(rng, n):
    """A single client's register history, with the true outputs."""
    state, t, ops = None, 0.0, []
    for _ in range(n):
        kind = rng.choice(("read", "write", "cas"))
        if kind == "read":
            ops.append(r(0, state, t, t + 1))
        elif kind == "write":
            v = rng.randrange(4)
            ops.append(w(0, v, t, t + 1))
            state = v
        else:
            old, new = rng.randrange(4), rng.randrange(4)
            applied = state == old
            ops.append(cas(0, old, new, applied, t, t + 1))
            if applied:
                state = new
        t += 2
    return ops


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 40))
def test_random_sequential_histories_are_linearizable(seed, n):
    assert check(_random_sequential(random.Random(seed), n), register).ok is True


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 40))
def test_one_corrupted_read_is_not_linearizable(seed, n):
    rng = random.Random(seed)
    ops = _random_sequential(rng, n) + [r(0, None, 10_000, 10_001)]
    reads = [i for i, op in enumerate(ops) if op.op == "read"]
    i = rng.choice(reads)
    ops[i] = r(0, 100 + rng.randrange(5), ops[i].call, ops[i].ret)  # a value never written
    res = check(ops, register)
    assert res.ok is False
    assert res.unplaced == [ops[i]]
    assert res.longest_prefix == ops[:i]


def _random_concurrent(rng, n_ops, clients, pending_rate):
    """A concurrent history produced by a real atomic register: each operation takes effect
    at a random instant inside its interval. Some completions are lost (pending); a
    pending operation may also never take effect."""
    ops = []
    free_at = [0.0] * clients
    for _ in range(n_ops):
        c = rng.randrange(clients)
        call = free_at[c] + rng.random()
        ret = call + rng.random() * 5
        point = rng.uniform(call, ret)
        free_at[c] = ret
        kind = rng.choice(("read", "write", "cas"))
        args = (rng.randrange(3), rng.randrange(3))
        ops.append([point, c, kind, args, call, ret])
    ops.sort()
    state, out = None, []
    for _point, c, kind, args, call, ret in ops:
        lost = kind != "read" and rng.random() < pending_rate
        happened = not lost or rng.random() < 0.5
        if kind == "read":
            out.append(r(c, state, call, ret))
        elif kind == "write":
            if happened:
                state = args[0]
            out.append(w(c, args[0], call, INF, ok=None) if lost else w(c, args[0], call, ret))
        else:
            applied = happened and state == args[0]
            if applied:
                state = args[1]
            out.append(cas(c, *args, None, call, INF, ok=None) if lost
                       else cas(c, *args, applied, call, ret))
    out.sort(key=lambda o: o.call)
    return out


@pytest.mark.parametrize("seed", range(30))
def test_random_concurrent_register_histories_are_linearizable(seed):
    rng = random.Random(seed)
    h = _random_concurrent(rng, 200, clients=6, pending_rate=0.05)
    res = check(h, register, timeout=20)
    assert res.ok is True, res.explain()


def _brute_force(history, model):
    """The definition, by enumeration: some subset of the indeterminate operations plus all
    completed ones, in some order that respects real time, is a legal sequential run."""
    ops = [op for op in history if op.ok is not False]
    done = [op for op in ops if op.ok]
    maybe = [op for op in ops if op.ok is None]
    for mask in range(1 << len(maybe)):
        chosen = done + [op for j, op in enumerate(maybe) if mask >> j & 1]
        for order in itertools.permutations(chosen):
            if any(order[b].ret < order[a].call
                   for a in range(len(order)) for b in range(a + 1, len(order))):
                continue
            state = model.init()
            for op in order:
                ok, state = model.step(state, op)
                if not ok:
                    break
            else:
                return True
    return False


def _random_small(rng):
    ops = []
    for _ in range(rng.randint(1, 6)):
        c = rng.randrange(3)
        call = rng.randrange(8)  # a coarse clock, so that ties occur
        ret = call + rng.randrange(4)
        ok = rng.choice((True, True, True, None, False))
        if ok is None:
            ret = INF
        kind = rng.choice(("read", "write", "cas"))
        if kind == "read":
            ops.append(r(c, rng.choice((None, 0, 1)), call, ret, ok=ok))
        elif kind == "write":
            ops.append(w(c, rng.randrange(2), call, ret, ok=ok))
        else:
            ops.append(cas(c, rng.choice((None, 0, 1)), rng.randrange(2),
                           rng.choice((True, False)) if ok else None, call, ret, ok=ok))
    return ops


@pytest.mark.parametrize("chunk", range(4))
def test_agrees_with_brute_force_on_small_random_histories(chunk):
    rng = random.Random(1000 + chunk)
    verdicts = {True: 0, False: 0}
    for _ in range(400):
        h = _random_small(rng)
        want = _brute_force(h, register)
        res = check(h, register)
        assert res.ok is want, (h, res.explain())
        verdicts[want] += 1
    assert min(verdicts.values()) > 40, verdicts  # both verdicts are exercised


def _memoized_reference(history, model):
    """The definition again, by a plain search remembering each (placed set, state) as the
    whole set: an operation may go next unless an unplaced completed one returned before
    its call; the history is linearizable once every completed operation is placed (those
    of unknown outcome may be left out). None of ``check``'s shortcuts (its event list, its
    compact cache keys, read-only operations placed for good)."""
    ops = [op for op in history if op.ok is not False]
    completed = sum(1 << j for j, op in enumerate(ops) if op.ok)
    seen = set()

    def search(placed, state):
        if placed & completed == completed:
            return True
        if (placed, state) in seen:
            return False
        seen.add((placed, state))
        first_ret = min(op.ret for j, op in enumerate(ops) if op.ok and not placed >> j & 1)
        for j, op in enumerate(ops):
            if not placed >> j & 1 and op.call <= first_ret:
                ok, after = model.step(state, op)
                if ok and search(placed | 1 << j, after):
                    return True
        return False

    return search(0, model.init())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("chunk", range(2))
def test_agrees_with_a_plain_search_on_random_histories_with_unknown_outcomes(chunk):
    """The search's cache keys (the leading placed operations as a count, those of unknown
    outcome apart) must give exactly the verdicts of a search that keys on the whole set:
    histories of up to 24 operations, many of unknown outcome, some with a read corrupted."""
    verdicts = {True: 0, False: 0}
    for seed in range(chunk * 150, chunk * 150 + 150):
        rng = random.Random(seed)
        h = _random_concurrent(rng, rng.randint(4, 24), clients=rng.randint(1, 4),
                               pending_rate=rng.choice((0.2, 0.5)))
        reads = [j for j, op in enumerate(h) if op.op == "read"]
        if reads and rng.random() < 0.5:
            j = rng.choice(reads)
            h[j] = r(h[j].client, rng.choice((None, 0, 1, 2)), h[j].call, h[j].ret)
        want = _memoized_reference(h, register)
        res = check(h, register, timeout=30)
        assert res.ok is want, f"seed {seed}: check says {res.ok}, the plain search {want}\n{res.explain()}"
        verdicts[want] += 1
    assert min(verdicts.values()) > 10, verdicts  # both verdicts are exercised
