"""The public objects as a user's program handles them: every public error class pickles
(every protocol) and copies with its message and fields intact, found by walking the public
modules so that a new class cannot escape the check (a class whose ``__init__`` needs
arguments must have a sample in ``ERROR_SAMPLES``); the reprs of the types stay short; a
frozen membership cannot be changed in place."""

from __future__ import annotations

import asyncio
import copy
import importlib
import io
import pickle
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Any

import msgspec
import pytest

import openraft_py
import openraft_py.types
from openraft_py import Config, RaftMetrics, SnapshotPolicy
from openraft_py import errors as E
from openraft_py.kv.client import ClientError, Outcome, Response
from openraft_py.testing import Cluster
from openraft_py.testing.lincheck.parse import HistoryParseError
from openraft_py.testing.proc import NodeCallError
from openraft_py.testing.suite.base import CheckOutcome, SuiteFailure
from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    Blank,
    ClientWriteResponse,
    Entry,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LeaderId,
    LogId,
    LogState,
    Membership,
    Normal,
    RPCOption,
    ServerState,
    Snapshot,
    SnapshotMeta,
    StoredMembership,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)

pytestmark = pytest.mark.timeout(30)

def public_modules() -> list[ModuleType]:
    """Every module of the package whose dotted name has no part starting with ``_``."""
    names = ["openraft_py"] + [m.name for m in pkgutil.walk_packages(openraft_py.__path__, "openraft_py.")
                               if not any(part.startswith("_") for part in m.name.split(".")[1:])]
    return [importlib.import_module(name) for name in names]


def _public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [n for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]


