"""The wire schema (openraft_py.network.wire): round trips, framing parity with the _core
codec, bounds, versioning rule, and that any byte string decodes or raises WireError."""

from __future__ import annotations

import types as pytypes
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openraft_py.network import wire
from openraft_py.types import (
    BLANK,
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    Entry,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    Membership,
    Normal,
    SnapshotMeta,
    StoredMembership,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)
from openraft_py.validation import MAX_INDEX, MAX_NODE_ID, MAX_TERM

V = Vote.new(7, 2, True)
M = Membership.new([{1, 2, 3}, {2, 3, 4}], {1: BasicNode("h1:1"), 4: BasicNode("h4:4"), 5: BasicNode("")})
META = SnapshotMeta(LogId(6, 90), StoredMembership(LogId(5, 80), M), "snap-6-90-1")
BIG = MAX_TERM  # == MAX_INDEX


def sample_messages() -> list[tuple[int, Any]]:
    """One message of every kind, with every optional field set and unset somewhere."""
    entries = [
        Entry(LogId(7, 11), BLANK),
        Entry(LogId(7, 12), Normal(b"\x00\xffpayload")),
        Entry(LogId(7, 13), M),
        Entry(LogId(BIG, BIG), Normal(b"")),
    ]
    return [
        (wire.KIND_HELLO, wire.Hello(wire.PROTOCOL_VERSION, "prod", MAX_NODE_ID)),
        (wire.KIND_HELLO_ACK, wire.HelloAck(wire.PROTOCOL_VERSION, 3)),
        (wire.KIND_ERROR, wire.ErrorBody(wire.ERR_REMOTE, "boom")),
        (wire.KIND_APPEND_ENTRIES, AppendEntriesRequest(V, LogId(7, 10), entries, LogId(7, 9))),
        (wire.KIND_APPEND_ENTRIES, AppendEntriesRequest(V, None, [], None)),
        (wire.KIND_APPEND_ENTRIES_RESP, AppendEntriesResponse(V, True, LogId(7, 13))),
        (wire.KIND_APPEND_ENTRIES_RESP, AppendEntriesResponse(V, False, None, 4)),
        (wire.KIND_VOTE, VoteRequest(Vote.new(8, 3), LogId(7, 13), True, V)),
        (wire.KIND_VOTE, VoteRequest(Vote.new(0, 0), None)),
        (wire.KIND_VOTE_RESP, VoteResponse(V, False, LogId(7, 13), True)),
        (wire.KIND_INSTALL_SNAPSHOT, InstallSnapshotRequest(V, META, 3 << 20, bytes(range(256)) * 9, False)),
        (
            wire.KIND_INSTALL_SNAPSHOT,
            InstallSnapshotRequest(
                V, SnapshotMeta(None, StoredMembership(None, Membership((), {})), ""), 0, b"", True
            ),
        ),
        (wire.KIND_INSTALL_SNAPSHOT_RESP, InstallSnapshotResponse(V)),
        (wire.KIND_TRANSFER_LEADER, TransferLeaderRequest(V, 4, LogId(7, 13))),
        (wire.KIND_TRANSFER_LEADER, TransferLeaderRequest(V, 4, None)),
        (wire.KIND_TRANSFER_LEADER_RESP, None),
    ]


def test_every_kind_has_a_sample() -> None:
    assert {k for k, _ in sample_messages()} == set(wire.KIND_NAMES)


@pytest.mark.parametrize("kind,msg", sample_messages(), ids=lambda x: str(x)[:30])
def test_round_trip_through_frames(impl: pytypes.SimpleNamespace, kind: int, msg: Any) -> None:
    frame = wire.frame_message(kind, 2**64 - 1, msg)
    # The frame is the _core codec frame of the payload, byte for byte, in both builds.
    assert bytes(frame) == impl.encode_frame(wire.encode_message(kind, 2**64 - 1, msg))
    reader = impl.FrameReader(1 << 20)
    # Fed a byte at a time around the header, then the rest: one frame comes out.
    out = []
    for i in range(12):
        out += reader.feed(bytes(frame[i : i + 1]))
    out += reader.feed(bytes(frame[12:]))
    assert len(out) == 1 and reader.buffered() == 0
    k, rid, body = wire.split_payload(out[0])
    assert (k, rid) == (kind, 2**64 - 1)
    back = wire.decode_body(k, body)
    assert back == msg
    if msg is not None:
        assert type(back) is type(msg)


