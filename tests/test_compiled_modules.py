"""The package modules the build compiles as written (``openraft_py/_compiled.py``): the
compiled build loads every one of them compiled, ``OPENRAFT_PY_NO_EXTENSIONS`` loads their
sources, an edited source is never shadowed by an extension built from an older one, the
classes their ``.pxd`` files declare are extension types when compiled, and none of them
defines a coroutine (the rule ``COMPILED_MODULES`` documents)."""

from __future__ import annotations

import ast
import ctypes
import functools
import importlib
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from elf import runtime_search_paths

from openraft_py import _compiled
from openraft_py._compiled import (
    COMPILED_MODULES,
    _SourceFirstFinder,
    declarations_path,
    source_path,
    source_sha256,
)
from openraft_py.types import Blank, Entry, LogId, _entry_log_id, _log_id_index, _log_id_term

_CHECK = (
    "import json, warnings\n"
    "warnings.simplefilter('error', RuntimeWarning)\n"
    "from openraft_py._compiled import loaded_compiled\n"
    "print(json.dumps(loaded_compiled()))\n"
)


# A class CPython allocated at runtime (a ``class`` statement) has this flag; an extension
# type (a C struct, as Cython makes a class its ``.pxd`` declares) has not.
_PY_TPFLAGS_HEAPTYPE = 1 << 9


def _pxd_classes() -> list[tuple[str, str]]:
    """``(module, class)`` for each ``cdef class`` of a ``.pxd`` beside a listed module."""
    out: list[tuple[str, str]] = []
    for name in COMPILED_MODULES:
        pxd = declarations_path(name)
        if os.path.exists(pxd):
            with open(pxd) as f:
                out += [(name, cls) for cls in re.findall(r"^cdef class (\w+)", f.read(), re.M)]
    return out


def _loaded_in_child(no_extensions: str | None) -> dict[str, bool]:
    env = {k: v for k, v in os.environ.items() if k != "OPENRAFT_PY_NO_EXTENSIONS"}
    if no_extensions is not None:
        env["OPENRAFT_PY_NO_EXTENSIONS"] = no_extensions
    out = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded: dict[str, bool] = json.loads(out.stdout)
    return loaded


@pytest.mark.c_extension
@pytest.mark.timeout(120)
def test_the_compiled_build_loads_every_listed_module_compiled() -> None:
    # Fails when the build silently skipped a module or a stale build is shadowed (a
    # RuntimeWarning, an error here).
    loaded = _loaded_in_child(None)
    assert sorted(loaded) == sorted(COMPILED_MODULES)
    assert [m for m, compiled in loaded.items() if not compiled] == []


@pytest.mark.c_extension
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF extensions")
def test_the_extensions_carry_no_library_search_path_of_the_build_machine() -> None:
    # An interpreter whose LDSHARED has -Wl,-rpath,PREFIX/lib (pyenv's) put that directory
    # into every extension's RUNPATH, and so into the wheels built with it (setup.py's
    # BuildExt drops it: the extensions link libc alone).
    kernels = [importlib.util.find_spec(f"openraft_py._core.{k}") for k in ("_quorum_c", "_logindex_c", "_codec_c", "_kv_c")]
    files = [str(spec.origin) for spec in kernels if spec is not None]
    files += [path for path in map(_compiled.extension_path, COMPILED_MODULES) if path is not None]
    assert len(files) == 4 + len(COMPILED_MODULES), files
    with_paths = {}
    for path in files:
        with open(path, "rb") as f:
            found = runtime_search_paths(f.read())
        if found:
            with_paths[path] = found
    assert with_paths == {}


@pytest.mark.c_extension
def test_the_classes_a_pxd_declares_are_extension_types_when_compiled() -> None:
    # Fails when a .pxd stops applying to its module (the class renamed or moved, the .pxd
    # left out of the build): the compiled engine would read its fields by lookup again.
    classes = _pxd_classes()
    names = {c for _, c in classes}
    assert {"RaftState", "IOState", "ProgressEntry", "Leader", "Engine", "Handler", "LogHandler", "Wakeup", "Publisher"} <= names
    heap = [f"{m}.{c}" for m, c in classes if getattr(importlib.import_module(m), c).__flags__ & _PY_TPFLAGS_HEAPTYPE]
    assert heap == []