def public_error_classes() -> dict[str, type[BaseException]]:
    """Every exception class a public module names (its ``__all__``, or every public class
    defined in it when it has none), by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for module in public_modules():
        for n in _public_names(module):
            obj = getattr(module, n)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    # errors.py itself, whatever its __all__ says: every class it defines.
    for obj in vars(E).values():
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == E.__name__:
            found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


ERROR_SAMPLES: dict[type[BaseException], Callable[[], BaseException]] = {
    E.StorageError: lambda: E.StorageError("append 3-17", OSError(5, "Input/output error")),
    E.StoreOwnerMismatch: lambda: E.StoreOwnerMismatch("opening the log store", 2, "prod", 3, "prod",
                                                       what="state machine"),
    E.Stopped: lambda: E.Stopped("stopped by the test"),
    E.ForwardToLeader: lambda: E.ForwardToLeader(2, BasicNode("10.0.0.2:5000"), outcome_unknown=True),
    E.InProgress: lambda: E.InProgress(LogId(3, 17)),
    E.EmptyMembership: E.EmptyMembership,
    E.LearnerNotFound: lambda: E.LearnerNotFound(4),
    E.NotALearner: lambda: E.NotALearner(5, "node 5 is a voter"),
    E.MembershipTooLarge: lambda: E.MembershipTooLarge(5, 4096),
    E.LearnerIsLagging: lambda: E.LearnerIsLagging([4, 5], 1000),
    E.NotAllowed: lambda: E.NotAllowed(LogId(1, 0), Vote.new(1, 1, True)),
    E.NotInMembers: lambda: E.NotInMembers(9, frozenset({1, 2, 3})),
    E.InvalidRequest: lambda: E.InvalidRequest("append_entries", "term -1 out of range"),
    E.EntryTooLarge: lambda: E.EntryTooLarge(5_000_000, 4_194_304, 7),
    E.RemoteError: lambda: E.RemoteError(3, E.Stopped()),
    ClientError: lambda: ClientError(Response(Outcome.INFO, 503, b"{}", "127.0.0.1:8001", "timed out", 1, 2)),
    HistoryParseError: lambda: HistoryParseError("history.edn", 12, "a map as a value"),
    NodeCallError: lambda: NodeCallError(2, "write", "ForwardToLeader", "not the leader", 1),
    SuiteFailure: lambda: SuiteFailure("log store", [CheckOutcome("append", False, AssertionError("lost 3")),
                                                     CheckOutcome("read", True, None)]),
}
"""An instance of each error class whose ``__init__`` does not take a message alone."""


def make_error(cls: type[BaseException]) -> BaseException:
    sample = ERROR_SAMPLES.get(cls)
    if sample is not None:
        return sample()
    # Any other class must be raisable with a message alone (as Exception is).
    return cls("a message of the test")


def same(a: Any, b: Any) -> bool:
    """Equal, comparing exceptions (which compare by identity) by type, args and fields."""
    if isinstance(a, BaseException):
        return (type(a) is type(b) and same(a.args, b.args)
                and same(getattr(a, "__dict__", {}), getattr(b, "__dict__", {})))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def roundtrips() -> list[tuple[str, Callable[[BaseException], BaseException]]]:
    ways: list[tuple[str, Callable[[BaseException], BaseException]]] = [
        (f"pickle{p}", lambda e, p=p: pickle.loads(pickle.dumps(e, protocol=p)))
        for p in range(pickle.HIGHEST_PROTOCOL + 1)
    ]
    return [*ways, ("copy", copy.copy), ("deepcopy", copy.deepcopy)]


ERROR_CLASSES = public_error_classes()


def test_the_walk_finds_the_error_classes() -> None:
    """The walk sees errors.py's classes and the other modules' ones (a broken walk would
    make the parametrized test below check nothing)."""
    names = set(ERROR_CLASSES)
    assert "openraft_py.errors.StoreOwnerMismatch" in names
    assert "openraft_py.errors.RaftError" in names
    assert "openraft_py.kv.client.ClientError" in names
    assert "openraft_py.recovery.AlreadySoleVoter" in names
    assert "openraft_py.testing.lincheck.parse.HistoryParseError" in names
    assert len(names) >= 45


@pytest.mark.parametrize("name", sorted(ERROR_CLASSES))
def test_every_public_error_pickles_and_copies_intact(name: str) -> None:
    cls = ERROR_CLASSES[name]
    err = make_error(cls)
    for way, roundtrip in roundtrips():
        back = roundtrip(err)
        assert type(back) is cls, way
        assert str(back) == str(err), way
        assert same(back.args, err.args), way
        assert same(getattr(back, "__dict__", {}), getattr(err, "__dict__", {})), way


def test_fields_of_nested_objects_survive_a_pickle() -> None:
    """What a process pool's caller reads off the error it got back."""
    f = pickle.loads(pickle.dumps(E.ForwardToLeader(2, BasicNode("10.0.0.2:5000"), outcome_unknown=True)))
    assert (f.leader_id, f.leader_node, f.outcome_unknown) == (2, BasicNode("10.0.0.2:5000"), True)
    assert str(f) == "not the leader; forward to node 2 at 10.0.0.2:5000 (the write was appended; whether it commits is unknown)"
    t = pickle.loads(pickle.dumps(E.EntryTooLarge(5_000_000, 4_194_304)))
    assert isinstance(t, ValueError)
    assert (t.size, t.limit, t.position) == (5_000_000, 4_194_304, None)
    assert str(t) == "a client write payload of 5000000 bytes exceeds Config.max_entry_bytes=4194304"
    m = copy.deepcopy(E.StoreOwnerMismatch("opening the log store", 2, "prod", 3, "prod"))
    assert (m.node_id, m.cluster_name, m.expected_node_id, m.expected_cluster_name, m.what) == (
        2, "prod", 3, "prod", "log store")
    assert str(m).startswith("storage error while opening the log store: ValueError: it holds the log and vote of node 2")
    s = pickle.loads(pickle.dumps(E.StorageError("append 3-17", OSError(5, "Input/output error"))))
    assert isinstance(s, E.Fatal) and s.subject == "append 3-17"
    assert isinstance(s.cause, OSError) and s.cause.errno == 5
    assert str(s) == "storage error while append 3-17: OSError: [Errno 5] Input/output error"
    n = pickle.loads(pickle.dumps(E.NotAllowed(LogId(1, 0), Vote.new(1, 1, True))))
    assert (n.last_log_id, n.vote) == (LogId(1, 0), Vote.new(1, 1, True))
    e = E.EmptyMembership()
    e.add_note("while changing the voters")
    assert copy.copy(e).__notes__ == ["while changing the voters"]


