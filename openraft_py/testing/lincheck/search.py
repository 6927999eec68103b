"""A linearizability checker for client histories, in the style of Wing & Gong and Lowe.

A history is a list of ``Operation`` records: who called what, with which input, what came
back, and when the call started and returned. The history is linearizable when every
operation can be given one instant between its call and its return such that, taken in the
order of those instants, the operations are a legal sequential run of the model.

How the search works (Lowe, "Testing for linearizability", 2017, the just-in-time
linearization with a cache)::

    history ──partition by key (P-compositionality)──> one sub-history per key
       │
       v  per key: the call and return events sorted by time, in a doubly linked list
    head ─ call a ─ call b ─ ret a ─ call c ─ ret b ─ ret c ─ tail
       │
       │  walk from the head: at a call, try to linearize that operation now (step the
       │  model); if the model accepts it and (linearized-set, state) is new, lift its
       │  call and return out of the list, push (node, old state) and restart at the head.
       │  At a return, the operation it ends was not linearized in time: pop the last
       │  choice, put its events back (unlift) and try the next call after it.
       v
    success when every completed operation is lifted; failure when a return is reached
    with nothing left to undo.

The ``(bitset, state)`` cache makes each set of linearized operations with a given model
state explored once, which is what keeps the search practical. Bitsets are Python ints.

Outcome rules:

- ``ok is True``: the operation completed, ``output`` is what it returned.
- ``ok is None``: unknown outcome (a timeout, Jepsen ``:info``, no return recorded). It may
  have taken effect at any time after its call, or never: its return time is +infinity, it
  is never required to be linearized, and its output is unknown (a read of unknown result
  constrains nothing and is dropped).
- ``ok is False``: the operation failed and did not take effect (Jepsen ``:fail``). It is
  dropped before the search. (A compare-and-set that completed and reported "not applied"
  is *not* a failure: it is ``ok=True`` with ``output=False``, and it tells the checker the
  value differed from the expected one.)

Histories can be read from Jepsen etcd logs (``parse_jepsen``), EDN key-value histories
(``parse_edn_kv``) and this project's JSON-lines recordings (``parse_jsonl`` /
``write_jsonl``). Command line::

    python -m openraft_py.testing.lincheck --format jepsen|edn-kv|jsonl [--timeout S] FILE...
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Sequence

__all__ = [
    "Operation",
    "Model",
    "CheckResult",
    "HistoryParseError",
    "check",
    "register",
    "kv",
    "kv_register",
    "parse_jepsen",
    "parse_edn_kv",
    "parse_jsonl",
    "write_jsonl",
    "main",
]

INF = math.inf


# --------------------------------------------------------------------------------------------
# Operations and models


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation of a history.

    ``value`` is the input (for ``cas``: the pair ``(expected, new)``), ``output`` what came
    back (a read's value, ``True``/``False`` for ``cas``; ignored when ``ok`` is not
    ``True``). ``call``/``ret`` are times on one clock; ``ret`` is ``inf`` when unknown.
    """

    client: int
    op: str
    key: Hashable = None
    value: Any = None
    output: Any = None
    call: float = 0.0
    ret: float = INF
    ok: bool | None = True  # True: completed; None: unknown outcome; False: failed, no effect

    @property
    def pending(self) -> bool:
        """Whether the outcome is unknown (the operation may or may not have taken effect)."""
        return self.ok is None


def by_key(history: Sequence[Operation]) -> list[list[Operation]]:
    """Split a history into one sub-history per ``key`` (P-compositionality)."""
    parts: dict[Hashable, list[Operation]] = {}
    for op in history:
        parts.setdefault(op.key, []).append(op)
    return list(parts.values())


def describe_op(op: Operation) -> str:
    """A one-line description: ``client 3: cas(k, 1 -> 2) -> True  [4.0, 7.0]``."""
    key = "" if op.key is None else f"{op.key!r}"
    if op.op == "cas" and isinstance(op.value, tuple) and len(op.value) == 2:
        arg = f"{op.value[0]!r} -> {op.value[1]!r}"
    elif op.value is None and op.op in ("read", "get", "delete"):
        arg = ""
    else:
        arg = repr(op.value)
    args = ", ".join(a for a in (key, arg) if a)
    if op.ok is None:
        out = " -> ?"
    elif op.ok is False:
        out = " -> failed"
    elif op.op in ("read", "get", "cas"):
        out = f" -> {op.output!r}"
    else:
        out = ""
    ret = "inf" if op.ret == INF else f"{op.ret:g}"
    return f"client {op.client}: {op.op}({args}){out}  [{op.call:g}, {ret}]"


