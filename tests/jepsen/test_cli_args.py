"""The Jepsen runner's command line refuses odd arguments with a usage error, before any
process starts: a ``--time`` of ``nan`` or ``inf`` made the nemesis schedule loop forever
(the run hung, its memory growing, before starting anything)."""

from __future__ import annotations

import math

import pytest

from openraft_py.testing.jepsen.__main__ import main
from openraft_py.testing.jepsen.nemesis import make_schedule


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("argv", "message"), [
    (["--time", "nan"], "--time must be a finite number of seconds > 0, not nan"),
    (["--time", "inf"], "--time must be a finite number of seconds > 0, not inf"),
    (["--time", "0"], "--time must be a finite number of seconds > 0"),
    (["--check-timeout", "-1"], "--check-timeout must be a finite number of seconds > 0"),
    (["--check-timeout", "nan"], "--check-timeout must be a finite number of seconds > 0"),
    (["--nodes", "0"], "--nodes and --clients must be positive"),
])
def test_cli_refuses_odd_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_schedule_refuses_a_duration_that_never_ends() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="duration must be a finite number"):
            make_schedule(1, bad, 3)
    assert make_schedule(1, 30.0, 3)
