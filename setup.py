"""Build script: packages, the ``_core`` -> ``openraft_py._core`` mapping, the Cython kernels
and the package modules compiled as written (``openraft_py/_compiled.py`` lists them).

Environment switches (read at build time; a switch is off when unset, empty, ``0``,
``false``, ``no`` or ``off``, in any case, and on otherwise):

- ``OPENRAFT_PY_NO_EXTENSIONS=1``: skip the extensions (a pure-Python wheel).
- ``OPENRAFT_PY_DEBUG=1``: compile with ``-O0 -g`` and Cython line tracing. Otherwise, on
  Linux, the kernels are linked with ``-s`` (no debug info or symbol table in the ``.so``;
  Python's own CFLAGS carry ``-g``).
- ``OPENRAFT_PY_ANNOTATE=1``: write Cython's annotated HTML next to each ``.pyx``.
- ``OPENRAFT_PY_BUILD_JOBS=N``: translate and compile N extensions at a time (default: one
  per CPU).

With the extensions, ``openraft_py/_compiled_sources.py`` records the SHA-256 of each
compiled module's source and ``.pxd``: at import, if any of them no longer matches, every
compiled module loads from its source (``openraft_py/_compiled.py``).

Everything else is declared in pyproject.toml.
"""

import hashlib
import importlib.util
import os
import shutil
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError


def _compiled_module():
    """``openraft_py/_compiled.py``, loaded alone (it imports nothing of the package)."""
    spec = importlib.util.spec_from_file_location("_openraft_py_compiled", os.path.join("openraft_py", "_compiled.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_COMPILED = _compiled_module()
# The switches read as the package reads its own (_compiled.env_flag): off when unset, empty,
# "0", "false", "no" or "off" (any case); on otherwise.
_flag = _COMPILED.env_flag

NO_EXTENSIONS = _flag("OPENRAFT_PY_NO_EXTENSIONS") or sys.implementation.name != "cpython"
DEBUG = _flag("OPENRAFT_PY_DEBUG")
ANNOTATE = _flag("OPENRAFT_PY_ANNOTATE")

def _build_jobs() -> int:
    """``OPENRAFT_PY_BUILD_JOBS`` (unset, empty or 0: one per CPU); anything but a
    non-negative integer stops the build with a message naming the variable."""
    raw = os.environ.get("OPENRAFT_PY_BUILD_JOBS", "").strip()
    jobs = int(raw) if raw.isdecimal() and raw.isascii() else -1 if raw else 0
    if jobs < 0:
        raise SystemExit(f"OPENRAFT_PY_BUILD_JOBS must be a number of jobs (0: one per CPU), got {raw!r}")
    return jobs or os.cpu_count() or 1


# Cython's translation and the C compiler both run one job per CPU (OPENRAFT_PY_BUILD_JOBS
# overrides): the build is two dozen independent extensions.
JOBS = _build_jobs()

KERNELS = ["_quorum_c", "_logindex_c", "_codec_c", "_kv_c"]
# Declarations-only modules the kernels cimport (inline functions compiled into each kernel
# that uses them; nothing of theirs is built or installed): ``_int64``, the kernels' int64
# conversion.
SHARED_PXDS = ["_int64"]


def _pxd_include_dir() -> str:
    """Return a dir holding ``openraft_py/_core/X.pxd`` copies of ``_core/X.pxd`` (the
    kernels' own and ``SHARED_PXDS``).

    Cython finds a module's own .pxd, and those it cimports, by their qualified names, and
    ``_core/`` only becomes ``openraft_py._core`` once installed, so mirror the .pxd files
    into that layout.
    """
    root = os.path.join("build", "pxd")
    pkg = os.path.join(root, "openraft_py", "_core")
    os.makedirs(pkg, exist_ok=True)
    for init in (os.path.join(root, "openraft_py", "__init__.pxd"), os.path.join(pkg, "__init__.pxd")):
        open(init, "a").close()
    for name in KERNELS + SHARED_PXDS:
        src = os.path.join("_core", f"{name}.pxd")
        dst = os.path.join(pkg, f"{name}.pxd")
        if not os.path.exists(dst) or open(src, "rb").read() != open(dst, "rb").read():
            shutil.copyfile(src, dst)
    return root


def _compiled_modules() -> tuple:
    """``COMPILED_MODULES`` from ``openraft_py/_compiled.py``."""
    return _COMPILED.COMPILED_MODULES


def _module_source(name: str) -> str:
    return os.path.join(*name.split(".")) + ".py"


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write_source_hashes(modules: tuple) -> None:
    """Write ``openraft_py/_compiled_sources.py``: the SHA-256 of each compiled module's
    source and of each ``.pxd`` beside one."""
    lines = [
        '"""Written by setup.py with the compiled modules: the SHA-256 of the source each was',
        'built from, and of the ``.pxd`` beside it (``openraft_py/_compiled.py`` compares them',
        'at import). Not in git."""',
        "",
        "SOURCE_SHA256: dict[str, str] = {",
    ]
    lines += [f'    "{name}": "{_sha256(_module_source(name))}",' for name in modules]
    lines += ["}", "", "DECLARATIONS_SHA256: dict[str, str] = {"]
    for name in modules:
        pxd = _module_source(name)[: -len(".py")] + ".pxd"
        if os.path.exists(pxd):
            lines.append(f'    "{name}": "{_sha256(pxd)}",')
    lines.append("}")
    text = "\n".join(lines) + "\n"
    path = os.path.join("openraft_py", "_compiled_sources.py")
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    with open(path, "w") as f:
        f.write(text)


def _directives() -> dict:
    """The Cython compiler directives both kinds of extension start from."""
    # ``binding=False``: the kernels' functions and methods are builtin functions and method
    # descriptors, which CPython calls without a function object of Cython's own: 5-12 ns
    # less per call (``LogIndex.term_at``, 1,000 lookups at random indexes in a list
    # comprehension: 52-54 against 59-64 us). The "clinic" signatures keep
    # ``inspect.signature`` working.
    directives = {"language_level": "3", "embedsignature": True, "embedsignature.format": "clinic",
                  "binding": False}
    if DEBUG:
        directives.update(linetrace=True, binding=True)  # coverage's tracing wants function objects
    return directives


def _extensions() -> list:
    """The extensions to build, their sources as written (``.pyx``, ``.py``): ``BuildExt``
    has Cython translate them to C when it runs (``_cythonize``), and only then, so that a
    command that compiles nothing (``sdist``, ``egg_info``, a build backend asked for its
    requirements) does not run Cython over every module first (each did, twice in a wheel
    build, and rewrote the checkout's generated C). Also writes the source hashes
    (``_write_source_hashes``), which the sdist and the wheels carry."""
    if NO_EXTENSIONS:
        return []
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
    # Strip release builds: gcc/clang on Linux take -s at link time (macOS's ld64 treats it
    # as obsolete, MSVC has no such flag).
    link_args = ["-s"] if not DEBUG and sys.platform.startswith("linux") else []
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
    kernels = [
        Extension(
            f"openraft_py._core.{name}",
            [f"_core/{name}.pyx"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            define_macros=macros,
        )
        for name in KERNELS
    ]
    modules = _compiled_modules()
    _write_source_hashes(modules)
    compiled = [
        Extension(
            name,
            [_module_source(name)],
            extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
            extra_link_args=link_args,
            define_macros=macros,
        )
        for name in modules
    ]
    return kernels + compiled


def _cythonize(extensions: list) -> None:
    """Translate the Cython sources of ``extensions`` to C, in place: the sources of each
    kernel (a ``.pyx``) and of each compiled module (a ``.py``) become the generated C files.
    Extensions already in C are left as they are (Cython is not imported for them)."""
    kernels = [e for e in extensions if any(s.endswith(".pyx") for s in e.sources)]
    modules = [e for e in extensions if any(s.endswith(".py") for s in e.sources)]
    if not kernels and not modules:
        return
    from Cython.Build import cythonize

    directives = _directives()
    # The kernels' methods of no or one argument take it positionally only
    # (``always_allow_keywords=False``): CPython calls them as METH_NOARGS / METH_O, without
    # parsing keywords (``LogIndex.term_at``, 1,000 lookups in a list comprehension: see
    # docs/design/performance.md, the nineteenth round).
    translated = cythonize(
        kernels,
        nthreads=JOBS,
        include_path=[_pxd_include_dir()],
        compiler_directives=dict(directives, always_allow_keywords=False),
        annotate=ANNOTATE,
    ) if kernels else []
    # The package's own modules, compiled as written: type annotations are not C types
    # (``annotation_typing``), functions keep their Python signatures (``binding``). The
    # generated C goes to build/, not beside the sources.
    if modules:
        translated += cythonize(
            modules,
            build_dir=os.path.join("build", "cython"),
            nthreads=JOBS,
            compiler_directives=dict(directives, annotation_typing=False, binding=True),
            annotate=ANNOTATE,
        )
    by_name = {e.name: e for e in translated}
    for ext in kernels + modules:
        ext.sources = list(by_name[ext.name].sources)


def _without_rpath(command: list) -> list:
    """A link command without its run-time library search paths (``-Wl,-rpath,DIR``,
    ``-Wl,-rpath=DIR``, ``-Wl,-rpath -Wl,DIR``, ``-Wl,-R...``)."""
    out = []
    skip_next = False
    for arg in command:
        if skip_next:
            skip_next = False
        elif arg in ("-Wl,-rpath", "-Wl,-R"):
            skip_next = True  # its directory is the next argument
        elif not arg.startswith(("-Wl,-rpath,", "-Wl,-rpath=", "-Wl,-R")):
            out.append(arg)
    return out


NO_COMPILER_HINT = (
    "openraft-py: the compiled kernels need a C compiler and Python's C headers; "
    "OPENRAFT_PY_NO_EXTENSIONS=1 builds the pure-Python package instead (the same behaviour, slower)"
)
"""The line added to a failed compile or link of the extensions."""


def _with_hint(error: CCompilerError) -> CCompilerError:
    """``error`` (a failed compile or link: setuptools' "command 'gcc' failed: No such file
    or directory") again, of its class, with ``NO_COMPILER_HINT`` on a line of its own."""
    return type(error)(f"{error}\n{NO_COMPILER_HINT}")


class BuildExt(build_ext):
    """``build_ext`` linking the extensions without the interpreter's run-time library
    paths: an interpreter whose LDSHARED carries ``-Wl,-rpath,PREFIX/lib`` (pyenv's) put
    that directory of the build machine into every extension's RUNPATH, and so into the
    wheel (auditwheel keeps it). The extensions need none: they link libc alone.

    A compile or link that fails (no C compiler, no Python headers) ends the build as
    before, with a line naming ``OPENRAFT_PY_NO_EXTENSIONS=1`` added (``NO_COMPILER_HINT``):
    the build still fails rather than fall back, so that whoever wants the compiled build
    knows they did not get it."""

    def finalize_options(self) -> None:
        """``--parallel`` defaults to ``JOBS``: ``setup(options=...)`` does not reach the
        ``build_ext`` of a PEP 660 editable install (``pip install -e``, what ``make build``
        runs), which compiled one extension at a time (2 min 19 s against 1 min 19 s on two
        CPUs)."""
        if not self.parallel:
            self.parallel = JOBS
        super().finalize_options()

    def build_extensions(self) -> None:
        _cythonize(self.extensions)
        for attr in ("linker_so", "linker_so_cxx"):
            command = getattr(self.compiler, attr, None)
            if isinstance(command, list):
                setattr(self.compiler, attr, _without_rpath(command))
        try:
            super().build_extensions()
        except CCompilerError as e:
            raise _with_hint(e) from e


if __name__ == "__main__":  # (as setuptools runs it; tests/test_setup_build_ext.py imports it)
    setup(
        cmdclass={"build_ext": BuildExt},
        packages=find_packages(include=["openraft_py", "openraft_py.*"]) + ["openraft_py._core"],
        package_dir={"openraft_py._core": "_core"},
        package_data={"openraft_py": ["py.typed"]},
        exclude_package_data={"": ["*.pyx", "*.pxd", "*.c", "*.html"]},
        include_package_data=False,
        ext_modules=_extensions(),
        options={"build_ext": {"parallel": JOBS}},
        zip_safe=False,
    )