@dataclass(frozen=True)
class Model:
    """A sequential specification.

    ``init()`` gives the initial state and ``step(state, op)`` returns ``(ok, new_state)``:
    whether ``op`` with its recorded output is legal in ``state``. States must be hashable.
    ``step`` is called with indeterminate operations too (``op.ok is None``): it must then
    accept every outcome the operation could have had. ``partition`` splits a history into
    independent sub-histories, each checked from ``init()`` (the built-in models split by key,
    so their state is one key's value). ``read_only`` names operations that never change the
    state: one of unknown outcome constrains nothing and is dropped before the search.
    """

    name: str
    init: Callable[[], Hashable]
    step: Callable[[Any, Operation], tuple[bool, Any]]
    partition: Callable[[Sequence[Operation]], list[list[Operation]]] | None = by_key
    describe_op: Callable[[Operation], str] = describe_op
    read_only: frozenset[str] = frozenset()


def _cas(state: Any, op: Operation) -> tuple[bool, Any]:
    expected, new = op.value
    if op.ok is None:  # may have applied or not; either way nothing is known about the state
        return True, (new if state == expected else state)
    if op.output:
        return state == expected, new
    return state != expected, state


def _register_step(state: Any, op: Operation) -> tuple[bool, Any]:
    name = op.op
    if name == "read":
        return (op.ok is None or op.output == state), state
    if name == "write":
        return True, op.value
    if name == "cas":
        return _cas(state, op)
    raise ValueError(f"register model: unknown operation {name!r}")


register = Model(
    name="register",
    init=lambda: None,
    step=_register_step,
    read_only=frozenset({"read"}),
)
"""A register per key: ``read`` (output = value), ``write`` (value) and ``cas`` (value =
``(expected, new)``, output = applied). The initial value is ``None`` (Jepsen ``nil``)."""


def _kv_step(state: str, op: Operation) -> tuple[bool, str]:
    name = op.op
    if name == "get":
        return (op.ok is None or op.output == state), state
    if name == "put":
        return True, op.value
    if name == "append":
        return True, state + op.value
    raise ValueError(f"kv model: unknown operation {name!r}")


kv = Model(name="kv", init=lambda: "", step=_kv_step, read_only=frozenset({"get"}))
"""A string per key: ``get`` (output = value), ``put`` and ``append``. Initially ``""``."""


def _kv_register_step(state: Any, op: Operation) -> tuple[bool, Any]:
    name = op.op
    if name == "get":
        return (op.ok is None or op.output == state), state
    if name == "put":
        return True, op.value
    if name == "delete":
        return True, None
    if name == "cas":
        return _cas(state, op)
    raise ValueError(f"kv_register model: unknown operation {name!r}")


kv_register = Model(
    name="kv_register",
    init=lambda: None,
    step=_kv_register_step,
    read_only=frozenset({"get"}),
)
"""A map of registers: ``get`` (output = value, ``None`` when absent), ``put``, ``delete`` and
``cas`` (value = ``(expected, new)``, output = applied; ``expected=None`` means absent)."""


