"""``openraft_py.validation`` on its own: what it accepts (everything a correct node sends,
joint memberships and the empty snapshot membership included) and the error class."""

from __future__ import annotations

import pytest

import openraft_py
from openraft_py import (
    MAX_INDEX,
    MAX_NODE_ID,
    MAX_TERM,
    ApiError,
    AppendEntriesRequest,
    BasicNode,
    Blank,
    Entry,
    Fatal,
    InstallSnapshotRequest,
    InvalidRequest,
    LogId,
    Membership,
    Normal,
    SnapshotMeta,
    StoredMembership,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
)
from openraft_py import validation as v
from openraft_py.types import EMPTY_STORED_MEMBERSHIP

JOINT = Membership.new([{1, 2, 3}, {2, 3, 4}], {5: BasicNode("h:5")})


def test_invalid_request_is_a_recoverable_api_error() -> None:
    assert issubclass(InvalidRequest, ApiError) and not issubclass(InvalidRequest, Fatal)
    e = InvalidRequest("vote", "pre_vote must be a bool")
    assert (e.rpc, e.reason) == ("vote", "pre_vote must be a bool")
    assert str(e) == "invalid vote request: pre_vote must be a bool"
    assert {"InvalidRequest", "MAX_TERM", "MAX_INDEX", "MAX_NODE_ID"} <= set(openraft_py.__all__)


def test_well_formed_requests_pass() -> None:
    vote = Vote.new(MAX_TERM, MAX_NODE_ID, True)
    entries = [
        Entry(LogId(0, 0), Membership.new([{1, 2, 3}])),
        Entry(LogId(3, 1), Blank()),
        Entry(LogId(3, 2), Normal(b"")),
        Entry(LogId(MAX_TERM, 3), JOINT),
        Entry(LogId(MAX_TERM, 4), Normal(b"x")),
    ]
    v.check_append_entries(AppendEntriesRequest(vote, None, entries, LogId(3, 2)))
    v.check_append_entries(AppendEntriesRequest(vote, LogId(MAX_TERM, MAX_INDEX - 1), [Entry(LogId(MAX_TERM, MAX_INDEX), Blank())], None))
    v.check_append_entries(AppendEntriesRequest(vote, LogId(2, 7), [], LogId(2, 9)))
    v.check_vote(VoteRequest(Vote.new(4, 2), LogId(4, 9), True, Vote.new(3, 1, True)))
    v.check_vote(VoteRequest(Vote.new(0, 0), None))
    v.check_install_snapshot(InstallSnapshotRequest(vote, SnapshotMeta(None, EMPTY_STORED_MEMBERSHIP, ""), 0, b"", True))
    sm = StoredMembership(LogId(2, 3), JOINT)
    v.check_install_snapshot(InstallSnapshotRequest(vote, SnapshotMeta(LogId(2, 3), sm, "s"), 10, b"abc", False))
    v.check_transfer_leader(TransferLeaderRequest(vote, 0, None))


def test_payloads_and_ids() -> None:
    assert v.check_payload(b"a") == b"a"
    assert v.check_payloads(x for x in [b"a", bytearray(b"b"), memoryview(b"c")]) == [b"a", b"b", b"c"]
    assert v.check_node_id(MAX_NODE_ID) == MAX_NODE_ID and v.check_index(MAX_INDEX) == MAX_INDEX
    with pytest.raises(TypeError, match="payload 1"):
        v.check_payloads([b"a", None])
    assert v.check_members([3, 1]) == {3: BasicNode(), 1: BasicNode()}
    assert v.check_voters(iter([1, 2])) == {1, 2}
    for check, kind in ((v.check_voters, "voter"), (v.check_learner_ids, "learner"), (v.check_members, "member")):
        with pytest.raises(ValueError, match=f"^{kind} id 2 is given twice$"):
            check([1, 2, 3, 2])


