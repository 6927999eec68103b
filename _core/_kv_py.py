"""Key-value kernel, the pure-Python reference twin of ``_kv_c.pyx``.

The shipped key-value state machines (``openraft_py.storage.memory``) store a command as
``KV_PREFIX`` (``0xc1``) followed by the msgpack encoding of a tagged, array-like msgspec
Struct. A ``set`` command, ``KvSet(key, value)``, is then::

    +------+------------+----------------+-----------+-------------+
    | 0xc1 | 0x93       | 0xa3 "set"     | str key   | str value   |
    |      | fixarray 3 | fixstr tag     | (msgpack) | (msgpack)   |
    +------+------------+----------------+-----------+-------------+

with each string in any msgpack str format (fixstr, str8, str16, str32) and nothing after
the value. Every write of the key-value benchmarks and of the example service's ``PUT`` is
one, so a state machine applies runs of them here without a decoder call, a Struct and a
function call per entry. Anything else (another command, another encoding of the same
command, bytes that are not strict UTF-8, trailing bytes) is left to the caller's general
path, msgspec's decoder, which gives the same answer for everything this kernel takes.
"""

from __future__ import annotations

import operator
from typing import Any

KV_SET_HEADER = b"\xc1\x93\xa3set"
"""The first bytes of a ``set`` command's data: ``KV_PREFIX``, a 3-element fixarray, the
tag ``"set"`` as a fixstr (how msgspec encodes ``KvSet``)."""


def _str_at(data: bytes, pos: int) -> tuple[int, int]:
    """``(start, length)`` of the msgpack str whose header is at ``data[pos]``; ``(-1, 0)``
    when there is none there (not a str format, or its header runs past the end)."""
    n = len(data)
    if pos >= n:
        return -1, 0
    b = data[pos]
    if 0xA0 <= b <= 0xBF:  # fixstr: the length is in the low 5 bits
        return pos + 1, b & 0x1F
    if b == 0xD9:  # str8
        return (pos + 2, data[pos + 1]) if pos + 2 <= n else (-1, 0)
    if b == 0xDA:  # str16, big-endian length
        return (pos + 3, int.from_bytes(data[pos + 1 : pos + 3], "big")) if pos + 3 <= n else (-1, 0)
    if b == 0xDB:  # str32, big-endian length
        return (pos + 5, int.from_bytes(data[pos + 1 : pos + 5], "big")) if pos + 5 <= n else (-1, 0)
    return -1, 0


def apply_kv_sets(
    kv: dict[str, str] | None,
    entries: list[Any],
    start: int,
    normal_type: Any,
    responses: list[Any] | None,
    applied_log: list[Any] | None,
    puts: dict[bytes, bytes] | None = None,
    key_prefix: bytes = b"",
) -> int:
    """Apply the run of ``set`` commands that begins at ``entries[start]`` (below 0 counts
    as 0) to ``kv``; return the index of the first entry not applied: ``len(entries)`` when
    the run reaches the end, ``start`` itself when it is past the end.

    An entry is in the run when its ``payload`` is exactly of type ``normal_type`` and the
    payload's ``data`` is a ``bytes`` object holding one ``set`` command as the module
    docstring draws it, with key and value strict UTF-8. For each, in order: when
    ``applied_log`` is not ``None``, append ``(entry.log_id, data)`` to it; when
    ``responses`` is not ``None``, append the key's previous value (``None`` when absent);
    then set ``kv[key] = value`` (unless ``kv`` is ``None``); when ``puts`` is not ``None``, also set
    ``puts[key_prefix + key_bytes] = value_bytes``, the key's and the value's UTF-8 bytes as
    the command holds them (a state machine that stores bytes then needs no ``str.encode``
    per key: the dict keeps one item per key, its last value, in the order the keys first
    appear, as ``kv`` does for keys new to it). The first entry that is not in the run is
    not touched. ``kv`` may be ``None`` only without ``responses``: then the run's keys and
    values are checked (strict UTF-8) but no ``str`` is made (a state machine applying
    without answers that stores only bytes: a follower's ``RocksStateMachine``).

    ``TypeError`` when ``kv`` is neither exactly a ``dict`` nor ``None`` (or ``None`` with
    ``responses``), ``entries`` not a ``list``,
    ``responses`` / ``applied_log`` neither a ``list`` nor ``None``, ``puts`` neither exactly
    a ``dict`` nor ``None``, ``key_prefix`` not exactly ``bytes``, or ``start`` not an
    integer (``operator.index``: never a float); ``OverflowError`` ("start out of the int64
    range [-2**63, 2**63)") when ``start`` is outside int64 (the compiled kernel's index
    type, ``Py_ssize_t`` on 64-bit platforms). Both twins raise the same exception, with the
    same message.
    """
    if type(kv) is not dict and (kv is not None or responses is not None):
        raise TypeError(f"kv must be a dict, got {type(kv).__name__}")
    if type(entries) is not list:
        raise TypeError(f"entries must be a list, got {type(entries).__name__}")
    for name, v in (("responses", responses), ("applied_log", applied_log)):
        if v is not None and type(v) is not list:
            raise TypeError(f"{name} must be a list or None, got {type(v).__name__}")
    if puts is not None and type(puts) is not dict:
        raise TypeError(f"puts must be a dict or None, got {type(puts).__name__}")
    if type(key_prefix) is not bytes:
        raise TypeError(f"key_prefix must be bytes, got {type(key_prefix).__name__}")
    i = operator.index(start)
    if not -(2**63) <= i < 2**63:
        raise OverflowError("start out of the int64 range [-2**63, 2**63)")
    n = len(entries)
    i = max(i, 0)
    while i < n:
        entry = entries[i]
        payload = entry.payload
        if type(payload) is not normal_type:
            return i
        data = payload.data
        if type(data) is not bytes or not data.startswith(KV_SET_HEADER):
            return i
        ks, kl = _str_at(data, len(KV_SET_HEADER))
        if ks < 0 or ks + kl > len(data):
            return i
        vs, vl = _str_at(data, ks + kl)
        if vs < 0 or vs + vl != len(data):
            return i
        try:
            key = data[ks : ks + kl].decode()
            value = data[vs : vs + vl].decode()
        except UnicodeDecodeError:
            return i
        if applied_log is not None:
            applied_log.append((entry.log_id, data))
        if kv is not None:
            if responses is not None:
                responses.append(kv.get(key))
            kv[key] = value
        if puts is not None:
            puts[key_prefix + data[ks : ks + kl]] = data[vs : vs + vl]
        i += 1
    return i