# --------------------------------------------------------------------------------------------
# The search


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
            lines.append(f"key {self.key!r} is not linearizable")
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
    lin = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []
    best: list[int] = []
    best_len = -1
    iterations = 0
    cur = nxt[0]
    while remaining:
        if cur & 1:  # a call: try to linearize the operation now
            i = cur >> 1
            accepted, new_state = step(state, ops[i])
            # An operation of unknown outcome that would leave the state as it is need not
            # be placed here: not placing it at all reaches everything placing it does.
            if accepted and (has_ret[i] or new_state != state):
                new_lin = lin | (1 << i)
                key = (new_lin, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((cur, state))
                    state = new_state
                    lin = new_lin
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
                    if len(stack) > best_len:
                        best_len = len(stack)
                        best = [c >> 1 for c, _ in stack]
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
        while True:
            if not stack:
                return False, best, _unplaced(best, nxt)
            cur, state = stack.pop()
            i = cur >> 1
            lin ^= 1 << i
            if has_ret[i]:
                r = cur + 1
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                remaining += 1
            nxt[prv[cur]] = cur
            prv[nxt[cur]] = cur
            if not pure[i]:
                break
        cur = nxt[cur]
    return True, [c >> 1 for c, _ in stack], []


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


def _prepare(ops: Iterable[Operation], model: Model) -> list[Operation]:
    """Drop what cannot matter: failed operations, and read-only ones of unknown outcome."""
    return [
        op
        for op in ops
        if op.ok is not False and not (op.ok is None and op.op in model.read_only)
    ]


def check(
    history: Sequence[Operation], model: Model = register, *, timeout: float | None = None
) -> CheckResult:
    """Check whether ``history`` is linearizable with respect to ``model``.

    ``timeout`` bounds the wall-clock time in seconds; past it the result is unknown
    (``ok=None``), so a caller never hangs on a pathological history.
    """
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
            keys = {op.key for op in part}
            result.key = keys.pop() if len(keys) == 1 else None
            result.longest_prefix = [part[i] for i in prefix]
            result.unplaced = [part[i] for i in unplaced]
            break
    result.elapsed = time.monotonic() - start
    return result


# --------------------------------------------------------------------------------------------
# Parsers


class HistoryParseError(ValueError):
    """A history file could not be understood."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = str(path)
        self.line = line


_EDN_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>[\[{(])|(?P<close>[\]})])
      | "(?P<str>(?:[^"\\]|\\.)*)"
      | (?P<kw>:[^\s,\[\]{}()"]+)
      | (?P<num>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?=[\s,\[\]{}()]|$)
      | (?P<sym>[^\s,\[\]{}()"]+)
    )[\s,]*""",
    re.VERBOSE,
)
_EDN_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


class _Keyword(str):
    """An EDN keyword (``:ok``), kept apart from strings."""


def _read_edn(text: str) -> Any:
    """Read one EDN value (the subset histories use: maps, vectors, lists, strings,
    keywords, integers, floats, ``nil``, ``true``/``false``)."""
    pos = 0
    stack: list[tuple[str, list[Any]]] = []
    result: list[Any] = []
    text = text.strip()
    while pos < len(text):
        m = _EDN_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"unexpected input at column {pos + 1}: {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.group("open"):
            stack.append((m.group("open"), []))
            continue
        if m.group("close"):
            if not stack:
                raise ValueError(f"unbalanced {m.group('close')!r}")
            opener, items = stack.pop()
            if "[{(".index(opener) != "]})".index(m.group("close")):
                raise ValueError(f"{opener!r} closed by {m.group('close')!r}")
            if opener == "{":
                if len(items) % 2:
                    raise ValueError("a map needs an even number of forms")
                value: Any = dict(zip(items[::2], items[1::2]))
            else:
                value = tuple(items)
        elif m.group("str") is not None:
            value = re.sub(r"\\(.)", lambda e: _EDN_ESCAPES.get(e.group(1), e.group(1)),
                           m.group("str"))
        elif m.group("kw"):
            value = _Keyword(m.group("kw"))
        elif m.group("num"):
            s = m.group("num")
            value = float(s) if any(c in s for c in ".eE") else int(s)
        else:
            s = m.group("sym")
            if s == "nil":
                value = None
            elif s in ("true", "false"):
                value = s == "true"
            else:
                raise ValueError(f"unsupported EDN symbol {s!r}")
        if stack:
            stack[-1][1].append(value)
        else:
            result.append(value)
    if stack:
        raise ValueError("unterminated collection")
    if len(result) != 1:
        raise ValueError(f"expected one value, found {len(result)}")
    return result[0]


