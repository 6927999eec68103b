"""Key-value kernel: ``apply_kv_sets``, the runs of ``set`` commands a key-value state
machine applies without its decoder, against both implementations. The reference for
every case is the general path: ``decode_kv`` + ``apply_kv`` of ``openraft_py.storage.memory``."""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openraft_py.storage.memory import (
    KV_PREFIX,
    KvCas,
    KvDelete,
    KvGet,
    KvSet,
    apply_kv,
    decode_kv,
    encode_kv,
)
from openraft_py.types import Blank, Entry, LogId, Membership, Normal

SETTINGS = settings(max_examples=300, deadline=None)


def _entries(datas: list[Any]) -> list[Entry]:
    """One entry per item: bytes -> ``Normal``, ``"blank"`` -> ``Blank``, ``"m"`` -> a membership."""
    out = []
    for i, d in enumerate(datas, start=1):
        if d == "blank":
            payload: Any = Blank()
        elif d == "m":
            payload = Membership.new([{1, 2, 3}])
        else:
            payload = Normal(d)
        out.append(Entry(LogId(2, i), payload))
    return out


def _reference(kv: dict[str, str], entries: list[Entry], start: int) -> tuple[int, list[Any], list[Any]]:
    """What the kernel must do, by the general path: apply the entries from ``start`` that
    decode to a ``KvSet``, stop at the first that does not."""
    responses: list[Any] = []
    log: list[Any] = []
    i = max(start, 0)
    while i < len(entries):
        payload = entries[i].payload
        if type(payload) is not Normal or type(payload.data) is not bytes:
            break
        cmd = decode_kv(payload.data)
        if type(cmd) is not KvSet:
            break
        log.append((entries[i].log_id, payload.data))
        responses.append(apply_kv(kv, cmd))
        i += 1
    return i, responses, log


def _str(s: str, fmt: str) -> bytes:
    """``s`` as a msgpack str in the format ``fmt`` (``fix``, ``8``, ``16``, ``32``)."""
    b = s.encode()
    if fmt == "fix":
        assert len(b) < 32
        return bytes([0xA0 | len(b)]) + b
    if fmt == "8":
        return b"\xd9" + bytes([len(b)]) + b
    if fmt == "16":
        return b"\xda" + struct.pack(">H", len(b)) + b
    return b"\xdb" + struct.pack(">I", len(b)) + b


def test_header_is_how_msgspec_encodes_a_set(impl) -> None:
    assert encode_kv(KvSet("k", "v")).startswith(impl.KV_SET_HEADER)
    assert impl.KV_SET_HEADER.startswith(KV_PREFIX)


def test_applies_a_run_of_sets_and_stops_at_the_first_other_entry(impl) -> None:
    datas = [encode_kv(KvSet("a", "1")), encode_kv(KvSet("b", "2")), encode_kv(KvSet("a", "3")),
             encode_kv(KvDelete("a")), encode_kv(KvSet("c", "4"))]
    entries = _entries(datas)
    kv = {"b": "old"}
    responses: list[Any] = []
    log: list[Any] = []
    assert impl.apply_kv_sets(kv, entries, 0, Normal, responses, log) == 3
    assert kv == {"a": "3", "b": "2"}
    assert responses == [None, "old", "1"]
    assert log == [(e.log_id, e.payload.data) for e in entries[:3]]
    # From the delete on: the kernel does not take it, nor anything after it.
    assert impl.apply_kv_sets(kv, entries, 3, Normal, responses, log) == 3
    assert impl.apply_kv_sets(kv, entries, 4, Normal, responses, log) == 5
    assert kv == {"a": "3", "b": "2", "c": "4"}
    assert responses == [None, "old", "1", None]


def test_without_responses_or_log_it_only_changes_kv(impl) -> None:
    entries = _entries([encode_kv(KvSet("a", "1")), encode_kv(KvSet("a", "2"))])
    kv: dict[str, str] = {}
    assert impl.apply_kv_sets(kv, entries, 0, Normal, None, None) == 2
    assert kv == {"a": "2"}


