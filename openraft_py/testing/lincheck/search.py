"""The search: ``check`` (Lowe's just-in-time linearization with a cache, one sub-history per
partition of the model) and its verdict ``CheckResult``. The package docstring
(``openraft_py.testing.lincheck``) explains the algorithm."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import Model, Operation, describe_op, register

__all__ = ["CheckResult", "check"]


@dataclass
class CheckResult:
    """The verdict. ``ok`` is ``True`` (linearizable), ``False`` (not) or ``None`` (unknown:
    the time budget ran out).

    On failure, ``key`` names the first sub-history found not linearizable,
    ``longest_prefix`` is the longest linearization of it the search found (operations in
    linearization order) and ``unplaced`` the operations that could be placed next at that
    point, none of which leads to a full linearization.
    """

    ok: bool | None
    model: str
    key: Hashable = None
    longest_prefix: list[Operation] = field(default_factory=list)
    unplaced: list[Operation] = field(default_factory=list)
    partitions: int = 0
    operations: int = 0
    elapsed: float = 0.0
    describe: Callable[[Operation], str] = field(default=describe_op, repr=False)

    def explain(self) -> str:
        """A readable account of the verdict."""
        head = (
            f"{self.operations} operations in {self.partitions} independent sub-histories, "
            f"model {self.model}, {self.elapsed:.3f} s"
        )
        if self.ok:
            return f"linearizable: {head}"
        if self.ok is None:
            return f"unknown (time budget exceeded): {head}"
        lines = [f"NOT linearizable: {head}"]
        if self.key is not None:
            lines.append(f"key {_short(self.key)} is not linearizable")
        n = len(self.longest_prefix)
        lines.append(f"longest linearizable prefix ({n} operations):")
        shown = self.longest_prefix if n <= 12 else self.longest_prefix[-10:]
        if n > 12:
            lines.append(f"  ... {n - 10} earlier operations")
        lines.extend(f"  {self.describe(op)}" for op in shown)
        lines.append("none of these could be linearized next:")
        lines.extend(f"  {self.describe(op)}" for op in self.unplaced)
        return "\n".join(lines)


class _Timeout(Exception):
    pass


def _search(
    ops: list[Operation], model: Model, deadline: float | None
) -> tuple[bool, list[int], list[int]]:
    """Lowe's search over one sub-history of definite or indeterminate operations.

    Returns ``(ok, longest_prefix, unplaced)`` as indices into ``ops``. Raises ``_Timeout``.
    """
    n = len(ops)
    if n == 0:
        return True, [], []
    # Node numbering: 0 is the head, op i has call node 2i+1 (odd) and, when it completed,
    # return node 2i+2 (even). The tail 2n+2 is even too, so it reads as a return (it is
    # never reached while a completed operation remains, but it keeps the walk safe).
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, 2 * i + 1))
        if op.ok is not None:
            if op.ret < op.call:
                raise ValueError(f"operation returns before it is called: {op}")
            events.append((op.ret, 1, 2 * i + 2))
    events.sort()  # on a time tie a call sorts before a return: the two overlap
    tail = 2 * n + 2
    nxt = [0] * (tail + 1)
    prv = [0] * (tail + 1)
    last = 0
    for _, _, node in events:
        nxt[last] = node
        prv[node] = last
        last = node
    nxt[last] = tail
    prv[tail] = last
    has_ret = [op.ok is not None for op in ops]
    # A completed read-only operation that is legal now is placed now, for good: whatever
    # could follow without it can follow with it (it changes no state and placing it only
    # drops its return deadline). So when the search backs out of such a placement, or finds
    # it already explored, the configuration it was made in is dead too.
    pure = [h and op.op in model.read_only for h, op in zip(has_ret, ops)]
    remaining = sum(has_ret)
    step = model.step
    state = model.init()
    _require_hashable(model, state, "init()")
    # The cache remembers each (linearized set, state) explored. The set is kept as
    # (low, lin >> low, pin): ``lin`` holds the completed operations placed (bit i for
    # operation i), ``pin`` those of unknown outcome (bit pidx[i]: they are few, and one
    # never placed must not hold ``low`` back), and ``low`` counts the operations 0..low-1,
    # each placed or of unknown outcome (a prefix of the history sorted by call, whose
    # completed operations every linearization holds once the search is past them), so the
    # int keeps only the window of placements above it. With the whole bitset, the k-th
    # placement kept a k-bit int: n*n/16 bytes for a sequential history of n operations.
    # The key is exact: lin's bits below ``low`` are those of the completed operations there.
    # Invariant: passed[i] == (not has_ret[i] or bool(lin >> i & 1)); passed[0:low] are all
    # set, passed[low] is not (or low == n).
    lin = 0
    pin = 0
    pidx = [0] * n
    passed = bytearray(n)
    unknown = 0
    for i in range(n):
        if not has_ret[i]:
            pidx[i] = unknown
            unknown += 1
            passed[i] = 1
    low = 0
    while low < n and passed[low]:
        low += 1
    cache: set[tuple[int, int, int, Any]] = set()
    stack: list[tuple[int, Any]] = []
    # The longest linearization seen, for the report: taken when the search backs out of a
    # stack longer than it (not at every placement, which made a long history quadratic).
    best: list[int] = []
    iterations = 0
    cur = nxt[0]
    while remaining:
        if cur & 1:  # a call: try to linearize the operation now
            i = cur >> 1
            try:
                accepted, new_state = step(state, ops[i])
            except (TypeError, ValueError) as e:  # an operation the model cannot take
                raise _step_error(model, ops[i], e) from e
            # An operation of unknown outcome that would leave the state as it is need not
            # be placed here: not placing it at all reaches everything placing it does.
            if accepted and (has_ret[i] or new_state != state):
                if has_ret[i]:
                    new_lin, new_pin, new_low = lin | (1 << i), pin, _low_after(passed, low, i)
                else:
                    new_lin, new_pin, new_low = lin, pin | (1 << pidx[i]), low
                key = (new_low, new_lin >> new_low, new_pin, new_state)
                try:
                    seen = key in cache
                except TypeError:
                    _require_hashable(model, new_state, f"step(state, {model.describe_op(ops[i])})")
                    raise
                if not seen:
                    cache.add(key)
                    stack.append((cur, state))
                    state = new_state
                    lin, pin, low = new_lin, new_pin, new_low
                    passed[i] = 1
                    # lift the call and its return out of the list
                    p, q = prv[cur], nxt[cur]
                    nxt[p] = q
                    prv[q] = p
                    if has_ret[i]:
                        r = cur + 1
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        prv[q] = p
                        remaining -= 1
                    cur = nxt[0]
                    iterations += 1
                    if deadline is not None and not iterations & 0x3FF:
                        if time.monotonic() > deadline:
                            raise _Timeout
                    continue
                if not pure[i]:
                    cur = nxt[cur]
                    continue
                # an explored dead end reached by a read-only placement: back out below
            else:
                cur = nxt[cur]
                continue
        # A return (or the tail, or a dead read-only placement): the last choice was wrong.
        iterations += 1
        if deadline is not None and not iterations & 0x3FF:
            if time.monotonic() > deadline:
                raise _Timeout
        if len(stack) > len(best):
            best = [c >> 1 for c, _ in stack]
        while True:
            if not stack:
                return False, best, _unplaced(best, nxt)
            cur, state = stack.pop()
            i = cur >> 1
            if has_ret[i]:
                lin ^= 1 << i
                passed[i] = 0
                low = min(low, i)
                r = cur + 1
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                remaining += 1
            else:
                pin ^= 1 << pidx[i]
            nxt[prv[cur]] = cur
            prv[nxt[cur]] = cur
            if not pure[i]:
                break
        cur = nxt[cur]
    return True, [c >> 1 for c, _ in stack], []


def _low_after(passed: bytearray, low: int, i: int) -> int:
    """The count of leading operations ``passed`` (placed, or of unknown outcome) once the
    completed operation ``i`` is placed too (``low`` before it): past ``i`` and the passed
    ones right after it when ``i == low``."""
    if i != low:
        return low
    low += 1
    n = len(passed)
    while low < n and passed[low]:
        low += 1
    return low


def _step_error(model: Model, op: Operation, error: TypeError | ValueError) -> TypeError | ValueError:
    """``error`` (raised by ``model.step`` or unpacking its result) with the model and the
    operation named: a cas whose value is not a pair, an append of a number to a string."""
    kind = TypeError if isinstance(error, TypeError) else ValueError
    return kind(f"lincheck model {model.name!r} cannot take {model.describe_op(op)}: {error}")


def _require_hashable(model: Model, state: Any, source: str) -> None:
    """Raise ``TypeError`` naming ``model`` and ``source`` (what produced ``state``) unless
    ``state`` is hashable: the search keeps the states it has explored in a set."""
    try:
        hash(state)
    except TypeError as e:
        raise TypeError(
            f"lincheck model {model.name!r}: its states must be hashable (the search remembers the "
            f"states it explored), but {source} gave {type(state).__name__} {_short(state)} ({e}): "
            f"build states of tuples, frozensets or frozen dataclasses, not lists, sets or dicts"
        ) from None


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unplaced(prefix: list[int], nxt: list[int]) -> list[int]:
    """The operations that could come next after ``prefix``: those called before the first
    pending return once the prefix is lifted out of the (fully restored) event list."""
    lifted = set(prefix)
    out: list[int] = []
    cur = nxt[0]
    tail = len(nxt) - 1
    while cur != tail:
        i = (cur - 1) >> 1
        if i not in lifted:
            if cur & 1:
                out.append(i)
            else:
                break
        cur = nxt[cur]
    return out


def _check_times(op: Operation) -> None:
    """Raise ``ValueError`` unless ``op.call`` is a finite number and ``op.ret`` a number
    not before it (``inf`` for an operation that never returned), and ``op.ok`` is ``True``,
    ``False`` or ``None``."""
    call, ret = op.call, op.ret
    for name, t in (("call", call), ("ret", ret)):
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise ValueError(f"operation's {name} time must be a number, not {t!r}: {op}")
    if not math.isfinite(call):
        raise ValueError(f"operation's call time must be finite, not {call!r}: {op}")
    if math.isnan(ret):
        raise ValueError(f"operation's return time must be a number or inf, not nan: {op}")
    if ret < call:
        raise ValueError(f"operation returns before it is called: {op}")
    if op.ok is not True and op.ok is not False and op.ok is not None:
        raise ValueError(f"operation's ok must be True, False or None, not {op.ok!r}: {op}")


def _prepare(ops: Iterable[Operation], model: Model) -> list[Operation]:
    """Check every operation's times (``ValueError``), then drop what cannot matter: failed
    operations, and read-only ones of unknown outcome."""
    kept = []
    for n, op in enumerate(ops):
        if not isinstance(op, Operation):
            raise TypeError(f"a history is a sequence of lincheck Operations; item {n} is {type(op).__name__} {op!r:.80}")
        _check_times(op)
        if op.ok is not False and not (op.ok is None and op.op in model.read_only):
            kept.append(op)
    return kept


def check(
    history: Sequence[Operation], model: Model = register, *, timeout: float | None = None
) -> CheckResult:
    """Check whether ``history`` is linearizable with respect to ``model``.

    ``timeout`` bounds the wall-clock time in seconds; past it the result is unknown
    (``ok=None``), so a caller never hangs on a pathological history. Raises ``ValueError``
    for a ``timeout`` that is negative or not a number, and for an operation whose ``call``
    is not a finite number or whose ``ret`` is NaN or before its ``call`` or whose ``ok`` is
    not ``True``, ``False`` or ``None``; the ``TypeError`` or ``ValueError`` of
    ``model.step`` for an operation it cannot take (a ``cas`` whose value is not a pair),
    naming the model and the operation; ``TypeError``
    naming the model for a state (from ``model.init`` or ``model.step``) that is not
    hashable, and naming the operation for a ``key`` that is not (with ``by_key``);
    ``TypeError`` for a ``model`` that is not a ``Model`` (its name, say), a ``timeout`` that
    is not a number, and an item of ``history`` that is not an ``Operation``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a lincheck Model (register, kv, kv_register or a Model of your own), "
                        f"not {type(model).__name__} {model!r:.80}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__} {timeout!r:.80}")
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    ops = _prepare(history, model)
    parts = model.partition(ops) if model.partition is not None else [list(ops)]
    # The smallest sub-histories first: a violation in a small one is found fastest.
    parts = sorted((p for p in parts if p), key=len)
    result = CheckResult(
        ok=True,
        model=model.name,
        partitions=len(parts),
        operations=len(ops),
        describe=model.describe_op,
    )
    for part in parts:
        # Sort by call time so indices, and hence the reported orders, follow the history.
        part = sorted(part, key=lambda o: o.call)
        try:
            ok, prefix, unplaced = _search(part, model, deadline)
        except _Timeout:
            result.ok = None
            break
        if not ok:
            result.ok = False
            first = part[0].key  # compared, not hashed: a model that does not partition takes any key
            result.key = first if all(op.key == first for op in part) else None
            result.longest_prefix = [part[i] for i in prefix]
            result.unplaced = [part[i] for i in unplaced]
            break
    result.elapsed = time.monotonic() - start
    return result
