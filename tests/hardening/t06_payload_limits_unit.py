"""The size limits on their own: ``Config.max_entry_bytes`` / ``max_payload_bytes`` validation,
``EntryTooLarge``, the address bound of an API ``BasicNode``, and ``Raft.new`` asking the
network factory whether it can carry the ``Config``."""

from __future__ import annotations

import tempfile
from typing import Any

import msgspec
import pytest

from openraft_py import ApiError, BasicNode, Config, ConfigError, EntryTooLarge, Fatal, Raft, SnapshotPolicy
from openraft_py import validation as v
from openraft_py.config import MAX_CONFIG_INT, RunningConfig
from openraft_py.network import wire
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine
from openraft_py.types import Snapshot

pytestmark = pytest.mark.timeout(10)


def test_defaults_entry_limit_within_the_request_budget_within_the_tcp_frame() -> None:
    c = Config().validate()
    assert 0 < c.max_entry_bytes <= c.max_payload_bytes < 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_entry_bytes": 0}, "max_entry_bytes"),
        ({"max_payload_bytes": -1}, "max_payload_bytes"),
        ({"max_payload_bytes": True}, "max_payload_bytes"),
        ({"max_entry_bytes": 1.5}, "max_entry_bytes"),
        ({"max_entry_bytes": 2048, "max_payload_bytes": 1024}, "max_entry_bytes"),
        ({"replication_min_rate": 0}, "replication_min_rate"),
        ({"replication_min_rate": -1}, "replication_min_rate"),
        ({"replication_min_rate": 1.5e6}, "replication_min_rate"),
        ({"replication_min_rate": True}, "replication_min_rate"),
    ],
)
def test_config_refuses_bad_limits(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"Config.{field}="):
        Config(**kw).validate()


@pytest.mark.parametrize("field", ["enable_tick", "enable_heartbeat", "enable_elect", "enable_pre_vote"])
@pytest.mark.parametrize("value", ["false", "no", 0, 1, None])
def test_config_switches_must_be_bools(field: str, value: Any) -> None:
    """``enable_tick="false"`` passed and switched the timer on (any non-empty string is
    true)."""
    with pytest.raises(ConfigError, match=f"Config.{field}=.*must be True or False"):
        Config(**{field: value}).validate()


INT_FIELDS = [
    "election_timeout_max",
    "install_snapshot_timeout",
    "max_payload_entries",
    "max_payload_bytes",
    "max_inflight_requests",
    "replication_min_rate",
    "replication_lag_threshold",
    "snapshot_max_chunk_size",
    "purge_batch_size",
    "max_apply_batch",
    "max_in_snapshot_log_to_keep",
    "send_snapshot_timeout",
]


@pytest.mark.parametrize("field", INT_FIELDS)
def test_config_refuses_an_integer_past_the_bound(field: str) -> None:
    """``snapshot_max_chunk_size=2**64`` passed and stopped the leader with ``Panicked``
    (``OverflowError``) at its first snapshot transfer; every integer field is bounded."""
    with pytest.raises(ConfigError, match=rf"Config\.{field}=.*at most {MAX_CONFIG_INT}"):
        Config(**{field: MAX_CONFIG_INT + 1}).validate()
    Config(**{field: MAX_CONFIG_INT}).validate()


@pytest.mark.parametrize("n", [True, 0, MAX_CONFIG_INT + 1, 2**64])
def test_config_refuses_a_bad_snapshot_policy_count(n: Any) -> None:
    with pytest.raises(ConfigError, match=r"Config\.snapshot_policy=.*logs_since_last\(n\) needs an int n"):
        Config(snapshot_policy=SnapshotPolicy.logs_since_last(n)).validate()


class FileSnapshots(MemStateMachine):
    """A ``MemStateMachine`` that hands out its snapshots as real files (as a state machine
    with large state does)."""

    async def get_current_snapshot(self) -> Any:
        snap = await super().get_current_snapshot()
        if snap is None:
            return None
        f = tempfile.TemporaryFile()
        f.write(snap.data.read())
        f.seek(0)
        return Snapshot(snap.meta, f)