def test_decoded_values_are_the_real_types() -> None:
    kind, msg = sample_messages()[3]
    back = wire.decode_body(kind, wire.encode_message(kind, 1, msg)[wire.HEADER_SIZE :])
    assert type(back.entries[2].payload) is Membership
    assert type(back.vote) is Vote and type(back.prev_log_id) is LogId
    assert back.entries[0].log_id < back.entries[1].log_id  # comparable with LogId
    assert back.entries[2].payload.voter_ids() == frozenset({1, 2, 3, 4})


def test_many_frames_in_one_buffer(impl: pytypes.SimpleNamespace) -> None:
    msgs = sample_messages()
    stream = b"".join(bytes(wire.frame_message(k, i, m)) for i, (k, m) in enumerate(msgs))
    reader = impl.FrameReader(1 << 20)
    got = []
    for i in range(0, len(stream), 97):
        got += reader.feed(stream[i : i + 97])
    assert [wire.split_payload(p)[:2] for p in got] == [(k, i) for i, (k, _) in enumerate(msgs)]


def _body(fields: list[Any]) -> bytes:
    return msgspec.msgpack.encode(fields)


VOTE_OK = [[1, 2], False]


@pytest.mark.parametrize(
    "kind,fields",
    [
        (wire.KIND_APPEND_ENTRIES, [[[-1, 2], False], None, [], None]),  # negative term
        (wire.KIND_APPEND_ENTRIES, [[[MAX_TERM + 1, 2], False], None, [], None]),  # term > MAX
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, [1, MAX_INDEX + 1], [], None]),  # index > MAX
        (wire.KIND_VOTE, [[[1, MAX_NODE_ID + 1], False], None]),  # node id > MAX
        # AppendEntries is decoded in one typed pass and bounds-checked after: every bound.
        (wire.KIND_APPEND_ENTRIES, [[[1, MAX_NODE_ID + 1], False], None, [], None]),  # node id > MAX
        (wire.KIND_APPEND_ENTRIES, [[[1, -1], False], None, [], None]),  # negative node id
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [], [MAX_TERM + 1, 1]]),  # leader_commit term
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [], [1, -1]]),  # leader_commit index
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [[[-1, 2], {"type": "Blank"}]], None]),  # entry term
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [[[1, 0], {"type": "Blank"}], [[1, MAX_INDEX + 1], {"type": "Blank"}]], None]),
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [[[1, 0], {"type": "Membership", "configs": [[1], [2], [3]], "nodes": {}}]], None]),
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [[[1, 0], {"type": "Membership", "configs": [[-1]], "nodes": {}}]], None]),
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [[[1, 0], {"type": "Membership", "configs": [[1]], "nodes": {MAX_NODE_ID + 1: {}}}]], None]),
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [[[1, 0], {"type": "Membership", "configs": [[1]], "nodes": {1: {"addr": "x" * (wire.MAX_ADDR_LEN + 1)}}}]], None]),
        (wire.KIND_APPEND_ENTRIES_RESP, [VOTE_OK, False, None, -2]),  # conflict hint < -1
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, [1, -5], [], None]),  # negative index
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [[[1, 2**64 - 1], {"type": "Blank"}]], None]),
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [[[1, 2], {"type": "Nope"}]], None]),
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, [[[1, 2], {"type": "Normal", "data": "str"}]], None]),
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None, "entries", None]),
        (wire.KIND_APPEND_ENTRIES, [VOTE_OK, None]),  # missing required fields
        (wire.KIND_APPEND_ENTRIES, {"vote": VOTE_OK}),  # a map, not an array
        (wire.KIND_VOTE, [[[1, -1], False], None]),  # negative node id
        (wire.KIND_VOTE, [[[1.5, 1], False], None]),  # float term
        (wire.KIND_VOTE, [[[True, 1], False], None]),  # bool is not an int here
        (wire.KIND_VOTE_RESP, [VOTE_OK, "yes", None]),
        (wire.KIND_TRANSFER_LEADER, [VOTE_OK, -3, None]),
        (wire.KIND_INSTALL_SNAPSHOT, [VOTE_OK, {"last_log_id": None}, 0, b"", True]),
        (
            wire.KIND_INSTALL_SNAPSHOT,
            [
                VOTE_OK,
                {
                    "last_log_id": None,
                    "last_membership": {
                        "log_id": None,
                        "membership": {"type": "Membership", "configs": [[-1]], "nodes": {}},
                    },
                    "snapshot_id": "s",
                },
                0,
                b"",
                True,
            ],
        ),
        (
            wire.KIND_INSTALL_SNAPSHOT,
            [
                VOTE_OK,
                {
                    "last_log_id": None,
                    "last_membership": {
                        "log_id": None,
                        "membership": {"type": "Membership", "configs": [[1], [2], [3]], "nodes": {}},
                    },
                    "snapshot_id": "s",
                },
                0,
                b"",
                True,
            ],
        ),
        (wire.KIND_INSTALL_SNAPSHOT, [VOTE_OK, META, -1, b"", True]),  # negative offset
        (wire.KIND_HELLO, [1, "x" * (wire.MAX_NAME_LEN + 1), 1]),
        (wire.KIND_HELLO, [1, "prod", 2**63]),
        (wire.KIND_HELLO, [-1, "prod", 1]),
        (wire.KIND_ERROR, [256, "x"]),
    ],
)
def test_out_of_bounds_and_mistyped_bodies_are_refused(kind: int, fields: Any) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_body(kind, _body(fields))