@pytest.mark.parametrize(("start", "returned"), [(-5, 3), (0, 3), (2, 3), (3, 3), (99, 99)])
def test_start_below_zero_counts_as_zero_and_past_the_end_applies_nothing(impl, start: int, returned: int) -> None:
    entries = _entries([encode_kv(KvSet(f"k{i}", "v")) for i in range(3)])
    kv: dict[str, str] = {}
    assert impl.apply_kv_sets(kv, entries, start, Normal, None, None) == returned
    assert kv == {f"k{i}": "v" for i in range(max(start, 0), 3)}


@pytest.mark.parametrize("other", [
    "blank", "m", b"", b"plain bytes", KV_PREFIX, encode_kv(KvGet("a")), encode_kv(KvDelete("a")),
    encode_kv(KvCas("a", None, "x")), encode_kv(KvCas("a", "1", "x")),
])
def test_every_other_entry_ends_the_run(impl, other: Any) -> None:
    entries = _entries([encode_kv(KvSet("a", "1")), other, encode_kv(KvSet("b", "2"))])
    kv: dict[str, str] = {}
    assert impl.apply_kv_sets(kv, entries, 0, Normal, [], []) == 1
    assert impl.apply_kv_sets(kv, entries, 1, Normal, [], []) == 1
    assert kv == {"a": "1"}


def test_the_payload_type_must_be_exactly_normal_type(impl) -> None:
    class MyNormal(Normal):
        pass

    entries = [Entry(LogId(1, 1), MyNormal(encode_kv(KvSet("a", "1"))))]
    assert impl.apply_kv_sets({}, entries, 0, Normal, None, None) == 0
    assert impl.apply_kv_sets({}, entries, 0, MyNormal, None, None) == 1


@pytest.mark.parametrize("kfmt", ["fix", "8", "16", "32"])
@pytest.mark.parametrize("vfmt", ["fix", "8", "16", "32"])
def test_every_msgpack_str_format(impl, kfmt: str, vfmt: str) -> None:
    data = b"\xc1\x93\xa3set" + _str("key", kfmt) + _str("välue", vfmt)
    assert decode_kv(data) == KvSet("key", "välue")  # the general path reads it the same
    kv: dict[str, str] = {}
    assert impl.apply_kv_sets(kv, _entries([data]), 0, Normal, None, None) == 1
    assert kv == {"key": "välue"}


def test_long_strings_in_the_formats_msgspec_writes(impl) -> None:
    for n in (0, 31, 32, 255, 256, 65_535, 65_536, 200_000):
        key, value = "k" * (n % 1000), "é" * n
        data = encode_kv(KvSet(key, value))
        kv: dict[str, str] = {}
        assert impl.apply_kv_sets(kv, _entries([data]), 0, Normal, None, None) == 1
        assert kv == {key: value}


def test_one_non_ascii_or_invalid_byte_anywhere_in_a_string(impl) -> None:
    """The compiled kernel checks strings for ASCII 8 bytes at a time: a non-ASCII
    character, a byte that is not UTF-8 or a NUL, at every position of strings of 0 to 24
    bytes (both sides of each 8-byte word and the tail), is taken or left as the general
    path (``decode_kv``) takes or refuses it."""
    for n in range(25):
        for pos in range(n):
            for odd, good in (("é".encode(), True), (b"\xff", False), (b"\x00", True)):
                raw = b"a" * pos + odd + b"b" * (n - pos - 1)
                data = b"\xc1\x93\xa3set" + _str("k", "8") + b"\xd9" + bytes([len(raw)]) + raw
                kv: dict[str, str] = {}
                got = impl.apply_kv_sets(kv, _entries([data]), 0, Normal, None, None)
                if good:
                    assert decode_kv(data) == KvSet("k", raw.decode())
                    assert (got, kv) == (1, {"k": raw.decode()}), (n, pos, odd)
                else:
                    assert decode_kv(data) is None  # not a command to the general path either
                    assert (got, kv) == (0, {}), (n, pos, odd)
    empty: dict[str, str] = {}
    assert impl.apply_kv_sets(empty, _entries([b"\xc1\x93\xa3set\xa0\xa0"]), 0, Normal, None, None) == 1
    assert empty == {"": ""}


