"""Structured logs for a service node: every line names the node, its term and its state.

``configure_logging(fmt, level, node)`` installs one stderr handler on the root logger:

- ``text``: ``2026-12-01T06:00:00.123Z INFO  [n1 T3 Leader] openraft_py.kv.node: message``,
  one line per record (control characters in it as backslash escapes: ``\\n``, ``\\x1b``);
- ``json``: one object per line: ``{"ts", "level", "logger", "node_id", "term", "state",
  "msg"}`` (plus ``"exc"`` with the traceback when one is logged).

``node`` is a callable returning the running node's ``RaftMetrics`` (or ``None`` before the
node starts): the fields are read when the line is written, so they are current on every
line, whichever task logs it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["configure_logging", "NodeContextFilter", "JsonFormatter", "TEXT_FORMAT", "LOG_FORMATS"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-5s [n%(node_id)s T%(term)s %(state)s] %(name)s: %(message)s"

MetricsSource = Callable[[], Any]


class NodeContextFilter(logging.Filter):
    """Sets ``node_id``, ``term`` and ``state`` on every record from ``source()`` (a
    ``RaftMetrics`` or ``None``; ``-`` for each field then). Never drops a record."""

    def __init__(self, source: MetricsSource, node_id: int | None = None) -> None:
        super().__init__()
        self.source = source
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        m = None
        try:
            m = self.source()
        except Exception:  # noqa: BLE001 - a log line must never fail on its context
            m = None
        if m is None:
            record.node_id = "-" if self.node_id is None else self.node_id
            record.term = "-"
            record.state = "-"
        else:
            record.node_id = m.id
            record.term = m.current_term
            record.state = m.state.value
        return True


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c != 0x09} | {0x0A: "\\n", 0x0D: "\\r"}
"""``str.translate`` table: each control character but the tab as a backslash escape."""


class _TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, one line per record: control characters in the line (a newline, a
    carriage return, an escape sequence) are written as backslash escapes, so what a
    message quotes from a request (an HTTP path, which a client percent-encodes as it
    likes) cannot start a line that reads as another record, nor drive the terminal. A
    traceback (``exc_info``) still follows on lines of its own."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _utc(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        return super().formatMessage(record).translate(_CONTROL_ESCAPES)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "node_id": getattr(record, "node_id", None),
            "term": getattr(record, "term", None),
            "state": getattr(record, "state", None),
            "msg": record.getMessage(),
        }
        for k in ("node_id", "term"):
            if obj[k] == "-":
                obj[k] = None
        if obj["state"] == "-":
            obj["state"] = None
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def configure_logging(
    fmt: str, level: str | int, source: MetricsSource, node_id: int | None = None, stream: Any = None
) -> logging.Handler:
    """Send every log record to ``stream`` (default stderr) in ``fmt`` (``"text"`` or
    ``"json"``) at ``level`` and above, with the node's context (see the module docstring).
    Replaces the root logger's handlers; returns the handler. ``ValueError`` for an unknown
    format or level."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {fmt!r}")
    lvl = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(lvl, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(NodeContextFilter(source, node_id))
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    # aiohttp's access log would repeat every request; the service logs what matters.
    logging.getLogger("aiohttp.access").setLevel(max(lvl, logging.WARNING))
    return handler
