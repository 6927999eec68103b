"""The engine is sans-IO: importing it pulls in no asyncio, socket, time or threading."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import openraft_py

PKG_DIR = os.path.dirname(openraft_py.__file__)

SCRIPT = textwrap.dedent(
    """
    import builtins, importlib.abc, sys, types

    BLOCKED = {"asyncio", "socket", "time", "threading", "uvloop", "rocksdict", "selectors", "ssl"}

    # Third-party dependencies may use the clock for their own reasons (msgspec imports
    # datetime, which imports time): load them first; what is checked is openraft_py's code.
    import msgspec, random  # noqa: E401

    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__name__", "")
        if level == 0 and name.split(".")[0] in BLOCKED and importer.split(".")[0] == "openraft_py":
            raise ImportError(f"sans-IO violation: {importer} imports {name}")
        return real_import(name, globals, locals, fromlist, level)

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"sans-IO violation: {name} first imported during the engine import")
            return None

    builtins.__import__ = guarded_import
    sys.meta_path.insert(0, Block())

    # Skip openraft_py/__init__.py (it imports the asyncio runtime): a bare package.
    pkg = types.ModuleType("openraft_py")
    pkg.__path__ = [sys.argv[1]]
    sys.modules["openraft_py"] = pkg

    import openraft_py.engine
    from openraft_py.engine import Engine

    # The guard itself works: a module of the package importing asyncio is refused.
    try:
        exec("import asyncio", {"__name__": "openraft_py.engine.probe"})
    except ImportError:
        pass
    else:
        raise SystemExit("the import guard did not fire")
    loaded = sorted(m for m in sys.modules if m.startswith("openraft_py"))
    assert "openraft_py.core" not in loaded and "openraft_py.raft" not in loaded, loaded
    print("OK", *loaded)
    """
)


def run_guarded(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, PKG_DIR], capture_output=True, text=True, env=env, timeout=60
    )


def test_engine_imports_without_io_modules():
    r = run_guarded({})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK ") and "openraft_py.engine" in r.stdout


def test_engine_imports_without_io_modules_pure_kernels():
    r = run_guarded({"OPENRAFT_PY_NO_EXTENSIONS": "1"})
    assert r.returncode == 0, r.stderr
    assert "openraft_py._core._logindex_py" in r.stdout
