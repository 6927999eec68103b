"""The README's API tour is real code: run it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.timeout(30)
def test_readme_tour_runs(capsys: pytest.CaptureFixture[str]) -> None:
    if not README.exists():
        pytest.skip("README.md is not next to the tests (installed-package run)")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no python example"
    code = blocks[0]
    namespace: dict[str, object] = {"__name__": "readme_tour"}
    exec(compile(code, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    # It wrote, was told to forward, and printed the leader's metrics.
    assert "ask 1 BasicNode(addr='127.0.0.1:22001')" in out
    assert "state=<ServerState.LEADER" in out
