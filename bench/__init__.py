"""Benchmarks run by ``make bench`` / ``unimeter bench``; one module per component.

Each module defines ``BENCHMARKS``: callables taking a :class:`bench._harness.BenchContext`
and returning a list of :class:`bench._harness.BenchResult`. A result is a measured rate *and*
the rate of a baseline measured on the same machine in the same run, so the figure that
matters — the ratio — does not depend on how fast the machine happens to be.
"""
