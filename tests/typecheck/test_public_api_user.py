"""The typed user program (``public_api_user.py``, which ``make lint`` checks with
``mypy --strict``) runs and does what it says, and type-checks (here too, so that ``pytest``
alone sees a correct use of the public API that mypy refuses; needs mypy, the ``lint``
extra)."""

from __future__ import annotations

from pathlib import Path

from .public_api_user import main, typed_cluster
from .test_must_not_type_check import mypy_strict_errors


async def test_public_api_user_program_runs() -> None:
    report = await main()
    assert report.leader in (1, 2, 3)
    assert [w.index for w in report.writes] == sorted({w.index for w in report.writes})
    assert len(report.writes) == 3
    assert report.read_value == "3"
    assert report.forwarded_to == report.leader
    assert report.refused_voter == 4
    assert report.not_a_learner == 4
    assert report.voters == {1, 2, 3, 4}
    assert report.new_leader == 4


async def test_the_typed_cluster_part_runs() -> None:
    value, followers, nodes = await typed_cluster()
    assert value == "v"
    assert len(followers) == 2 and all(index >= 0 for index in followers.values())
    assert nodes == {1, 2, 3, 4}


def test_the_typed_user_program_type_checks(tmp_path: Path, mypy_cache: Path) -> None:
    program = (Path(__file__).parent / "public_api_user.py").read_text()
    assert mypy_strict_errors(program, tmp_path, mypy_cache) == []