class _Pairing:
    """Matches completions to invocations by process, as Jepsen histories are written."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.open: dict[Any, dict[str, Any]] = {}
        self.done: list[dict[str, Any]] = []

    def invoke(self, lineno: int, process: Any, rec: dict[str, Any]) -> None:
        prev = self.open.pop(process, None)
        if prev is not None:  # a process that invokes again never heard back: unknown outcome
            self.done.append(prev)
        self.open[process] = rec

    def complete(self, lineno: int, process: Any, f: str) -> dict[str, Any]:
        rec = self.open.pop(process, None)
        if rec is None:
            raise HistoryParseError(self.path, lineno, f"completion of process {process} "
                                    "without a matching :invoke")
        if rec["op"] != f:
            raise HistoryParseError(self.path, lineno, f"process {process} invoked "
                                    f":{rec['op']} but completed :{f}")
        self.done.append(rec)
        return rec

    def operations(self) -> list[Operation]:
        recs = self.done + list(self.open.values())
        recs.sort(key=lambda r: r["call"])
        return [Operation(**r) for r in recs]


_JEPSEN_LINE = re.compile(r"jepsen\.util\s+-\s+(\S+)\s+(:\S+)\s+(:\S+)\s*(.*?)\s*$")
_JEPSEN_TYPES = (":invoke", ":ok", ":fail", ":info")


def parse_jepsen(path: str | Path) -> list[Operation]:
    """Read a Jepsen etcd register log (``INFO  jepsen.util - 3\\t:invoke\\t:read\\tnil``).

    Values are ``nil``, integers, or ``[expected new]`` for ``cas``; columns may be
    separated by tabs or spaces. Lines that are not client operations (other loggers,
    ``:nemesis`` lines, blank lines) are skipped. The line number is the clock. ``:ok``
    completes an operation (a read's value is on the completion line), ``:fail`` means it
    did not take effect, ``:info`` (e.g. ``:timed-out``) and a missing completion mean the
    outcome is unknown.
    """
    pairing = _Pairing(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            m = _JEPSEN_LINE.search(line)
            if m is None:
                continue
            proc_s, typ, f, val_s = m.groups()
            if not re.fullmatch(r"\d+", proc_s):
                continue  # :nemesis and other non-client actors
            if typ not in _JEPSEN_TYPES:
                raise HistoryParseError(path, lineno, f"unknown operation type {typ}")
            f = f[1:]
            if f not in ("read", "write", "cas"):
                raise HistoryParseError(path, lineno, f"unknown register operation :{f}")
            try:
                value = _read_edn(val_s) if val_s else None
            except ValueError as e:
                raise HistoryParseError(path, lineno, f"bad value {val_s!r}: {e}") from None
            process = int(proc_s)
            if typ == ":invoke":
                if f == "cas" and not (isinstance(value, tuple) and len(value) == 2):
                    raise HistoryParseError(path, lineno,
                                            f"cas needs [expected new], got {val_s!r}")
                pairing.invoke(lineno, process, dict(
                    client=process, op=f, key=None, value=None if f == "read" else value,
                    output=None, call=float(lineno), ret=INF, ok=None))
                continue
            rec = pairing.complete(lineno, process, f)
            if typ == ":ok":
                rec.update(ok=True, ret=float(lineno),
                           output=value if f == "read" else (True if f == "cas" else None))
            elif typ == ":fail":
                rec.update(ok=False, ret=float(lineno))
            # :info: outcome unknown, keep ret = inf and ok = None
    return pairing.operations()


def parse_edn_kv(path: str | Path) -> list[Operation]:
    """Read an EDN key-value history, one map per line::

        {:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}
        {:process 0, :type :ok, :f :get, :key "0", :value "x 0 0 y"}

    Operations ``get``/``put``/``append``; a ``get``'s value is on its completion. The line
    number is the clock; ``:fail``/``:info``/no completion as for ``parse_jepsen``.
    """
    pairing = _Pairing(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            try:
                rec = _read_edn(line)
            except ValueError as e:
                raise HistoryParseError(path, lineno, f"bad EDN: {e}") from None
            if not isinstance(rec, dict):
                raise HistoryParseError(path, lineno, "expected a map")
            process, typ, f = rec.get(":process"), rec.get(":type"), rec.get(":f")
            if isinstance(process, _Keyword) or process is None:
                continue  # :nemesis
            if typ not in _JEPSEN_TYPES:
                raise HistoryParseError(path, lineno, f"bad :type {typ!r}")
            if f not in (":get", ":put", ":append"):
                raise HistoryParseError(path, lineno, f"unknown key-value operation {f!r}")
            f = f[1:]
            value = rec.get(":value")
            if typ == ":invoke":
                pairing.invoke(lineno, process, dict(
                    client=process, op=f, key=rec.get(":key"),
                    value=None if f == "get" else value, output=None,
                    call=float(lineno), ret=INF, ok=None))
                continue
            done = pairing.complete(lineno, process, f)
            if typ == ":ok":
                done.update(ok=True, ret=float(lineno), output=value if f == "get" else None)
            elif typ == ":fail":
                done.update(ok=False, ret=float(lineno))
    return pairing.operations()


_JSONL_OPS = ("put", "get", "cas", "delete")


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def parse_jsonl(path: str | Path) -> list[Operation]:
    """Read a JSON-lines history for the ``kv_register`` model, one object per line::

        {"client": 1, "op": "cas", "key": "k", "expected": "a", "value": "b",
         "ok": false, "call": 1.5, "ret": 1.7}

    ``ok: null`` or ``ret: null`` means the outcome is unknown. A ``cas`` with
    ``ok: false`` completed without applying (the value differed from ``expected``); any
    other operation with ``ok: false`` failed and did not take effect. A ``get`` has its
    value in ``result`` (``null`` when the key is absent).
    """
    ops: list[Operation] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("expected a JSON object")
                name = rec["op"]
                if name not in _JSONL_OPS:
                    raise ValueError(f"unknown op {name!r}")
                call = float(rec["call"])
                ret_raw = rec.get("ret")
                ok_raw = rec.get("ok")
                if ok_raw not in (True, False, None):
                    raise ValueError(f"ok must be true, false or null, not {ok_raw!r}")
                value = _hashable(rec.get("value"))
                if name == "cas":
                    value = (_hashable(rec.get("expected")), value)
                elif name in ("get", "delete"):
                    value = None
                pending = ok_raw is None or ret_raw is None
                ret = INF if pending else float(ret_raw)
                if pending:
                    ok, output = None, None
                elif name == "cas":
                    ok, output = True, ok_raw
                elif ok_raw:
                    ok, output = True, _hashable(rec.get("result")) if name == "get" else None
                else:
                    ok, output = False, None
                ops.append(Operation(
                    client=int(rec["client"]), op=name, key=_hashable(rec.get("key")),
                    value=value, output=output, call=call, ret=ret, ok=ok))
            except (ValueError, KeyError, TypeError) as e:
                msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
                raise HistoryParseError(path, lineno, msg) from None
    return ops


def write_jsonl(ops: Iterable[Operation], path: str | Path) -> None:
    """Write operations in the format ``parse_jsonl`` reads (for history recorders).

    A ``cas`` is written with ``ok`` = its output (applied or not); a failed operation
    (``ok=False``) as ``ok: false``, which ``parse_jsonl`` reads back as failed except for
    ``cas``, where it means "completed, not applied".
    """
    with open(path, "w", encoding="utf-8") as fh:
        for op in ops:
            rec: dict[str, Any] = {"client": op.client, "op": op.op, "key": op.key}
            if op.op == "cas":
                rec["expected"], rec["value"] = op.value
            elif op.op == "put":
                rec["value"] = op.value
            if op.ok is None:
                rec["ok"] = None
            elif op.ok and op.op == "cas":
                rec["ok"] = bool(op.output)
            else:
                rec["ok"] = op.ok
            if op.op == "get" and op.ok:
                rec["result"] = op.output
            rec["call"] = op.call
            rec["ret"] = None if op.ok is None or op.ret == INF else op.ret
            fh.write(json.dumps(rec) + "\n")


# --------------------------------------------------------------------------------------------
# Command line

_FORMATS: dict[str, tuple[Callable[[str | Path], list[Operation]], Model]] = {
    "jepsen": (parse_jepsen, register),
    "edn-kv": (parse_edn_kv, kv),
    "jsonl": (parse_jsonl, kv_register),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Check history files; exit 0 if all are linearizable, 1 if not (or unknown), 2 if a
    file cannot be read or parsed."""
    parser = argparse.ArgumentParser(
        prog="python -m openraft_py.testing.lincheck",
        description="Check client histories for linearizability.",
    )
    parser.add_argument("--format", required=True, choices=sorted(_FORMATS))
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per file before giving up with an unknown verdict")
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    parse, model = _FORMATS[args.format]
    status = 0
    for name in args.files:
        try:
            history = parse(name)
        except (OSError, UnicodeDecodeError, HistoryParseError) as e:
            print(f"lincheck: cannot read {name}: {e}", file=sys.stderr)
            status = 2
            continue
        result = check(history, model, timeout=args.timeout)
        if result.ok:
            print(f"{name} linearizable")
            continue
        if result.ok is None:
            print(f"{name} unknown (time budget of {args.timeout} s exceeded)")
        else:
            print(f"{name} NOT linearizable")
            print("\n".join("    " + line for line in result.explain().splitlines()))
        status = max(status, 1)
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
