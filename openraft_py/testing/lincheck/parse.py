"""History readers and writers: Jepsen etcd register logs (``parse_jepsen``), EDN key-value
histories (``parse_edn_kv``) and this project's JSON-lines recordings (``parse_jsonl`` /
``write_jsonl``), and ``HistoryParseError``."""

from __future__ import annotations

import io
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ...errors import restore_error
from .model import INF, Operation
from .search import _check_times

__all__ = [
    "MAX_HISTORY_BYTES", "MAX_LINE_CHARS", "HistoryParseError", "parse_edn_kv", "parse_jepsen", "parse_jsonl",
    "write_jsonl",
]


class HistoryParseError(ValueError):
    """A history file could not be understood."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = str(path)
        self.line = line

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled and copied as its message and fields, without calling __init__ again (it
        # takes the fields, not the message): see openraft_py.errors.RaftError.
        return (restore_error, (type(self), self.args, self.__dict__))


MAX_HISTORY_BYTES = 1 << 30
"""The default bound of the readers' ``max_bytes`` (1 GiB): a history file holding more is a
``HistoryParseError``. The readers keep every operation in memory, and an endless input
(``/dev/zero``, a pipe that never ends) was read until memory ran out."""

MAX_LINE_CHARS = 1 << 26
"""The longest line a history file may hold (64 Mi characters, its newline counted): a
longer one is a ``HistoryParseError`` naming it. A line is read whole before it is parsed:
``/dev/zero`` (no newline ever) grew one line until memory ran out."""


class _TooLarge(Exception):
    """Raised by ``_Bounded`` once its file gave more than its limit."""


class _Bounded(io.RawIOBase):
    """The bytes of the raw file ``raw``, raising ``_TooLarge`` from the read that takes the
    count past ``limit`` (``None``: no limit). Closing it closes ``raw``."""

    def __init__(self, raw: io.RawIOBase, limit: int | None) -> None:
        super().__init__()
        self._raw = raw
        self._limit = limit
        self._read = 0  # Invariant: bytes ``raw`` gave so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        n = self._raw.readinto(buffer)
        if n:
            self._read += n
            if self._limit is not None and self._read > self._limit:
                raise _TooLarge
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _check_max_bytes(max_bytes: int | None) -> None:
    """``TypeError`` unless ``max_bytes`` is an int or ``None``, ``ValueError`` if below 1."""
    if max_bytes is None:
        return
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes must be an int or None, not {type(max_bytes).__name__} {max_bytes!r:.80}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1 (None: no bound), not {max_bytes}")


def _history_lines(path: str | Path, max_bytes: int | None) -> Iterator[tuple[int, str]]:
    """The lines of the history file ``path`` with their numbers (from 1), read as UTF-8 text
    with universal newlines (as ``open(path, encoding="utf-8")`` reads them), each at most
    ``MAX_LINE_CHARS`` characters long, the file at most ``max_bytes`` bytes (``None``: no
    bound). Past either bound, a ``HistoryParseError`` naming the line being read; nothing
    more is read. ``OSError`` and ``UnicodeDecodeError`` as ``open`` and its reads raise
    them. ``TypeError``/``ValueError`` for a ``max_bytes`` that is not an int >= 1 or
    ``None``, before the file is opened."""
    _check_max_bytes(max_bytes)
    raw = open(path, "rb", buffering=0)  # (closed by the wrapper around it, below)
    try:
        bounded = _Bounded(raw, max_bytes)
    except BaseException:
        raw.close()
        raise
    with io.TextIOWrapper(io.BufferedReader(bounded), encoding="utf-8") as fh:
        lineno = 0
        while True:
            lineno += 1
            try:
                line = fh.readline(MAX_LINE_CHARS + 1)
            except _TooLarge:
                raise HistoryParseError(path, lineno, f"the file holds more than {max_bytes} bytes, the bound of "
                                        "a history (max_bytes; the command line's --max-bytes): is it a "
                                        "history file?") from None
            if not line:
                return
            if len(line) > MAX_LINE_CHARS:
                raise HistoryParseError(path, lineno, f"a line of more than {MAX_LINE_CHARS} characters: is it "
                                        "a history file?")
            yield lineno, line


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


MAX_EDN_DEPTH = 500
"""The deepest nesting of EDN collections a history may hold (at most half of Python's
recursion limit): Python hashes nested tuples recursively in C, unchecked (a million deep
crashed the interpreter), and compares them within its recursion limit."""


def _read_edn(text: str) -> Any:
    """Read one EDN value (the subset histories use: maps, vectors, lists, strings,
    keywords, integers, floats, ``nil``, ``true``/``false``); ``ValueError`` for collections
    nested deeper than ``MAX_EDN_DEPTH``."""
    depth_limit = min(MAX_EDN_DEPTH, sys.getrecursionlimit() // 2)
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
            if len(stack) >= depth_limit:
                raise ValueError(f"a value is nested too deeply (collections inside one another past "
                                 f"{depth_limit} levels)")
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


def _require_hashable(path: str | Path, lineno: int, what: str, value: Any) -> None:
    """A value the checker keeps in its states or groups by must be hashable (EDN maps are
    not): raise ``HistoryParseError`` naming it otherwise."""
    try:
        hash(value)
    except TypeError:
        raise HistoryParseError(path, lineno, f"{what} {value!r:.80} is not supported "
                                "(maps cannot be values, keys or processes)") from None


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


def parse_jepsen(path: str | Path, *, max_bytes: int | None = MAX_HISTORY_BYTES) -> list[Operation]:
    """Read a Jepsen etcd register log (``INFO  jepsen.util - 3\\t:invoke\\t:read\\tnil``).

    Values are ``nil``, integers, or ``[expected new]`` for ``cas``; columns may be
    separated by tabs or spaces. Lines that are not client operations (other loggers,
    ``:nemesis`` lines, blank lines) are skipped. The line number is the clock. ``:ok``
    completes an operation (a read's value is on the completion line), ``:fail`` means it
    did not take effect, ``:info`` (e.g. ``:timed-out``) and a missing completion mean the
    outcome is unknown. A value that is, or holds, a map is a ``HistoryParseError``, and so
    is one nested more than ``MAX_EDN_DEPTH`` (500) deep.
    ``max_bytes`` bounds the file (``MAX_HISTORY_BYTES``, 1 GiB, by default; ``None``: no
    bound) and ``MAX_LINE_CHARS`` each line: past either, a ``HistoryParseError`` naming the
    line, nothing more read (``/dev/zero`` was read until memory ran out).
    """
    pairing = _Pairing(path)
    for lineno, line in _history_lines(path, max_bytes):
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
            raise HistoryParseError(path, lineno, f"bad value {val_s!r:.80}: {e}") from None
        process = int(proc_s)
        _require_hashable(path, lineno, "value", value)
        if typ == ":invoke":
            if f == "cas" and not (isinstance(value, tuple) and len(value) == 2):
                raise HistoryParseError(path, lineno,
                                        f"cas needs [expected new], got {val_s!r:.80}")
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


def parse_edn_kv(path: str | Path, *, max_bytes: int | None = MAX_HISTORY_BYTES) -> list[Operation]:
    """Read an EDN key-value history, one map per line::

        {:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}
        {:process 0, :type :ok, :f :get, :key "0", :value "x 0 0 y"}

    Operations ``get``/``put``/``append``; a ``get``'s value is on its completion. The line
    number is the clock; ``:fail``/``:info``/no completion as for ``parse_jepsen``.
    ``:process`` is an integer (or a keyword such as ``:nemesis``, skipped), the values of
    ``put``/``append`` strings (a completed ``get``'s a string or ``nil``), and a map is never a key;
    anything else (a value nested more than ``MAX_EDN_DEPTH`` deep too) is a
    ``HistoryParseError`` naming the line.
    ``max_bytes`` bounds the file (``MAX_HISTORY_BYTES``, 1 GiB, by default; ``None``: no
    bound) and ``MAX_LINE_CHARS`` each line: past either, a ``HistoryParseError`` naming the
    line, nothing more read (``/dev/zero`` was read until memory ran out).
    """
    pairing = _Pairing(path)
    for lineno, line in _history_lines(path, max_bytes):
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
        if isinstance(process, bool) or not isinstance(process, int):
            raise HistoryParseError(path, lineno, f":process must be an integer, not {process!r:.80}")
        if typ not in _JEPSEN_TYPES:
            raise HistoryParseError(path, lineno, f"bad :type {typ!r:.80}")
        if f not in (":get", ":put", ":append"):
            raise HistoryParseError(path, lineno, f"unknown key-value operation {f!r:.80}")
        f = f[1:]
        value = rec.get(":value")
        key = rec.get(":key")
        _require_hashable(path, lineno, ":key", key)
        # The kv model's values are strings: what a put or append writes, what a get saw
        # (or nil).
        if (typ == ":invoke" and f != "get" and not isinstance(value, str)) or (
                typ == ":ok" and f == "get" and not isinstance(value, (str, type(None)))):
            raise HistoryParseError(path, lineno, f"the :value of a :{f} must be a string, "
                                    f"not {value!r:.80}")
        if typ == ":invoke":
            pairing.invoke(lineno, process, dict(
                client=process, op=f, key=key,
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


def _time(value: Any, name: str) -> float:
    """A JSON-lines time: a finite JSON number (``ValueError`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        nullable = " or null" if name == "ret" else ""
        raise ValueError(f"{name} must be a finite number{nullable}, not {value!r:.80}")
    return float(value)


def parse_jsonl(path: str | Path, *, max_bytes: int | None = MAX_HISTORY_BYTES) -> list[Operation]:
    """Read a JSON-lines history for the ``kv_register`` model, one object per line::

        {"client": 1, "op": "cas", "key": "k", "expected": "a", "value": "b",
         "ok": false, "call": 1.5, "ret": 1.7}

    ``call`` and ``ret`` are finite numbers, ``ret >= call``. ``ok: null`` or ``ret: null``
    means the outcome is unknown. A ``cas`` with
    ``ok: false`` completed without applying (the value differed from ``expected``); any
    other operation with ``ok: false`` failed and did not take effect. A ``get`` that
    completed (``ok: true``) has its value in ``result`` (``null`` when the key is absent).
    ``client`` is an integer. Every record has ``key``; a ``put`` has ``value``, a ``cas``
    ``expected`` and ``value``. A record without a field it needs, or with one of the wrong
    type, is a ``HistoryParseError`` naming the line; fields the format does not name are
    ignored (a recorder may add its own, as the Jepsen runner's ``outcome`` and ``node``).
    ``max_bytes`` bounds the file (``MAX_HISTORY_BYTES``, 1 GiB, by default; ``None``: no
    bound) and ``MAX_LINE_CHARS`` each line: past either, a ``HistoryParseError`` naming the
    line, nothing more read (``/dev/zero`` was read until memory ran out).
    """
    ops: list[Operation] = []
    for lineno, line in _history_lines(path, max_bytes):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("expected a JSON object")
            name = rec["op"]
            if name not in _JSONL_OPS:
                raise ValueError(f"unknown op {name!r:.80}")
            call = _time(rec["call"], "call")
            ret_raw = rec.get("ret")
            if ret_raw is not None and _time(ret_raw, "ret") < call:
                raise ValueError(f"ret {ret_raw!r} is before call {rec['call']!r}")
            client = rec["client"]
            if isinstance(client, bool) or not isinstance(client, int):
                raise ValueError(f"client must be an integer, not {client!r:.80}")
            ok_raw = rec.get("ok")
            if ok_raw not in (True, False, None):
                raise ValueError(f"ok must be true, false or null, not {ok_raw!r:.80}")
            key = _hashable(rec["key"])
            # A field its op needs is required, so that a misspelt one is refused rather
            # than read as null (an absent key, a write of null).
            if name == "cas":
                value = (_hashable(rec["expected"]), _hashable(rec["value"]))
            elif name == "put":
                value = _hashable(rec["value"])
            else:
                value = None
            pending = ok_raw is None or ret_raw is None
            ret = INF if pending or ret_raw is None else float(ret_raw)
            if pending:
                ok, output = None, None
            elif name == "cas":
                ok, output = True, ok_raw
            elif ok_raw:
                ok, output = True, _hashable(rec["result"]) if name == "get" else None
            else:
                ok, output = False, None
            ops.append(Operation(
                client=client, op=name, key=key,
                value=value, output=output, call=call, ret=ret, ok=ok))
        except (ValueError, KeyError, TypeError) as e:
            msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise HistoryParseError(path, lineno, msg) from None
        except RecursionError:  # (json.loads or _hashable on lists in lists ... in lists)
            raise HistoryParseError(path, lineno, "a value is nested too deeply (lists or objects "
                                    "inside one another past Python's recursion limit)") from None
    return ops


def write_jsonl(ops: Iterable[Operation], path: str | Path) -> None:
    """Write operations in the format ``parse_jsonl`` reads (for history recorders).

    A ``cas`` is written with ``ok`` = its output (applied or not); a failed operation
    (``ok=False``) as ``ok: false``, which ``parse_jsonl`` reads back as failed, except a
    failed ``cas``, which is left out (``parse_jsonl`` would read ``ok: false`` as "completed,
    not applied", a constraint the failed one does not make; a failed operation constrains
    nothing). ``parse_jsonl(path)`` gives back the operations, the failed ``cas`` left out.

    Every operation is checked before the file is opened: ``ValueError`` naming it for an
    ``op`` the format has not (``put``, ``get``, ``cas`` and ``delete``: the model
    ``kv_register``; a ``register`` history's ``write`` lost its value), for times ``check``
    refuses (a NaN or infinite ``call``, a ``ret`` before it), a ``client`` that is not an
    integer, a ``cas`` whose value is not a pair and an operation whose outcome is known
    (``ok`` true or false) with ``ret`` inf (written ``null``, it would read back as of
    unknown outcome); ``TypeError`` naming it for a key or value JSON cannot hold (``bytes``: decode
    them). Nothing is written then.
    """
    lines = [line for n, op in enumerate(ops, 1) if (line := _jsonl_line(n, op)) is not None]
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(lines)


def _jsonl_line(n: int, op: Operation) -> str | None:
    """The line of ``op``, the ``n``-th operation, for ``write_jsonl`` (``None``: left out);
    raises as ``write_jsonl`` says."""
    if not isinstance(op, Operation):
        raise TypeError(f"operation {n}: a lincheck Operation, not {type(op).__name__} {op!r:.80}")
    if op.op not in _JSONL_OPS:
        raise ValueError(f"operation {n}: parse_jsonl reads the ops put, get, cas and delete (model kv_register), "
                         f"not {op.op!r:.80}: {op!r:.200}")
    try:
        _check_times(op)
    except ValueError as e:
        raise ValueError(f"operation {n}: {e}") from None
    if op.ok is not None and op.ret == INF:  # (its ret is written null: "unknown outcome")
        raise ValueError(f"operation {n}: its outcome is known (ok={op.ok}) but its ret is inf: parse_jsonl would "
                         f"read it back as of unknown outcome; give its return time, or ok=None: {op!r:.200}")
    if isinstance(op.client, bool) or not isinstance(op.client, int):
        raise ValueError(f"operation {n}: its client must be an integer, not {op.client!r:.80}")
    if op.op == "cas" and not (isinstance(op.value, tuple) and len(op.value) == 2):
        raise ValueError(f"operation {n}: a cas's value must be the pair (expected, new), not {op.value!r:.80}")
    if op.op == "cas" and op.ok is False:
        return None
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
    rec["ret"] = None if op.ok is None else op.ret  # (a known outcome has a finite ret: checked above)
    try:
        return json.dumps(rec, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise type(e)(f"operation {n}: {e}: {op!r:.200}") from None
    except RecursionError:
        raise ValueError(f"operation {n}: a value is nested too deeply: {op!r:.200}") from None