def test_bounds_are_the_validation_limits_inclusive() -> None:
    req = wire.decode_body(wire.KIND_VOTE, _body([[[MAX_TERM, MAX_NODE_ID], True], [MAX_TERM, MAX_INDEX]]))
    assert req == VoteRequest(Vote.new(MAX_TERM, MAX_NODE_ID, True), LogId(MAX_TERM, MAX_INDEX))


def test_trailing_and_truncated_bytes_are_refused() -> None:
    kind, msg = sample_messages()[3]
    body = wire.encode_message(kind, 1, msg)[wire.HEADER_SIZE :]
    with pytest.raises(wire.WireError):
        wire.decode_body(kind, body + b"\x00")
    for cut in (0, 1, len(body) // 2, len(body) - 1):
        with pytest.raises(wire.WireError):
            wire.decode_body(kind, body[:cut])


def test_versioning_rule_trailing_fields() -> None:
    """A newer sender's extra trailing fields are ignored; an older sender's missing trailing
    defaulted fields are filled in (the compatibility the versioning rule relies on)."""
    newer = _body([VOTE_OK, [1, 5], True, None, "a field from the future", 7])
    assert wire.decode_body(wire.KIND_VOTE, newer) == VoteRequest(Vote.new(1, 2), LogId(1, 5), True)
    older = _body([VOTE_OK, False, None])
    assert wire.decode_body(wire.KIND_APPEND_ENTRIES_RESP, older) == AppendEntriesResponse(
        Vote.new(1, 2), False, None, -1
    )


DEEP = b"\x91" * 5000 + b"\xc0"
"""A msgpack value nested far deeper than the interpreter's recursion limit: ``[[[...nil]]]``."""


@pytest.mark.parametrize("kind, msg", [m for m in sample_messages() if m[1] is not None], ids=lambda v: str(v)[:30])
def test_a_value_nested_deeper_than_the_recursion_limit_is_malformed(kind: int, msg: Any) -> None:
    """Any field of any message replaced by a deeply nested value raises ``WireError`` (a
    snapshot chunk's data, skipped as ``msgspec.Raw`` by the schema pass, raised
    ``RecursionError``, which the TCP server did not take for malformed input: asyncio logged
    a fatal error with a traceback and closed the connection)."""
    fields = msgspec.msgpack.decode(wire.encode_message(kind, 1, msg)[wire.HEADER_SIZE :])
    enc = msgspec.msgpack.Encoder()
    for i in range(len(fields)):
        parts = [enc.encode(f) for f in fields]
        parts[i] = DEEP
        body = bytes([0x90 | len(fields)]) + b"".join(parts)
        with pytest.raises(wire.WireError):
            wire.decode_body(kind, body)


def test_split_payload_refuses_short_and_unknown() -> None:
    with pytest.raises(wire.WireError):
        wire.split_payload(b"\x03" + b"\x00" * 7)
    with pytest.raises(wire.WireError):
        wire.split_payload(bytes([99]) + b"\x00" * 8 + b"\x90")
    with pytest.raises(wire.WireError):
        wire.decode_body(99, b"\x90")
    with pytest.raises(wire.WireError):
        wire.encode_message(99, 1, None)
    with pytest.raises(wire.WireError):
        wire.encode_message(wire.KIND_VOTE, -1, VoteRequest(V, None))
    with pytest.raises(wire.WireError):
        wire.encode_message(wire.KIND_VOTE, 1, None)


def test_snapshot_data_is_written_once_into_the_frame() -> None:
    """The chunk bytes appear in the frame exactly where msgspec wrote them; decoding hands
    back bytes equal to the original (msgspec decodes bin into one bytes object)."""
    data = bytes(range(256)) * 4096  # 1 MiB
    req = InstallSnapshotRequest(V, META, 0, data, False)
    frame = wire.frame_message(wire.KIND_INSTALL_SNAPSHOT, 5, req)
    assert len(frame) < len(data) + 512
    assert frame.find(data) > 0
    _, _, body = wire.split_payload(bytes(frame[4:]))
    assert wire.decode_body(wire.KIND_INSTALL_SNAPSHOT, body).data == data


class _CountingEncoder:
    """Stands for ``wire._encoder``: counts the lists of entries it is given to encode (as a
    list: encoded entry by entry; a ``msgspec.Raw`` is bytes already made)."""

    def __init__(self, enc: msgspec.msgpack.Encoder) -> None:
        self.enc = enc
        self.entry_lists = 0

    def _count(self, obj: Any) -> None:
        items = obj if isinstance(obj, tuple) else (obj,)
        self.entry_lists += sum(1 for x in items if isinstance(x, list) and x and isinstance(x[0], Entry))

    def encode(self, obj: Any) -> bytes:
        self._count(obj)
        return self.enc.encode(obj)

    def encode_into(self, obj: Any, buf: bytearray, offset: int) -> None:
        self._count(obj)
        self.enc.encode_into(obj, buf, offset)


def _ae_request_body(req: AppendEntriesRequest) -> bytes:
    return bytes(wire.frame_message(wire.KIND_APPEND_ENTRIES, 3, req))[4 + wire.HEADER_SIZE :]


def test_one_batch_sent_to_two_followers_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader sends each follower its own request and its own list (the log cache's slice),
    with the same entry objects: the entries are encoded once, and each frame is byte for byte
    what encoding the request again gives."""
    enc = _CountingEncoder(wire._encoder)
    monkeypatch.setattr(wire, "_encoder", enc)
    monkeypatch.setattr(wire, "_last_append", None, raising=False)
    batch = [Entry(LogId(7, i), Normal(b"v%d" % i)) for i in range(1, 257)]
    to_n2 = AppendEntriesRequest(V, LogId(6, 0), batch[:], LogId(6, 0))
    to_n3 = AppendEntriesRequest(V, LogId(6, 0), batch[:], LogId(6, 0))
    bodies = [_ae_request_body(to_n2), _ae_request_body(to_n3)]
    assert enc.entry_lists == 1
    assert bodies == [enc.enc.encode(msgspec.structs.astuple(r)) for r in (to_n2, to_n3)]
    # A follower further behind (another prev_log_id) or a later commit: still one encoding.
    again = [AppendEntriesRequest(V, LogId(6, 1), batch[:], LogId(6, 0)),
             AppendEntriesRequest(V, LogId(6, 0), batch[:], LogId(7, 100))]
    assert [_ae_request_body(r) for r in again] == [enc.enc.encode(msgspec.structs.astuple(r)) for r in again]
    assert enc.entry_lists == 1


def test_append_entries_frames_are_the_plain_encoding_whatever_came_before() -> None:
    """Whether or not the entries' encoding is shared with the request before, every
    AppendEntries frame is the msgpack of its fields: the same entries (new list), another
    entry in the middle, fewer or more entries, a membership entry, too few entries to share,
    a heartbeat."""
    batch = [Entry(LogId(7, i), Normal(b"v%d" % i)) for i in range(1, 21)]
    other = batch[:]
    other[10] = Entry(LogId(7, 11), Normal(b"another"))
    lists = [batch[:], batch[:], other, batch[:], batch[:19], batch[:20], [*batch, Entry(LogId(7, 21), M)],
             [Entry(LogId(7, 21), M)] + batch[:5], batch[:3], batch[:3], [], batch[:]]
    fields = [(V, LogId(6, 0), LogId(6, 0)), (V, LogId(6, 0), LogId(6, 0)), (V, None, LogId(6, 0)),
              (V, None, None), (Vote.new(8, 1), LogId(6, 0), LogId(7, 2)), (V, LogId(BIG, BIG), LogId(BIG, 1))]
    cases = [(entries, f) for entries in lists for f in fields]
    for i, (entries, (vote, prev, commit)) in enumerate(cases):
        req = AppendEntriesRequest(vote, prev, entries, commit)
        assert _ae_request_body(req) == wire._encoder.encode(msgspec.structs.astuple(req)), i
        assert wire.encode_message(wire.KIND_APPEND_ENTRIES, 2, req)[wire.HEADER_SIZE :] == _ae_request_body(req), i
        decoded = wire.decode_body(wire.KIND_APPEND_ENTRIES, _ae_request_body(req))
        assert decoded == req, i


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(wire.KIND_NAMES)), data=st.binary(max_size=300))
def test_random_bodies_decode_or_raise_wire_error(kind: int, data: bytes) -> None:
    try:
        wire.decode_body(kind, data)
    except wire.WireError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_bodies_decode_or_raise_wire_error(data: st.DataObject) -> None:
    kind, msg = data.draw(st.sampled_from(sample_messages()))
    body = bytearray(wire.encode_message(kind, 1, msg)[wire.HEADER_SIZE :])
    if not body:
        return
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    try:
        out = wire.decode_body(kind, bytes(body))
    except wire.WireError:
        return
    # Whatever decodes passed the bounds: spot-check the vote of an RPC.
    vote = getattr(out, "vote", None)
    if vote is not None:
        assert 0 <= vote.leader_id.term <= MAX_TERM and 0 <= vote.leader_id.node_id <= MAX_NODE_ID


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_append_entries_one_pass_agrees_with_the_schema(data: st.DataObject) -> None:
    """AppendEntries skips the schema pass (one typed decode, then the bounds on the values):
    on mutated valid bodies it accepts exactly what the schema ``WireAppendEntriesRequest``
    accepts, and builds the same request as the two-pass decode."""
    kind, msg = data.draw(st.sampled_from([m for m in sample_messages() if m[0] == wire.KIND_APPEND_ENTRIES]))
    body = bytearray(wire.encode_message(kind, 1, msg)[wire.HEADER_SIZE :])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    schema = msgspec.msgpack.Decoder(wire.WireAppendEntriesRequest)
    twin, cls = wire._BUILDERS[kind]
    try:
        schema.decode(bytes(body))
        expected = cls(*msgspec.structs.astuple(twin.decode(bytes(body))))
    except (msgspec.DecodeError, TypeError, ValueError):
        expected = None
    try:
        got = wire.decode_body(kind, bytes(body))
    except wire.WireError:
        got = None
    assert got == expected


def _ae_entry(term: int, index: int, kind: str = "n") -> list[Any]:
    payload = {
        "n": {"type": "Normal", "data": b"x"},
        "b": {"type": "Blank"},
        "m": {"type": "Membership", "configs": [[1, 2, 3]], "nodes": {}},
        "bad-m": {"type": "Membership", "configs": [[-1]], "nodes": {}},
    }[kind]
    return [[term, index], payload]


@pytest.mark.parametrize(
    ("entries", "ok"),
    [
        ([_ae_entry(1, MAX_INDEX - 1), _ae_entry(1, MAX_INDEX)], True),
        ([_ae_entry(1, MAX_INDEX), _ae_entry(1, MAX_INDEX + 1)], False),
        ([_ae_entry(MAX_TERM, 5), _ae_entry(MAX_TERM, 6, "b")], True),
        ([_ae_entry(MAX_TERM - 1, 5), _ae_entry(MAX_TERM + 1, 6)], False),
        ([_ae_entry(MAX_TERM + 1, 5), _ae_entry(1, 6)], False),
        ([_ae_entry(3, 5), _ae_entry(2, 6)], True),  # a term going down is in bounds
        ([_ae_entry(1, 7), _ae_entry(1, 5)], True),  # so are indexes out of order
        ([_ae_entry(1, 5), _ae_entry(1, 6, "m")], True),
        ([_ae_entry(1, 5), _ae_entry(1, 6, "bad-m")], False),
        ([_ae_entry(1, 5), _ae_entry(1, -1, "b")], False),
        ([_ae_entry(1, 5), _ae_entry(-3, 6, "b")], False),
        ([_ae_entry(0, 0), _ae_entry(0, 1)], True),
        ([_ae_entry(2**64 - 1, 5), _ae_entry(2**64 - 1, 6)], False),  # past int64 too
        ([_ae_entry(1, 2**64 - 2), _ae_entry(1, 2**64 - 1)], False),
    ],
)
def test_append_entries_entry_bounds_whatever_the_batch_looks_like(entries: list[Any], ok: bool) -> None:
    """Every entry's term and index within the validation limits, memberships bounded, for
    any batch: a run of consecutive plain entries is checked in one kernel call, any other
    batch entry by entry, and both accept exactly the same."""
    body = _body([VOTE_OK, None, entries, None])
    if ok:
        req = wire.decode_body(wire.KIND_APPEND_ENTRIES, body)
        assert [(e.log_id.term, e.log_id.index) for e in req.entries] == [tuple(e[0]) for e in entries]
    else:
        with pytest.raises(wire.WireError):
            wire.decode_body(wire.KIND_APPEND_ENTRIES, body)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 7, MAX_TERM - 1, MAX_TERM, MAX_TERM + 1, -1]),
            st.sampled_from([0, 1, 2, 3, MAX_INDEX - 1, MAX_INDEX, MAX_INDEX + 1, -1]),
            st.sampled_from(["n", "b", "m", "bad-m"]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_append_entries_entry_bounds_match_a_reference(items: list[tuple[int, int, str]], consecutive: bool) -> None:
    if consecutive:  # a leader's batch: indexes from the first one on, terms never going down
        t0, i0, _ = items[0]
        items = [(t0, i0 + k, kind) for k, (_, _, kind) in enumerate(items)]
    body = _body([VOTE_OK, None, [_ae_entry(*it) for it in items], None])
    want = all(0 <= t <= MAX_TERM and 0 <= i <= MAX_INDEX and kind != "bad-m" for t, i, kind in items)
    try:
        wire.decode_body(wire.KIND_APPEND_ENTRIES, body)
        got = True
    except wire.WireError:
        got = False
    assert got == want, items


def test_an_append_entries_of_more_than_max_entries_is_refused_from_its_list_header() -> None:
    """An AppendEntries body listing more than ``wire.MAX_ENTRIES`` entries is malformed, and
    refused before any entry is decoded: here the list header claims one entry more than
    the bound and no entry follows, and the error is the length's, not a truncation. A
    32 MiB frame of 1.87 million blank entries took 2.6 s of the event loop to decode (a peer
    past the handshake stalled the node past its election timeouts). ``MAX_ENTRIES`` entries
    decode; so does the check on the validation schema."""
    head = msgspec.msgpack.encode([V, LogId(7, 0)])[1:]  # the first two fields, no array header
    body = b"\x94" + head + b"\xdd" + (wire.MAX_ENTRIES + 1).to_bytes(4, "big")
    for decode in (lambda b: wire.decode_body(wire.KIND_APPEND_ENTRIES, b),
                   wire._VALIDATORS[wire.KIND_APPEND_ENTRIES].decode):
        with pytest.raises((wire.WireError, msgspec.ValidationError), match=f"length <= {wire.MAX_ENTRIES}"):
            decode(body)
    ok = AppendEntriesRequest(V, LogId(7, 0), [Entry(LogId(7, i), BLANK) for i in range(1, wire.MAX_ENTRIES + 1)],
                              None)
    raw = bytes(wire.frame_message(wire.KIND_APPEND_ENTRIES, 1, ok))[4 + wire.HEADER_SIZE:]
    assert wire.decode_body(wire.KIND_APPEND_ENTRIES, raw) == ok
    over = msgspec.structs.replace(ok, entries=[*ok.entries, Entry(LogId(7, wire.MAX_ENTRIES + 1), BLANK)])
    raw = bytes(wire.frame_message(wire.KIND_APPEND_ENTRIES, 1, over))[4 + wire.HEADER_SIZE:]
    with pytest.raises(wire.WireError, match=f"length <= {wire.MAX_ENTRIES}"):
        wire.decode_body(wire.KIND_APPEND_ENTRIES, raw)


def _membership_of(n: int, voters_n: int = 1) -> Membership:
    """A membership of ``n`` nodes (ids from 2**20, empty addresses), the first ``voters_n``
    of them voters."""
    ids = range(2**20, 2**20 + n)
    return Membership((frozenset(ids[:voters_n]),), {i: BasicNode() for i in ids})


def _ae_body(m: Membership) -> bytes:
    req = AppendEntriesRequest(V, LogId(7, 10), [Entry(LogId(7, 11), m)], None)
    return bytes(wire.frame_message(wire.KIND_APPEND_ENTRIES, 1, req))[4 + wire.HEADER_SIZE:]


def _snapshot_body(m: Membership) -> bytes:
    meta = SnapshotMeta(LogId(6, 90), StoredMembership(LogId(5, 80), m), "snap")
    req = InstallSnapshotRequest(V, meta, 0, b"", True)
    return bytes(wire.frame_message(wire.KIND_INSTALL_SNAPSHOT, 1, req))[4 + wire.HEADER_SIZE:]


@pytest.mark.parametrize("body_of", [_ae_body, _snapshot_body], ids=["append_entries", "install_snapshot"])
def test_a_membership_of_more_than_max_membership_nodes_is_refused_on_the_wire(body_of: Any) -> None:
    """A membership entry of an AppendEntries, or a snapshot's meta, whose ``nodes`` map (or
    a voter config) holds more than ``MAX_MEMBERSHIP_NODES`` nodes is malformed: refused from
    the map's (the array's) header. One entry of 2 million nodes, a 22.8 MiB frame under the
    32 MiB frame limit, decoded and was taken in about 2.1 s, past the election timeouts. A
    membership of exactly the bound decodes."""
    n = wire.MAX_MEMBERSHIP_NODES
    kind = wire.KIND_APPEND_ENTRIES if body_of is _ae_body else wire.KIND_INSTALL_SNAPSHOT
    ok = _membership_of(n, n)
    got = wire.decode_body(kind, body_of(ok))
    assert (got.entries[0].payload if kind == wire.KIND_APPEND_ENTRIES else got.meta.last_membership.membership) == ok
    for over in (_membership_of(n + 1), _membership_of(n + 1, n + 1)):
        with pytest.raises(wire.WireError, match=f"length <= {n}"):
            wire.decode_body(kind, body_of(over))


def test_a_huge_membership_is_refused_from_its_map_header() -> None:
    """A nodes map whose header claims 2 million nodes is refused by its length, not decoded
    (nothing follows the header here: a decoder that read on would fail on the truncation
    instead); so is a voter config's array header."""
    one = _ae_body(_membership_of(1))
    node = msgspec.msgpack.encode({2**20: BasicNode()})
    assert one.count(node) == 1
    huge = one[: one.index(node)] + b"\xdf" + (2_000_000).to_bytes(4, "big")
    with pytest.raises(wire.WireError, match=f"length <= {wire.MAX_MEMBERSHIP_NODES}"):
        wire.decode_body(wire.KIND_APPEND_ENTRIES, huge)
    voters = msgspec.msgpack.encode(frozenset({2**20}))
    assert one.count(voters) == 1
    huge = one[: one.index(voters)] + b"\xdd" + (2_000_000).to_bytes(4, "big")
    with pytest.raises(wire.WireError, match=f"length <= {wire.MAX_MEMBERSHIP_NODES}"):
        wire.decode_body(wire.KIND_APPEND_ENTRIES, huge)


