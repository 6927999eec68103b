"""The key-value commands as log entry data, and the state machine that applies them.

The commands ``KvSet`` (put), ``KvDelete`` (delete) and ``KvCas`` (compare-and-set) and their
encoding (``encode_kv``: ``KV_PREFIX`` + msgpack) are the storage layer's
(``openraft_py.storage.memory``): both shipped state machines apply them, so they live with
the stores and are re-exported here for applications.

One command is the service's own: ``KvCasDelete(key, expected)``, a compare-and-set whose new
value is "absent" (``POST /kv/{key}/cas`` with ``"value": null``). The stores do not know it
(they apply it as an opaque no-op), so ``KvStateMachine`` resolves it at apply time, in log
order on every node: when the key's current value equals ``expected`` the entry is applied
as a ``KvDelete``, otherwise as a no-op. Its response is ``(ok, current)`` like ``KvCas``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..storage.memory import KV_PREFIX, KvCas, KvCommand, KvDelete, KvGet, KvSet, decode_kv, encode_kv
from ..types import Entry, Normal
from .rocks_state_machine import RocksStateMachine

__all__ = [
    "KV_PREFIX",
    "KvCas",
    "KvCasDelete",
    "KvCommand",
    "KvDelete",
    "KvGet",
    "KvSet",
    "KvStateMachine",
    "decode_kv",
    "encode_cas",
    "encode_kv",
]


class KvCasDelete(msgspec.Struct, frozen=True, tag="casdel", array_like=True):
    """Delete ``key`` iff its current value is ``expected`` (``None``: absent).

    Response: ``(ok, current)``, ``current`` being the value after the command (``None`` when
    ``ok``)."""

    key: str
    expected: str | None


_encoder = msgspec.msgpack.Encoder()
_casdel_decoder = msgspec.msgpack.Decoder(KvCasDelete)
# Every encoded KvCasDelete starts with these bytes: the prefix, a 3-element array header and
# the tag string.
_CASDEL_HEAD = (KV_PREFIX + _encoder.encode(KvCasDelete("", None)))[:9]
_NOOP = b""  # opaque entry data: every store applies it as a no-op


def encode_cas(key: str, expected: str | None, value: str | None) -> bytes:
    """The entry data of a compare-and-set: a ``KvCas`` when ``value`` is a string, a
    ``KvCasDelete`` when it is ``None``."""
    if value is None:
        return KV_PREFIX + _encoder.encode(KvCasDelete(key, expected))
    return encode_kv(KvCas(key, expected, value))


def _maybe_casdel(entry: Entry) -> KvCasDelete | None:
    p = entry.payload
    if type(p) is not Normal or not p.data.startswith(_CASDEL_HEAD):
        return None
    try:
        return _casdel_decoder.decode(memoryview(p.data)[1:])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class KvStateMachine(RocksStateMachine):
    """``RocksStateMachine`` that also applies ``KvCasDelete`` (see the module docstring).

    Batches without a ``KvCasDelete`` go to ``RocksStateMachine.apply`` unchanged; a batch
    holding some is applied in runs, each ``KvCasDelete`` after the entries before it, so its
    comparison sees exactly the state the log order gives it."""

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Apply ``entries`` in order; one response per entry (see the class docstring)."""
        found = [(i, c) for i, e in enumerate(entries) if (c := _maybe_casdel(e)) is not None]
        if not found:
            return await super().apply(entries)
        out: list[Any] = []
        start = 0
        for i, cmd in found:
            if start < i:
                out.extend(await super().apply(entries[start:i]))
            current = self.get(cmd.key)
            resp: tuple[bool, str | None]
            if current == cmd.expected:
                data, resp = encode_kv(KvDelete(cmd.key)), (True, None)
            else:
                data, resp = _NOOP, (False, current)
            await super().apply([Entry(entries[i].log_id, Normal(data))])
            out.append(resp)
            start = i + 1
        if start < len(entries):
            out.extend(await super().apply(entries[start:]))
        return out

    async def apply_without_responses(self, entries: list[Entry]) -> None:
        """``apply`` for entries whose responses nobody reads (see ``RaftStateMachine``):
        ``RocksStateMachine``'s for a batch without a ``KvCasDelete``, ``apply`` otherwise."""
        if any(_maybe_casdel(e) is not None for e in entries):
            await self.apply(entries)
        else:
            await super().apply_without_responses(entries)
