"""The benchmarks of ``make bench`` (``bench/run.py`` runs them all; each also runs alone)."""