@pytest.mark.parametrize("typ", [Membership, StoredMembership, SnapshotMeta, Entry])
def test_stored_memberships_are_bounded_too(typ: Any) -> None:
    """A storage reading back a membership (a log entry, a snapshot's meta, a stored
    membership) with ``msgspec.msgpack.Decoder`` of the ``openraft_py.types`` type gets the
    same bound: the ``Membership`` type declares it."""
    from openraft_py.types import MAX_MEMBERSHIP_NODES

    def wrap(m: Membership) -> Any:
        if typ is Membership:
            return m
        sm = StoredMembership(LogId(5, 80), m)
        if typ is StoredMembership:
            return sm
        if typ is SnapshotMeta:
            return SnapshotMeta(LogId(6, 90), sm, "snap")
        return Entry(LogId(5, 80), m)

    dec = msgspec.msgpack.Decoder(typ)
    ok = wrap(_membership_of(MAX_MEMBERSHIP_NODES))
    assert dec.decode(msgspec.msgpack.encode(ok)) == ok
    with pytest.raises(msgspec.ValidationError, match=f"length <= {MAX_MEMBERSHIP_NODES}"):
        dec.decode(msgspec.msgpack.encode(wrap(_membership_of(MAX_MEMBERSHIP_NODES + 1))))
