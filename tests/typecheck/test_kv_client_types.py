"""The key-value client's per-call options are typed: a program that misspells one, or
passes one a verb sets itself, fails ``mypy --strict`` (the verbs took ``**kw: Any``, so it
type-checked and failed only when run, with ``TypeError``). The correct calls are in
``public_api_user.py``, which ``make lint`` checks.

Needs mypy (the ``lint`` extra, as ``make lint``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from openraft_py.kv.client import KvClient

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.timeout(300)

WRONG = '''
from openraft_py.kv.client import KvClient, Response


async def calls(client: KvClient) -> list[Response]:
    return [
        await client.put("k", "v", deadlin=3.0),
        await client.get("k", "local", endpoint=1),
        await client.init({1: ("h:1", "h:2")}, follow=False),
        await client.transfer(2, body=b"x"),
    ]
'''


def test_a_misspelt_or_foreign_call_option_fails_mypy_strict(tmp_path: Path, mypy_cache: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (the lint extra)")
    path = tmp_path / "kv_calls.py"
    path.write_text(WRONG)
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-warn-unused-configs",
         "--no-error-summary", "--hide-error-context", "--cache-dir", str(mypy_cache), str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    errors = [line.split(": error: ", 1)[1] for line in r.stdout.splitlines() if ": error: " in line]
    assert len(errors) == 4, r.stdout + r.stderr
    assert 'Unexpected keyword argument "deadlin"' in errors[0], errors
    assert '"endpoint"' in errors[1] and '"int"' in errors[1], errors
    assert 'Unexpected keyword argument "follow"' in errors[2], errors
    assert 'Unexpected keyword argument "body"' in errors[3], errors


async def test_the_same_calls_fail_when_run_with_type_error() -> None:
    """What the type check now catches before the program runs (nothing is sent)."""
    async with KvClient(["127.0.0.1:9"]) as client:
        with pytest.raises(TypeError, match="deadlin"):
            await client.put("k", "v", deadlin=3.0)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="follow"):
            await client.init({1: ("h:1", "h:2")}, follow=False)  # type: ignore[call-arg]
