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
``write_jsonl``). Layout: ``model`` (``Operation``, ``Model`` and the built-in models), ``search``
(``check``, ``CheckResult``), ``parse`` (the history readers and writer), ``cli``. Every
name is importable from ``openraft_py.testing.lincheck``. Command line::

    python -m openraft_py.testing.lincheck --format jepsen|edn-kv|jsonl [--timeout S] [--max-bytes N] FILE...
"""

from __future__ import annotations

from .cli import main
from .model import INF, Model, Operation, by_key, describe_op, kv, kv_register, register
from .parse import (
    MAX_HISTORY_BYTES,
    MAX_LINE_CHARS,
    HistoryParseError,
    parse_edn_kv,
    parse_jepsen,
    parse_jsonl,
    write_jsonl,
)
from .search import CheckResult, check

__all__ = [
    "INF",
    "MAX_HISTORY_BYTES",
    "MAX_LINE_CHARS",
    "CheckResult",
    "HistoryParseError",
    "Model",
    "Operation",
    "by_key",
    "check",
    "describe_op",
    "kv",
    "kv_register",
    "main",
    "parse_edn_kv",
    "parse_jepsen",
    "parse_jsonl",
    "register",
    "write_jsonl",
]
