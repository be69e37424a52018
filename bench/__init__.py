"""Benchmarks of llamabot against the libraries underneath (see README.md).

A package only so that the scripts share :mod:`bench.measure`; run them from the checkout
as ``PYTHONPATH=. python bench/bench_<name>.py``.
"""
