"""Kernel micro-benchmarks: each ``_core`` kernel, the compiled module (``c``) against its
pure twin (``py``), on batch inputs (1,000 calls or records per round).

Both twins are imported directly (``openraft_py._core._<kernel>_c`` / ``_py``), whatever
``OPENRAFT_PY_NO_EXTENSIONS`` says; the compiled ones must be built (``make build``).
``bench/run.py`` pairs the ``[c]`` and ``[py]`` results of each test into a speed-up.

    .venv/bin/python -m pytest bench/micro/test_kernels.py -p no:cacheprovider \
        --benchmark-group-by=func --benchmark-columns=median,ops
"""

from __future__ import annotations

import importlib
import random
import types

import pytest

pytest.importorskip("pytest_benchmark")


def _load(suffix: str) -> types.SimpleNamespace:
    """The public names of every kernel module of one twin (``"c"`` or ``"py"``)."""
    ns = types.SimpleNamespace()
    for kernel in ("quorum", "logindex", "codec", "kv"):
        mod = importlib.import_module(f"openraft_py._core._{kernel}_{suffix}")
        ns.__dict__.update({k: v for k, v in vars(mod).items() if not k.startswith("_")})
    return ns


# Function scope, so that pytest runs each benchmark's two twins one after the other
# ([py] then [c]) rather than every [py] test before every [c] one: the two timings a
# speed-up divides are then seconds apart, not the whole suite apart (this machine's speed
# moves by up to 2x within a minute). The modules are imported once either way.
@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    return _load(request.param)


RNG = random.Random(42)
# Matched indexes of 1,000 acks' worth of configs: a 3- and a 5-voter cluster, and a joint
# membership ([C_old, C_new] with one voter in common) during a change.
MATCHED_3 = [[RNG.randrange(10_000) for _ in range(3)] for _ in range(1_000)]
MATCHED_5 = [[RNG.randrange(10_000) for _ in range(5)] for _ in range(1_000)]
MATCHED_JOINT = [[[RNG.randrange(10_000) for _ in range(3)] for _ in range(2)] for _ in range(1_000)]
ACKS = [(RNG.randrange(1, 6), i) for i in range(1_000)]
LOG_KEYS = [(t, t * 1_000) for t in range(1, 200)]
PROBES = [RNG.randrange(1_000, 199_000) for _ in range(1_000)]
RECORDS = [(5, i, 1, b"x" * 64) for i in range(1_000)]


def test_majority_committed_3_voters_x1000(benchmark, impl) -> None:
    f = impl.majority_committed
    benchmark(lambda: [f(m) for m in MATCHED_3])


def test_majority_committed_5_voters_x1000(benchmark, impl) -> None:
    f = impl.majority_committed
    benchmark(lambda: [f(m) for m in MATCHED_5])


def test_joint_committed_x1000(benchmark, impl) -> None:
    f = impl.joint_committed
    benchmark(lambda: [f(c) for c in MATCHED_JOINT])


def _acks(table, update) -> None:
    table.reset(1, -1)
    for node, index in ACKS:
        update(node, index)


def test_progress_update_x1000(benchmark, impl) -> None:
    """The leader's table of a 5-voter cluster and a learner: one ``update`` per ack."""
    table = impl.ProgressTable([[1, 2, 3, 4, 5]], [6], 1)
    benchmark(_acks, table, table.update)


def test_progress_update_joint_x1000(benchmark, impl) -> None:
    """The same acks during a membership change, [C_old, C_new] = [{1, 2, 3}, {3, 4, 5}]."""
    table = impl.ProgressTable([[1, 2, 3], [3, 4, 5]], [6], 1)
    benchmark(_acks, table, table.update)


def test_logindex_term_at_x1000(benchmark, impl) -> None:
    li = impl.LogIndex(None, [(0, 0)] + LOG_KEYS, 199_999)
    term_at = li.term_at
    benchmark(lambda: [term_at(i) for i in PROBES])


def test_encode_entries_x1000(benchmark, impl) -> None:
    benchmark(impl.encode_entries, RECORDS)


def test_decode_entries_x1000(benchmark, impl) -> None:
    blobs = impl.encode_entries(RECORDS)
    benchmark(impl.decode_entries, blobs)


def test_encode_entry_batch_x1000(benchmark, impl) -> None:
    """The RocksDB log store's encoding of a batch: index keys and records of ``Entry``
    structs (it then puts each pair into its ``WriteBatch``, ``log_format.put_entries``)."""
    from openraft_py.types import Entry, LogId, Membership, Normal

    entries = [Entry(LogId(5, i), Normal(b"x" * 64)) for i in range(1_000)]
    benchmark(impl.encode_entry_batch, entries, Normal, Membership, bytes)


def test_plain_entries_prefix_x1000(benchmark, impl) -> None:
    """A follower's check of a 1,000-entry AppendEntries of plain entries (the steady state
    of ``validation.check_append_entries``)."""
    from openraft_py.types import Blank, Entry, LogId, Normal

    entries = [Entry(LogId(5, i), Normal(b"x" * 64)) for i in range(1_000)]
    f = impl.plain_entries_prefix

    def run() -> None:
        assert f(entries, 0, 5, 9, Entry, LogId, Normal, Blank) == 1_000

    benchmark(run)


def test_find_payload_x1000(benchmark, impl) -> None:
    """The membership scan of a 1,000-entry batch without one (every log append of a batch,
    ``LogHandler.append``)."""
    from openraft_py.types import Entry, LogId, Membership, Normal

    entries = [Entry(LogId(5, i), Normal(b"x" * 64)) for i in range(1_000)]
    f = impl.find_payload

    def run() -> None:
        assert f(entries, Membership) == -1

    benchmark(run)


def test_normal_data_bytes_x1000(benchmark, impl) -> None:
    """The payload bytes of a 1,000-entry batch (a log append's fast-path limit, an
    AppendEntries batch's byte budget)."""
    from openraft_py.types import Entry, LogId, Normal

    entries = [Entry(LogId(5, i), Normal(b"x" * 64)) for i in range(1_000)]
    f = impl.normal_data_bytes

    def run() -> None:
        assert f(entries, Normal) == 64_000

    benchmark(run)


def test_frame_reader_x1000(benchmark, impl) -> None:
    stream = impl.encode_frames([b"y" * 100] * 1_000)
    chunks = [stream[i : i + 1_500] for i in range(0, len(stream), 1_500)]

    def run() -> None:
        r = impl.FrameReader(1 << 20)
        for c in chunks:
            r.feed(c)

    benchmark(run)


def test_apply_kv_sets_x1000(benchmark, impl) -> None:
    """A key-value state machine's apply of a 1,000-entry batch of ``set`` commands (keys
    and values as the benchmarks write them), with the responses a leader computes: the
    previous value of each key, here all present (updates of 1,000 keys)."""
    from openraft_py.storage.memory import KvSet, encode_kv
    from openraft_py.types import Entry, LogId, Normal

    entries = [Entry(LogId(5, i), Normal(encode_kv(KvSet(f"k{i % 256}-{i}", f"v:k{i % 256}-{i}"))))
               for i in range(1_000)]
    kv: dict[str, str] = {}
    f = impl.apply_kv_sets

    def run() -> None:
        assert f(kv, entries, 0, Normal, [], None) == 1_000

    benchmark(run)
