"""Codec kernel: entry records, index keys and stream framing."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openraft_py._core import CodecError, FrameTooLarge

SETTINGS = settings(max_examples=200, deadline=None)
MAX = 2**63 - 1

record_st = st.tuples(st.integers(0, MAX), st.integers(0, MAX), st.integers(0, 2), st.binary(max_size=64))


def test_encode_entries_layout(impl) -> None:
    (blob,) = impl.encode_entries([(3, 7, 1, b"hello")])
    assert blob == struct.pack(">QQB", 3, 7, 1) + b"hello"
    assert impl.decode_entries([blob]) == [(3, 7, 1, b"hello")]
    assert impl.encode_entries([]) == [] and impl.decode_entries([]) == []
    assert impl.decode_entries(impl.encode_entries([(0, 0, 0, b"")])) == [(0, 0, 0, b"")]


@pytest.mark.parametrize(
    "record",
    [(-1, 0, 0, b""), (0, -1, 0, b""), (2**63, 0, 0, b""), (0, 2**64, 0, b""), (0, 0, 3, b""), (0, 0, -1, b"")],
)
def test_encode_entries_rejects(impl, record) -> None:
    with pytest.raises(CodecError):
        impl.encode_entries([record])


def test_encode_entries_payload_type(impl) -> None:
    with pytest.raises(TypeError):
        impl.encode_entries([(1, 1, 1, "text")])


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x00" * 16, struct.pack(">QQB", 1, 1, 3), struct.pack(">QQB", 2**63, 1, 1), struct.pack(">QQB", 1, 2**64 - 1, 1)],
)
def test_decode_entries_rejects(impl, blob) -> None:
    with pytest.raises(CodecError):
        impl.decode_entries([struct.pack(">QQB", 1, 1, 1), blob])


def test_decode_accepts_bytes_like(impl) -> None:
    (blob,) = impl.encode_entries([(1, 2, 2, b"m")])
    assert impl.decode_entries([bytearray(blob), memoryview(blob)]) == [(1, 2, 2, b"m")] * 2


def test_index_key(impl) -> None:
    assert impl.encode_index_key(0) == b"\x00" * 8
    assert impl.encode_index_key(258) == b"\x00" * 6 + b"\x01\x02"
    assert impl.decode_index_key(impl.encode_index_key(MAX)) == MAX
    for bad in (-1, 2**63):
        with pytest.raises(CodecError):
            impl.encode_index_key(bad)
    for bad in (b"", b"\x00" * 7, b"\x00" * 9, b"\x80" + b"\x00" * 7):
        with pytest.raises(CodecError):
            impl.decode_index_key(bad)


@SETTINGS
@given(a=st.integers(0, MAX), b=st.integers(0, MAX))
def test_index_keys_sort_like_ints(impl, a, b) -> None:
    ka, kb = impl.encode_index_key(a), impl.encode_index_key(b)
    assert (ka < kb) == (a < b)
    assert impl.decode_index_key(ka) == a


@SETTINGS
@given(records=st.lists(record_st, max_size=20))
def test_entries_round_trip(impl, records) -> None:
    blobs = impl.encode_entries(records)
    assert impl.decode_entries(blobs) == records
    assert all(type(b) is bytes for b in blobs)


def test_frames(impl) -> None:
    assert impl.encode_frame(b"") == b"\x00\x00\x00\x00"
    assert impl.encode_frame(b"ab") == b"\x00\x00\x00\x02ab"
    assert impl.encode_frames([b"ab", b"", b"c"]) == b"\x00\x00\x00\x02ab\x00\x00\x00\x00\x00\x00\x00\x01c"
    assert impl.encode_frames([]) == b""
    r = impl.FrameReader(16)
    assert r.feed(b"") == [] and r.buffered() == 0
    assert r.feed(b"\x00\x00") == [] and r.buffered() == 2
    assert r.feed(b"\x00\x03ab") == [] and r.buffered() == 6
    assert r.feed(b"c\x00\x00\x00\x00\x00") == [b"abc", b""]
    assert r.buffered() == 1
    assert r.feed(bytearray(b"\x00\x00\x01z")) == [b"z"]
    assert r.buffered() == 0


def test_frame_too_large(impl) -> None:
    r = impl.FrameReader(4)
    assert r.feed(impl.encode_frame(b"1234")) == [b"1234"]
    with pytest.raises(FrameTooLarge):
        r.feed(b"\x00\x00\x00\x05")
    with pytest.raises(FrameTooLarge):
        r.feed(b"")
    with pytest.raises(CodecError):
        r.feed(impl.encode_frame(b"ok"))
    with pytest.raises(ValueError):
        impl.FrameReader(-1)


@SETTINGS
@given(payloads=st.lists(st.binary(max_size=40), max_size=12), cuts=st.lists(st.integers(0, 600), max_size=12))
def test_frame_reader_random_splits(impl, payloads, cuts) -> None:
    stream = impl.encode_frames(payloads)
    assert stream == b"".join(impl.encode_frame(p) for p in payloads)
    r = impl.FrameReader(40)
    got = []
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for lo, hi in itertools.pairwise(bounds):
        got.extend(r.feed(stream[lo:hi]))
    assert got == payloads
    assert r.buffered() == 0


@pytest.mark.c_extension
@pytest.mark.parametrize("piece", [65536, 262144, 1000003])
def test_frame_reader_holds_one_copy_of_a_large_frame(piece: int) -> None:
    """A frame that arrives in pieces (an 8 MiB AppendEntries in reads of 64-256 KiB) is
    copied once, into the bytes object ``feed`` returns: while it arrives and after, the
    compiled reader holds no other copy of it. It grew a buffer to the frame's size (its
    doublings up to twice that), copied the frame out of it, and kept the buffer's capacity
    for the connection's life: 16 MiB allocated per 8 MiB frame, 8 MiB left after it."""
    import tracemalloc

    from openraft_py._core import _codec_c

    size = 8 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    stream = _codec_c.encode_frames([payload, b"tail"])
    pieces = [stream[i : i + piece] for i in range(0, len(stream), piece)]
    r = _codec_c.FrameReader(32 * 1024 * 1024)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        got = []
        for p in pieces:
            got.extend(r.feed(p))
        peak = tracemalloc.get_traced_memory()[1] - base
        assert got == [payload, b"tail"]
        del got
        left = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert peak < size + 2 * piece + 65536, f"{peak} bytes allocated for a frame of {size}"
    assert left < 2 * piece + 65536, f"the reader keeps {left} bytes after the frame"
    assert r.buffered() == 0