# A type Python code may subclass has this flag; a final extension type has not.
_PY_TPFLAGS_BASETYPE = 1 << 10


@pytest.mark.c_extension
def test_the_compiled_engine_is_final() -> None:
    # ``Engine`` has an instance dict (a test may replace one node's method): were it open
    # to subclasses, each C call of one of its ``cpdef`` methods (the handler getters, the
    # election timer: several a write) would look the method up on the instance first, in
    # case a subclass or the instance overrides it (the thirty-eighth round of
    # docs/design/performance.md). Fails when engine.pxd loses ``@cython.final``.
    from openraft_py.engine import Engine

    assert not Engine.__flags__ & _PY_TPFLAGS_HEAPTYPE
    assert not Engine.__flags__ & _PY_TPFLAGS_BASETYPE
    with pytest.raises(TypeError):
        type("Sub", (Engine,), {})


@pytest.mark.timeout(120)
def test_no_extensions_loads_every_listed_module_from_its_source() -> None:
    loaded = _loaded_in_child("1")
    assert [m for m, compiled in loaded.items() if compiled] == []


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every listed module has its extension beside its source, as far as the finder can
    tell (so these unit tests need no compiled build)."""
    monkeypatch.setattr(_compiled, "extension_path", lambda m: source_path(m) + "-ext.so")


@pytest.mark.usefixtures("built")
def test_the_finder_loads_every_module_from_source_when_one_source_was_edited() -> None:
    name = "openraft_py.engine.state"
    other = "openraft_py.engine.engine"  # built against state's declared types
    stale = _SourceFirstFinder(False, {name: "0" * 64, other: source_sha256(source_path(other))})
    with pytest.warns(RuntimeWarning, match="built from other versions of .*state.py") as caught:
        spec = stale.find_spec(name, None)
    assert spec is not None and spec.origin == source_path(name)
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    # Every other listed module too (its extension would refuse state's source), warned once.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = stale.find_spec(other, None)
    assert spec is not None and spec.origin == source_path(other)
    assert len(caught) == 1


@pytest.mark.usefixtures("built")
def test_the_finder_loads_the_sources_when_a_pxd_was_edited() -> None:
    name = "openraft_py.engine.state"
    assert os.path.exists(declarations_path(name))
    hashes = {name: source_sha256(source_path(name))}
    stale = _SourceFirstFinder(False, hashes, {name: "0" * 64})
    with pytest.warns(RuntimeWarning, match="state.pxd"):
        spec = stale.find_spec(name, None)
    assert spec is not None and spec.origin == source_path(name)
    # The .pxd as built: the extension; a .pxd not recorded (or absent, as in a wheel): too.
    for declarations in ({name: source_sha256(declarations_path(name))}, {}):
        current = _SourceFirstFinder(False, hashes, declarations)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert current.find_spec(name, None) is None


_EDITED_CHECK = (
    "import warnings\n"
    "with warnings.catch_warnings(record=True) as w:\n"
    "    warnings.simplefilter('always')\n"
    "    from openraft_py._compiled import loaded_compiled\n"
    "    loaded = loaded_compiled()\n"
    "print(sum(loaded.values()), len([x for x in w if 'built from other versions' in str(x.message)]))\n"
)


@pytest.mark.c_extension
@pytest.mark.timeout(120)
def test_an_edited_checkout_imports_from_source(tmp_path: Path) -> None:
    # A copy of the installed package whose one source differs from the build's record:
    # every listed module imports, from source, with one warning (an extension built against
    # the edited module's types would fail to import next to its source).
    import openraft_py

    root = os.path.dirname(os.path.dirname(openraft_py.__file__))
    copy = tmp_path / "pkg"
    shutil.copytree(os.path.join(root, "openraft_py"), copy / "openraft_py", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "openraft_py" / "engine" / "state.py", "a") as f:
        f.write("# edited\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENRAFT_PY_NO_EXTENSIONS"}
    env["PYTHONPATH"] = str(copy)
    out = subprocess.run([sys.executable, "-c", _EDITED_CHECK], env=env, cwd=str(copy), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]


def test_the_finder_loads_every_module_from_source_when_an_extension_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "openraft_py.engine.state"
    other = "openraft_py.engine.engine"  # built against state's declared types
    hashes = {m: source_sha256(source_path(m)) for m in COMPILED_MODULES}
    monkeypatch.setattr(_compiled, "extension_path", lambda m: None if m == name else source_path(m) + "-ext.so")
    finder = _SourceFirstFinder(False, hashes)
    with pytest.warns(RuntimeWarning, match=r"no compiled module beside .*state\.py, while the other") as caught:
        spec = finder.find_spec(other, None)
    assert spec is not None and spec.origin == source_path(other)
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = finder.find_spec(name, None)
    assert spec is not None and spec.origin == source_path(name)
    assert len(caught) == 1
    # No extension at all, the build's record with it (a pure wheel from an sdist that
    # carries the record), or every one: the normal finders, quietly.
    for extension in (lambda m: None, lambda m: source_path(m) + "-ext.so"):
        monkeypatch.setattr(_compiled, "extension_path", extension)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _SourceFirstFinder(False, hashes).find_spec(name, None) is None


@pytest.mark.c_extension
@pytest.mark.timeout(120)
def test_an_install_missing_one_extension_imports_from_source(tmp_path: Path) -> None:
    # A copy of the installed package with one compiled module's extension removed: every
    # listed module imports, from source, with one warning (engine.engine's extension
    # failed to import next to state's source: "MembershipState size changed").
    import openraft_py

    root = os.path.dirname(os.path.dirname(openraft_py.__file__))
    copy = tmp_path / "pkg"
    shutil.copytree(os.path.join(root, "openraft_py"), copy / "openraft_py", ignore=shutil.ignore_patterns("__pycache__"))
    state = copy / "openraft_py" / "engine" / "state"
    removed = [Path(f"{state}{suffix}") for suffix in importlib.machinery.EXTENSION_SUFFIXES
               if Path(f"{state}{suffix}").exists()]
    assert removed, "no extension beside engine/state.py"
    removed[0].unlink()
    env = {k: v for k, v in os.environ.items() if k != "OPENRAFT_PY_NO_EXTENSIONS"}
    env["PYTHONPATH"] = str(copy)
    check = _EDITED_CHECK.replace("built from other versions", "no compiled module beside") + "import openraft_py.raft\n"
    out = subprocess.run([sys.executable, "-c", check], env=env, cwd=str(copy), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]


def test_without_any_extension_an_edited_source_is_not_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pure wheel built from an sdist carries the build's record: a source patched there
    # has no extension to differ from (it warned "the compiled modules were built from other
    # versions", with no compiled module installed).
    monkeypatch.setattr(_compiled, "extension_path", lambda m: None)
    name = "openraft_py.engine.state"
    finder = _SourceFirstFinder(False, {m: "0" * 64 for m in COMPILED_MODULES}, {name: "0" * 64})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert finder.find_spec(name, None) is None
    assert finder.stale_files() == []


@pytest.mark.usefixtures("built")
def test_the_finder_defers_to_the_extension_when_the_source_matches() -> None:
    name = "openraft_py.engine.state"
    current = _SourceFirstFinder(False, {name: source_sha256(source_path(name))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert current.find_spec(name, None) is None
        assert current.find_spec("openraft_py.raft", None) is None  # not a compiled module
    # Without the build's record (a pure install): the normal finders too.
    assert _SourceFirstFinder(False, None).find_spec(name, None) is None


def test_the_finder_forces_sources_under_no_extensions() -> None:
    name = "openraft_py.validation"
    spec = _SourceFirstFinder(True, None).find_spec(name, None)
    assert spec is not None and spec.origin == source_path(name)
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)


def test_install_puts_the_finder_before_the_path_finder_once() -> None:
    _compiled.install()
    finders = [f for f in sys.meta_path if isinstance(f, _SourceFirstFinder)]
    assert len(finders) == 1
    assert sys.meta_path.index(finders[0]) < sys.meta_path.index(importlib.machinery.PathFinder)


@pytest.mark.parametrize("name", COMPILED_MODULES)
def test_a_compiled_module_defines_no_coroutine(name: str) -> None:
    with open(source_path(name)) as f:
        tree = ast.parse(f.read())
    coroutines = [n.name for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)]
    assert coroutines == [], f"{name} defines coroutines {coroutines}: keep it out of COMPILED_MODULES"


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "setup.py").exists(), reason="no checkout")
@pytest.mark.parametrize("value", ["-2", "four", "1.5"])
def test_build_jobs_that_are_no_number_stop_the_build_naming_the_variable(value: str, tmp_path: Path) -> None:
    """``OPENRAFT_PY_BUILD_JOBS`` that is not a number of jobs stops ``setup.py`` at once with
    a message naming it ('four' was a ValueError traceback from ``int()``, -2 reached
    Cython's process pool as ``nthreads=-2``)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OPENRAFT_PY_BUILD_JOBS": value, "OPENRAFT_PY_NO_EXTENSIONS": "1"}
    proc = subprocess.run([sys.executable, str(root / "setup.py"), "--name"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"OPENRAFT_PY_BUILD_JOBS must be a number of jobs (0: one per CPU), got {value!r}" in proc.stderr


class _LogIdSub(LogId):
    """A subclass: the readers must read its fields by name (never by the slot of
    ``LogId``'s layout)."""


class _Duck:
    """Not a Struct at all: read by name."""

    term = 7
    index = 8
    log_id = LogId(7, 8)


def test_the_struct_field_readers_read_what_the_attribute_holds() -> None:
    # Both builds (the readers are the engine's ``lid.index`` in C when compiled): any
    # object gives what its attribute holds, a subclass and a duck type included, and a
    # missing field raises ``AttributeError`` as the read would.
    lid = LogId(3, 2**70)
    assert (_log_id_term(lid), _log_id_index(lid)) == (3, 2**70)
    e = Entry(lid, Blank())
    assert _entry_log_id(e) is lid
    sub = _LogIdSub(5, 6)
    assert (_log_id_term(sub), _log_id_index(sub)) == (5, 6)
    duck = _Duck()
    assert (_log_id_term(duck), _log_id_index(duck), _entry_log_id(duck)) == (7, 8, LogId(7, 8))  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        _log_id_index(object())  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        _entry_log_id(lid)  # type: ignore[arg-type]


@pytest.mark.c_extension
def test_the_compiled_struct_field_readers_load_the_slots() -> None:
    # Fails when the compiled readers fall back to the attribute lookup for the exact
    # classes (their offsets not found at import: msgspec's layout changed, or the check of
    # the descriptors refused it): the engine's hot reads would cost the generic lookup
    # again (docs/design/performance.md, the fortieth round).
    from openraft_py import types

    assert not (types.__file__ or "").endswith(".py")
    assert types._fields_read_from_slots()


def test_the_types_module_imports_from_a_sourceless_pyc(tmp_path: Path) -> None:
    # Both builds: ``types.py`` run from a ``.pyc`` with no ``.py`` beside it (a sourceless
    # install, a frozen application) is the pure module, and must read its fields by name;
    # deciding "compiled" from the file name made it call the compiled build's C helper and
    # fail to import (NameError: name '_member_offset' is not defined).
    import py_compile

    src = source_path("openraft_py.types")
    pyc = str(tmp_path / "types.pyc")
    py_compile.compile(src, cfile=pyc, doraise=True)
    name = "openraft_py._types_from_pyc"
    loader = importlib.machinery.SourcelessFileLoader(name, pyc)
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    assert (mod.__file__ or "").endswith(".pyc")
    assert not mod._COMPILED and not mod._fields_read_from_slots()
    assert mod._log_id_index(mod.LogId(1, 2)) == 2


class _MemberDef(ctypes.Structure):
    # CPython's ``PyMemberDef`` (Include/descrobject.h), the fields the offset check reads.
    _fields_ = [("name", ctypes.c_char_p), ("type", ctypes.c_int), ("offset", ctypes.c_ssize_t),
                ("flags", ctypes.c_int)]


def _member_def(cls: type, name: str) -> _MemberDef:
    """The ``PyMemberDef`` behind ``cls``'s own member descriptor ``name`` (its ``d_member``
    follows the descriptor's object header and its ``d_type``, ``d_name``, ``d_qualname``)."""
    d = cls.__dict__[name]
    assert type(d) is type(_Slots.__dict__["a"])
    ptr = ctypes.c_void_p.from_address(id(d) + object.__basicsize__ + 3 * ctypes.sizeof(ctypes.c_void_p)).value
    m = _MemberDef.from_address(ptr)
    assert m.name == name.encode()
    return m


class _Slots:
    __slots__ = ("a",)


_T_DOUBLE, _T_OBJECT, _T_OBJECT_EX = 3, 6, 16
_READONLY, _PY_AUDIT_READ, _PY_RELATIVE_OFFSET = 1, 2, 8


@pytest.mark.c_extension
def test_the_slot_offsets_are_refused_unless_an_object_slot_of_the_class_itself() -> None:
    # The import-time check fails safe: any descriptor the compiled readers could not load
    # exactly as the attribute read does gives -1 (read by name). A plain ``__slots__``
    # field is accepted (the control), then its ``PyMemberDef`` is altered in each way a
    # CPython or msgspec change could alter it, and every one is refused.
    from openraft_py import types

    assert types._COMPILED
    slot = types._slot_offset(_Slots, "a")
    assert slot >= object.__basicsize__
    refused = {
        "property": types._slot_offset(type("P", (), {"a": property(lambda s: 1)}), "a"),
        "inherited": types._slot_offset(type("Sub", (_Slots,), {}), "a"),
        "another class's descriptor": types._slot_offset(type("Other", (), {"a": _Slots.__dict__["a"]}), "a"),
        "T_OBJECT (None when empty)": types._slot_offset(functools.partial, "func"),
        "T_DOUBLE": types._slot_offset(complex, "real"),
    }
    m = _member_def(_Slots, "a")
    assert (m.type, m.offset, m.flags) == (_T_OBJECT_EX, slot, 0)
    for what, field, value in [
        ("type T_OBJECT", "type", _T_OBJECT),
        ("offset in the header", "offset", 0),
        ("offset past the instance", "offset", _Slots.__basicsize__),
        ("audited read", "flags", _PY_AUDIT_READ),
        ("relative offset", "flags", _PY_RELATIVE_OFFSET),
    ]:
        saved = getattr(m, field)
        setattr(m, field, value)
        try:
            refused[what] = types._slot_offset(_Slots, "a")
        finally:
            setattr(m, field, saved)
    assert refused == dict.fromkeys(refused, -1)
    m.flags = _READONLY
    try:
        assert types._slot_offset(_Slots, "a") == slot  # read-only: still the slot
    finally:
        m.flags = 0


@pytest.mark.c_extension
@pytest.mark.parametrize("options", [{}, {"gc": False}, {"array_like": True}, {"frozen": True}, {"weakref": True},
                                     {"dict": True}, {"gc": False, "array_like": True, "frozen": True, "order": True},
                                     {"weakref": True, "dict": True}], ids=repr)
def test_a_msgspec_struct_s_field_is_at_the_offset_found_whatever_its_options(options: dict[str, bool]) -> None:
    # msgspec's options do not move a field out of the slot its descriptor records: the
    # offset the compiled module finds holds the very object the attribute read gives.
    import msgspec

    from openraft_py import types

    cls = msgspec.defstruct("S", [("a", object), ("b", object, None)], **options)  # type: ignore[call-overload]
    values = (object(), object())
    obj = cls(*values)
    for name, value in zip(("a", "b"), values, strict=True):
        offset = types._slot_offset(cls, name)
        assert offset >= object.__basicsize__, (name, offset)
        assert ctypes.cast(id(obj) + offset, ctypes.POINTER(ctypes.py_object))[0] is value is getattr(obj, name)
