"""Process-wide settings of the long-running commands (FEP, pipeline worker).

The cyclic garbage collector is the one that matters: with CPython's default thresholds a
young collection runs every 700 net allocations and a full one every 70,000, and each full
one walks every live object — the imported libraries (faust, aiokafka, pydantic, psycopg)
and the worker's caches (decoded VEE and account states, the ledger). py-spy and a
``gc.callbacks`` probe on the billing worker: 13–14 % of its CPU in collections, each full
one ≈ 60 ms over ≈ 120,000 objects. Reference counting frees nearly everything these
processes allocate (messages, rows, records); the collector is only needed for cycles, so it
can run far less often. The sink tunes its own collector (``sinks.runner``): it also
collects between batches.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_garbage_collector"]

#: Net allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Call once after start-up, before serving: what exists now (modules, settings, the
    app) is frozen out of every later collection, and collections run less often — young
    every :data:`YOUNG_THRESHOLD` allocations, middle every 20 young, full every 100 middle
    (and only when the long-lived objects grew by a quarter, CPython's own rule)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