@SETTINGS
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6), cuts=st.lists(st.integers(0, 20000), max_size=20))
def test_frame_reader_buffered_counts_the_frame_in_progress(impl, sizes, cuts) -> None:
    """``buffered()`` is the number of bytes of the incomplete frame received so far (its
    length included) after every piece, whichever way the stream is cut."""
    payloads = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    stream = impl.encode_frames(payloads)
    r = impl.FrameReader(4096)
    got = []
    consumed = 0  # bytes of the stream making up the frames returned so far
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for lo, hi in itertools.pairwise(bounds):
        for f in r.feed(stream[lo:hi]):
            got.append(f)
            consumed += 4 + len(f)
        assert r.buffered() == hi - consumed
    assert got == payloads


class _LogId:
    def __init__(self, term: int, index: int) -> None:
        self.term, self.index = term, index


class _Normal:
    def __init__(self, data: object) -> None:
        self.data = data


class _Membership:
    pass


class _Entry:
    def __init__(self, term: int, index: int, payload: object) -> None:
        self.log_id, self.payload = _LogId(term, index), payload


class _SlotLogId:
    __slots__ = ("term", "index")

    def __init__(self, term: int, index: int) -> None:
        self.term, self.index = term, index


class _SlotEntry:
    __slots__ = ("log_id", "payload")

    def __init__(self, term: int, index: int, payload: object) -> None:
        self.log_id, self.payload = _SlotLogId(term, index), payload


def _batch(impl, entries, encode_membership=lambda m: b"M") -> list[tuple[bytes, bytes]]:
    keys, records = impl.encode_entry_batch(entries, _Normal, _Membership, encode_membership)
    assert len(keys) == len(records)
    assert all(type(k) is bytes for k in keys) and all(type(r) is bytes for r in records)
    return list(zip(keys, records))


def _want(impl, records) -> list[tuple[bytes, bytes]]:
    return list(zip([impl.encode_index_key(r[1]) for r in records], impl.encode_entries(records)))


def test_encode_entry_batch_matches_encode_entries(impl) -> None:
    entries = [_Entry(2, 5, _Normal(b"abc")), _Entry(2, 6, _Membership()), _Entry(3, 7, object()),
               _Entry(MAX, MAX, _Normal(b""))]
    records = [(2, 5, 1, b"abc"), (2, 6, 2, b"M"), (3, 7, 0, b""), (MAX, MAX, 1, b"")]
    assert _batch(impl, entries) == _want(impl, records)
    assert _batch(impl, []) == []


@SETTINGS
@given(records=st.lists(record_st, max_size=20))
def test_encode_entry_batch_round_trip(impl, records) -> None:
    payloads = {0: lambda d: None, 1: _Normal, 2: lambda d: _Membership()}
    entries = [_Entry(t, i, payloads[k](d)) for t, i, k, d in records]
    pairs = _batch(impl, entries, encode_membership=lambda m: b"members")
    want = [(t, i, k, d if k == 1 else b"members" if k == 2 else b"") for t, i, k, d in records]
    assert impl.decode_entries([r for _, r in pairs]) == want
    assert [impl.decode_index_key(k) for k, _ in pairs] == [i for _, i, _, _ in records]


