"""The package's own modules that the build also compiles with Cython, and how each is loaded.

The modules named in ``COMPILED_MODULES`` (the sans-IO engine, the request checks, the
message types and a few synchronous helpers of the core) are plain Python: the build
compiles each ``.py`` as written (Cython's pure-Python mode, annotations not used for
typing) into an extension module of the same name beside it. The ``.py`` stays the one
source, and is what type checkers, debuggers and the pure-Python build read.

A ``.pxd`` beside some of them (``engine/state.pxd``, ``engine/handler/base.pxd``,
``wakeup.pxd``, ...) is read by the compiled build only. It makes that module's classes
extension types with declared fields, which the compiled code reads at fixed offsets
instead of through attribute lookups, and ``validation.pxd`` makes two of the request
checks C functions. Such a class has no instance ``__dict__`` (as the ``__slots__`` its
``.py`` declares) unless its ``.pxd`` gives it one; its ``.pxd`` lists every field its
``.py`` assigns. The compiled modules use each other's declared types (the engine's handlers
hold a ``RaftState``), so they are one unit: an extension checks at import that the types it
was built against have the layout it expects.

Which file an import loads:

- the source when ``OPENRAFT_PY_NO_EXTENSIONS`` is on (``env_flag``; as for the ``_core``
  kernels), on interpreters other than CPython, or when no extension was built (quietly,
  even when a source differs from the build's record: the pure wheel built from an sdist
  carries that record, and a patched source there has no extension to differ from);
- the source, for every listed module, with one ``RuntimeWarning``, when the extensions
  were built from another version of any listed module's source or ``.pxd`` (an edited
  checkout not rebuilt yet: ``make build``). All of them, not only the edited one: an
  extension next to the source of a module whose declared types it uses would fail to
  import. The build records each source's and each ``.pxd``'s SHA-256 in
  ``_compiled_sources.py``; a ``.pxd`` absent at import (a wheel does not carry them) is
  not compared;
- the same, for the same reason, when some listed modules have their extension beside
  their source and others have none (an incomplete install, an extension file removed:
  ``engine.engine`` failed to import with "``engine.state.MembershipState`` size changed");
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

FLAG_OFF_VALUES: frozenset[str] = frozenset({"", "0", "false", "no", "off"})
"""The values that turn an ``OPENRAFT_PY_*`` switch off (compared after ``strip().lower()``)."""


def env_flag(name: str) -> bool:
    """Whether the switch ``name`` in the environment is on.

    Off when unset or set to one of ``FLAG_OFF_VALUES`` (``""``, ``0``, ``false``, ``no``,
    ``off``, in any case, spaces around ignored); on for any other value (``1``, ``true``,
    ``yes``, ``on``, ...). Every ``OPENRAFT_PY_*`` on/off switch reads this way: the build's
    (``setup.py``), ``OPENRAFT_PY_NO_EXTENSIONS`` at import, ``OPENRAFT_PY_DEBUG`` in the command
    line, ``OPENRAFT_PY_ROUTER_WIRE`` in the test router.
    """
    return os.environ.get(name, "").strip().lower() not in FLAG_OFF_VALUES


NO_EXTENSIONS: bool = env_flag("OPENRAFT_PY_NO_EXTENSIONS") or sys.implementation.name != "cpython"
"""Whether no extension of the package is used (the kernels' twins and these modules'
sources): ``OPENRAFT_PY_NO_EXTENSIONS`` on at import (``env_flag``), or not CPython."""

_ROOT = os.path.dirname(os.path.abspath(__file__))


def source_path(name: str) -> str:
    """The ``.py`` file of module ``name`` (one of ``COMPILED_MODULES``) in this package."""
    return os.path.join(_ROOT, *name.split(".")[1:]) + ".py"


def declarations_path(name: str) -> str:
    """The ``.pxd`` file beside module ``name``'s source (it may not exist)."""
    return source_path(name)[: -len(".py")] + ".pxd"