def test_the_ids_of_one_call_stop_at_max_members() -> None:
    """``MAX_MEMBERS`` ids are taken; one more is refused, and nothing after it is read."""
    ids = range(v.MAX_MEMBERS)
    assert v.check_voters(ids) == v.check_learner_ids(ids) == set(v.check_members(ids)) == set(ids)
    for check, what in ((v.check_voters, "voters"), (v.check_learner_ids, "ids"), (v.check_members, "members")):
        more = iter(range(v.MAX_MEMBERS + 2))
        with pytest.raises(ValueError, match=f"^{what} names more than {v.MAX_MEMBERS} nodes"):
            check(more)
        assert next(more) == v.MAX_MEMBERS + 1, "read past the id that was one too many"
    with pytest.raises(ValueError, match=f"members names {v.MAX_MEMBERS + 1} nodes, more than {v.MAX_MEMBERS}"):
        v.check_members({i: BasicNode() for i in range(v.MAX_MEMBERS + 1)})


def test_the_payloads_of_one_client_write_many_stop_at_max_write_many() -> None:
    """``MAX_WRITE_MANY`` payloads are taken; a longer list or tuple is refused by its length,
    another iterable once it yielded one more, and nothing after that one is read (an
    endless one, ``iter(lambda: b"x", None)``, hung the caller's event loop filling memory)."""
    n = v.MAX_WRITE_MANY
    assert len(v.check_payloads([b"x"] * n)) == n
    assert len(v.check_payloads(b"x" for _ in range(n))) == n
    for too_many in ([b"x"] * (n + 1), (b"x",) * (n + 1)):
        with pytest.raises(ValueError, match=f"^client_write_many takes at most {n} payloads .*, got {n + 1}$"):
            v.check_payloads(too_many)
    more = iter([b"x"] * (n + 2))
    with pytest.raises(ValueError, match=f"^client_write_many takes at most {n} payloads .*: its iterable yields more$"):
        v.check_payloads(more)
    assert next(more) == b"x" and next(more, None) is None, "read past the payload that was one too many"
    with pytest.raises(ValueError, match="yields more"):
        v.check_payloads(iter(lambda: b"x", None))


def test_a_huge_value_is_shown_short_in_the_error() -> None:
    """The message of a refused value shows at most about 80 characters of it and its
    length: a 16 MiB string as a node id made a 16 MiB message, and an int too long to
    write out (10**5000) failed with Python's "Exceeds the limit (4300 digits) for integer
    string conversion" instead of the check's own error."""
    big = "x" * (16 << 20)
    for call, error, start in (
        (lambda: v.check_node_id(big), TypeError, "node id must be an int, got str 'xxx"),
        (lambda: v.check_index(big, "index"), TypeError, "index must be an int, got str 'xxx"),
        (lambda: v.check_seconds(big, "timeout"), TypeError, "timeout must be a number, got str 'xxx"),
        (lambda: v.check_bool(big, "blocking"), TypeError, "blocking must be a bool, got str 'xxx"),
        (lambda: v.check_node(big, "node"), TypeError, "node must be a BasicNode, got str 'xxx"),
        (lambda: v.check_members({1: big}), TypeError, "member 1 must be a BasicNode, got str 'xxx"),
    ):
        with pytest.raises(error) as ei:
            call()
        msg = str(ei.value)
        assert msg.startswith(start) and msg.endswith(f"... ({len(big) + 2} characters)") and len(msg) < 200, msg[:300]
    huge = 10**5000
    for call, text in (
        (lambda: v.check_node_id(huge), f"node id must be within [0, {MAX_NODE_ID}], got an int of 16610 bits"),
        (lambda: v.check_index(-huge), f"log index must be within [0, {MAX_INDEX}], got an int of 16610 bits"),
        (lambda: v.check_seconds(huge, "timeout"), "timeout must be finite, got an int of 16610 bits"),
    ):
        with pytest.raises(ValueError, match=f"^{text}$".replace("[", r"\[")):
            call()
    with pytest.raises(InvalidRequest, match=r"vote node id must be an int within .*, got 'xxx.*\(16777218 characters\)$"):
        v.check_vote(VoteRequest(Vote.new(1, big), None))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match=r"vote term must be an int within .*, got an int of 16610 bits$"):
        v.check_vote(VoteRequest(Vote.new(huge, 1), None))
    # A short value is shown whole, as before.
    with pytest.raises(TypeError, match=r"^node id must be an int, got str '3'$"):
        v.check_node_id("3")


