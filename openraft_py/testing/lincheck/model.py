"""The history's records and the sequential specifications: ``Operation``, ``Model`` and the
built-in models ``register``, ``kv`` and ``kv_register``; ``by_key`` (P-compositionality)
and ``describe_op``."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["INF", "Model", "Operation", "by_key", "describe_op", "kv", "kv_register", "register"]

INF = math.inf
"""The return time of an operation whose outcome is unknown."""


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
    """Split a history into one sub-history per ``key`` (P-compositionality). Raises
    ``TypeError`` naming the operation for a key that is not hashable."""
    parts: dict[Hashable, list[Operation]] = {}
    for op in history:
        try:
            part = parts.setdefault(op.key, [])
        except TypeError as e:
            raise TypeError(f"an operation's key must be hashable, not {type(op.key).__name__} ({e}): {op}") from None
        part.append(op)
    return list(parts.values())


SHOWN = 100
"""The longest ``repr`` of a key or value ``describe_op`` shows whole; a longer one is cut in
the middle (its two ends kept, its length said)."""


def _show(value: Any) -> str:
    """``repr(value)``, cut in the middle past ``SHOWN`` characters."""
    text = repr(value)
    if len(text) <= SHOWN:
        return text
    return f"{text[:60]}...{text[-25:]} ({len(text)} characters)"


def describe_op(op: Operation) -> str:
    """A one-line description: ``client 3: cas(k, 1 -> 2) -> True  [4.0, 7.0]``. A key or
    value whose ``repr`` is longer than ``SHOWN`` characters is shown cut in the middle."""
    key = "" if op.key is None else _show(op.key)
    if op.op == "cas" and isinstance(op.value, tuple) and len(op.value) == 2:
        arg = f"{_show(op.value[0])} -> {_show(op.value[1])}"
    elif op.value is None and op.op in ("read", "get", "delete"):
        arg = ""
    else:
        arg = _show(op.value)
    args = ", ".join(a for a in (key, arg) if a)
    if op.ok is None:
        out = " -> ?"
    elif op.ok is False:
        out = " -> failed"
    elif op.op in ("read", "get", "cas"):
        out = f" -> {_show(op.output)}"
    else:
        out = ""
    ret = "inf" if op.ret == INF else f"{op.ret:g}"
    return f"client {op.client}: {op.op}({args}){out}  [{op.call:g}, {ret}]"


@dataclass(frozen=True)
class Model:
    """A sequential specification.

    ``init()`` gives the initial state and ``step(state, op)`` returns ``(ok, new_state)``:
    whether ``op`` with its recorded output is legal in ``state``. States must be hashable
    (tuples, frozensets, frozen dataclasses): ``check`` raises ``TypeError`` naming the model
    and the operation for one that is not.
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
    try:
        expected, new = op.value
    except (TypeError, ValueError):
        raise ValueError(f"a cas's value must be the pair (expected, new), not {op.value!r}") from None
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