def test_a_large_payload_or_chunk_keeps_its_repr_short() -> None:
    """A 4 MiB payload (the default max_entry_bytes) or a 3 MiB snapshot chunk in a log line:
    the repr shows the first 16 bytes and the length (it was the whole value, 4 times its
    size for binary data: 16 MiB for a payload)."""
    big = bytes(range(256)) * (4 << 12)
    assert repr(Normal(big)) == f"Normal(data={big[:16]!r}... ({len(big)} bytes))"
    assert repr(Normal(b"x" * 32)) == f"Normal(data={b'x' * 32!r})"  # a short one whole, as before
    assert repr(Normal(b"")) == "Normal(data=b'')"
    meta = SnapshotMeta(LogId(2, 9), StoredMembership(LogId(1, 0), Membership.new([{1, 2, 3}])), "snap-1")
    chunk = InstallSnapshotRequest(Vote.new(2, 1, True), meta, 3 << 20, big, False)
    assert repr(chunk) == (
        f"InstallSnapshotRequest(vote=<T2-N1:Q>, meta={meta!r}, offset={3 << 20}, "
        f"data={big[:16]!r}... ({len(big)} bytes), done=False)")
    assert len(repr(Entry(LogId(1, 1), Normal(big)))) < 100


BIG = 10**5000
"""An int too long to write out (over 4300 digits): ``str`` of it raises ``ValueError``."""


def _extreme_samples() -> list[object]:
    """One value of every public value type (the structs of ``openraft_py.types``, ``Config``,
    ``SnapshotPolicy``, ``RaftMetrics``, every error class with arguments) with extreme
    fields: ints too long to write out, 10 MB of bytes and of unicode text, a list nested
    100,000 deep, NaN and infinity, 10,000 voters."""
    vote = Vote(LeaderId(BIG, BIG), True)
    text = "é\u2028\udc80" * 3_000_000
    members = Membership.new([{BIG, 1}, set(range(10_000))], {BIG: BasicNode(text), 2: BasicNode("\x00")})
    stored = StoredMembership(LogId(BIG, BIG), members)
    meta = SnapshotMeta(LogId(BIG, 1), stored, text)
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    entries = [Entry(LogId(BIG, BIG), Normal(b"\xff" * 10_000_000)), Entry(LogId(1, BIG), members),
               Entry(LogId(BIG, 1), Blank())]
    metrics = RaftMetrics(id=BIG, state=ServerState.LEADER, current_term=BIG, vote=vote, last_log_index=BIG,
                          last_applied=LogId(BIG, BIG), committed=None, current_leader=BIG,
                          membership_config=stored, replication={BIG: BIG}, last_quorum_acked=float("nan"),
                          error=text)
    return [
        LogId(BIG, BIG), LeaderId(BIG, BIG), vote, BasicNode(text), members, stored, meta, *entries, Blank(),
        Normal(b"\xfe" * 10_000_000),
        LogState(LogId(BIG, 0), LogId(0, BIG)), Snapshot(meta, io.BytesIO()),
        ClientWriteResponse(LogId(BIG, 1), nested, members), ClientWriteResponse(LogId(1, 1), BIG),
        VoteRequest(vote, LogId(BIG, BIG), True, vote), VoteResponse(vote, True, LogId(BIG, 0), True),
        AppendEntriesRequest(vote, LogId(BIG, BIG), entries, LogId(BIG, BIG)),
        AppendEntriesResponse(vote, False, LogId(BIG, BIG), BIG),
        InstallSnapshotRequest(vote, meta, BIG, b"\x00" * 10_000_000, True), InstallSnapshotResponse(vote),
        TransferLeaderRequest(vote, BIG, LogId(BIG, BIG)), RPCOption(float("nan"), float("inf")),
        Config(heartbeat_interval=BIG, snapshot_pacing=float("nan"), cluster_name=text,
               snapshot_policy=SnapshotPolicy(BIG)),
        SnapshotPolicy(BIG), metrics,
        E.ForwardToLeader(BIG, BasicNode(text)), E.InProgress(LogId(BIG, BIG)), E.LearnerNotFound(BIG),
        E.NotALearner(BIG), E.MembershipTooLarge(BIG, BIG), E.LearnerIsLagging([BIG], BIG), E.NotAllowed(LogId(BIG, 1), vote),
        E.NotInMembers(BIG, frozenset({BIG, 1})), E.EntryTooLarge(BIG, BIG, BIG), E.RemoteError(BIG, E.Stopped()),
        E.StoreOwnerMismatch("opening", BIG, text, BIG, "prod"),
    ]