async def test_a_huge_argument_to_the_transports_stores_and_router_is_shown_short() -> None:
    """The same for the checks outside ``validation``: the TCP factory's cluster name, an
    address, the in-memory store's owner, the forced recovery's new cluster name and the
    router's fault switches each put the whole value in their message (16 MiB)."""
    from openraft_py.network._tcp_common import parse_addr
    from openraft_py.network.router import Router
    from openraft_py.network.tcp import TcpNetworkFactory
    from openraft_py.recovery import replace_owners
    from openraft_py.storage.memory import MemLogStore, MemStateMachine

    big = "x" * (16 << 20)
    store = MemLogStore()
    for call, error in (
        (lambda: TcpNetworkFactory(1, big.encode()), TypeError),  # type: ignore[arg-type]
        (lambda: parse_addr(big), ValueError),
        (lambda: Router().set_rpc_failure(1, big, None), ValueError),  # type: ignore[arg-type]
        (lambda: Router().rpc_count(big), ValueError),
    ):
        with pytest.raises(error) as ei:
            call()
        msg = str(ei.value)
        assert "... (" in msg and len(msg) < 300, msg[:300]
    for coro in (store.check_owner(1, big.encode()),  # type: ignore[arg-type]
                 replace_owners(1, big.encode(), store, MemStateMachine())):  # type: ignore[arg-type]
        with pytest.raises(TypeError) as ei:
            await coro
        msg = str(ei.value)
        assert "... (" in msg and len(msg) < 300, msg[:300]


@pytest.mark.parametrize("every", [1, 2, 7])
def test_membership_entries_are_checked_in_linear_time(monkeypatch: pytest.MonkeyPatch, every: int) -> None:
    """``check_append_entries`` hands the plain-entry kernel at most a few times the entries
    it checks, however many membership entries the batch holds (here one in ``every``, up to
    all of them). It handed it the whole rest of the list after each membership entry:
    65536 one-node membership entries (a 3.6 MiB frame, under every bound) took 38 s of the
    event loop. The batch is still checked whole: a bad entry after them is refused."""
    seen = 0
    kernel = v.plain_entries_prefix

    def counting(entries: list[Entry], *args: object) -> int:
        nonlocal seen
        seen += len(entries)
        return kernel(entries, *args)

    monkeypatch.setattr(v, "plain_entries_prefix", counting)
    m = Membership.new([{1}])
    vote = Vote.new(3, 1, True)
    n = 4096
    entries = [Entry(LogId(3, i), m if i % every == 0 else Blank()) for i in range(1, n + 1)]
    v.check_append_entries(AppendEntriesRequest(vote, LogId(3, 0), entries, None))
    assert seen <= 4 * n + 64, f"the kernel was handed {seen} entries for a batch of {n}"
    bad = [*entries, Entry(LogId(3, n + 1), Normal("text"))]  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match=r"Normal\.data must be bytes"):
        v.check_append_entries(AppendEntriesRequest(vote, LogId(3, 0), bad, None))


def test_a_membership_past_max_membership_nodes_is_an_invalid_request() -> None:
    """A transport that builds requests without a decoder (none refused the map's header)
    still gets a membership of more than ``MAX_MEMBERSHIP_NODES`` nodes refused, in an
    entry and in a snapshot's meta; one of exactly the bound passes."""
    from openraft_py import MAX_MEMBERSHIP_NODES

    vote = Vote.new(3, 1, True)

    def of(n: int) -> Membership:
        return Membership.new([{1}], {i: BasicNode() for i in range(1, n + 1)})

    v.check_append_entries(AppendEntriesRequest(vote, None, [Entry(LogId(3, 0), of(MAX_MEMBERSHIP_NODES))], None))
    big = of(MAX_MEMBERSHIP_NODES + 1)
    with pytest.raises(InvalidRequest, match=f"{MAX_MEMBERSHIP_NODES + 1} nodes, more than {MAX_MEMBERSHIP_NODES}"):
        v.check_append_entries(AppendEntriesRequest(vote, None, [Entry(LogId(3, 0), big)], None))
    meta = SnapshotMeta(LogId(3, 5), StoredMembership(LogId(3, 0), big), "s")
    with pytest.raises(InvalidRequest, match="MAX_MEMBERSHIP_NODES"):
        v.check_install_snapshot(InstallSnapshotRequest(vote, meta, 0, b"", True))
