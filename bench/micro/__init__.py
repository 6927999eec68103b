"""Micro-benchmarks (pytest-benchmark): each ``_core`` kernel compiled vs its pure twin, and the
wire codec. ``bench/run.py`` runs them; alone::

    .venv/bin/python -m pytest bench/micro -p no:cacheprovider --benchmark-group-by=func

Not collected by ``make test`` (``testpaths = tests``).
"""
