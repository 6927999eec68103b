"""Build script: packages, the ``_core`` -> ``openraft_py._core`` mapping and the Cython kernels.

Environment switches (read at build time):

- ``OPENRAFT_PY_NO_EXTENSIONS=1``: skip the extensions (a pure-Python wheel).
- ``OPENRAFT_PY_DEBUG=1``: compile with ``-O0 -g`` and Cython line tracing. Otherwise, on
  Linux, the kernels are linked with ``-s`` (no debug info or symbol table in the ``.so``;
  Python's own CFLAGS carry ``-g``).
- ``OPENRAFT_PY_ANNOTATE=1``: write Cython's annotated HTML next to each ``.pyx``.

Everything else is declared in pyproject.toml.
"""

import os
import shutil
import sys

from setuptools import Extension, find_packages, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("OPENRAFT_PY_NO_EXTENSIONS") or sys.implementation.name != "cpython"
DEBUG = _flag("OPENRAFT_PY_DEBUG")
ANNOTATE = _flag("OPENRAFT_PY_ANNOTATE")

KERNELS = ["_quorum_c", "_logindex_c", "_codec_c"]


def _pxd_include_dir() -> str:
    """Return a dir holding ``openraft_py/_core/X.pxd`` copies of ``_core/X.pxd``.

    Cython finds a module's own .pxd by its qualified name, and ``_core/`` only becomes
    ``openraft_py._core`` once installed, so mirror the .pxd files into that layout.
    """
    root = os.path.join("build", "pxd")
    pkg = os.path.join(root, "openraft_py", "_core")
    os.makedirs(pkg, exist_ok=True)
    for init in (os.path.join(root, "openraft_py", "__init__.pxd"), os.path.join(pkg, "__init__.pxd")):
        open(init, "a").close()
    for name in KERNELS:
        src = os.path.join("_core", f"{name}.pxd")
        dst = os.path.join(pkg, f"{name}.pxd")
        if not os.path.exists(dst) or open(src, "rb").read() != open(dst, "rb").read():
            shutil.copyfile(src, dst)
    return root


def _extensions() -> list:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
    # Strip release builds: gcc/clang on Linux take -s at link time (macOS's ld64 treats it
    # as obsolete, MSVC has no such flag).
    link_args = ["-s"] if not DEBUG and sys.platform.startswith("linux") else []
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
    extensions = [
        Extension(
            f"openraft_py._core.{name}",
            [f"_core/{name}.pyx"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            define_macros=macros,
        )
        for name in KERNELS
    ]
    directives = {"language_level": "3", "embedsignature": True}
    if DEBUG:
        directives["linetrace"] = True
    return cythonize(
        extensions,
        include_path=[_pxd_include_dir()],
        compiler_directives=directives,
        annotate=ANNOTATE,
    )


setup(
    packages=find_packages(include=["openraft_py", "openraft_py.*"]) + ["openraft_py._core"],
    package_dir={"openraft_py._core": "_core"},
    package_data={"openraft_py": ["py.typed"]},
    exclude_package_data={"": ["*.pyx", "*.pxd", "*.c", "*.html"]},
    include_package_data=False,
    ext_modules=_extensions(),
    zip_safe=False,
)