@pytest.mark.parametrize("data", [
    b"\xc1\x93\xa3set\xa1a",                      # no value
    b"\xc1\x93\xa3set\xa1a\xa1",                  # value cut short
    b"\xc1\x93\xa3set\xa1a\xa1bX",                # trailing byte
    b"\xc1\x93\xa3set\xa1a\x01",                  # value not a str (an int)
    b"\xc1\x93\xa3set\xc4\x01a\xa1b",             # key in bin format, not str
    b"\xc1\x93\xa3set\xa2\xff\xfe\xa1b",          # key not UTF-8
    b"\xc1\x93\xa3set\xa1a\xa3\xed\xa0\x80",      # value a UTF-8-encoded surrogate
    b"\xc1\x93\xa3set\xd9",                       # str8 header cut short
    b"\xc1\x93\xa3set\xda\x00",                   # str16 header cut short
    b"\xc1\x93\xa3set\xdb\x00\x00\x00",           # str32 header cut short
    b"\xc1\x93\xa3set\xdb\xff\xff\xff\xff",       # str32 longer than the data
    b"\xc1\x94\xa3set\xa1a\xa1b\xa1c",            # four elements
    b"\xc1\xdc\x00\x03\xa3set\xa1a\xa1b",         # array16 header: valid, left to msgspec
    b"\xc1\x93\xd9\x03set\xa1a\xa1b",             # tag as str8: valid, left to msgspec
])
def test_what_it_does_not_take_is_left_to_the_general_path(impl, data: bytes) -> None:
    kv: dict[str, str] = {}
    assert impl.apply_kv_sets(kv, _entries([data]), 0, Normal, [], []) == 0
    assert kv == {}


def test_non_bytes_data_ends_the_run(impl) -> None:
    class Loose:
        def __init__(self, data: object) -> None:
            self.data = data

    class E:
        def __init__(self, payload: object) -> None:
            self.payload = payload
            self.log_id = LogId(1, 1)

    data = encode_kv(KvSet("a", "1"))
    assert impl.apply_kv_sets({}, [E(Loose(bytearray(data)))], 0, Loose, None, None) == 0
    assert impl.apply_kv_sets({}, [E(Loose(memoryview(data)))], 0, Loose, None, None) == 0
    kv: dict[str, str] = {}
    assert impl.apply_kv_sets(kv, [E(Loose(data))], 0, Loose, None, None) == 1  # any object with the attributes
    assert kv == {"a": "1"}


def test_wrong_argument_types_are_type_errors(impl) -> None:
    entries = _entries([encode_kv(KvSet("a", "1"))])

    class MyDict(dict):  # a subclass could override __setitem__: not taken
        pass

    for kv in (MyDict(), [], {}.items()):
        with pytest.raises(TypeError):
            impl.apply_kv_sets(kv, entries, 0, Normal, None, None)
    with pytest.raises(TypeError, match="kv must be a dict, got NoneType"):  # answers need kv
        impl.apply_kv_sets(None, entries, 0, Normal, [], None)
    with pytest.raises(TypeError):
        impl.apply_kv_sets({}, tuple(entries), 0, Normal, None, None)
    with pytest.raises(TypeError):
        impl.apply_kv_sets({}, entries, 0, Normal, (), None)
    with pytest.raises(TypeError):
        impl.apply_kv_sets({}, entries, 0, Normal, None, ())
    with pytest.raises(TypeError):
        impl.apply_kv_sets({}, entries, "0", Normal, None, None)
    with pytest.raises(TypeError):
        impl.apply_kv_sets({}, entries, 1.0, Normal, None, None)


