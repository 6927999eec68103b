"""The library's loggers are documented, and importing it configures no logging.

Every logger name the package's sources create (``logging.getLogger("openraft_py...")``,
``logging.getLogger(__name__)``) has a row in the Loggers section of
``docs/guides/metrics.md``, which tells an embedder what each carries and how to quiet it;
and importing every public module adds no handler and sets no level (only ``openraft-py
serve`` configures logging). The section did not exist: the guide named three of the
thirteen loggers, in passing."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "openraft_py"
GUIDE = ROOT / "docs" / "guides" / "metrics.md"

_LITERAL = re.compile(r"""logging\.getLogger\(\s*["']([\w.]+)["']\s*\)""")
_OWN_NAME = re.compile(r"""logging\.getLogger\(\s*(f["']\{__name__\}([\w.]*)["']|__name__)\s*\)""")


def _logger_names() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        names.update(_LITERAL.findall(text))
        for _whole, suffix in _OWN_NAME.findall(text):
            names.add(module + suffix)
    return {n for n in names if n.startswith("openraft_py")}


def _loggers_section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    assert "\n## Loggers\n" in text, f"{GUIDE.name} has no Loggers section"
    start = text.index("\n## Loggers\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_every_logger_of_the_package_is_documented() -> None:
    names = _logger_names()
    assert "openraft_py.core" in names and "openraft_py.kv.http_api.server" in names, names
    section = _loggers_section()
    missing = sorted(n for n in names if f"`{n}`" not in section)
    assert not missing, f"loggers not in the Loggers section of {GUIDE.name}: {missing}"


def test_importing_the_package_configures_no_logging() -> None:
    code = """
import logging, pkgutil, importlib, openraft_py
root = logging.getLogger()
before = (list(root.handlers), root.level)
for m in pkgutil.walk_packages(openraft_py.__path__, "openraft_py."):
    if ".testing" in m.name or m.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(m.name)
    except ImportError:
        pass
assert (list(root.handlers), root.level) == before, (root.handlers, root.level)
for name, lg in logging.Logger.manager.loggerDict.items():
    if name.startswith("openraft_py") and isinstance(lg, logging.Logger):
        assert not lg.handlers and lg.level == logging.NOTSET and lg.propagate, (name, lg.handlers, lg.level)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


_LOGGER_VARIABLE = re.compile(r"""^(\w+)\s*(?::[^=\n]+)?=\s*logging\.getLogger\(""", re.M)


def test_every_logger_of_the_package_is_used() -> None:
    """A module that creates a logger (``log = logging.getLogger(...)``) uses it, or hands it
    on (its ``__all__``): a logger kept in reserve (``openraft_py.raft``, which logged nothing) had a row of
    the Loggers section telling embedders to configure a logger that never carries a line."""
    unused = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        variables = _LOGGER_VARIABLE.findall(text)
        if not variables:
            continue
        # The names in the code (not in strings or comments: "the log" in a docstring); a
        # logger in the module's ``__all__`` is handed on (``network._tcp_common.log``).
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        names = [t.string for t in tokens if t.type == tokenize.NAME]
        exported = {t.string.strip("\"'") for t in tokens if t.type == tokenize.STRING}
        unused += [f"{path.relative_to(ROOT)}: {v}" for v in variables if names.count(v) < 2 and v not in exported]
    assert not unused, f"loggers created and never used: {unused}"
