"""The size limits on their own: ``Config.max_entry_bytes`` / ``max_payload_bytes`` validation,
``EntryTooLarge``, the address bound of an API ``BasicNode``, and ``Raft.new`` asking the
network factory whether it can carry the ``Config``."""

from __future__ import annotations

from typing import Any

import pytest

from openraft_py import ApiError, BasicNode, Config, ConfigError, EntryTooLarge, Fatal, Raft
from openraft_py import validation as v
from openraft_py.network import wire
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine

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
    ],
)
def test_config_refuses_bad_limits(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"Config.{field}="):
        Config(**kw).validate()


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
    assert factory.checked[-1] is small