def test_start_is_a_c_index(impl) -> None:
    """Both builds take ``start`` as a ``Py_ssize_t``: an ``__index__`` integer in range."""
    entries = _entries([encode_kv(KvSet("a", "1"))])
    for bad in (2**63, -(2**63) - 1, 2**70):
        with pytest.raises(OverflowError):
            impl.apply_kv_sets({}, entries, bad, Normal, None, None)
    assert impl.apply_kv_sets({}, entries, 2**63 - 1, Normal, None, None) == 2**63 - 1
    assert impl.apply_kv_sets({}, entries, -(2**63), Normal, None, None) == 1
    assert impl.apply_kv_sets({}, entries, False, Normal, None, None) == 1


_text = st.text(max_size=40)
_commands = st.one_of(
    st.builds(KvSet, _text, _text),
    st.builds(KvSet, _text, _text),
    st.builds(KvDelete, _text),
    st.builds(KvGet, _text),
    st.builds(KvCas, _text, st.none() | _text, _text),
)
_datas = st.one_of(
    _commands.map(encode_kv),
    # A set's header followed by anything: the kernel's parsing against msgspec's.
    st.binary(max_size=24).map(lambda b: b"\xc1\x93\xa3set" + b),
    st.tuples(_text, _text, st.binary(max_size=3)).map(lambda t: encode_kv(KvSet(t[0], t[1])) + t[2]),
    st.binary(max_size=16),
    st.sampled_from(["blank", "m"]),
)


@SETTINGS
@given(datas=st.lists(_datas, max_size=12), start=st.integers(-2, 14),
       keys=st.dictionaries(_text, _text, max_size=4))
def test_same_as_the_general_path(impl, datas: list[Any], start: int, keys: dict[str, str]) -> None:
    entries = _entries(datas)
    want_kv = dict(keys)
    want = _reference(want_kv, entries, start)
    kv = dict(keys)
    responses: list[Any] = []
    log: list[Any] = []
    got = impl.apply_kv_sets(kv, entries, start, Normal, responses, log)
    assert (got, responses, log) == want
    assert kv == want_kv


@SETTINGS
@given(tail=st.binary(max_size=40))
def test_it_never_takes_what_msgspec_refuses(impl, tail: bytes) -> None:
    data = b"\xc1\x93\xa3set" + tail
    kv: dict[str, str] = {}
    took = impl.apply_kv_sets(kv, _entries([data]), 0, Normal, None, None) == 1
    try:
        cmd = msgspec.msgpack.decode(data[1:], type=KvSet)
    except (msgspec.DecodeError, msgspec.ValidationError):
        cmd = None
    if took:
        assert cmd is not None and kv == {cmd.key: cmd.value}


@pytest.mark.parametrize(("start", "error"), [(1.5, TypeError), ("1", TypeError), (None, TypeError),
                                              (2**63, OverflowError), (-(2**63) - 1, OverflowError)])
def test_start_is_an_int64_integer(impl, start: Any, error: type[Exception]) -> None:
    """The same exception and message on both builds (the compiled kernel said "Python int
    too large to convert to C ssize_t", the pure twin "start ... does not fit a Py_ssize_t")."""
    with pytest.raises(error) as info:
        impl.apply_kv_sets({}, [], start, Normal, None, None)
    if error is OverflowError:
        assert str(info.value) == "start out of the int64 range [-2**63, 2**63)"


