"""The ``member`` and ``transfer`` nemeses: membership changes and leader transfers as faults.

A ``member`` step makes a random voter (the leader too) leave the voters, kept as a learner
or removed from the cluster, in half of the steps with the leader SIGKILLed right after the
change was asked (a crash in joint consensus); its heal makes every node a voter again. A
``transfer`` step hands the leadership to another voter. The process run (``cases.py``,
started in the background after collection) checks that a cluster going through them stays
linearizable, loses no acknowledged write, and ends with every node a voter; the in-process
tests check the nemesis's calls and that a membership it could not restore is retried at the
final heal and reported.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from openraft_py.testing.jepsen.nemesis import KINDS, Nemesis, Step, make_schedule
from openraft_py.testing.jepsen.procs import NodeSet
from openraft_py.testing.jepsen.proxy import ProxyNet

from . import cases

pytestmark = pytest.mark.timeout(cases.TOTAL_BUDGET + 120)


def start_early(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Queue the membership run if its test is selected (``tests/conftest.py``)."""
    if any(item.originalname == "test_membership_changes_and_transfers_under_load" for item in items):
        cases.start(config, ["membership"])


def test_membership_changes_and_transfers_under_load() -> None:
    res = cases.result("membership")
    text = "\n".join(res["lines"])
    assert res["ok"], f"membership run failed ({res['failed']}):\n{text}"
    members = [s for s in res["steps"] if s["kind"] == "member"]
    # The schedule of MEMBERSHIP_SEED: both ways of leaving, a leader killed mid-change, a transfer.
    assert {s["retain"] for s in members} == {True, False}, text
    assert any(s.get("killed") for s in members), text
    assert any(s["kind"] == "transfer" for s in res["steps"]), text
    assert all(s.get("restored") == "ok" for s in members), text


class FakeAdmin:
    """Records the calls; ``restore_members`` fails ``fail_restores`` times."""

    def __init__(self, fail_restores: int = 0) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail_restores = fail_restores

    async def change_voters(self, leader: int, voters: list[int], retain: bool) -> str:
        self.calls.append(("members", leader, voters, retain))
        return "200 {}"

    async def transfer(self, leader: int, to: int) -> str:
        self.calls.append(("transfer", leader, to))
        return "200 {}"

    async def restore_members(self, bound: float) -> str | None:
        self.calls.append(("restore", bound))
        if self.fail_restores:
            self.fail_restores -= 1
            return "not within 1s (no leader)"
        return None


class FakeNodes(NodeSet):
    """Nodes that are never started: ``kill`` and ``start`` are recorded."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.calls: list[tuple[str, int]] = []

    def kill(self, i: int) -> None:
        self.calls.append(("kill", i))
        self.killed_by_nemesis.add(i)

    def start(self, i: int) -> None:
        self.calls.append(("start", i))
        self.killed_by_nemesis.discard(i)


def _nemesis(tmp_path: Path, admin: FakeAdmin | None, said: list[str]) -> Nemesis:
    async def leader() -> int | None:
        return 1

    return Nemesis(FakeNodes(3, tmp_path), ProxyNet([1, 2, 3]), leader, said.append, 0.0, admin=admin,
                   member_bound=1.0)


def _member_step(kill: bool) -> Step:
    """A ``member`` step whose seed-drawn choices kill the leader mid-change, or not."""
    for r in range(100):
        rng = random.Random(r)
        rng.choice([1, 2, 3])
        rng.random()
        if (rng.random() < 0.5) == kill:
            return Step(0.0, "member", 0.0, r)
    raise AssertionError("no such r")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kill", [False, True])
def test_a_member_step_changes_the_voters_and_its_heal_restores_them(tmp_path: Path, kill: bool) -> None:
    admin = FakeAdmin()
    nem = _nemesis(tmp_path, admin, [])
    step = _member_step(kill)
    asyncio.run(nem.run([step], asyncio.Event()))
    removed = step.resolved["removed"]
    assert admin.calls[0] == ("members", 1, [i for i in (1, 2, 3) if i != removed], step.resolved["retain"])
    assert admin.calls[1] == ("restore", 1.0) and step.resolved["restored"] == "ok"
    assert len(admin.calls) == 2  # restored: the final heal has nothing left to do
    nodes = nem.nodes
    assert isinstance(nodes, FakeNodes)
    # The leader killed while the change was under way, restarted before the membership is restored.
    assert nodes.calls == ([("kill", 1), ("start", 1)] if kill else [])
    assert step.resolved.get("killed") == ([1] if kill else None)


@pytest.mark.timeout(30)
def test_a_membership_not_restored_is_said_kept_and_tried_again_at_the_final_heal(tmp_path: Path) -> None:
    admin = FakeAdmin(fail_restores=1)
    said: list[str] = []
    nem = _nemesis(tmp_path, admin, said)
    step = _member_step(False)
    asyncio.run(nem.run([step], asyncio.Event()))
    assert step.resolved["restored"] == "not within 1s (no leader)"
    assert any("the membership was not restored: not within 1s" in line for line in said), said
    assert [c[0] for c in admin.calls] == ["members", "restore", "restore"]
    assert not nem.members_changed


@pytest.mark.timeout(30)
def test_admin_kinds_need_an_admin_and_two_nodes(tmp_path: Path) -> None:
    nem = _nemesis(tmp_path, None, [])
    with pytest.raises(ValueError, match="needs an Admin"):
        asyncio.run(nem.run([Step(0.0, "transfer", 0.0, 5)], asyncio.Event()))
    assert {"member", "transfer"} <= set(KINDS)
    one = make_schedule(3, 120, 1, ("member", "transfer", "kill"))
    assert one and {s.kind for s in one} == {"kill"}