def extension_path(name: str) -> str | None:
    """The extension module file beside module ``name``'s source, or ``None`` if there is
    none."""
    base = source_path(name)[: -len(".py")]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            return base + suffix
    return None


def source_sha256(path: str) -> str:
    """The hex SHA-256 of the file at ``path`` (what the build records per module)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _built_hashes() -> tuple[dict[str, str], dict[str, str]] | None:
    """The build's record: the SHA-256 of each module's source and of each ``.pxd``."""
    try:  # written by setup.py when it builds the extensions
        built = importlib.import_module(f"{__package__}._compiled_sources")
    except ImportError:
        return None
    sources: dict[str, str] = built.SOURCE_SHA256
    declarations: dict[str, str] = getattr(built, "DECLARATIONS_SHA256", {})
    return sources, declarations


class _SourceFirstFinder(importlib.abc.MetaPathFinder):
    """Loads the modules of ``COMPILED_MODULES`` from their sources when the extensions
    must not be used (see the module docstring); defers to the normal finders otherwise.

    ``hashes``: the build's SHA-256 of each module's source, by module name (a module not in
    it is not compared: nothing was built from it); ``declarations``: the same for the
    ``.pxd`` files. Whether any differs is found once, at the first listed import."""

    def __init__(
        self, force_source: bool, hashes: dict[str, str] | None, declarations: dict[str, str] | None = None
    ) -> None:
        self.force_source = force_source
        self.hashes = hashes
        self.declarations = declarations or {}
        self.names = frozenset(COMPILED_MODULES)
        self._stale: list[str] | None = None

    def stale_files(self) -> list[str]:
        """The sources and ``.pxd`` files that differ from what the extensions were built
        from, and the sources whose extension is missing while other listed modules have
        theirs (empty without the build's record, or without any extension)."""
        if self._stale is None:
            stale: list[str] = []
            missing: list[str] = []
            recorded = [name for name in COMPILED_MODULES if name in (self.hashes or {})]
            without = [name for name in recorded if extension_path(name) is None]
            # No extension at all (a pure build, whose sdist may carry the record): none can
            # shadow a source, edited or not, so nothing is stale.
            if self.hashes is not None and len(without) < len(recorded):
                for name in COMPILED_MODULES:
                    src = source_path(name)
                    built = self.hashes.get(name)
                    if built is not None and os.path.exists(src) and source_sha256(src) != built:
                        stale.append(src)
                    pxd = declarations_path(name)
                    built = self.declarations.get(name)
                    if built is not None and os.path.exists(pxd) and source_sha256(pxd) != built:
                        stale.append(pxd)
                missing = [source_path(name) for name in without]
            self._stale = stale + missing
            if self.force_source:
                pass
            elif stale:
                warnings.warn(
                    f"the compiled modules were built from other versions of {', '.join(stale)}; "
                    "loading every compiled module from its source instead (rebuild: make build, "
                    "or pip install the package again)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            elif missing:
                warnings.warn(
                    f"no compiled module beside {', '.join(missing)}, while the other compiled modules "
                    "are there (an incomplete install); loading every compiled module from its source "
                    "instead (rebuild: make build, or pip install the package again)",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self._stale

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        src = source_path(fullname)
        if not os.path.exists(src):
            return None
        if not self.force_source and not self.stale_files():
            return None  # the normal finders: the extension when there is one
        loader = importlib.machinery.SourceFileLoader(fullname, src)
        return importlib.util.spec_from_file_location(fullname, src, loader=loader)


def install() -> None:
    """Put the finder in front of ``sys.meta_path`` (once)."""
    if any(isinstance(f, _SourceFirstFinder) for f in sys.meta_path):
        return
    built = _built_hashes()
    if built is None:
        sys.meta_path.insert(0, _SourceFirstFinder(NO_EXTENSIONS, None))
    else:
        sys.meta_path.insert(0, _SourceFirstFinder(NO_EXTENSIONS, *built))


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