def test_puts_gets_each_keys_prefixed_bytes_and_its_last_value(impl) -> None:
    """``puts`` (a state machine that stores bytes: ``RocksStateMachine``): the key's UTF-8
    bytes behind ``key_prefix`` -> the value's, cut from the command as it was sent; one
    item per key, its last value, keys in the order of their first set."""
    datas = [encode_kv(KvSet("b", "1")), encode_kv(KvSet("ä", "välue")), encode_kv(KvSet("b", "3")),
             b"\xc1\x93\xa3set" + _str("long", "16") + _str("x" * 40, "32"), encode_kv(KvDelete("b"))]
    kv: dict[str, str] = {"b": "old"}
    puts: dict[bytes, bytes] = {}
    assert impl.apply_kv_sets(kv, _entries(datas), 0, Normal, None, None, puts, b"d") == 4
    assert list(puts.items()) == [(b"db", b"3"), ("dä".encode(), "välue".encode()), (b"dlong", b"x" * 40)]
    assert kv == {"b": "3", "ä": "välue", "long": "x" * 40}
    # Every put is its kv item's, encoded: what a caller would otherwise encode per key.
    assert {b"d" + k.encode(): v.encode() for k, v in kv.items()} == puts
    # Without a prefix, and nothing for what the kernel does not take.
    none: dict[bytes, bytes] = {}
    assert impl.apply_kv_sets({}, _entries([encode_kv(KvSet("", "")), encode_kv(KvGet("a"))]), 0, Normal,
                              None, None, none) == 1
    assert none == {b"": b""}
    assert impl.apply_kv_sets({}, _entries([encode_kv(KvGet("a"))]), 0, Normal, None, None, none, b"d") == 0
    assert none == {b"": b""}


@SETTINGS
@given(datas=st.lists(_datas, max_size=12), start=st.integers(-2, 14), prefix=st.binary(max_size=3))
def test_puts_are_the_applied_items_encoded(impl, datas: list[Any], start: int, prefix: bytes) -> None:
    entries = _entries(datas)
    plain: dict[str, str] = {}
    want = impl.apply_kv_sets(plain, entries, start, Normal, None, None)
    kv: dict[str, str] = {}
    puts: dict[bytes, bytes] = {}
    assert impl.apply_kv_sets(kv, entries, start, Normal, None, None, puts, prefix) == want
    assert kv == plain
    assert list(puts.items()) == [(prefix + k.encode(), v.encode()) for k, v in kv.items()]


def test_puts_and_key_prefix_types(impl) -> None:
    entries = _entries([encode_kv(KvSet("a", "1"))])

    class MyDict(dict):
        pass

    for puts in (MyDict(), [], ()):
        with pytest.raises(TypeError):
            impl.apply_kv_sets({}, entries, 0, Normal, None, None, puts, b"d")
    for prefix in (None, "d", bytearray(b"d"), memoryview(b"d")):
        with pytest.raises(TypeError):
            impl.apply_kv_sets({}, entries, 0, Normal, None, None, {}, prefix)


@SETTINGS
@given(datas=st.lists(_datas, max_size=12), start=st.integers(-2, 14))
def test_without_kv_it_takes_the_same_run_and_makes_the_same_puts(impl, datas: list[Any], start: int) -> None:
    """``kv=None`` (a follower's ``RocksStateMachine``: no answers, only bytes stored): the
    same run (strict UTF-8 still checked, non-ASCII and bad bytes included), the same
    ``puts`` and ``applied_log``, and no ``str`` kept."""
    entries = _entries(datas)
    kv: dict[str, str] = {}
    want_puts: dict[bytes, bytes] = {}
    want_log: list[Any] = []
    want = impl.apply_kv_sets(kv, entries, start, Normal, None, want_log, want_puts, b"d")
    puts: dict[bytes, bytes] = {}
    log: list[Any] = []
    assert impl.apply_kv_sets(None, entries, start, Normal, None, log, puts, b"d") == want
    assert list(puts.items()) == list(want_puts.items()) and log == want_log


def test_without_kv_bad_utf8_anywhere_ends_the_run(impl) -> None:
    for n in range(20):
        for pos in range(n):
            for odd, good in (("é".encode(), True), (b"\xff", False), (b"\xed\xa0\x80", False)):
                raw = b"a" * pos + odd + b"b" * (n - pos - 1)
                for data in (b"\xc1\x93\xa3set" + _str("k", "8") + b"\xd9" + bytes([len(raw)]) + raw,
                             b"\xc1\x93\xa3set" + b"\xd9" + bytes([len(raw)]) + raw + _str("v", "fix")):
                    puts: dict[bytes, bytes] = {}
                    got = impl.apply_kv_sets(None, _entries([data]), 0, Normal, None, None, puts)
                    assert got == (1 if good else 0), (n, pos, odd)
                    assert len(puts) == got