async def test_the_largest_chunk_size_sends_a_snapshot_file() -> None:
    """At the bound, a snapshot transfer from a real file works (one chunk): the sender reads
    no more than the file holds (a file's ``read(n)`` may allocate ``n`` bytes first: a
    ``MemoryError``, and the leader stopped with ``Panicked``)."""
    from integration.snapshot.helpers import snap_config

    from openraft_py.testing.cluster import Cluster

    config = snap_config(snapshot_max_chunk_size=MAX_CONFIG_INT, snapshot_policy=SnapshotPolicy.logs_since_last(5))
    async with Cluster(config, seed=3, state_machine=FileSnapshots) as c:
        await c.start({1, 2})
        leader = await c.wait_for_leader()
        for i in range(10):
            resp = await c.nodes[leader].client_write(b"%d" % i)
        await c.nodes[leader].wait(5).purged(5)
        await c.add_node(3)
        await c.nodes[leader].add_learner(3, BasicNode(""))
        await c.wait_applied(resp.log_id.index, timeout=5)
        assert c.nodes[leader].metrics.running


@pytest.mark.parametrize("pacing", [-0.5, float("nan"), float("inf"), "3", True, None])
def test_config_refuses_a_bad_snapshot_pacing(pacing: Any) -> None:
    with pytest.raises(ConfigError, match=r"Config\.snapshot_pacing="):
        Config(snapshot_pacing=pacing).validate()


@pytest.mark.parametrize("pacing", [0, 0.0, 2.5, 10])
def test_config_accepts_a_snapshot_pacing(pacing: float) -> None:
    assert Config(snapshot_pacing=pacing).validate().snapshot_pacing == pacing


def test_config_accepts_an_entry_limit_equal_to_the_budget() -> None:
    Config(max_entry_bytes=1024, max_payload_bytes=1024).validate()


def test_entry_too_large_is_a_recoverable_api_error_and_a_value_error() -> None:
    assert issubclass(EntryTooLarge, ApiError) and issubclass(EntryTooLarge, ValueError)
    assert not issubclass(EntryTooLarge, Fatal)
    e = EntryTooLarge(10, 5)
    assert (e.size, e.limit, e.position) == (10, 5, None)
    assert str(e) == "a client write payload of 10 bytes exceeds Config.max_entry_bytes=5"
    assert str(EntryTooLarge(7, 5, 3)) == "payload 3 of 7 bytes exceeds Config.max_entry_bytes=5"


def test_check_entry_sizes_names_the_first_oversized_position() -> None:
    v.check_entry_sizes([b"a" * 5, b"b" * 5], 5)
    with pytest.raises(EntryTooLarge) as e:
        v.check_entry_sizes([b"a", b"b" * 6, b"c" * 9], 5)
    assert (e.value.position, e.value.size) == (1, 6)


def test_an_api_address_is_bounded_like_the_wire() -> None:
    assert v.MAX_ADDR_LEN == wire.MAX_ADDR_LEN, "an address the API takes must decode on every peer"
    v.check_node(BasicNode("a" * v.MAX_ADDR_LEN))
    with pytest.raises(ValueError, match="1025 characters long"):
        v.check_node(BasicNode("a" * (v.MAX_ADDR_LEN + 1)))


class RefusingFactory:
    """A network factory whose transport cannot carry more than ``limit`` payload bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.checked: list[Config] = []

    def check_config(self, config: Config) -> None:
        self.checked.append(config)
        if config.max_payload_bytes > self.limit:
            raise ConfigError(f"max_payload_bytes above {self.limit}")

    def new_client(self, target: int, node: BasicNode) -> Any:  # pragma: no cover - never connects
        raise AssertionError("no RPC expected")


async def test_raft_new_asks_the_factory_and_refuses_what_it_cannot_carry() -> None:
    disk = MemDisk()
    factory = RefusingFactory(1024)
    with pytest.raises(ConfigError, match="above 1024"):
        await Raft.new(1, Config(), factory, MemLogStore(disk), MemStateMachine(disk))
    small = Config(max_payload_bytes=1024, max_entry_bytes=512)
    raft = await Raft.new(1, small, factory, MemLogStore(disk), MemStateMachine(disk))
    await raft.shutdown()
    # The node's copy of it: a RunningConfig, equal to the Config it was made from.
    checked = factory.checked[-1]
    assert isinstance(checked, RunningConfig)
    assert checked == small and msgspec.structs.asdict(checked) == msgspec.structs.asdict(small)