@pytest.mark.parametrize("term, index", [(-1, 0), (0, -1), (2**63, 0), (0, 2**64), (-(2**70), 0)])
def test_encode_entry_batch_rejects_range(impl, term, index) -> None:
    good = _Entry(1, 1, _Normal(b"ok"))
    with pytest.raises(CodecError, match="term" if term != 0 else "index"):
        impl.encode_entry_batch([good, _Entry(term, index, _Normal(b""))], _Normal, _Membership, bytes)


@pytest.mark.parametrize("entry", [_Entry(1, 1, _Normal("text")), _Entry(1, 1, _Membership())])
def test_encode_entry_batch_rejects_non_bytes(impl, entry) -> None:
    with pytest.raises(TypeError):
        _batch(impl, [entry], encode_membership=lambda m: "not bytes")


def test_encode_entry_batch_reads_fields_of_any_class(impl) -> None:
    """Plain, ``__slots__`` and msgspec classes (the compiled twin reads the last two from
    their member slots), alone and mixed in one batch: the same keys and records."""
    from openraft_py.types import Entry, LogId, Membership, Normal

    records = [(4, i, 1, b"p%d" % i) for i in range(6)]
    want = _want(impl, records)
    for make in (_Entry, _SlotEntry, lambda t, i, p: (_Entry, _SlotEntry)[i % 2](t, i, p)):
        assert _batch(impl, [make(t, i, _Normal(d)) for t, i, _, d in records]) == want
    structs = [Entry(LogId(t, i), Normal(d)) for t, i, _, d in records]
    assert list(zip(*impl.encode_entry_batch(structs, Normal, Membership, bytes))) == want


def test_encode_entry_batch_sees_class_changes(impl) -> None:
    """A field that becomes a property after a batch was encoded is read through it."""

    class Slotted:
        __slots__ = ("log_id", "payload")

        def __init__(self, index: int) -> None:
            self.log_id, self.payload = _SlotLogId(1, index), _Normal(b"x")

    e = Slotted(3)
    assert _batch(impl, [e]) == _want(impl, [(1, 3, 1, b"x")])
    Slotted.log_id = property(lambda self: _SlotLogId(9, 99))  # type: ignore[assignment]
    assert _batch(impl, [e]) == _want(impl, [(9, 99, 1, b"x")])


def test_encode_entry_batch_unset_slot(impl) -> None:
    e = _SlotEntry(1, 1, _Normal(b""))
    del e.log_id
    with pytest.raises(AttributeError):
        _batch(impl, [_SlotEntry(1, 0, _Normal(b"")), e])


class _Hinted:
    """An iterable of ``items`` whose ``__length_hint__`` says ``hint``."""

    def __init__(self, items: list[object], hint: int) -> None:
        self.items, self.hint = items, hint

    def __iter__(self):
        return iter(self.items)

    def __length_hint__(self) -> int:
        return self.hint


@pytest.mark.parametrize("hint", [0, 2, 5, 50])
def test_encode_entry_batch_any_iterable(impl, hint) -> None:
    records = [(1, i, 1, b"d") for i in range(5)]
    entries = [_Entry(t, i, _Normal(d)) for t, i, _, d in records]
    assert _batch(impl, _Hinted(entries, hint)) == _want(impl, records)
    assert _batch(impl, (e for e in entries)) == _want(impl, records)
    assert _batch(impl, tuple(entries)) == _want(impl, records)


@pytest.mark.parametrize("change", ["shrink", "grow"])
def test_encode_entry_batch_list_changed_by_the_encoder(impl, change) -> None:
    """``encode_membership`` may run any code, even change the list being encoded: the batch
    is what iterating the list yields, as in a plain loop."""
    entries = [_Entry(1, i, _Normal(b"n")) for i in range(4)] + [_Entry(1, 4, _Membership())]
    entries += [_Entry(1, i, _Normal(b"n")) for i in range(5, 8)]

    def encode(m: object) -> bytes:
        if change == "shrink":
            del entries[6:]
        else:
            entries.append(_Entry(1, 8, _Normal(b"n")))
        return b"M"

    last = 6 if change == "shrink" else 9
    records = [(1, i, 2 if i == 4 else 1, b"M" if i == 4 else b"n") for i in range(last)]
    assert _batch(impl, entries, encode_membership=encode) == _want(impl, records)


@pytest.mark.parametrize("value", [0, 1, 2**30 - 1, 2**30, 2**31, 2**60, MAX])
def test_encode_entry_batch_int_widths(impl, value) -> None:
    """Terms and indexes of one CPython digit and of more (the compiled twin reads the first
    kind in place), as both fields."""
    records = [(value, 7, 1, b"d"), (3, value, 1, b"d")]
    assert _batch(impl, [_SlotEntry(t, i, _Normal(d)) for t, i, _, d in records]) == _want(impl, records)
    assert impl.encode_entries(records) == [r for _, r in _want(impl, records)]