# Its samples are large (10 MB texts, 10,000 voters): about 10 s alone on the CI machine, and
# three times that on a loaded one. The bound is for a hang, not for speed.
@pytest.mark.timeout(120)
def test_no_repr_or_str_of_a_public_value_raises_on_extreme_values() -> None:
    """``repr(LogId(10**5000, 0))`` raised "Exceeds the limit (4300 digits) for integer
    string conversion" (in a log line, an error message, a debugger), and so did every type
    holding one (``Vote``, ``Membership``, ``Entry``, the RPC messages, ``Config``,
    ``RaftMetrics``), and the errors made with one (``ForwardToLeader(10**5000, None)``
    raised in its constructor). A value too long to write out now shows as its size, one
    whose own repr fails (a list nested 100,000 deep) as its type and the error."""
    samples = _extreme_samples()
    structs = {t for t in (getattr(openraft_py.types, n) for n in openraft_py.types.__all__)
               if isinstance(t, type) and issubclass(t, msgspec.Struct)}
    assert structs - {type(s) for s in samples} == set(), "a public struct has no sample"
    for sample in samples:
        for text in (repr(sample), str(sample)):
            assert "<an int of 16610 bits>" in text or isinstance(sample, (BasicNode, Blank, Normal, RPCOption)), (
                type(sample).__name__, text[:200])
    assert repr(LogId(BIG, 7)) == "<an int of 16610 bits>-7"
    assert repr(AppendEntriesResponse(Vote.new(1, 1), False, None, BIG)) == (
        "AppendEntriesResponse(vote=<T1-N1:->, success=False, matching=None, conflict_hint=<an int of 16610 bits>)")
    nested = samples[[type(s) for s in samples].index(ClientWriteResponse)]
    assert "data=<a list whose repr failed: RecursionError>" in repr(nested)
    # Values as they come stay as they were.
    assert repr(LogId(3, 17)) == "3-17" and repr(Vote.new(2, 1, True)) == "<T2-N1:Q>"
    assert repr(LogState(None, LogId(1, 2))) == "LogState(last_purged_log_id=None, last_log_id=1-2)"
    assert repr(BasicNode("h:1")) == "BasicNode(addr='h:1')"


def test_a_membership_s_repr_shows_where_its_nodes_are_bounded() -> None:
    """A membership's repr showed the voter sets and the learners but no address (a user
    debugging a node that cannot reach a peer saw ``[{1,2,3}]``, not where the nodes are).
    Now the addresses follow, compactly and bounded for a large cluster (16 ids per set, 8
    addresses of at most 64 characters each, then the counts)."""
    m = Membership.new([{1, 2, 3}], {i: BasicNode(f"10.0.0.{i}:5001") for i in (1, 2, 3, 4)})
    assert repr(m) == ("[{1,2,3}]+L[4] {1:'10.0.0.1:5001', 2:'10.0.0.2:5001', 3:'10.0.0.3:5001', "
                       "4:'10.0.0.4:5001'}")
    joint = Membership.new([{1, 2, 3}, {3, 4}], {i: BasicNode(f"h{i}:1") for i in (1, 2, 3, 4, 5, 6)})
    assert repr(joint) == "[{1,2,3},{3,4}]+L[5, 6] {1:'h1:1', 2:'h2:1', 3:'h3:1', 4:'h4:1', 5:'h5:1', 6:'h6:1'}"
    # No address anywhere (Membership.new without nodes): as before.
    assert repr(Membership.new([{1, 2, 3}])) == "[{1,2,3}]"
    # An address that is a surprise (empty, unicode, spaces) is quoted.
    assert repr(Membership.new([{1, 2}], {1: BasicNode("h:1"), 2: BasicNode(" é:2")})) == "[{1,2}] {1:'h:1', 2:' é:2'}"
    large = Membership.new([set(range(1000))], {i: BasicNode("x" * 1024) for i in range(3000)})
    text = repr(large)
    assert len(text) < 1000, len(text)
    assert text.startswith("[{0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,... (1000 ids)}]+L[1000, 1001, ")
    assert f"0:'{'x' * 48}'... (1024 characters), " in text and text.endswith(", ... (3000 nodes)}")
    assert repr(Entry(LogId(1, 2), m)) == f"1-2 Membership {m!r}"


