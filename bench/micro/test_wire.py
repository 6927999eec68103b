"""Wire codec micro-benchmarks: msgspec encode and decode of an AppendEntries carrying 64
entries (``openraft_py.network.wire``), the one hot message of the TCP transport.

The entries' payloads are 32 bytes (about the key-value sets of ``bench/tcp.py``). The decode
is the full typed, bounds-checked ``decode_body`` a server runs on each frame.
"""

from __future__ import annotations

import pytest

from openraft_py.network.wire import KIND_APPEND_ENTRIES, decode_body, encode_message, split_payload
from openraft_py.types import AppendEntriesRequest, Entry, LogId, Normal, Vote

pytest.importorskip("pytest_benchmark")

ENTRIES = 64
REQUEST = AppendEntriesRequest(
    vote=Vote.new(7, 1, committed=True),
    prev_log_id=LogId(7, 1_000),
    entries=[Entry(LogId(7, 1_001 + i), Normal(b"v" * 32)) for i in range(ENTRIES)],
    leader_commit=LogId(7, 990),
)


def test_append_entries_64_encode(benchmark) -> None:
    payload = benchmark(encode_message, KIND_APPEND_ENTRIES, 42, REQUEST)
    assert split_payload(payload)[:2] == (KIND_APPEND_ENTRIES, 42)


def test_append_entries_64_decode(benchmark) -> None:
    _, _, body = split_payload(encode_message(KIND_APPEND_ENTRIES, 42, REQUEST))
    got = benchmark(decode_body, KIND_APPEND_ENTRIES, body)
    assert got == REQUEST
