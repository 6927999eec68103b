# openraft-py developer entry point. `make test` is what CI runs (.ci/run).

VENV ?= .venv
PY = $(VENV)/bin/python
PYTEST = $(PY) -m pytest -q -p no:cacheprovider
STAMP = $(VENV)/.stamp-install

.PHONY: build bytecode lint test test-pure run bench sim sim-skew wheel jepsen docs clean

SEEDS ?= 1000

# Create the venv and install the package editable, with the compiled kernels
# (setuptools builds _core/*.pyx in place). Redone whenever the build inputs change.
# (PYTHONWARNINGS: setuptools' notice that the install is editable, a banner of 10 lines in
# the first output a new user sees, is not shown.)
# The package modules the build also compiles (openraft_py/_compiled.py's COMPILED_MODULES).
COMPILED_SOURCES := $(shell sed -n 's/^ *"\(openraft_py\.[a-z_.]*\)",$$/\1/p' openraft_py/_compiled.py | tr . / | sed 's/$$/.py/')

$(STAMP): pyproject.toml setup.py $(wildcard _core/*.pyx) $(wildcard _core/*.pxd) openraft_py/_compiled.py $(COMPILED_SOURCES) $(wildcard $(COMPILED_SOURCES:.py=.pxd))
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PYTHONWARNINGS='ignore:Editable installation' $(PY) -m pip install -q -e '.[test,bench,kv,release,lint,docs]'
	touch $@

# Also fails unless the compiled kernels and modules are the ones imports get.
build: $(STAMP)
	env -u OPENRAFT_PY_NO_EXTENSIONS $(PY) -c 'import openraft_py._core as c; assert c.USING_EXTENSIONS, "compiled kernels did not load"'
	env -u OPENRAFT_PY_NO_EXTENSIONS $(PY) -W error::RuntimeWarning -c 'from openraft_py._compiled import loaded_compiled as l; n = [m for m, c in l().items() if not c]; assert not n, f"not compiled: {n}"'

# The checkout's bytecode, written ahead (only for sources changed since): the suite and the demo
# start hundreds of Python processes, and where PYTHONDONTWRITEBYTECODE is set (as on these
# machines) each one compiled every module of the package it imported from its source, about
# 0.3 s of CPU a start (`openraft-py --help`: 0.75 s, 0.45 s with the bytecode written).
bytecode: $(STAMP)
	$(PY) -m compileall -q openraft_py tests bench examples

# Static checks (configuration in pyproject.toml): mypy on the package; mypy --strict on a
# program that uses the public API as a user's would (the library followed silently, as mypy
# treats an installed package); ruff's lint rules (lint only, no reformatting).
lint: $(STAMP)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict --follow-imports=silent --no-warn-unused-configs tests/typecheck/public_api_user.py
	$(VENV)/bin/ruff check

# The suite in TEST_JOBS pytest-xdist workers, each test module whole in one worker
# (tests/conftest.py: the modules that start work early are one unit, started first).
# Three on the 2-core CI machine: the worker given the early unit mostly waits on the Jepsen
# runs it started, and many tests wait on processes and timers; with two workers the whole
# run kept the two cores only about two thirds busy.
TEST_JOBS ?= 3
XDIST = -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

test: build lint bytecode
	$(PYTEST) $(XDIST) tests/

# The pure-Python twins only (the compiled kernels' own tests are deselected).
test-pure: build bytecode
	OPENRAFT_PY_NO_EXTENSIONS=1 $(PYTEST) $(XDIST) --no-c-extensions tests/

# The key-value service's demo (DESIGN §8): 3 `serve` processes, clients, a leader crash, a new member.
# The in-process demo of the library alone: $(PY) -m openraft_py.demo
run: build bytecode
	$(VENV)/bin/openraft-py demo

# Every benchmark in one go (bench/run.py): the table, the plots and issue 14's acceptance
# ratios in bench/results/. bench-quick: all points, shorter runs, 2 rounds (under 2 minutes).
bench: build
	$(PY) bench/run.py

bench-quick: build
	$(PY) bench/run.py --quick

# Release artefacts in $(DIST): the sdist; a wheel built FROM that sdist (`python -m build`
# does both, in that order), repaired to a manylinux tag by auditwheel, which also strips it;
# and the pure-Python py3-none-any wheel, also from the sdist, for every other platform and
# interpreter. twine then checks their metadata (licence, URLs, the README as the description).
DIST ?= dist
WHEELHOUSE ?= build/wheelhouse
wheel: build
	rm -rf $(DIST) $(WHEELHOUSE)
	env -u OPENRAFT_PY_NO_EXTENSIONS -u OPENRAFT_PY_DEBUG $(PY) -m build --outdir $(WHEELHOUSE) .
	mkdir -p $(DIST)
	cp $(WHEELHOUSE)/*.tar.gz $(DIST)/
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m auditwheel repair --strip -w $(DIST) $(WHEELHOUSE)/*.whl
	OPENRAFT_PY_NO_EXTENSIONS=1 $(PY) -m pip wheel -q --no-deps -w $(DIST) $(DIST)/*.tar.gz
	$(PY) -m twine check --strict $(DIST)/*
	@ls -l $(DIST)

# The deterministic simulator over many seeds (make sim SEEDS=10000 JOBS=2); make test runs 100.
# START: the first seed (make sim-skew START=50000 SEEDS=300 runs seeds 50000..50299).
JOBS ?= 2
START ?= 0
sim: build
	$(PY) -m openraft_py.testing.sim --start $(START) --seeds $(SEEDS) --jobs $(JOBS)

# Clock-rate skew (docs/design/simulation.md): the lease-read scenario at the documented
# bound, ReadIndex at 8 times it, and random runs with skew inside it; all must be clean.
sim-skew: build
	$(PY) -m openraft_py.testing.sim --lease 1 --start $(START) --seeds $(SEEDS) --jobs $(JOBS)
	$(PY) -m openraft_py.testing.sim --lease 8 --read-index --start $(START) --seeds $(SEEDS) --jobs $(JOBS)
	$(PY) -m openraft_py.testing.sim --skew 0.07 --start $(START) --seeds $(SEEDS) --jobs $(JOBS)

# A Jepsen-style run of 5 real `serve` processes under faults (docs/design/jepsen.md);
# a progress line per nemesis step. make jepsen TIME=600 SEED=7 (no SEED: a random one,
# printed). make test runs a 60-second smoke run.
TIME ?= 300
SEED ?=
jepsen: build
	$(PY) -m openraft_py.testing.jepsen --time $(TIME) --nodes 5 $(if $(SEED),--seed $(SEED))

# The user guide and API reference (mkdocs.yml, docs/) into build/site; --strict: a broken
# link, reference or docstring fails the build. tests/test_docs.py runs every code block.
docs: build
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis .benchmarks .mypy_cache .ruff_cache
	rm -f _core/*.c _core/*.html _core/*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