def test_a_membership_s_nodes_cannot_be_changed_in_place() -> None:
    """Membership is frozen: its ``nodes`` refuses changes with TypeError (a dict changed in
    place changed the node's own membership); reading, comparing, copying and encoding work
    as for a dict, and a copy of one's own is a plain dict."""
    m = Membership.new([{1, 2, 3}], {4: BasicNode("h:4")})
    nodes = m.nodes
    assert isinstance(nodes, dict) and nodes == {1: BasicNode(), 2: BasicNode(), 3: BasicNode(), 4: BasicNode("h:4")}
    for change in (lambda: nodes.__setitem__(5, BasicNode()), lambda: nodes.__delitem__(4), nodes.clear,
                   lambda: nodes.pop(4), nodes.popitem, lambda: nodes.setdefault(5, BasicNode()),
                   lambda: nodes.update({5: BasicNode()}), lambda: nodes.__ior__({5: BasicNode()})):
        with pytest.raises(TypeError, match=r"Membership.nodes is read-only .* dict\(m.nodes\)"):
            change()
    assert len(nodes) == 4 and m.learner_ids() == {4}
    mine = m.nodes | {5: BasicNode("h:5")}
    assert type(mine) is dict and type(m.nodes.copy()) is dict and type(dict(m.nodes)) is dict
    mine[6] = BasicNode()
    assert 5 not in m.nodes and 6 not in m.nodes
    # The dict given is copied: changing it afterwards does not change the membership.
    given = {1: BasicNode("a")}
    m2 = Membership((frozenset({1}),), given)
    given[2] = BasicNode("b")
    assert m2.nodes == {1: BasicNode("a")}
    for back in (pickle.loads(pickle.dumps(m, protocol=p)) for p in range(pickle.HIGHEST_PROTOCOL + 1)):
        assert back == m and type(back.nodes) is type(m.nodes)
    for back in (copy.copy(m), copy.deepcopy(m), msgspec.msgpack.decode(msgspec.msgpack.encode(m), type=Membership),
                 msgspec.json.decode(msgspec.json.encode(m), type=Membership)):
        assert back == m
        with pytest.raises(TypeError):
            back.nodes[9] = BasicNode()


async def test_the_membership_a_program_reads_is_not_the_nodes_to_change() -> None:
    """A program taking a node's members to add one (``nodes = metrics...nodes; nodes[4] =
    ...``) changed the node's own membership without a log entry: the add_learner that
    followed answered success at the old entry and wrote nothing. Now the change is refused
    and the node's membership is what its log says."""
    cluster = Cluster(Config(), seed=3)
    try:
        await cluster.start({1, 2, 3})
        leader = cluster.nodes[await cluster.wait_for_leader()]
        nodes = leader.metrics.membership_config.membership.nodes
        with pytest.raises(TypeError, match="read-only"):
            nodes[4] = BasicNode()
        with pytest.raises(TypeError, match="read-only"):
            nodes.clear()
        assert sorted(leader.metrics.membership_config.membership.nodes) == [1, 2, 3]
        # Cleared, the nodes left the leader no peer to replicate to: every write waited for good.
        await asyncio.wait_for(leader.client_write(b"x"), 10)
        for node in cluster.nodes.values():
            assert sorted(node.metrics.membership_config.membership.nodes) == [1, 2, 3]
    finally:
        await cluster.shutdown()
