"""Fails when the compiled kernels should have been picked and were not (STYLE 18)."""

import os
import types
from pathlib import Path

import pytest

import openraft_py._core as core
from openraft_py._compiled import env_flag

NO_EXTENSIONS = env_flag("OPENRAFT_PY_NO_EXTENSIONS")

NAMES = {
    "quorum": ["majority_committed", "joint_committed", "is_quorum_granted", "ProgressTable"],
    "logindex": ["LogIndex", "EntryCache"],
    "codec": ["encode_entries", "decode_entries", "encode_entry_batch", "encode_index_key", "decode_index_key",
              "encode_frame", "encode_frames", "FrameReader", "plain_entries_prefix", "find_payload",
              "normal_data_bytes"],
    "kv": ["apply_kv_sets"],
}


def test_dispatcher_picked_the_expected_implementation() -> None:
    suffix = "py" if NO_EXTENSIONS else "c"
    assert core.USING_EXTENSIONS is (not NO_EXTENSIONS)
    for kernel, names in NAMES.items():
        for name in names:
            obj = getattr(core, name)
            assert obj.__module__ == f"openraft_py._core._{kernel}_{suffix}", (name, obj)


def test_compiled_objects_are_compiled() -> None:
    if NO_EXTENSIONS:
        pytest.skip("OPENRAFT_PY_NO_EXTENSIONS is set: the pure-Python build has no compiled objects")
    # Not a skip from here on: without the variable the compiled modules must have loaded.
    assert core.USING_EXTENSIONS, "the compiled kernels did not load (build them: make build)"
    import openraft_py._core._quorum_c as quorum_c

    assert quorum_c.__file__.endswith((".so", ".pyd"))
    # Compiled functions, where the twins' are Python functions: builtins (a release build
    # turns Cython's ``binding`` off for the call's speed) or, in a debug build with line
    # tracing, Cython's own function type.
    for fn in (core.encode_entries, core.majority_committed, core.apply_kv_sets, core.LogIndex.term_at):
        assert not isinstance(fn, types.FunctionType), fn
        assert type(fn).__name__ in ("builtin_function_or_method", "method_descriptor",
                                     "cython_function_or_method"), fn
    # cdef classes are static extension types, not Python classes with __slots__.
    assert "__slots__" not in vars(core.LogIndex)


def test_shared_exception_types() -> None:
    from openraft_py._core import _codec_py

    assert core.CodecError is _codec_py.CodecError
    assert issubclass(core.FrameTooLarge, core.CodecError)
    assert issubclass(core.CodecError, ValueError)


# A child process whose import of one compiled kernel fails as given, before the package is
# imported; it prints which twins the dispatcher picked and the warnings it gave.
_FAILING_KERNEL = """
import importlib.abc, importlib.machinery, json, sys, warnings

class Failing(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise {error}

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "openraft_py._core._kv_c":
            return importlib.machinery.ModuleSpec(name, Failing())
        return None

sys.meta_path.insert(0, Finder())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import openraft_py._core as core
print(json.dumps({{"using": core.USING_EXTENSIONS, "codec": core.encode_entries.__module__,
                  "kv": core.apply_kv_sets.__module__,
                  "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning]}}))
"""


@pytest.mark.parametrize("error, warned", [
    # Another kernel's declared type with another layout: Cython's check at import.
    ('ValueError("openraft_py._core._codec_c._Field size changed, may indicate binary incompatibility")', True),
    ('ImportError("undefined symbol: __orp_utf8_str")', True),  # a broken build
    # One kernel's file missing beside the others (an incomplete install): it was quiet.
    ('ModuleNotFoundError("no _kv_c", name="openraft_py._core._kv_c")', True),
])
def test_a_kernel_that_does_not_load_gives_every_pure_twin(error: str, warned: bool) -> None:
    """All kernels fall back together (one failing module gives no mixed set), with a
    ``RuntimeWarning`` (none when no kernel was built at all: the next test)."""
    import importlib.util
    import json
    import subprocess
    import sys

    spec = importlib.util.find_spec("openraft_py._core._codec_c")
    if spec is None or not str(spec.origin).endswith((".so", ".pyd")):
        pytest.skip("no compiled kernels in this install: nothing to fall back from")
    env = {k: v for k, v in os.environ.items() if k != "OPENRAFT_PY_NO_EXTENSIONS"}
    out = subprocess.run([sys.executable, "-c", _FAILING_KERNEL.format(error=error)], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["using"] is False
    assert (got["codec"], got["kv"]) == ("openraft_py._core._codec_py", "openraft_py._core._kv_py")
    kernel_warnings = [w for w in got["warnings"] if "compiled kernels did not load" in w]
    assert len(kernel_warnings) == (1 if warned else 0), got["warnings"]



# A child process that imports ``openraft_py._core`` from DIR, a copy of its Python files
# alone (no compiled kernel beside them, as in a pure-Python build): the kernels' imports
# find nothing, whatever the install's layout (an editable one maps ``_core`` elsewhere).
_NONE_BUILT = """
import importlib.abc, importlib.machinery, importlib.util, json, os, sys, warnings

class Missing(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise ModuleNotFoundError(f"No module named {{module.__name__!r}}", name=module.__name__)

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "openraft_py._core":
            return importlib.util.spec_from_file_location(
                name, os.path.join({dir!r}, "__init__.py"), submodule_search_locations=[{dir!r}])
        if name.startswith("openraft_py._core._"):
            if name.endswith("_c"):
                return importlib.machinery.ModuleSpec(name, Missing())
            return importlib.util.spec_from_file_location(name, os.path.join({dir!r}, name.rsplit(".", 1)[1] + ".py"))
        return None

sys.meta_path.insert(0, Finder())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import openraft_py._core as core
print(json.dumps({{"using": core.USING_EXTENSIONS, "file": core.__file__,
                  "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning]}}))
"""


def test_no_kernel_built_gives_the_pure_twins_quietly(tmp_path: Path) -> None:
    """A pure-Python build (no kernel's extension file at all) imports the twins without a
    warning."""
    import json
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "_core"
    shutil.copytree(Path(core.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__", "_*_c.*"))
    assert not list(copy.glob("_*_c.*"))
    env = {k: v for k, v in os.environ.items() if k != "OPENRAFT_PY_NO_EXTENSIONS"}
    out = subprocess.run([sys.executable, "-c", _NONE_BUILT.format(dir=str(copy))], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(copy), got
    assert got["using"] is False
    assert [w for w in got["warnings"] if "compiled kernels did not load" in w] == [], got["warnings"]
