"""The package's own modules that the build also compiles with Cython, and how each is loaded.

The modules named in ``COMPILED_MODULES`` (the sans-IO engine, the request checks, the
message types and a few synchronous helpers of the core) are plain Python: the build
compiles each ``.py`` as written (Cython's pure-Python mode, annotations not used for
typing) into an extension module of the same name beside it. The ``.py`` stays the one
source, and is what type checkers, debuggers and the pure-Python build read.

A ``.pxd`` beside some of them (``engine/state.pxd``, ``engine/handler/base.pxd``,
``wakeup.pxd``, ...) is read by the compiled build only: it makes that module's classes
extension types with declared fields, which the compiled code reads at fixed offsets
instead of through attribute lookups (and the checks in ``validation.pxd`` C functions).
Such a class has no instance ``__dict__`` (as the ``__slots__`` its ``.py`` declares) unless
its ``.pxd`` gives it one; its ``.pxd`` lists every field its ``.py`` assigns.

Which file an import loads:

- the source when ``OPENRAFT_PY_NO_EXTENSIONS`` is set (non-empty, not ``"0"``, as for the
  ``_core`` kernels), on interpreters other than CPython, or when no extension was built;
- the source, with a ``RuntimeWarning``, when the extension was built from another
  version of the source (an edited checkout not rebuilt yet: ``make build``); the build
  records each source's SHA-256 in ``_compiled_sources.py``;
- the extension otherwise.

Importing this module (the first thing ``openraft_py/__init__.py`` does) calls
``install()``, which puts the finder that decides this in front of ``sys.meta_path``. This
module imports nothing of the package.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

COMPILED_MODULES: tuple[str, ...] = (
    "openraft_py.engine.command",
    "openraft_py.engine.engine",
    "openraft_py.engine.faults",
    "openraft_py.engine.leader",
    "openraft_py.engine.progress",
    "openraft_py.engine.state",
    "openraft_py.engine.handler.base",
    "openraft_py.engine.handler.following",
    "openraft_py.engine.handler.leader",
    "openraft_py.engine.handler.log",
    "openraft_py.engine.handler.membership",
    "openraft_py.engine.handler.replication",
    "openraft_py.engine.handler.snapshot",
    "openraft_py.engine.handler.transfer",
    "openraft_py.engine.handler.vote",
    "openraft_py.core.messages",
    "openraft_py.core.metrics_view",
    "openraft_py.types",
    "openraft_py.validation",
    "openraft_py.wakeup",
)
"""Modules built as extensions too. None defines a coroutine (a test keeps it so): compiled,
the runtime's coroutine modules saved nothing in process and cost over TCP at 1 writer (see
``docs/design/performance.md``, the twelfth and thirteenth rounds)."""

NO_EXTENSIONS: bool = (
    os.environ.get("OPENRAFT_PY_NO_EXTENSIONS", "") not in ("", "0") or sys.implementation.name != "cpython"
)
"""Whether no extension of the package is used (the kernels' twins and these modules'
sources): ``OPENRAFT_PY_NO_EXTENSIONS`` set at import, or not CPython."""

_ROOT = os.path.dirname(os.path.abspath(__file__))


def source_path(name: str) -> str:
    """The ``.py`` file of module ``name`` (one of ``COMPILED_MODULES``) in this package."""
    return os.path.join(_ROOT, *name.split(".")[1:]) + ".py"


def source_sha256(path: str) -> str:
    """The hex SHA-256 of the file at ``path`` (what the build records per module)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _built_hashes() -> dict[str, str] | None:
    try:  # written by setup.py when it builds the extensions
        built = importlib.import_module(f"{__package__}._compiled_sources")
    except ImportError:
        return None
    hashes: dict[str, str] = built.SOURCE_SHA256
    return hashes


class _SourceFirstFinder(importlib.abc.MetaPathFinder):
    """Loads a module of ``COMPILED_MODULES`` from its source when the extension must not
    be used (see the module docstring); defers to the normal finders otherwise."""

    def __init__(self, force_source: bool, hashes: dict[str, str] | None) -> None:
        self.force_source = force_source
        self.hashes = hashes
        self.names = frozenset(COMPILED_MODULES)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        src = source_path(fullname)
        if not os.path.exists(src):
            return None
        if not self.force_source:
            hashes = self.hashes
            if hashes is None or source_sha256(src) == hashes.get(fullname):
                return None  # the normal finders: the extension when there is one
            warnings.warn(
                f"{fullname}: the compiled module was built from another version of {src}; "
                "loading the source instead (rebuild: make build, or pip install the package again)",
                RuntimeWarning,
                stacklevel=2,
            )
        loader = importlib.machinery.SourceFileLoader(fullname, src)
        return importlib.util.spec_from_file_location(fullname, src, loader=loader)


def install() -> None:
    """Put the finder in front of ``sys.meta_path`` (once)."""
    if any(isinstance(f, _SourceFirstFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _SourceFirstFinder(NO_EXTENSIONS, _built_hashes()))


def loaded_compiled() -> dict[str, bool]:
    """For each of ``COMPILED_MODULES``: whether the imported module is the extension
    (imports each)."""
    out: dict[str, bool] = {}
    for name in COMPILED_MODULES:
        mod = importlib.import_module(name)
        out[name] = not (mod.__file__ or "").endswith(".py")
    return out


if __package__:  # imported as part of the package (setup.py reads this file alone)
    install()
