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
    for kernel in ("quorum", "logindex", "codec"):
        mod = importlib.import_module(f"openraft_py._core._{kernel}_{suffix}")
        ns.__dict__.update({k: v for k, v in vars(mod).items() if not k.startswith("_")})
    return ns


@pytest.fixture(scope="module", params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    return _load(request.param)


RNG = random.Random(42)
MATCHED_BATCH = [[RNG.randrange(10_000) for _ in range(5)] for _ in range(1_000)]
ACKS = [(RNG.randrange(1, 6), i) for i in range(1_000)]
LOG_KEYS = [(t, t * 1_000) for t in range(1, 200)]
PROBES = [RNG.randrange(1_000, 199_000) for _ in range(1_000)]
RECORDS = [(5, i, 1, b"x" * 64) for i in range(1_000)]


def test_majority_committed_x1000(benchmark, impl) -> None:
    f = impl.majority_committed
    benchmark(lambda: [f(m) for m in MATCHED_BATCH])


def test_progress_update_x1000(benchmark, impl) -> None:
    table = impl.ProgressTable([[1, 2, 3, 4, 5]], [6], 1)
    update = table.update

    def run() -> None:
        table.reset(1, -1)
        for node, index in ACKS:
            update(node, index)

    benchmark(run)


def test_logindex_term_at_x1000(benchmark, impl) -> None:
    li = impl.LogIndex(None, [(0, 0)] + LOG_KEYS, 199_999)
    term_at = li.term_at
    benchmark(lambda: [term_at(i) for i in PROBES])


def test_encode_entries_x1000(benchmark, impl) -> None:
    benchmark(impl.encode_entries, RECORDS)


def test_decode_entries_x1000(benchmark, impl) -> None:
    blobs = impl.encode_entries(RECORDS)
    benchmark(impl.decode_entries, blobs)


def test_put_entry_records_x1000(benchmark, impl) -> None:
    """The RocksDB log store's write of a batch, into a real (unwritten) rocksdict WriteBatch."""
    from rocksdict import WriteBatch

    from openraft_py.types import Entry, LogId, Membership, Normal

    entries = [Entry(LogId(5, i), Normal(b"x" * 64)) for i in range(1_000)]

    def run() -> None:
        wb = WriteBatch(raw_mode=True)
        impl.put_entry_records(wb.put, None, entries, Normal, Membership, bytes)

    benchmark(run)


def test_frame_reader_x1000(benchmark, impl) -> None:
    stream = impl.encode_frames([b"y" * 100] * 1_000)
    chunks = [stream[i : i + 1_500] for i in range(0, len(stream), 1_500)]

    def run() -> None:
        r = impl.FrameReader(1 << 20)
        for c in chunks:
            r.feed(c)

    benchmark(run)
