"""The history of a run: one record per client operation, written in lincheck's JSON-lines format.

A record holds the client (a Jepsen "process": a client gets a new number after an ``info``
operation, as its old call may still be in flight), the operation (``put``, ``get``, ``cas``,
``delete``), key and input, the invocation and completion times (seconds since the start of the
run, one monotonic clock), the outcome ``ok`` / ``fail`` / ``info``, the output, the node the
client addressed and, for reads, the consistency level.

``write_jsonl`` writes exactly what ``openraft_py.testing.lincheck.parse_jsonl`` reads (plus
the extra fields ``outcome``, ``consistency``, ``node`` and ``error``, which it ignores);
``operations(include=...)`` builds lincheck ``Operation``s directly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..lincheck import Operation

__all__ = ["Record", "History"]


@dataclass
class Record:
    """One operation of the history (see the module docstring). ``value`` is the input
    (``put``: the value; ``cas``: the new value), ``expected`` the cas's expected value,
    ``result`` a read's value or a cas's ``applied`` flag."""

    client: int
    op: str
    key: str
    call: float
    value: str | None = None
    expected: str | None = None
    consistency: str | None = None
    ret: float | None = None
    outcome: str | None = None  # "ok" | "fail" | "info"; None while in flight
    result: Any = None
    node: str = ""
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """The lincheck JSON-lines object of this record."""
        rec: dict[str, Any] = {"client": self.client, "op": self.op, "key": self.key}
        if self.op == "cas":
            rec["expected"] = self.expected
            rec["value"] = self.value
        elif self.op == "put":
            rec["value"] = self.value
        if self.outcome == "ok":
            rec["ok"] = bool(self.result) if self.op == "cas" else True
        elif self.outcome == "fail":
            rec["ok"] = False if self.op != "cas" else None
        else:
            rec["ok"] = None
        if self.op == "cas" and self.outcome == "fail":
            # parse_jsonl reads a cas's ok=false as "completed, not applied": a cas that
            # failed outright is left out of the file instead (it had no effect).
            rec["ok"] = None
            rec["dropped"] = True
        if self.op == "get" and self.outcome == "ok":
            rec["result"] = self.result
        rec["call"] = self.call
        rec["ret"] = self.ret if self.outcome in ("ok", "fail") else None
        rec["outcome"] = self.outcome or "info"
        if self.consistency:
            rec["consistency"] = self.consistency
        rec["node"] = self.node
        if self.error:
            rec["error"] = self.error
        return rec

    def operation(self) -> Operation:
        """This record as a lincheck ``Operation`` (model ``kv_register``)."""
        ok: bool | None = {"ok": True, "fail": False}.get(self.outcome or "info")
        ret = self.ret if ok is not None and self.ret is not None else math.inf
        if self.op == "cas":
            value: Any = (self.expected, self.value)
        elif self.op == "put":
            value = self.value
        else:
            value = None
        output = self.result if ok else None
        return Operation(client=self.client, op=self.op, key=self.key, value=value, output=output,
                         call=self.call, ret=ret, ok=ok)


class History:
    """The records of a run, in invocation order."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(self, rec: Record) -> Record:
        """Append an invoked operation; complete it later by setting its fields."""
        self.records.append(rec)
        return rec

    def operations(self, include: Callable[[Record], bool] = lambda r: True) -> list[Operation]:
        """lincheck operations of the records ``include`` accepts."""
        return [r.operation() for r in self.records if include(r)]

    def write_jsonl(self, path: str | Path, include: Callable[[Record], bool] = lambda r: True) -> None:
        """Write the records ``include`` accepts (a cas that failed outright is omitted: it had
        no effect and the format has no way to say so for a cas)."""
        with open(path, "w", encoding="utf-8") as fh:
            for r in self.records:
                if not include(r):
                    continue
                rec = r.to_json()
                if rec.pop("dropped", False):
                    continue
                fh.write(json.dumps(rec) + "\n")

    def __iter__(self) -> Iterator[Record]:
        """The records in invocation order."""
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)