# Wrong types, the same exception type from both builds. A typed memoryview in the compiled
# build took None as an empty buffer (encode_frame(None) was a frame of 0 bytes, feed(None)
# returned no frames); the pure build let a float term or index through its range checks to
# ``struct``, whose ``struct.error`` is not a TypeError.
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda m: m.encode_frame(None), id="encode_frame-None"),
        pytest.param(lambda m: m.encode_frame("x"), id="encode_frame-str"),
        pytest.param(lambda m: m.FrameReader(16).feed(None), id="feed-None"),
        pytest.param(lambda m: m.FrameReader(16).feed("x"), id="feed-str"),
        pytest.param(lambda m: m.FrameReader(1.5), id="FrameReader-float"),
        pytest.param(lambda m: m.encode_index_key(1.5), id="encode_index_key-float"),
        pytest.param(lambda m: m.encode_index_key("1"), id="encode_index_key-str"),
        pytest.param(lambda m: m.encode_entries([(1.0, 1, 0, b"")]), id="encode_entries-float-term"),
        pytest.param(lambda m: m.encode_entries([(1, 2.0, 0, b"")]), id="encode_entries-float-index"),
        pytest.param(lambda m: m.encode_entries([(1, 1, 0, "x")]), id="encode_entries-str-payload"),
        # A float kind was truncated by the compiled build (1.5 encoded kind 1, 2.0 kind 2).
        pytest.param(lambda m: m.encode_entries([(1, 1, 1.5, b"")]), id="encode_entries-float-kind"),
        pytest.param(lambda m: m.encode_entries([(1, 1, 2.0, b"")]), id="encode_entries-integral-float-kind"),
        pytest.param(lambda m: m.encode_entries([(None, 1, 0, b"")]), id="encode_entries-None-term"),
        pytest.param(lambda m: m.find_payload([], int, 1.0), id="find_payload-float-start"),
        pytest.param(lambda m: m.encode_frames([b"a", None]), id="encode_frames-None"),
        pytest.param(lambda m: m.decode_index_key(None), id="decode_index_key-None"),
        pytest.param(lambda m: m.decode_entries([None]), id="decode_entries-None"),
    ],
)
def test_wrong_types_raise_type_error(impl, call) -> None:
    with pytest.raises(TypeError):
        call(impl)


def test_encode_entry_batch_float_log_id_raises_type_error(impl) -> None:
    from openraft_py.types import Entry, LogId, Normal

    for log_id in (LogId(1.0, 1), LogId(1, 1.0)):  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            impl.encode_entry_batch([Entry(log_id, Normal(b"x"))], Normal, type(None), bytes)


def test_feed_after_oversized_frame_raises_frame_too_large_whatever_the_data(impl) -> None:
    r = impl.FrameReader(4)
    with pytest.raises(FrameTooLarge):
        r.feed(b"\x00\x00\x00\x05")
    with pytest.raises(FrameTooLarge):
        r.feed(None)


class _Index:
    """An integer only through ``__index__`` (as numpy's integers are)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_index_objects_are_integers(impl) -> None:
    """What ``operator.index`` takes is an integer on both builds (the pure twin refused an
    ``__index__`` term, index or kind, and a ``find_payload`` start, comparing it with an
    int; the compiled build took them)."""
    from openraft_py.types import Entry, LogId, Membership, Normal

    want = impl.encode_entries([(3, 4, 1, b"x")])
    assert impl.encode_entries([(_Index(3), _Index(4), _Index(1), b"x")]) == want
    assert impl.encode_entries([(3, 4, True, b"x")]) == want
    entries = [Entry(LogId(1, i), Normal(b"")) for i in range(3)]
    assert impl.find_payload(entries, Normal, _Index(2)) == 2
    assert impl.find_payload(entries, Membership, True) == -1
    with pytest.raises(CodecError, match="unknown entry kind 3"):
        impl.encode_entries([(1, 1, _Index(3), b"")])
    with pytest.raises(CodecError, match=f"term {2**63} out of range"):
        impl.encode_entries([(_Index(2**63), 1, 0, b"")])


def test_find_payload_start_outside_int64(impl) -> None:
    """The same ``OverflowError`` on both builds (the pure twin's ``islice`` raised
    ``ValueError`` for a start past ``sys.maxsize`` and took one below ``-2**63``)."""
    for start in (2**63, -(2**63) - 1):
        with pytest.raises(OverflowError, match=r"start out of the int64 range \[-2\*\*63, 2\*\*63\)"):
            impl.find_payload([], int, start)
